"""Tagged text -> phoneme string and per-character languages (the reference's ``cje_cleaners``).

Tagged text is ``[EN]...[EN][ZH]...[ZH][JA]...[JA]``. The reference semantics are kept exactly, because
the checkpoint and the goldens follow them:

- every non-greedy match of ``[EN](.*?)[EN]``, ``[ZH](.*?)[ZH]``, ``[JA](.*?)[JA]`` is a segment; segments
  are taken in order of their start (``.`` does not cross newlines); text outside segments is dropped;
- each segment is converted, gets a trailing "." unless it ends in ``. , ! ? - … ~``, and all its
  characters get the segment's language; segments are joined with no separator;
- a segment's language is "en" if it contains ``[EN]``, else "zh" if ``[ZH]``, else "ja" (this only
  matters for nested tags, which only arise when already-tagged text is tagged again).

A model trained on more languages also reads their spans: ``[DE]...[DE]`` (the upper-cased code), converted by
espeak-ng and taken after EN, ZH, JA in each of the rules above; ``languages`` names them (default en/zh/ja).
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

from vallex.languages import LANGUAGE_TAG, LANGUAGES, language_tag

from .english import english_to_ipa
from .espeak import EspeakFrontend
from .japanese import japanese_to_ipa
from .mandarin import chinese_to_ipa
from .normalize import has_pronounceable

#: Tag of each language the checkpoint knows (other languages: :func:`vallex.languages.language_tag`).
TAGS: dict[str, str] = dict(LANGUAGE_TAG)

# clean_one converts Chinese, then Japanese, then English spans of a segment (matters for nested tags); the
# espeak-ng languages of a model come after them, in the model's order.
_CONVERT_ORDER: list[tuple[str, Callable[[str], str]]] = [
    ("zh", chinese_to_ipa), ("ja", japanese_to_ipa), ("en", english_to_ipa),
]
_TRAILING_SPACE_RE = re.compile(r"\s+$")
_NO_FINAL_PUNCT_RE = re.compile(r"([^\.,!\?\-…~])$")


@functools.lru_cache(maxsize=64)
def _segment_re(code: str) -> re.Pattern[str]:
    tag = re.escape(language_tag(code))
    return re.compile(tag + r"(.*?)" + tag)


def _tag_order(languages: Sequence[str]) -> list[str]:
    """EN, ZH, JA (the reference's order), then the model's other languages in row order."""
    return [*LANGUAGES, *(code for code in languages if code not in LANGUAGES)]


def find_segments(text: str, languages: Sequence[str] = LANGUAGES) -> list[str]:
    """All tagged segments (tags included) of ``languages``, ordered by start; EN before ZH before JA (then the
    others) on equal starts."""
    matches = [m for lang in _tag_order(languages) for m in _segment_re(lang).finditer(text)]
    matches.sort(key=lambda m: m.start())  # stable: keeps the EN, ZH, JA order for ties
    return [m.group(0) for m in matches]


def segment_language(segment: str, languages: Sequence[str] = LANGUAGES) -> str:
    """The language the reference assigns to a segment (first of EN, ZH, JA, then the others, whose tag it
    contains)."""
    for lang in _tag_order(languages):
        if language_tag(lang) in segment:
            return lang
    raise ValueError(f"Segment {segment!r} has no language tag.")


def _espeak_to_ipa(code: str) -> Callable[[str], str]:
    """espeak-ng's IPA for one span of ``code`` ("" for a span with nothing to pronounce, as the reference's
    converters give for an empty span)."""
    frontend = EspeakFrontend(code)
    return lambda text: frontend.phonemize(text) if has_pronounceable(text) else ""


def clean_segment(segment: str, languages: Sequence[str] = LANGUAGES) -> str:
    """Convert every tagged span of one segment to phonemes and end it with punctuation."""
    order = [*_CONVERT_ORDER, *((code, None) for code in languages if code not in LANGUAGES)]
    for lang, convert in order:
        if language_tag(lang) in segment:
            convert = convert or _espeak_to_ipa(lang)
            segment = _segment_re(lang).sub(lambda m, convert=convert: convert(m.group(1)) + " ", segment)
    segment = _TRAILING_SPACE_RE.sub("", segment)
    return _NO_FINAL_PUNCT_RE.sub(r"\1.", segment)


def clean_tagged_segments(text: str, languages: Sequence[str] = LANGUAGES) -> list[tuple[str, str]]:
    """Tagged text -> (language, phoneme string) of each segment, in order (tags of other languages are text)."""
    return [(segment_language(s, languages), clean_segment(s, languages)) for s in find_segments(text, languages)]


def clean_tagged_text(text: str, languages: Sequence[str] = LANGUAGES) -> tuple[str, list[str]]:
    """Tagged text -> (phoneme string, one language per character of it)."""
    phonemes = ""
    langs: list[str] = []
    for language, converted in clean_tagged_segments(text, languages):
        phonemes += converted
        langs += [language] * len(converted)
    return phonemes, langs
