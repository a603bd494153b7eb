"""Input checks and the deliberate normalisations applied before any G2P.

The reference tokenizer drops whitespace other than " " (tab, NBSP, U+3000 ideographic space) inside
its BPE pre-tokenizer and then fails a bare ``assert`` on the length mismatch. We instead turn every
Unicode space into a plain space up front, and reject what no front end can pronounce with a ValueError
that says what to do. Nothing here changes text the reference handles correctly, so the goldens hold.

Rules (in this order):
1. ``\\n`` and ``\\r`` are removed (the reference's ``generate_audio`` removes ``\\n``; a ``\\r\\n`` file
   ending must not leave a stray ``\\r``).
2. Tabs, NBSP, U+3000 and every other Unicode space separator become " ".
3. A leading byte-order mark and zero-width spaces/joiners (U+FEFF, U+200B-U+200D, U+2060) are removed:
   they are invisible and carry no sound.
4. Any other control character (Unicode Cc), a lone surrogate or a private-use character is an error.
5. Letters from a script the checkpoint was not trained on (Hangul, Arabic, Cyrillic, Greek, ...) are an
   error: the reference would silently read them as "[UNK]" tokens or as English spelled out by
   unidecode.
6. Text longer than :data:`MAX_INPUT_CHARS` is an error (long text is spoken sentence by sentence, so the
   message asks for sentence punctuation).
"""
from __future__ import annotations

import re
import unicodedata

#: Longest raw text accepted for one utterance. A sentence of ~35 s of speech is ~500 characters of
#: English; longer input belongs in the long-text path (split_sentences) and would only make G2P slow.
MAX_INPUT_CHARS = 1000
#: What to tell the user whose text is too long for one sentence: something they can change in their input.
SPLIT_ADVICE = ("Add sentence punctuation (. ! ? or 。！？) so the text can be spoken sentence by sentence, "
                "or split it into shorter pieces.")

_REMOVED = {"\n", "\r", "\ufeff", "\u200b", "\u200c", "\u200d", "\u2060"}


def script_of(char: str) -> str:
    """Classify one character: "latin", "han", "kana", "bopomofo", "other" (letters of other scripts),
    or "neutral" (digits, punctuation, symbols, spaces, combining marks: belong to no script)."""
    code = ord(char)
    if 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF or 0xFF66 <= code <= 0xFF9D:
        # Hiragana, Katakana (incl. the prolonged sound mark U+30FC), phonetic extensions, halfwidth kana.
        return "kana"
    if (0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF
            or 0x20000 <= code <= 0x2FA1F or code in (0x3005, 0x3006, 0x3007)):
        # CJK ideographs (+ Ext. A-F, compatibility), and 々 〆 〇 which behave like kanji.
        return "han"
    if 0x3100 <= code <= 0x312F or 0x31A0 <= code <= 0x31BF:
        return "bopomofo"
    category = unicodedata.category(char)
    if not category.startswith("L"):
        return "neutral"
    name = unicodedata.name(char, "")
    if "LATIN" in name:
        return "latin"
    if category == "Lm" and code < 0x0370:
        # Spacing modifier letters (ˈ ˌ ʰ ...) used in phonetic notation: no script of their own.
        return "neutral"
    return "other"


def normalize_text(text: str, any_script: bool = False) -> str:
    """Apply the rules of this module's docstring; return the normalised text or raise ValueError.

    ``any_script=True`` skips rule 5 (for the espeak front end, which reads other scripts)."""
    if not isinstance(text, str):
        raise ValueError(f"Text must be a string, not {type(text).__name__}.")
    if len(text) > MAX_INPUT_CHARS:
        raise ValueError(
            f"Text is {len(text)} characters long; one sentence takes at most {MAX_INPUT_CHARS}. "
            f"{SPLIT_ADVICE}"
        )
    out = []
    for char in text:
        if char in _REMOVED:
            continue
        category = unicodedata.category(char)
        if category == "Zs" or char in "\t\v\f\x1c\x1d\x1e\x1f\x85\u2028\u2029":
            # \v \f and the information separators count as whitespace for str.split(); treat them alike.
            out.append(" ")
            continue
        if category in ("Cc", "Cs", "Co"):
            raise ValueError(
                f"Text contains the control or unassigned-use character U+{ord(char):04X} at position "
                f"{len(out)}; remove it (only printable text can be spoken)."
            )
        if not any_script and script_of(char) == "other":
            raise ValueError(
                f"Text contains {char!r} (U+{ord(char):04X}, {unicodedata.name(char, 'unnamed')}), a script "
                "the model cannot speak; supported are English (Latin letters), Mandarin (Chinese "
                "characters) and Japanese (kana and kanji)."
            )
        out.append(char)
    return "".join(out)


def check_not_blank(text: str) -> None:
    """Raise ValueError if ``text`` has nothing but spaces (after :func:`normalize_text`)."""
    if not text.strip(" "):
        raise ValueError("Text is empty or only whitespace; give at least one word to speak.")


_PRONOUNCEABLE_RE = re.compile(r"\w")


def has_pronounceable(text: str) -> bool:
    """True if ``text`` has at least one letter or digit (word character) of any script."""
    return bool(_PRONOUNCEABLE_RE.search(text))
