"""Sample arrays as callers hand them over (Gradio tuples, numpy arrays, torch tensors, integer PCM) to float32
``[N, C]``, and float samples back to 16-bit PCM."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def from_gradio(value: tuple) -> tuple[int, np.ndarray]:
    """Gradio ``gr.Audio(type="numpy")`` value: ``(sample_rate, array [N] or [N, C])``."""
    if len(value) != 2:
        raise ValueError("Expected a (sample_rate, samples) tuple as Gradio's numpy audio gives.")
    rate, data = value
    if isinstance(rate, np.ndarray) and not isinstance(data, np.ndarray):  # (array, rate) order
        rate, data = data, rate
    return check_rate(rate), as_channels_last(to_numpy(data))


def to_numpy(data: Any) -> np.ndarray:
    """A numpy array of samples from a numpy array, a torch tensor (any device) or a list; shape kept."""
    if isinstance(data, torch.Tensor):
        return data.detach().cpu().numpy()
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, (list, tuple)):
        return np.asarray(data)
    raise ValueError(f"Expected audio samples as a numpy array, got {type(data).__name__}.")


def check_rate(rate: Any) -> int:
    """A sample rate as an int, if it is a whole number of Hz in 1000-384000."""
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, np.integer, float)) or int(rate) != rate:
        raise ValueError(f"Sample rate must be a whole number of Hz, got {rate!r}.")
    if not 1000 <= int(rate) <= 384_000:
        raise ValueError(f"Sample rate {rate} Hz is outside 1000-384000 Hz.")
    return int(rate)


def as_channels_last(data: np.ndarray) -> np.ndarray:
    """``[N]`` → ``[N, 1]``; ``[C, N]`` → ``[N, C]`` (the shorter axis is channels)."""
    if data.ndim == 1:
        return data[:, None]
    if data.ndim != 2:
        raise ValueError(f"Audio samples must be shaped [N] or [N, channels], got shape {tuple(data.shape)}.")
    if data.shape[0] < data.shape[1]:
        data = data.T
    return data


def to_float(data: np.ndarray) -> np.ndarray:
    """Integer PCM → float32 by full-scale division (int16/32768); float → float32. Shape kept."""
    if data.dtype == np.int16:
        return data.astype(np.float32) / 32768.0
    if data.dtype == np.int32:
        return (data.astype(np.float64) / 2147483648.0).astype(np.float32)
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if data.dtype == np.int8:
        return data.astype(np.float32) / 128.0
    if np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32, copy=False)
    raise ValueError(f"Unsupported sample type {data.dtype}: expected int16, int32, uint8 or float samples.")


def to_pcm16(wav: np.ndarray | torch.Tensor) -> np.ndarray:
    """Float samples ``[N]`` in [-1, 1] → int16 ``[N]`` (clipped), e.g. for Gradio's numpy audio output."""
    samples = np.clip(to_numpy(wav).astype(np.float32).reshape(-1), -1.0, 1.0)
    return np.round(samples * 32767.0).astype(np.int16)
