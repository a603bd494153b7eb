"""Intelligibility: word error rate (English) and character error rate (Mandarin, Japanese).

The text of both sides (what the model was asked to say, what the ASR heard) goes through the same
normalisation before the Levenshtein alignment (``jiwer``), so that punctuation, case and spacing are not
counted as errors. The exact rules, applied in this order (see also ``vallex/evaluation/README.md``):

1. Unicode NFKC (full-width Latin letters and digits become ASCII, compatibility forms are unfolded),
   then ``str.lower()``.
2. English only: an apostrophe (``'`` or ``’``) between two letters or digits is kept as ``'``
   ("don't", "rock'n'roll"); every other character whose Unicode category is punctuation (P*) or symbol
   (S*) becomes a space (so "well-known" is two words, as an ASR usually writes it).
   Mandarin / Japanese: every punctuation or symbol character is removed.
3. Tokens: English splits on whitespace (words); Mandarin / Japanese drop all whitespace and take every
   remaining character as a token (so Latin letters inside CJK text count one per letter).

Nothing else is changed: numbers are not spelled out, traditional characters are not converted to
simplified, kana and kanji are not unified. Write evaluation texts with the numbers spelled out.

Error rate of one line = (S + D + I) / N, with S, D, I the substitutions, deletions and insertions of the
minimum-edit alignment and N the reference token count. It can exceed 1 (many insertions).
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vallex.languages import LANGUAGES

#: Which metric each language is scored with.
METRIC_FOR_LANGUAGE = {"en": "wer", "zh": "cer", "ja": "cer"}

_APOSTROPHES = "'\u2019"
# An apostrophe with a letter/digit on both sides (checked after lower-casing and NFKC).
_INNER_APOSTROPHE = re.compile(r"(?<=\w)['\u2019](?=\w)")
_APOSTROPHE_MARK = "\u0000"  # a placeholder no real text holds, protected from the punctuation pass


@dataclass(frozen=True)
class ErrorCounts:
    """Edit counts of one or many aligned (reference, hypothesis) pairs."""

    substitutions: int
    deletions: int
    insertions: int
    reference_length: int  # N: tokens (words or characters) in the normalised reference

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """(S + D + I) / N; ``nan`` when the reference is empty."""
        return self.errors / self.reference_length if self.reference_length else float("nan")

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(self.substitutions + other.substitutions, self.deletions + other.deletions,
                           self.insertions + other.insertions, self.reference_length + other.reference_length)


def metric_for(language: str) -> str:
    """``"wer"`` for English, ``"cer"`` for Mandarin and Japanese."""
    if language not in METRIC_FOR_LANGUAGE:
        raise ValueError(f"No error-rate metric for language {language!r}: expected one of {', '.join(LANGUAGES)}.")
    return METRIC_FOR_LANGUAGE[language]


def _is_punctuation_or_symbol(char: str) -> bool:
    return unicodedata.category(char)[0] in "PS"


def normalize_text(text: str, language: str) -> str:
    """``text`` normalised for scoring (rules 1-2 of the module docstring), whitespace collapsed."""
    metric = metric_for(language)
    text = unicodedata.normalize("NFKC", text).lower()
    if metric == "wer":
        text = _INNER_APOSTROPHE.sub(_APOSTROPHE_MARK, text)
        text = "".join(" " if _is_punctuation_or_symbol(c) else c for c in text)
        text = text.replace(_APOSTROPHE_MARK, "'")
    else:
        text = "".join(c for c in text if not _is_punctuation_or_symbol(c))
    return " ".join(text.split())


def tokens_for_scoring(text: str, language: str) -> list[str]:
    """Normalised tokens: words for English, non-space characters for Mandarin and Japanese."""
    normalized = normalize_text(text, language)
    if metric_for(language) == "wer":
        return normalized.split()
    return [c for c in normalized if not c.isspace()]


def error_counts(reference: str, hypothesis: str, language: str) -> ErrorCounts:
    """Edit counts between the normalised ``reference`` and ``hypothesis`` (jiwer's alignment).

    Raises:
        ValueError: the reference has no token left after normalisation (nothing to score against).
    """
    ref = tokens_for_scoring(reference, language)
    if not ref:
        raise ValueError(f"The reference text {reference!r} has no words left after normalisation "
                         "(punctuation only?): give a text with words to score against.")
    return token_error_counts(ref, tokens_for_scoring(hypothesis, language))


def token_error_counts(reference: Sequence[str], hypothesis: Sequence[str]) -> ErrorCounts:
    """Edit counts between two token sequences (no normalisation; tokens must hold no whitespace).

    Raises:
        ValueError: the reference is empty.
    """
    import jiwer

    if not reference:
        raise ValueError("Cannot score against an empty reference.")
    if any(not token or any(c.isspace() for c in token) for token in (*reference, *hypothesis)):
        raise ValueError("Tokens to align must be non-empty and hold no whitespace.")
    if not hypothesis:  # jiwer needs a non-empty string; an empty hypothesis deletes every reference token
        return ErrorCounts(0, len(reference), 0, len(reference))
    # Tokens joined by spaces: jiwer's word alignment then works on any tokens (characters for CER too).
    output = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return ErrorCounts(output.substitutions, output.deletions, output.insertions, len(reference))


def error_rate(reference: str, hypothesis: str, language: str) -> float:
    """WER (en) or CER (zh, ja) of one line: (S + D + I) / N after normalisation."""
    return error_counts(reference, hypothesis, language).rate


def pooled(counts: Iterable[ErrorCounts]) -> ErrorCounts:
    """Sum of the counts: its ``rate`` is the corpus-level error rate sum(S+D+I) / sum(N)."""
    total = ErrorCounts(0, 0, 0, 0)
    for item in counts:
        total = total + item
    return total
