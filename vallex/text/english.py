"""English G2P: the reference's ``english_to_ipa2`` (keithito-style normalisation + CMU dict IPA).

Pipeline, in the reference's order: unidecode + lowercase, abbreviations, numbers/currency/ordinals, ``eng_to_ipa``,
collapse whitespace, dark L, ``r``->``ɹ``, ``ʤ``->``dʒ``, ``ʧ``->``tʃ``, ``...``->``…``. Words missing from
the CMU dictionary come back spelled with a trailing ``*``; the checkpoint was trained on exactly that.
"""
from __future__ import annotations

import functools
import re

# (abbreviation, expansion) in the reference's order: "mrs" must come before "mr".
_ABBREVIATIONS = [
    (re.compile(rf"\b{abbr}\.", re.IGNORECASE), expansion)
    for abbr, expansion in [
        ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"),
        ("jr", "junior"), ("maj", "major"), ("gen", "general"), ("drs", "doctors"), ("rev", "reverend"),
        ("lt", "lieutenant"), ("hon", "honorable"), ("sgt", "sergeant"), ("capt", "captain"),
        ("esq", "esquire"), ("ltd", "limited"), ("col", "colonel"), ("ft", "fort"),
    ]
]

_COMMA_NUMBER_RE = re.compile(r"([0-9][0-9\,]+[0-9])")
_DECIMAL_NUMBER_RE = re.compile(r"([0-9]+\.[0-9]+)")
_POUNDS_RE = re.compile(r"£([0-9\,]*[0-9]+)")
_DOLLARS_RE = re.compile(r"\$([0-9\.\,]*[0-9]+)")
_ORDINAL_RE = re.compile(r"[0-9]+(st|nd|rd|th)")
_NUMBER_RE = re.compile(r"[0-9]+")
_DARK_L_RE = re.compile(r"l([^aeiouæɑɔəɛɪʊ ]*(?: |$))")
_WHITESPACE_RE = re.compile(r"\s+")
_IPA_TO_IPA2 = [("r", "ɹ"), ("ʤ", "dʒ"), ("ʧ", "tʃ")]


@functools.lru_cache(maxsize=1)
def _cmu_dictionary() -> dict[str, list[str]]:
    """eng_to_ipa's CMU dictionary (word -> CMU pronunciations), read from its SQLite file once.

    ``eng_to_ipa.convert`` opens that file and scans all 134k rows (there is no index) on every call,
    ~25 ms per sentence; a dict in memory (~0.3 s to build, once) gives identical results ~30x faster.
    """
    import sqlite3
    from pathlib import Path

    import eng_to_ipa

    path = Path(eng_to_ipa.__file__).parent / "resources" / "CMU_dict.db"
    # Read-only URI: never create or modify anything in site-packages.
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT word, phonemes FROM dictionary ORDER BY id").fetchall()
    conn.close()
    table: dict[str, list[str]] = {}
    for word, phonemes in rows:
        table.setdefault(word, []).append(phonemes)
    return table


def eng_to_ipa_convert(text: str) -> str:
    """Same result as ``eng_to_ipa.convert(text)`` (package defaults), with the dictionary in memory.

    It reuses eng_to_ipa's own steps (punctuation handling, CMU -> IPA, stress, choice of the variant)
    and only replaces the dictionary lookup (``get_cmu``), so the output is the package's.
    """
    from eng_to_ipa import transcribe

    table = _cmu_dictionary()
    words = [transcribe.preserve_punc(w.lower())[0] for w in text.split()]
    # get_cmu: every pronunciation of a known word, or the word marked "__IGNORE__" (spelled + "*").
    cmu = [table.get(w[1]) or ["__IGNORE__" + w[1]] for w in words]
    ipa = transcribe.cmu_to_ipa(cmu, stress_marking="both")
    ipa = transcribe._punct_replace_word(words, ipa)
    return transcribe.get_top(ipa)


@functools.lru_cache(maxsize=1)
def _inflect_engine():
    # inflect takes ~2 s to import: load it on first use, once.
    import inflect

    return inflect.engine()


def _expand_dollars(match: re.Match) -> str:
    amount = match.group(1)
    parts = amount.split(".")
    if len(parts) > 2:
        return amount + " dollars"  # unexpected format, kept as the reference does
    dollars = int(parts[0]) if parts[0] else 0
    cents = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    if dollars and cents:
        dollar_unit = "dollar" if dollars == 1 else "dollars"
        cent_unit = "cent" if cents == 1 else "cents"
        return f"{dollars} {dollar_unit}, {cents} {cent_unit}"
    if dollars:
        return f"{dollars} {'dollar' if dollars == 1 else 'dollars'}"
    if cents:
        return f"{cents} {'cent' if cents == 1 else 'cents'}"
    return "zero dollars"


def _expand_number(match: re.Match) -> str:
    words = _inflect_engine().number_to_words
    num = int(match.group(0))
    if 1000 < num < 3000:
        # Years are read in pairs ("nineteen ninety-nine"), as the reference does.
        if num == 2000:
            return "two thousand"
        if 2000 < num < 2010:
            return "two thousand " + words(num % 100)
        if num % 100 == 0:
            return words(num // 100) + " hundred"
        return words(num, andword="", zero="oh", group=2).replace(", ", " ")
    return words(num, andword="")


def normalize_numbers(text: str) -> str:
    """Spell out numbers, currency and ordinals (order matters: commas, £, $, decimals, ordinals, ints)."""
    text = _COMMA_NUMBER_RE.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _POUNDS_RE.sub(r"\1 pounds", text)
    text = _DOLLARS_RE.sub(_expand_dollars, text)
    text = _DECIMAL_NUMBER_RE.sub(lambda m: m.group(1).replace(".", " point "), text)
    text = _ORDINAL_RE.sub(lambda m: _inflect_engine().number_to_words(m.group(0)), text)
    return _NUMBER_RE.sub(_expand_number, text)


def english_to_ipa(text: str) -> str:
    """English text -> IPA string with stress marks, as the reference's ``english_to_ipa2``."""
    from unidecode import unidecode

    text = unidecode(text).lower()
    for regex, expansion in _ABBREVIATIONS:
        text = regex.sub(expansion, text)
    try:
        text = normalize_numbers(text)
    except Exception as exc:  # inflect raises NumOutOfRangeError for numbers beyond its range
        raise ValueError(
            f"Cannot read a number in {text!r} in English ({type(exc).__name__}: {exc}); numbers up to "
            "36 digits can be spoken: shorten it or write it in words."
        ) from exc
    phonemes = eng_to_ipa_convert(text)
    phonemes = _WHITESPACE_RE.sub(" ", phonemes)
    # Dark L: an "l" followed only by consonants up to the end of the word.
    phonemes = _DARK_L_RE.sub(lambda m: "ɫ" + m.group(1), phonemes)
    for old, new in _IPA_TO_IPA2:
        phonemes = phonemes.replace(old, new)
    return phonemes.replace("...", "…")
