"""How one sentence becomes audio while its frames are being sampled: the chunk schedule and its bookkeeping.

The AR samples codebook 0 frame by frame. Whenever enough new frames exist, the NAR predicts codebooks
2-8 of the frames not yet fixed (it needs no future frames, but is better with some); the frames up to
``NAR_LOOKAHEAD_FRAMES`` before the newest are then fixed, and the fixed frames up to
``VOCODER_LOOKAHEAD_FRAMES`` before the last fixed one are vocoded, with enough codes on either side that
the pieces join without a seam (:meth:`vallex.audio.codec.AudioCodec.decode_codes_window`). When the AR stops,
the rest is flushed.

Only a sentence's first NAR pass runs over text, prompt and every frame so far, as a whole sentence would; it
keeps the keys and values of text, prompt and the frames it fixes (:class:`vallex.inference.nar.NARPrefix`).
Every later pass is a window over the frames not yet fixed, attending to what was kept and adding the frames it
fixes, so that a sentence's passes together cost about one whole pass instead of one per chunk.
:class:`SentencePieces` holds that state for one sentence; who runs the AR and the NAR (one request alone, or a
batch of requests) is up to its caller.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from vallex.audio.codec_format import FRAME_RATE
from vallex.config import MAX_UTTERANCE_SECONDS
from vallex.inference.nar import NARInput, NARPrefix

if TYPE_CHECKING:
    from vallex.audio.codec import AudioCodec

#: Streaming: the first chunk's audio (time to first audio ~ the AR time for this + the lookaheads, one NAR
#: and a little Vocos), then each chunk is CHUNK_GROWTH times longer, up to MAX_CHUNK_SECONDS, so that a
#: long sentence needs few NAR passes (each costs its window's frames more than the chunk's).
STREAM_CHUNK_SECONDS = 0.4
CHUNK_GROWTH = 2
MAX_CHUNK_SECONDS = 3.2
#: Frames sampled after a chunk before its codebooks 2-8 are fixed: the NAR attends to both sides, so a frame
#: predicted with no frames after it would be worse than in a whole-sentence pass. 8 frames = 107 ms, about
#: one phoneme; each costs one AR step before the first audio.
NAR_LOOKAHEAD_FRAMES = 8
#: Fixed frames after a chunk that are vocoded with it (its right context). The rest of Vocos's context
#: (29 frames) comes from frames whose codebooks 2-8 may still change; by then their effect is ~1e-5.
VOCODER_LOOKAHEAD_FRAMES = 8

def first_chunk_frames(chunk_seconds: float | None) -> int | None:
    """Frames of a stream's first chunk per sentence (None: whole sentences); validates ``chunk_seconds``."""
    if chunk_seconds is None:
        return None
    if (isinstance(chunk_seconds, bool) or not isinstance(chunk_seconds, (int, float))
            or not 1 / FRAME_RATE <= chunk_seconds <= MAX_UTTERANCE_SECONDS):
        raise ValueError(f"chunk_seconds must be None (one chunk per sentence) or seconds of audio from "
                         f"{1 / FRAME_RATE:.3f} to {MAX_UTTERANCE_SECONDS:.0f}, got {chunk_seconds!r}; the "
                         f"default {STREAM_CHUNK_SECONDS} s gives the first audio soonest.")
    return max(1, round(chunk_seconds * FRAME_RATE))


def chunk_sizes(first_frames: int) -> Iterator[int]:
    """Chunk lengths in frames: ``first_frames``, then CHUNK_GROWTH times more each, up to MAX_CHUNK_SECONDS."""
    largest = max(first_frames, round(MAX_CHUNK_SECONDS * FRAME_RATE))
    size = first_frames
    while True:
        yield size
        size = min(size * CHUNK_GROWTH, largest)


