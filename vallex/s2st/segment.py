"""Cutting long speech into prompt-sized chunks at its quietest moments.

VALL-E X takes at most ~10 s of prompt (prompt and output share a 22 s budget), so a long recording is
translated chunk by chunk: each chunk is its own voice prompt, transcribed and translated on its own.
Cuts fall on the quietest 20 ms frame in the allowed window, which in speech is nearly always a pause
between words, so no word is cut in two.
"""
from __future__ import annotations

import numpy as np

from vallex.audio.codec_format import SAMPLE_RATE
from vallex.audio.processing import SILENCE_PEAK

#: Longest chunk: a 3-10 s prompt works best (see vallex.audio.PROMPT_WARN_SECONDS).
MAX_CHUNK_SECONDS = 10.0
#: Shortest chunk: a shorter prompt carries too little voice (vallex.audio.PROMPT_MIN_SECONDS is 1 s).
MIN_CHUNK_SECONDS = 2.0
#: Energy is measured on 20 ms frames.
FRAME_SECONDS = 0.02


def split_speech(wav: np.ndarray, sample_rate: int = SAMPLE_RATE, *, max_seconds: float = MAX_CHUNK_SECONDS,
                 min_seconds: float = MIN_CHUNK_SECONDS) -> list[tuple[int, int]]:
    """Sample ranges ``[(start, end), ...]`` covering ``wav`` (float32 ``[N]``), each at most ``max_seconds``.

    Audio up to ``max_seconds`` is one chunk. Longer audio is cut greedily: the next cut is the quietest frame
    between ``min_seconds`` and ``max_seconds`` after the previous one (the last such frame on ties, for
    longer chunks), never leaving a tail shorter than ``min_seconds``. Chunks with no sound at all
    (peak below -60 dBFS) are dropped.
    """
    if not 0 < min_seconds < max_seconds:
        raise ValueError(f"Need 0 < min_seconds < max_seconds, got {min_seconds} and {max_seconds}.")
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    total = len(wav)
    max_len, min_len = int(max_seconds * sample_rate), int(min_seconds * sample_rate)
    frame = max(1, int(FRAME_SECONDS * sample_rate))
    if total <= max_len:
        return [(0, total)] if total and _audible(wav) else []
    # RMS per frame: energy[k] covers samples [k * frame, (k + 1) * frame).
    frames = wav[: total // frame * frame].reshape(-1, frame).astype(np.float64)
    energy = np.sqrt(np.mean(frames ** 2, axis=1))
    cuts = [0]
    while total - cuts[-1] > max_len:
        start = cuts[-1]
        low, high = (start + min_len) // frame, min(start + max_len, total - min_len) // frame
        if high <= low:  # the tail can't hold a minimum chunk after any allowed cut: split what is left evenly
            cuts.append(start + (total - start) // 2)
            continue
        window = energy[low:high]
        best = low + int(len(window) - 1 - np.argmin(window[::-1]))  # quietest; the latest of equals
        cuts.append(best * frame + frame // 2)  # mid-frame
    cuts.append(total)
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if _audible(wav[a:b])]


def _audible(chunk: np.ndarray) -> bool:
    return bool(chunk.size) and float(np.max(np.abs(chunk))) >= SILENCE_PEAK
