"""Notebook 1's exercises (the text front end): each checked against ``vallex.text`` itself.

* ``phonemes_to_ids``: map a phoneme string to text-token ids by the 70-entry table;
* ``language_ids``: the model's per-token language ids for ``[prompt transcript ; target text]``, mixed text and
  accent control included;
* ``auto_tag``: tag the runs of Latin and CJK script of a mixed text, as ``language="auto-mix"`` does.
"""
from __future__ import annotations

from collections.abc import Callable

from vallex.inference.generation import language_ids as library_language_ids
from vallex.languages import Languages
from vallex.text import SYMBOLS
from vallex.text import auto_tag as library_auto_tag
from vallex.text import phonemes_to_ids as library_phonemes_to_ids
from vallex.text.normalize import script_of

# Phoneme strings the real G2P produces for each language (tokenize's output in notebook 1), a word boundary,
# a character outside the table (espeak's length mark ː) and a literal special token.
PHONEME_CASES = (
    "ɪt kɔsts θɹi ˈdɔləɹz, ˈfɪfti sɛnts.",
    "wo↓↑ joʊ↓↑ san→k⁼ə↓ pʰiŋ↑k⁼wo↓↑.",
    "to↑okjoota↓waawa sa↓mbjakɯ*.",
    "gˈuːtən tˈɑːk",
    "",
)


def _first_difference(mine: list, truth: list) -> str:
    """Where two lists first differ, in a sentence."""
    for k, (a, b) in enumerate(zip(mine, truth)):
        if a != b:
            return f"at position {k} you give {a!r}, the library {b!r}"
    return f"you give {len(mine)} entries, the library {len(truth)}"


# Phonemes -> ids ------------------------------------------------------------------------------------------

def check_phonemes_to_ids(attempt: Callable[[str], list[int]]) -> str | None:
    """``attempt(phonemes)`` must equal :func:`vallex.text.phonemes_to_ids` on G2P output of three languages."""
    for phonemes in PHONEME_CASES:
        mine, truth = list(attempt(phonemes)), library_phonemes_to_ids(phonemes)
        if mine != truth:
            return f"for {phonemes!r} {_first_difference(mine, truth)}."
    return None


def answer_phonemes_to_ids(phonemes: str) -> list[int]:
    """One id per character: a space is the word boundary ``_``; a character not in the table is [UNK] = 0."""
    index = {symbol: i for i, symbol in enumerate(SYMBOLS)}
    return [index.get("_" if char == " " else char, 0) for char in phonemes]


def stub_phonemes_to_ids(phonemes: str) -> list[int]:
    """As shipped: Unicode code points, which are not the model's ids."""
    return [ord(char) for char in phonemes]


# Language ids -----------------------------------------------------------------------------------------------

#: (prompt tokens, prompt language, target tokens' languages, accent): a Mandarin prompt before mixed text,
#: accent control in both directions, and a prompt-less case.
LANGUAGE_ID_CASES = (
    (3, "zh", ["zh", "zh", "en", "en", "en", "zh"], None),
    (4, "en", ["en"] * 5, "zh"),
    (2, "ja", ["en", "en", "ja", "ja"], "ja"),
    (0, "en", ["ja", "zh", "en"], None),
)


def check_language_ids(attempt: Callable[[int, str, list[str], str | None], list[int]]) -> str | None:
    """``attempt(prompt_len, prompt_language, target_langs, accent)`` must equal the library's
    :func:`vallex.inference.generation.language_ids` (what the model is given)."""
    for prompt_len, prompt_language, target_langs, accent in LANGUAGE_ID_CASES:
        truth = library_language_ids(prompt_len + len(target_langs), prompt_len, prompt_language,
                                     target_langs if accent is None else accent).tolist()
        mine = [int(i) for i in attempt(prompt_len, prompt_language, list(target_langs), accent)]
        if mine != truth:
            case = f"prompt {prompt_len}×{prompt_language}, target {target_langs}, accent={accent}"
            return f"for {case}: {_first_difference(mine, truth)}."
    return None


def answer_language_ids(prompt_len: int, prompt_language: str, target_langs: list[str],
                        accent: str | None) -> list[int]:
    """Prompt tokens speak the prompt's language; target tokens their own, or all the accent's."""
    row = Languages.public().row  # en=0, zh=1, ja=2: the checkpoint's language-embedding rows
    target = target_langs if accent is None else [accent] * len(target_langs)
    return [row(lang) for lang in [prompt_language] * prompt_len + target]


def stub_language_ids(prompt_len: int, prompt_language: str, target_langs: list[str],
                      accent: str | None) -> list[int]:
    """As shipped: everything English."""
    return [0] * (prompt_len + len(target_langs))


# Automatic tagging ------------------------------------------------------------------------------------------

#: Mixed texts with letters (a text without any goes to langid, not to the script rule).
AUTO_TAG_CASES = (
    "我喜欢 machine learning 和 deep learning。",
    "今日はGoogleで検索した。",
    "Hello, 世界!",
    "3 apples 和 2 个橙子",
    "東京 is big",
    "plain English only.",
)


def check_auto_tag(attempt: Callable[[str], str]) -> str | None:
    """``attempt(text)`` must equal :func:`vallex.text.auto_tag` (en/zh/ja) on mixed-script texts."""
    for text in AUTO_TAG_CASES:
        mine, truth = attempt(text), library_auto_tag(text)
        if mine != truth:
            return f"for {text!r} you give {mine!r}, the library {truth!r}."
    return None


def answer_auto_tag(text: str) -> str:
    """Runs of Latin vs CJK script; neutral characters join the run before (at the start, the first run);
    CJK is Japanese where the text has kana anywhere, else Mandarin; same-language neighbours merge."""
    runs: list[list] = []  # [kind or None, text]
    for char in text:
        script = script_of(char)
        kind = "latin" if script == "latin" else "cjk" if script in ("han", "kana", "bopomofo") else None
        if runs and (kind is None or runs[-1][0] in (kind, None)):
            runs[-1][1] += char
            runs[-1][0] = runs[-1][0] or kind
        else:
            runs.append([kind, char])
    cjk = "ja" if any(script_of(char) == "kana" for char in text) else "zh"
    tagged: list[list[str]] = []
    for kind, chunk in runs:
        lang = "en" if kind == "latin" else cjk
        if tagged and tagged[-1][0] == lang:
            tagged[-1][1] += chunk
        else:
            tagged.append([lang, chunk])
    return "".join(f"[{lang.upper()}]{chunk}[{lang.upper()}]" for lang, chunk in tagged)


def stub_auto_tag(text: str) -> str:
    """As shipped: the whole text tagged English."""
    return f"[EN]{text}[EN]"
