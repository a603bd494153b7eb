"""The checkpoint's text-token table (the reference's ``bpe_69.json``) as plain data.

The reference encodes phoneme strings with a Hugging Face BPE tokenizer that has 70 vocabulary entries and
no merges, so it is in effect a character table: one id per non-space character, ``[UNK]`` (0) for any
character not in the table, spaces become ``_`` first. This module reproduces that without the tokenizer
file or the ``tokenizers`` package.
"""
from __future__ import annotations

import re

#: Special tokens of the reference tokenizer (ids 0-4). Only ``[UNK]`` is ever produced by real text.
SPECIAL_TOKENS: tuple[str, ...] = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")

#: Phoneme characters, ids 5..69 in this order (sorted by code point, as in bpe_69.json).
_PHONEME_CHARS = (
    "!#*,-.=?NQ^_`abdefghijklmnopstuvwxyz~"
    "æçðŋɑɔəɛɥɪɫɯɸɹɾʃʊʑʒʰˈˌθ…⁼↑→↓"
)

#: All 70 entries: ``SYMBOLS[i]`` is the string of text-token id ``i``.
SYMBOLS: tuple[str, ...] = SPECIAL_TOKENS + tuple(_PHONEME_CHARS)

UNK_ID = 0
#: The character that stands for a word boundary (the reference replaces " " by "_").
SPACE_SYMBOL = "_"

SYMBOL_TO_ID: dict[str, int] = {symbol: i for i, symbol in enumerate(SYMBOLS)}

# HF tokenizers split added (special) tokens out before anything else, so the literal strings
# "[UNK]", "[CLS]", ... map to their own ids; everything else is one id per character.
_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))

assert len(SYMBOLS) == 70 and len(SYMBOL_TO_ID) == 70  # data integrity of the table above


def phonemes_to_ids(phonemes: str) -> list[int]:
    """Map a cleaned phoneme string to text-token ids (0..69), exactly as ``bpe_69.json`` would.

    Spaces are word boundaries and become ``_`` (id 16); unknown characters become ``[UNK]`` (0).
    Other whitespace (tab, NBSP, ...) is rejected: the reference tokenizer silently drops it and then
    fails its length check, so it has no valid encoding.
    """
    ids: list[int] = []
    pos = 0
    for match in [*_SPECIAL_RE.finditer(phonemes), None]:
        end = match.start() if match else len(phonemes)
        for char in phonemes[pos:end]:
            if char == " ":
                char = SPACE_SYMBOL
            elif char.isspace():
                raise ValueError(
                    f"Phoneme string contains whitespace {char!r} other than a plain space; "
                    "normalise the text first (vallex.text.normalize_text)."
                )
            ids.append(SYMBOL_TO_ID.get(char, UNK_ID))
        if match:
            ids.append(SYMBOL_TO_ID[match.group(0)])
            pos = match.end()
    return ids


def ids_to_phonemes(ids: list[int]) -> str:
    """Inverse of :func:`phonemes_to_ids` for display (``_`` shown as a space). Ids must be 0..69."""
    out = []
    for i in ids:
        if not 0 <= int(i) < len(SYMBOLS):
            raise ValueError(f"Text token id {i} is outside the table (0..{len(SYMBOLS) - 1}).")
        out.append(SYMBOLS[int(i)])
    return "".join(out).replace(SPACE_SYMBOL, " ")
