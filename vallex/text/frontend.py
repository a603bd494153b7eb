"""``tokenize``: user text -> the text-token ids and per-token languages the checkpoint expects.

This reproduces what the reference's ``generate_audio`` feeds the model (its first three steps): newlines
removed, plain spaces stripped, the text wrapped in its language tag (``[EN]text[EN]``; none for "mix"),
cleaned to a phoneme string (:mod:`vallex.text.cleaners`), spaces turned into ``_``, one id per character.
A voice prompt's transcript is tokenized the same way (the reference's make_prompt does TAG+text+TAG).
"""
from __future__ import annotations

from vallex.languages import NATIVE_G2P_LANGUAGES, Languages, language_tag

from .cleaners import clean_tagged_segments, find_segments, segment_language
from .espeak import EspeakFrontend, espeak_ids
from .language import auto_tag, detect_language
from .normalize import SPLIT_ADVICE, check_not_blank, has_pronounceable, normalize_text
from .symbols import SYMBOLS, phonemes_to_ids
from .tokens import TextTokens

#: Values accepted for ``language`` with the public checkpoint (a model's own: ``Languages.text_choices``).
TOKENIZE_LANGUAGES: tuple[str, ...] = Languages.public().text_choices

#: Most text tokens accepted for one utterance. English speech runs at ~12-15 phonemes per second, so
#: this is ~35-40 s of speech, beyond what a prompt-conditioned utterance of the checkpoint should hold;
#: longer text belongs in the long-text path (split_sentences, one sentence at a time).
MAX_TOKENS = 512


def prepare_text(text: str, any_script: bool = False) -> str:
    """Normalise raw user text as ``generate_audio`` does (newlines out, plain spaces stripped), then apply
    our deliberate normalisations and checks (:func:`vallex.text.normalize_text`; ``any_script`` for a model
    that speaks espeak-ng languages, whose letters may be of any script)."""
    if not isinstance(text, str):
        raise ValueError(f"Text must be a string, not {type(text).__name__}.")
    # The reference's order: remove "\n", strip " ". Other whitespace becomes " " only afterwards, so
    # text the reference handled (e.g. a tab collapsed by the English cleaner) gives identical output.
    return normalize_text(text.replace("\n", "").strip(" "), any_script=any_script)


def tag_text(text: str, language: str, languages: Languages | None = None) -> tuple[str, str]:
    """Wrap prepared text in tags for ``language`` (one of ``languages.text_choices``, default the public
    checkpoint's); returns (tagged_text, language used)."""
    table = languages or Languages.public()
    if language not in table.text_choices:
        raise ValueError(
            f"Unknown language {language!r}: expected one of {', '.join(table.text_choices)}."
        )
    if language == "auto-mix":
        if find_segments(text, table.codes):
            return text, "mix"  # the user already tagged it: respect their tags
        for code in table.codes:  # stray, unpaired tags would confuse the automatic tagging
            text = text.replace(language_tag(code), "")
        return auto_tag(text, table.codes), "mix"
    if language == "mix":
        return text, "mix"
    if language == "auto":
        language = detect_language(text, table.codes)
    tag = language_tag(language)
    return f"{tag}{text}{tag}", language


def tokenize_language(text: str, language: str, max_tokens: int | None = MAX_TOKENS) -> TextTokens:
    """Text in one language: the checkpoint's G2P for en/zh/ja, espeak-ng (:class:`vallex.text.EspeakFrontend`)
    for any other espeak-ng code. ``vallex prepare-data`` phonemises its data with it, so a model trained on
    a new language reads that language's text exactly as it was trained."""
    if language in NATIVE_G2P_LANGUAGES:
        return tokenize(text, language, max_tokens)
    return EspeakFrontend(language, max_tokens=max_tokens).tokenize(text)


def tokenize(text: str, language: str = "auto", max_tokens: int | None = MAX_TOKENS,
             languages: Languages | None = None) -> TextTokens:
    """Turn user text into the model's text tokens.

    Args:
        text: what to say. For ``language="mix"`` it must carry tags: ``[EN]Hi.[EN][ZH]你好。[ZH]``
            (untagged text is dropped, as in the reference).
        language: a language of ``languages``; "auto" (langid restricted to them, on the whole text); "mix"
            (user tags; ``[DE]..[DE]`` for a model that speaks "de"); "auto-mix" (tags runs of alphabetic vs
            CJK script automatically, see :func:`vallex.text.language.auto_tag`).
        max_tokens: longest accepted result (None: no limit, e.g. for training data).
        languages: the languages the model speaks (``VallEX.languages``); default the public checkpoint's
            en/zh/ja, for which the result is the reference's.

    Returns:
        TextTokens with one language per id (ids in 0..69 for en/zh/ja).

    Raises:
        ValueError: empty or unpronounceable text, unsupported script or control characters, unknown
            language, text too long, or text that converts to nothing.
    """
    table = languages or Languages.public()
    if language in table.espeak:
        return tokenize_language(text, language, max_tokens)
    prepared = prepare_text(text, any_script=bool(table.espeak))
    check_not_blank(prepared)
    if not has_pronounceable(prepared):
        speaks = ("English, Mandarin or Japanese" if not table.espeak else
                  f"a language this model speaks ({table})")
        raise ValueError(f"Text {text!r} has no letters or digits to pronounce; give words in {speaks}.")
    tagged, used = tag_text(prepared, language, table)
    if used in table.espeak:  # "auto" found an espeak-ng language: read the text as that language alone
        return tokenize_language(text, used, max_tokens)
    if table.espeak:  # letters of other scripts were let through for those languages, not for en/zh/ja
        for segment in find_segments(tagged, table.codes):
            if segment_language(segment, table.codes) in NATIVE_G2P_LANGUAGES:
                normalize_text(segment)
    segments = clean_tagged_segments(tagged, table.codes)
    phonemes = "".join(converted for _, converted in segments)
    langs = [lang for lang, converted in segments for _ in converted]
    if not phonemes:
        tags = ", ".join(f"{language_tag(c)}..{language_tag(c)}" for c in table.codes)
        hint = (f" With language='mix' only {tags} spans are read; "
                "use 'auto-mix' to tag text automatically." if used == "mix" else "")
        raise ValueError(
            f"Text {text!r} gave no phonemes: nothing in it can be read as {used} (empty text).{hint}")
    ids = [i for lang, converted in segments for i in _segment_ids(converted, lang)]
    if len(ids) != len(langs):
        # Only possible if the phonemes spell a special token such as "[UNK]" (the reference's assert).
        raise ValueError(f"Text {text!r} converts to an unencodable phoneme string {phonemes!r}.")
    if max_tokens is not None and len(ids) > max_tokens:
        raise ValueError(
            f"Text gives {len(ids)} tokens; one utterance takes at most {max_tokens}. {SPLIT_ADVICE}"
        )
    if not table.espeak:
        assert all(0 <= i < len(SYMBOLS) for i in ids)  # internal invariant of phonemes_to_ids
    return TextTokens(ids=ids, langs=langs, phonemes=phonemes, language=used, tagged_text=tagged)


def _segment_ids(phonemes: str, language: str) -> list[int]:
    """Ids of one segment's phonemes: the checkpoint's table for en/zh/ja, the espeak-ng table for the others
    (each as prepare-data encoded that language)."""
    if language in NATIVE_G2P_LANGUAGES:
        return phonemes_to_ids(phonemes)
    return espeak_ids(phonemes)
