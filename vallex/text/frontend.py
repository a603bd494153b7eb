"""``tokenize``: user text -> the text-token ids and per-token languages the checkpoint expects.

This reproduces what the reference's ``generate_audio`` feeds the model (its first three steps): newlines
removed, plain spaces stripped, the text wrapped in its language tag (``[EN]text[EN]``; none for "mix"),
cleaned to a phoneme string (:mod:`vallex.text.cleaners`), spaces turned into ``_``, one id per character.
A voice prompt's transcript is tokenized the same way (the reference's make_prompt does TAG+text+TAG).
"""
from __future__ import annotations

from dataclasses import dataclass

from .cleaners import TAGS, clean_tagged_text, find_segments
from .language import auto_tag, detect_language
from .normalize import SPLIT_ADVICE, check_not_blank, has_pronounceable, normalize_text
from .symbols import SYMBOLS, phonemes_to_ids

#: Values accepted for ``language``.
TOKENIZE_LANGUAGES: tuple[str, ...] = ("auto", "en", "zh", "ja", "mix", "auto-mix")

#: Most text tokens accepted for one utterance. English speech runs at ~12-15 phonemes per second, so
#: this is ~35-40 s of speech, beyond what a prompt-conditioned utterance of the checkpoint should hold;
#: longer text belongs in the long-text path (split_sentences, one sentence at a time).
MAX_TOKENS = 512


@dataclass(frozen=True)
class TextTokens:
    """The model's view of one utterance's text.

    Attributes:
        ids: text-token ids, one per phoneme character, each in 0..69 (``len(SYMBOLS)``); no BOS/EOS.
            As a tensor: LongTensor [1, L].
        langs: language of each id ("en", "zh" or "ja"); ``len(langs) == len(ids)``.
        phonemes: the cleaned phoneme string (spaces not yet turned into ``_``); ``len == len(ids)``.
        language: the language used: "en", "zh", "ja", or "mix" for tagged/automatically tagged text.
        tagged_text: the text the cleaner saw, e.g. ``[EN]Hello.[EN]``.
    """

    ids: list[int]
    langs: list[str]
    phonemes: str
    language: str
    tagged_text: str

    def __len__(self) -> int:
        return len(self.ids)


def prepare_text(text: str) -> str:
    """Normalise raw user text as ``generate_audio`` does (newlines out, plain spaces stripped), then apply
    our deliberate normalisations and checks (:func:`vallex.text.normalize_text`)."""
    if not isinstance(text, str):
        raise ValueError(f"Text must be a string, not {type(text).__name__}.")
    # The reference's order: remove "\n", strip " ". Other whitespace becomes " " only afterwards, so
    # text the reference handled (e.g. a tab collapsed by the English cleaner) gives identical output.
    return normalize_text(text.replace("\n", "").strip(" "))


def tag_text(text: str, language: str) -> tuple[str, str]:
    """Wrap prepared text in tags for ``language``; returns (tagged_text, language used)."""
    if language not in TOKENIZE_LANGUAGES:
        raise ValueError(
            f"Unknown language {language!r}: expected one of {', '.join(TOKENIZE_LANGUAGES)}."
        )
    if language == "auto-mix":
        if find_segments(text):
            return text, "mix"  # the user already tagged it: respect their tags
        for tag in TAGS.values():  # stray, unpaired tags would confuse the automatic tagging
            text = text.replace(tag, "")
        return auto_tag(text), "mix"
    if language == "mix":
        return text, "mix"
    if language == "auto":
        language = detect_language(text)
    tag = TAGS[language]
    return f"{tag}{text}{tag}", language


def tokenize(text: str, language: str = "auto", max_tokens: int | None = MAX_TOKENS) -> TextTokens:
    """Turn user text into the checkpoint's text tokens.

    Args:
        text: what to say. For ``language="mix"`` it must carry tags: ``[EN]Hi.[EN][ZH]你好。[ZH]``
            (untagged text is dropped, as in the reference).
        language: "en", "zh", "ja"; "auto" (langid restricted to en/zh/ja on the whole text); "mix"
            (user tags); "auto-mix" (tags runs of Latin vs CJK script automatically, see
            :func:`vallex.text.language.auto_tag`).
        max_tokens: longest accepted result (None: no limit, e.g. for training data).

    Returns:
        TextTokens with ids in 0..69 and one language per id.

    Raises:
        ValueError: empty or unpronounceable text, unsupported script or control characters, unknown
            language, text too long, or text that converts to nothing.
    """
    prepared = prepare_text(text)
    check_not_blank(prepared)
    if not has_pronounceable(prepared):
        raise ValueError(
            f"Text {text!r} has no letters or digits to pronounce; give words in English, Mandarin or "
            "Japanese."
        )
    tagged, used = tag_text(prepared, language)
    phonemes, langs = clean_tagged_text(tagged)
    if not phonemes:
        hint = (" With language='mix' only [EN]..[EN], [ZH]..[ZH], [JA]..[JA] spans are read; "
                "use 'auto-mix' to tag text automatically." if used == "mix" else "")
        raise ValueError(
            f"Text {text!r} gave no phonemes: nothing in it can be read as {used} (empty text).{hint}")
    ids = phonemes_to_ids(phonemes)
    if len(ids) != len(langs):
        # Only possible if the phonemes spell a special token such as "[UNK]" (the reference's assert).
        raise ValueError(f"Text {text!r} converts to an unencodable phoneme string {phonemes!r}.")
    if max_tokens is not None and len(ids) > max_tokens:
        raise ValueError(
            f"Text gives {len(ids)} tokens; one utterance takes at most {max_tokens}. {SPLIT_ADVICE}"
        )
    assert all(0 <= i < len(SYMBOLS) for i in ids)  # internal invariant of phonemes_to_ids
    return TextTokens(ids=ids, langs=langs, phonemes=phonemes, language=used, tagged_text=tagged)