class SentencePieces:
    """The audio pieces of one sentence, as its codebook-0 frames arrive.

        pieces = SentencePieces(codec, first_frames)      # None: one piece, once the sentence is done
        for frames0 in ar_frames:                         # [1, n], n = 1, 2, ...
            if pieces.due(n):                             # the NAR's codes [1, n, 8] -> the next piece
                send(pieces.chunk(nar_decode(model, [pieces.nar_input(sentence(frames0))])[0]))
        final = pieces.nar_input(sentence(ar_codes), final=True)
        nar_codes = nar_decode(model, [final])[0] if pieces.needs_final_nar(T) else None
        codes, last = pieces.finish(nar_codes)            # all codes [1, T, 8] and the last piece

    where ``sentence(frames0)`` is the sentence's :class:`~vallex.inference.nar.NARInput` for those frames.

    The pieces concatenated are the sentence's waveform [320 * T].
    """

    def __init__(self, codec: AudioCodec, first_frames: int | None) -> None:
        self.codec = codec
        self.chunked = first_frames is not None
        self._sizes = chunk_sizes(first_frames) if first_frames is not None else None
        self._frozen: Tensor | None = None  # [1, F, 8]: codes that no later NAR pass may change
        self._prefix = NARPrefix() if self.chunked else None  # text and prompt, kept by the first NAR pass
        self.vocoded = 0  # frames already turned into audio
        self.pieces: list[np.ndarray] = []
        #: Codebook-0 frames at which the next chunk is due (the chunk plus both lookaheads).
        self.next_due = self._due_after(0) if self._sizes is not None else 0

    def due(self, frames: int) -> bool:
        """Whether a chunk is ready once ``frames`` codebook-0 frames exist (then call :meth:`chunk`)."""
        return self.chunked and frames >= self.next_due

    def nar_input(self, whole: NARInput, *, final: bool = False) -> NARInput:
        """The NAR input of this sentence's next pass, given the whole sentence's (``whole``, frames so far).

        One piece per sentence: ``whole`` itself. Chunks: the first pass is ``whole`` (unless it is also the last),
        every later one a window after the fixed frames; each keeps the keys and values of the frames it fixes
        (all but the last ``NAR_LOOKAHEAD_FRAMES``, as :meth:`chunk` does) for the next.
        """
        if self._prefix is None or (final and self._frozen is None):
            return whole
        keep = None if final else max(whole.codes0.shape[1] - NAR_LOOKAHEAD_FRAMES, 0)
        if self._frozen is None:
            return dataclasses.replace(whole, prefix=self._prefix, keep=keep)
        return dataclasses.replace(whole, prefix=self._prefix, known=self._frozen, keep=keep)

    def chunk(self, codes: Tensor) -> np.ndarray:
        """The next piece, given the NAR's codes [1, n, 8] of the first n frames (n >= :attr:`next_due`).

        With n = :attr:`next_due` the pieces are those of a stream run on its own; a later n (a busy
        server that got to this sentence late) makes one longer piece instead of several.
        """
        codes = self._merge(codes)
        n = codes.shape[1]
        self._frozen = codes[:, :n - NAR_LOOKAHEAD_FRAMES]
        end = self._frozen.shape[1] - VOCODER_LOOKAHEAD_FRAMES
        # Right context: the fixed lookahead frames, then frames whose codebooks 2-8 may still change.
        piece = np.asarray(self.codec.decode_codes_window(codes, self.vocoded, end), dtype=np.float32)
        self.vocoded = end
        self.next_due = self._due_after(end)
        self.pieces.append(piece)
        return piece

    def _due_after(self, vocoded: int) -> int:
        return vocoded + next(self._sizes) + NAR_LOOKAHEAD_FRAMES + VOCODER_LOOKAHEAD_FRAMES  # type: ignore[arg-type]

    def needs_final_nar(self, frames: int) -> bool:
        """Whether :meth:`finish` needs the NAR of all ``frames`` frames (else the frozen codes are all)."""
        return not self.chunked or self._frozen is None or frames > self._frozen.shape[1]

    def finish(self, codes: Tensor | None, waveform: np.ndarray | None = None) -> tuple[Tensor, np.ndarray]:
        """(all codes [1, T, 8], the last piece), given the final NAR's codes or None (see :meth:`needs_final_nar`).

        ``waveform``: one piece per sentence only, the vocoder's audio of ``codes`` when the caller has it already
        (verification vocoded every candidate), so it is not made twice."""
        if not self.chunked:
            if codes is None:
                raise ValueError("a whole-sentence piece needs the NAR's codes")
            if waveform is None:
                waveform = self.codec.decode_codes(codes)
            piece = np.asarray(waveform, dtype=np.float32).reshape(-1)
        else:
            codes = self._merge(codes) if codes is not None else self._frozen
            if codes is None:
                raise ValueError("a sentence with no frames has no audio")
            piece = np.asarray(self.codec.decode_codes_window(codes, self.vocoded, codes.shape[1]), dtype=np.float32)
            self.vocoded = codes.shape[1]
            self._prefix = None  # its memory (keys and values of every stage and layer) is not needed any more
        self.pieces.append(piece)
        return codes, piece

    @property
    def waveform(self) -> np.ndarray:
        """Every piece so far, concatenated (float32)."""
        return np.concatenate(self.pieces) if self.pieces else np.zeros(0, dtype=np.float32)

    def _merge(self, codes: Tensor) -> Tensor:
        """Earlier chunks' codes stay what they were when they were sent."""
        if self._frozen is None:
            return codes
        return torch.cat([self._frozen, codes[:, self._frozen.shape[1]:]], dim=1)
