"""Changing the speed of speech without changing its pitch, chunk by chunk (WSOLA).

Waveform-similarity overlap-add (Verhelst & Roelands 1993): the output is built from 30 ms Hann-windowed
frames, one every 15 ms; frame ``k`` is read from the input near ``k * 15 ms * speed``, shifted by up to
±10 ms to where it best continues the frame before it (cross-correlation), so periods line up and the pitch
stays. :class:`TimeStretcher` works on a stream: each frame is computed as soon as the input it needs has
arrived, so feeding the audio in any chunking gives exactly the same samples as feeding it at once.
"""
from __future__ import annotations

import numpy as np

#: The speeds OpenAI's speech API accepts.
MIN_SPEED, MAX_SPEED = 0.25, 4.0


class TimeStretcher:
    """Plays mono float audio ``speed`` times faster (2.0: half as long), keeping its pitch.

    ``process(chunk)`` returns the output that is final so far; ``flush()`` the rest, after the last chunk.
    In all, the output has ``round(n / speed)`` samples for ``n`` input samples.
    """

    def __init__(self, speed: float, sample_rate: int = 24000) -> None:
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be a number from {MIN_SPEED} to {MAX_SPEED}, got {speed!r}.")
        if sample_rate < 1000:
            raise ValueError(f"sample_rate must be at least 1000 Hz, got {sample_rate}.")
        self.speed = float(speed)
        self.hop = round(0.015 * sample_rate)  # output hop (synthesis hop)
        self.size = 2 * self.hop  # frame length: windows at 50 % overlap sum to one
        self.tolerance = round(0.010 * sample_rate)  # how far a frame may move to match the one before
        n = np.arange(self.size)
        self._window = (0.5 - 0.5 * np.cos(2 * np.pi * n / self.size)).astype(np.float32)
        # The input, as one virtual signal: `tolerance + size // 2` zeros, then the audio (then zeros at the end).
        # _input holds its samples from index _input_base on.
        self._input = np.zeros(self.tolerance + self.size // 2, dtype=np.float32)
        self._input_base = 0
        self._received = 0  # audio samples received
        # Output accumulator: index j of the virtual output buffer is output sample j - size // 2.
        self._output = np.zeros(0, dtype=np.float32)
        self._output_base = 0
        self._emitted = 0  # output samples returned so far
        self._frame = 0  # next frame to compute
        self._previous: int | None = None  # where the last frame was read from (virtual input index)
        self._flushed = False

    def _nominal(self, frame: int) -> int:
        """Virtual input index where ``frame`` is read with no shift."""
        return self.tolerance + round(frame * self.hop * self.speed)

    def _needed(self, frame: int) -> int:
        """Virtual input samples that must exist before ``frame`` can be computed."""
        end = self._nominal(frame) + self.tolerance + self.size
        if self._previous is not None:
            end = max(end, self._previous + self.hop + self.size)
        return end

    def _input_slice(self, start: int, stop: int) -> np.ndarray:
        return self._input[start - self._input_base:stop - self._input_base]

    def _compute(self, frame: int) -> None:
        nominal = self._nominal(frame)
        if self._previous is None:
            start = nominal
        else:  # the shift where this frame best continues the last one
            template = self._input_slice(self._previous + self.hop, self._previous + self.hop + self.size)
            region = self._input_slice(nominal - self.tolerance, nominal + self.tolerance + self.size)
            scores = np.correlate(region, template, mode="valid")
            start = nominal - self.tolerance + int(np.argmax(scores))
        out_start = frame * self.hop - self._output_base
        if len(self._output) < out_start + self.size:
            self._output = np.concatenate([self._output, np.zeros(out_start + self.size - len(self._output),
                                                                  dtype=np.float32)])
        self._output[out_start:out_start + self.size] += self._window * self._input_slice(start, start + self.size)
        self._previous = start
        # Input before both the next template and the next search region will never be read again.
        keep_from = min(start + self.hop, self._nominal(frame + 1) - self.tolerance)
        if keep_from > self._input_base:
            self._input = self._input[keep_from - self._input_base:]
            self._input_base = keep_from

    def _take(self, final_until: int, limit: int | None = None) -> np.ndarray:
        """Output samples from the last returned one up to virtual index ``final_until`` (at most ``limit``)."""
        end = final_until - self.size // 2  # in output samples
        if limit is not None:
            end = min(end, limit)
        if end <= self._emitted:
            return np.zeros(0, dtype=np.float32)
        lo = self._emitted + self.size // 2 - self._output_base
        hi = end + self.size // 2 - self._output_base
        chunk = self._output[lo:hi].copy()
        if len(chunk) < end - self._emitted:  # past the last frame: silence
            chunk = np.concatenate([chunk, np.zeros(end - self._emitted - len(chunk), dtype=np.float32)])
        self._emitted = end
        drop = min(hi, len(self._output))
        self._output = self._output[drop:]
        self._output_base += drop
        return chunk

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Feed input samples; returns the output samples that are final now (float32)."""
        if self._flushed:
            raise ValueError("TimeStretcher.process() after flush().")
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self._input = np.concatenate([self._input, chunk])
        self._received += len(chunk)
        available = self._input_base + len(self._input)
        while self._needed(self._frame) <= available:
            self._compute(self._frame)
            self._frame += 1
        return self._take(self._frame * self.hop)

    def flush(self) -> np.ndarray:
        """The rest of the output, after the last input chunk."""
        if self._flushed:
            return np.zeros(0, dtype=np.float32)
        self._flushed = True
        total = round(self._received / self.speed)
        # Frames until every output sample up to `total` is covered; the input continues with zeros.
        last = (total + self.size // 2) // self.hop
        needed = max(self._needed(frame) for frame in (self._frame, last + 1))
        needed = max(needed, self._nominal(last + 1) + 2 * self.tolerance + 2 * self.size)
        available = self._input_base + len(self._input)
        if needed > available:
            self._input = np.concatenate([self._input, np.zeros(needed - available, dtype=np.float32)])
        while self._frame <= last:
            self._compute(self._frame)
            self._frame += 1
        return self._take(self._frame * self.hop + self.size, limit=total)


def stretch(samples: np.ndarray, speed: float, sample_rate: int = 24000) -> np.ndarray:
    """``samples`` played ``speed`` times faster with the same pitch (``speed == 1``: returned unchanged)."""
    if speed == 1:
        return np.asarray(samples, dtype=np.float32)
    stretcher = TimeStretcher(speed, sample_rate)
    return np.concatenate([stretcher.process(samples), stretcher.flush()])
