"""Length guards for the autoregressive stage: the fewest and most codebook-1 frames a sentence may take.

A sentence's length follows its text: a language's speaking rate (codebook-1 frames per text token) times its
text tokens. The decoding loop masks EOS until ``min_frames`` frames exist (an earlier stop skips words) and
stops at ``max_frames`` (beyond it the model is babbling); a sentence stopped there carries
:attr:`StopReason.MAX_LENGTH`, so that callers can warn and verification can fail it rather than pass it off
as good speech. The rates and the factors are measured on real speech (``bench/speaking_rates.py``,
``bench/README.md``).
"""
from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import NamedTuple

from vallex.audio.codec_format import FRAME_RATE
from vallex.languages import Languages

#: Median codebook-1 frames per text token over the reference's voice presets whose audio is whole (the
#: presets cut at 3 s keep their whole transcript, so their rates are only lower bounds and stay out).
SPEAKING_RATE: dict[str, float] = {"en": 6.96, "zh": 4.06, "ja": 5.38}
#: The rate of a language trained later (espeak-ng phonemes), not measured: English's. Its tokens are IPA
#: letters with stress and length marks, as English's are, rather than Mandarin's syllables with tone arrows.
UNMEASURED_SPEAKING_RATE = SPEAKING_RATE["en"]
#: EOS is allowed from half the median rate: the fastest preset of any language speaks at 0.6x its median.
MIN_RATE_FACTOR = 0.5
#: The limit is twice the median rate: the slowest preset of any language speaks at 1.5x its median.
MAX_RATE_FACTOR = 2.0
#: Added to the limit: the silence and breaths around a sentence take about as long whatever its length, which
#: is why short sentences measure the highest rates.
MAX_SLACK_FRAMES = FRAME_RATE


class StopReason(str, enum.Enum):
    """Why the autoregressive stage of a sentence stopped."""

    EOS = "eos"  # every row drew end-of-speech
    MAX_LENGTH = "max_length"  # the frame limit was reached: the speech is probably babble or cut off

    @classmethod
    def parse(cls, value: str | StopReason) -> StopReason:
        """The reason named ``value``; the decoding loop's older name ``"maxlen"`` is MAX_LENGTH."""
        if isinstance(value, cls):
            return value
        if value == "maxlen":
            return cls.MAX_LENGTH
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"Unknown stop reason {value!r}: expected one of "
                             f"{', '.join(r.value for r in cls)}.") from None


class FrameBounds(NamedTuple):
    """Codebook-1 frames of one sentence's generated speech (the prompt's frames not counted)."""

    min_frames: int  # EOS is masked while fewer frames exist
    max_frames: int  # the sentence stops with StopReason.MAX_LENGTH when this many exist


def expected_frames(token_languages: Sequence[str], languages: Languages | None = None) -> float:
    """Median-rate length in frames of a text whose tokens have these languages (one entry per text token, each
    a language of ``languages``: the model's, default the public checkpoint's)."""
    table = languages or Languages.public()
    return sum(SPEAKING_RATE.get(table.check(language), UNMEASURED_SPEAKING_RATE) for language in token_languages)


def frame_bounds_of_tokens(token_languages: Sequence[str], languages: Languages | None = None) -> FrameBounds:
    """:class:`FrameBounds` of a sentence given the language of each of its text tokens (mixed text too:
    ``vallex.text.TextTokens.langs``) among ``languages`` (default the public checkpoint's)."""
    if not token_languages:
        raise ValueError("A sentence needs at least one text token to bound its length.")
    expected = expected_frames(token_languages, languages)
    low = max(1, math.floor(MIN_RATE_FACTOR * expected))
    high = math.ceil(MAX_SLACK_FRAMES + MAX_RATE_FACTOR * expected)
    return FrameBounds(low, high)


def frame_bounds(text_tokens: int, language: str, languages: Languages | None = None) -> FrameBounds:
    """:class:`FrameBounds` of a sentence of ``text_tokens`` text tokens (the target text only, without the
    prompt's transcript) in ``language`` (one of ``languages``; default "en", "zh" or "ja")."""
    if isinstance(text_tokens, bool) or not isinstance(text_tokens, int) or text_tokens < 1:
        raise ValueError(f"text_tokens must be a positive whole number, got {text_tokens!r}.")
    table = languages or Languages.public()
    return frame_bounds_of_tokens([table.check(language)] * text_tokens, table)


def length_warning(reason: str | StopReason, frames: int) -> str | None:
    """One line for the user when a sentence stopped at its frame limit (None when it stopped by itself)."""
    if StopReason.parse(reason) is not StopReason.MAX_LENGTH:
        return None
    return (f"The sentence reached its length limit ({frames} frames, {frames / FRAME_RATE:.1f} s) without "
            "ending: it is probably babble or repeats itself; try another seed.")
