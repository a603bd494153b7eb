"""Signal steps on mono float32 samples: resampling (as EnCodec's reference preprocessing does), loudness, and
trimming silent edges."""
from __future__ import annotations

import numpy as np
import torch

from vallex.audio.codec_format import SAMPLE_RATE

#: A clip whose peak is below this (-60 dBFS) holds no usable voice.
SILENCE_PEAK = 1e-3


def resample(wav: np.ndarray, orig_rate: int, new_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample float32 ``[N]`` with torchaudio's default windowed sinc (as ``encodec.utils.convert_audio``)."""
    if orig_rate == new_rate:
        return wav.astype(np.float32, copy=False)
    from vallex.audio._torchaudio_guard import ensure_torchaudio

    torchaudio = ensure_torchaudio()
    # The Resample transform, not functional.resample: its precomputed kernel differs in the last bits, and
    # this is exactly what encodec.utils.convert_audio (the reference's prompt path) runs.
    with torch.no_grad():
        out = torchaudio.transforms.Resample(orig_rate, new_rate)(
            torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)))
    return out.numpy()


def fit_loudness(wav: np.ndarray, normalize_peak: float | None) -> np.ndarray:
    """Float32 ``[N]`` rescaled to peak ``normalize_peak`` (silence left as is), else scaled down only when it
    goes beyond ±1."""
    peak = float(np.max(np.abs(wav))) if len(wav) else 0.0
    if normalize_peak is not None:
        if not 0.0 < normalize_peak <= 1.0:
            raise ValueError(f"normalize_peak must be in (0, 1], got {normalize_peak}.")
        return wav * np.float32(normalize_peak / peak) if peak >= SILENCE_PEAK else wav
    if peak > 1.0:
        # Float input beyond full scale: scale the whole clip (not clip it) so it fits [-1, 1].
        return wav / np.float32(peak)
    return wav


def trim_silence_edges(wav: np.ndarray, *, top_db: float = 40.0, frame: int = 480, margin: int = 1200) -> np.ndarray:
    """Drop leading/trailing samples quieter than ``top_db`` below the loudest 20 ms frame.

    ``wav``: float32 ``[N]`` at 24 kHz; ``frame``: window in samples (20 ms); ``margin``: samples kept around
    the voiced part (50 ms) so onsets and releases are not clipped.
    """
    if len(wav) <= frame:
        return wav
    hop = frame // 2
    starts = np.arange(0, len(wav) - frame + 1, hop)
    frames = np.lib.stride_tricks.sliding_window_view(wav, frame)[::hop]
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-20)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -top_db)
    begin = max(int(starts[loud[0]]) - margin, 0)
    end = min(int(starts[loud[-1]]) + frame + margin, len(wav))
    return wav[begin:end]
