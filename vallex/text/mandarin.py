"""Mandarin G2P: the reference's ``chinese_to_ipa`` (jieba + pypinyin bopomofo -> IPA with tone arrows).

Pipeline, in the reference's order: numbers -> Chinese numerals (cn2an), word segmentation (jieba), bopomofo per word
(pypinyin), Latin letters -> bopomofo of their English names, bopomofo -> IPA in a fixed order, then the
regex post-rules. Tones: ``→`` 1, ``↑`` 2, ``↓↑`` 3, ``↓`` 4, neutral tone unmarked.
"""
from __future__ import annotations

import functools
import logging
import re
import warnings

# Letter -> bopomofo of its English name. The replacements hold no Latin letters, so order only
# matters for matching, never for cascades.
_LATIN_TO_BOPOMOFO = [
    (re.compile(letter, re.IGNORECASE), bopomofo)
    for letter, bopomofo in [
        ("a", "ㄟˉ"), ("b", "ㄅㄧˋ"), ("c", "ㄙㄧˉ"), ("d", "ㄉㄧˋ"), ("e", "ㄧˋ"), ("f", "ㄝˊㄈㄨˋ"),
        ("g", "ㄐㄧˋ"), ("h", "ㄝˇㄑㄩˋ"), ("i", "ㄞˋ"), ("j", "ㄐㄟˋ"), ("k", "ㄎㄟˋ"), ("l", "ㄝˊㄛˋ"),
        ("m", "ㄝˊㄇㄨˋ"), ("n", "ㄣˉ"), ("o", "ㄡˉ"), ("p", "ㄆㄧˉ"), ("q", "ㄎㄧㄡˉ"), ("r", "ㄚˋ"),
        ("s", "ㄝˊㄙˋ"), ("t", "ㄊㄧˋ"), ("u", "ㄧㄡˉ"), ("v", "ㄨㄧˉ"), ("w", "ㄉㄚˋㄅㄨˋㄌㄧㄡˋ"),
        ("x", "ㄝˉㄎㄨˋㄙˋ"), ("y", "ㄨㄞˋ"), ("z", "ㄗㄟˋ"),
    ]
]

# Applied one after the other in exactly this order: multi-letter finals (ㄧㄢ, ㄩㄢ, ...) must be
# replaced before their single letters.
_BOPOMOFO_TO_IPA = [
    ("ㄅㄛ", "p⁼wo"), ("ㄆㄛ", "pʰwo"), ("ㄇㄛ", "mwo"), ("ㄈㄛ", "fwo"), ("ㄅ", "p⁼"), ("ㄆ", "pʰ"),
    ("ㄇ", "m"), ("ㄈ", "f"), ("ㄉ", "t⁼"), ("ㄊ", "tʰ"), ("ㄋ", "n"), ("ㄌ", "l"), ("ㄍ", "k⁼"),
    ("ㄎ", "kʰ"), ("ㄏ", "x"), ("ㄐ", "tʃ⁼"), ("ㄑ", "tʃʰ"), ("ㄒ", "ʃ"), ("ㄓ", "ts`⁼"), ("ㄔ", "ts`ʰ"),
    ("ㄕ", "s`"), ("ㄖ", "ɹ`"), ("ㄗ", "ts⁼"), ("ㄘ", "tsʰ"), ("ㄙ", "s"), ("ㄚ", "a"), ("ㄛ", "o"),
    ("ㄜ", "ə"), ("ㄝ", "ɛ"), ("ㄞ", "aɪ"), ("ㄟ", "eɪ"), ("ㄠ", "ɑʊ"), ("ㄡ", "oʊ"), ("ㄧㄢ", "jɛn"),
    ("ㄩㄢ", "ɥæn"), ("ㄢ", "an"), ("ㄧㄣ", "in"), ("ㄩㄣ", "ɥn"), ("ㄣ", "ən"), ("ㄤ", "ɑŋ"),
    ("ㄧㄥ", "iŋ"), ("ㄨㄥ", "ʊŋ"), ("ㄩㄥ", "jʊŋ"), ("ㄥ", "əŋ"), ("ㄦ", "əɻ"), ("ㄧ", "i"), ("ㄨ", "u"),
    ("ㄩ", "ɥ"), ("ˉ", "→"), ("ˊ", "↑"), ("ˇ", "↓↑"), ("ˋ", "↓"), ("˙", ""), ("，", ","), ("。", "."),
    ("！", "!"), ("？", "?"), ("—", "-"),
]

_NUMBER_RE = re.compile(r"\d+(?:\.?\d+)?")
_HAN_RE = re.compile("[\u4e00-\u9fff]")
_TONE1_RE = re.compile(r"([\u3105-\u3129])$")
_POST_RULES = [
    (re.compile(r"i([aoe])"), r"j\1"),
    (re.compile(r"u([aoəe])"), r"w\1"),
    # Retroflex syllabic vowel after zh/ch/sh/r, then the apical one after z/c/s.
    (re.compile(r"([sɹ]`[⁼ʰ]?)([→↓↑ ]+|$)"), r"\1ɹ`\2"),
    (re.compile("ɻ"), "ɹ`"),
    (re.compile(r"([s][⁼ʰ]?)([→↓↑ ]+|$)"), r"\1ɹ\2"),
]


@functools.lru_cache(maxsize=1)
def _jieba():
    """The jieba module, initialised once (it builds a cache file and logs to stderr on first use)."""
    with warnings.catch_warnings():
        # jieba 0.42 imports setuptools' deprecated pkg_resources (a UserWarning, a DeprecationWarning in later
        # setuptools), on every process's first Mandarin text: a warning users cannot act on.
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=Warning)
        import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def number_to_chinese(text: str) -> str:
    """Replace each number by Chinese numerals (first occurrence each, in order, as the reference)."""
    import cn2an

    for number in _NUMBER_RE.findall(text):
        try:
            spoken = cn2an.an2cn(number)
        except Exception as exc:  # cn2an raises its own types for digits it cannot read
            raise ValueError(
                f"Cannot read the number {number!r} in Mandarin text ({exc}); write it with digits 0-9 "
                "or in Chinese characters."
            ) from exc
        text = text.replace(number, spoken, 1)
    return text


def chinese_to_bopomofo(text: str) -> str:
    """Segment with jieba and convert each word with a Chinese character to bopomofo; other words
    (Latin, punctuation) pass through verbatim. Words are separated by a space."""
    from pypinyin import BOPOMOFO, lazy_pinyin

    text = text.replace("、", "，").replace("；", "，").replace("：", "，")
    out = ""
    for word in _jieba().lcut(text, cut_all=False):
        if not _HAN_RE.search(word):
            out += word
            continue
        # Tone 1 is unmarked in pypinyin's bopomofo: mark it so the tone arrow table sees it.
        syllables = [_TONE1_RE.sub(r"\1ˉ", s) for s in lazy_pinyin(word, BOPOMOFO)]
        if out != "":
            out += " "
        out += "".join(syllables)
    return out


def chinese_to_ipa(text: str) -> str:
    """Mandarin text -> IPA with tone arrows, as the reference's ``chinese_to_ipa``."""
    text = number_to_chinese(text)
    text = chinese_to_bopomofo(text)
    for regex, bopomofo in _LATIN_TO_BOPOMOFO:
        text = regex.sub(bopomofo, text)
    for bopomofo, ipa in _BOPOMOFO_TO_IPA:
        text = text.replace(bopomofo, ipa)
    for regex, replacement in _POST_RULES:
        text = regex.sub(replacement, text)
    return text
