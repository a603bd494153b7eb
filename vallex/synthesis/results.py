"""What a synthesis gives back: each sentence's result, the whole :class:`Synthesis`, and the audio pieces a
request's :class:`Sink` receives as they are played (fades at sentence joins, pauses between sentences).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np
import torch

from vallex.audio.codec_format import SAMPLE_RATE
from vallex.inference.length_guards import length_warning
from vallex.text import TextTokens

if TYPE_CHECKING:
    from vallex.synthesis.verification import SentenceCheck

#: Pause between sentences of long text, and the fade applied at each edge (no clicks at the joins).
SENTENCE_PAUSE_SECONDS = 0.2
EDGE_FADE_SECONDS = 0.01


@dataclass
class SentenceResult:
    """One synthesised utterance."""

    text: str
    tokens: TextTokens
    codes: torch.Tensor  # LongTensor [1, T, 8]
    stop_reason: str
    waveform: np.ndarray  # float32 [320 * T] at 24 kHz (before pauses/fades)
    prompt_language: str | None
    accent: str | None
    ras_fired: int = 0  # AR draws repetition-aware sampling replaced
    verification: SentenceCheck | None = None  # verify="asr": its candidates, scores and rounds

    @property
    def warning(self) -> str | None:
        """One line when the sentence stopped at its length limit instead of ending by itself, or failed (or
        missed) its check by speech recognition."""
        lines = [length_warning(self.stop_reason, self.codes.shape[1]),
                 self.verification.warning if self.verification is not None else None]
        return " ".join(line for line in lines if line) or None


@dataclass
class Synthesis:
    """Everything :meth:`vallex.api.VallEX.synthesize_detailed` produced."""

    waveform: np.ndarray  # float32 [N] at 24 kHz
    sample_rate: int
    sentences: list[SentenceResult]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.waveform) / self.sample_rate

    @property
    def language(self) -> str:
        return ",".join(dict.fromkeys(s.tokens.language for s in self.sentences))

    @property
    def phonemes(self) -> str:
        return " | ".join(s.tokens.phonemes for s in self.sentences)

    @property
    def warnings(self) -> list[str]:
        """Each sentence's :attr:`SentenceResult.warning` (sentences that hit their length limit)."""
        return [f"Sentence {i + 1}: {s.warning}" for i, s in enumerate(self.sentences) if s.warning]


class AudioPiece(NamedTuple):
    """One chunk of a request's audio."""

    audio: np.ndarray  # float32 [n] at 24 kHz, as played (fades and pauses included)
    sentence: int  # which sentence it belongs to (0-based)
    sentences: int  # how many the request has
    last: bool  # the sentence's last chunk


class Sink(Protocol):
    """Where one request's audio goes (:class:`vallex.serving.SpeechStream`, or a caller's collector).

    A sink may also have a ``full`` property: while it is True (its reader has fallen behind) the scheduler
    sends it nothing and makes no audio for it; without one it is never full.
    """

    @property
    def cancelled(self) -> bool: ...

    def report(self, stage: str, done: int, total: int) -> None:
        """Progress: ``("sentence", i, n)`` when sentence i starts (and n at the end), ``("ar_step", frames,
        max_frames)`` after each frame."""

    def put(self, piece: AudioPiece) -> None: ...

    def sentence_done(self, result: SentenceResult) -> None: ...

    def close(self, error: BaseException | None = None) -> None:
        """The request ended: done, cancelled, or failed with ``error``."""


def sentence_audio(wav: np.ndarray, index: int, count: int, *, first_piece: bool, final: bool) -> np.ndarray:
    """A piece of sentence ``index`` of ``count`` as it is played: fades at sentence joins, pauses between."""
    last_sentence = index == count - 1
    return _shape_chunk(wav, pause=SENTENCE_PAUSE_SECONDS if final and not last_sentence else 0.0,
                        fade_in=first_piece and index > 0, fade_out=final and not last_sentence)


def _shape_chunk(wav: np.ndarray, *, pause: float, fade_in: bool, fade_out: bool) -> np.ndarray:
    """Short fades at sentence joins (no clicks) and a pause after every sentence but the last."""
    wav = wav.astype(np.float32, copy=True)
    n = min(int(EDGE_FADE_SECONDS * SAMPLE_RATE), len(wav) // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        if fade_in:
            wav[:n] *= ramp
        if fade_out:
            wav[-n:] *= ramp[::-1]
    if pause > 0:
        wav = np.concatenate([wav, np.zeros(int(pause * SAMPLE_RATE), dtype=np.float32)])
    return wav
