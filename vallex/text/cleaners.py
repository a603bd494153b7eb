"""Tagged text -> phoneme string and per-character languages (the reference's ``cje_cleaners``).

Tagged text is ``[EN]...[EN][ZH]...[ZH][JA]...[JA]``. The reference semantics are kept exactly, because
the checkpoint and the goldens follow them:

- every non-greedy match of ``[EN](.*?)[EN]``, ``[ZH](.*?)[ZH]``, ``[JA](.*?)[JA]`` is a segment; segments
  are taken in order of their start (``.`` does not cross newlines); text outside segments is dropped;
- each segment is converted, gets a trailing "." unless it ends in ``. , ! ? - … ~``, and all its
  characters get the segment's language; segments are joined with no separator;
- a segment's language is "en" if it contains ``[EN]``, else "zh" if ``[ZH]``, else "ja" (this only
  matters for nested tags, which only arise when already-tagged text is tagged again).
"""
from __future__ import annotations

import re
from collections.abc import Callable

from .english import english_to_ipa
from .japanese import japanese_to_ipa
from .mandarin import chinese_to_ipa

#: Tag of each language the checkpoint knows.
TAGS: dict[str, str] = {"en": "[EN]", "zh": "[ZH]", "ja": "[JA]"}

_SEGMENT_RES = {lang: re.compile(re.escape(tag) + r"(.*?)" + re.escape(tag)) for lang, tag in TAGS.items()}
# clean_one converts Chinese, then Japanese, then English spans of a segment (matters for nested tags).
_CONVERT_ORDER: list[tuple[str, Callable[[str], str]]] = [
    ("zh", chinese_to_ipa), ("ja", japanese_to_ipa), ("en", english_to_ipa),
]
_TRAILING_SPACE_RE = re.compile(r"\s+$")
_NO_FINAL_PUNCT_RE = re.compile(r"([^\.,!\?\-…~])$")


def find_segments(text: str) -> list[str]:
    """All tagged segments (tags included), ordered by start; EN before ZH before JA on equal starts."""
    matches = [m for lang in ("en", "zh", "ja") for m in _SEGMENT_RES[lang].finditer(text)]
    matches.sort(key=lambda m: m.start())  # stable: keeps the EN, ZH, JA order for ties
    return [m.group(0) for m in matches]


def segment_language(segment: str) -> str:
    """The language the reference assigns to a segment (first of EN, ZH, JA whose tag it contains)."""
    for lang in ("en", "zh", "ja"):
        if TAGS[lang] in segment:
            return lang
    raise ValueError(f"Segment {segment!r} has no language tag.")


def clean_segment(segment: str) -> str:
    """Convert every tagged span of one segment to phonemes and end it with punctuation."""
    for lang, convert in _CONVERT_ORDER:
        if TAGS[lang] in segment:
            segment = _SEGMENT_RES[lang].sub(lambda m, convert=convert: convert(m.group(1)) + " ", segment)
    segment = _TRAILING_SPACE_RE.sub("", segment)
    return _NO_FINAL_PUNCT_RE.sub(r"\1.", segment)


def clean_tagged_text(text: str) -> tuple[str, list[str]]:
    """Tagged text -> (phoneme string, one language per character of it)."""
    phonemes = ""
    langs: list[str] = []
    for segment in find_segments(text):
        converted = clean_segment(segment)
        phonemes += converted
        langs += [segment_language(segment)] * len(converted)
    return phonemes, langs
