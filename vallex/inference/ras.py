"""Repetition-aware sampling (RAS) of codebook-1 tokens, as VALL-E 2 defines it (arXiv 2406.05370, Algorithm 1).

The rule, for each row at step t, given the model's distribution p over the next token and the tokens
c_1 .. c_{t-1} sampled so far:

1. draw a candidate c' from the nucleus of p (top-p, optionally top-k, after the temperature);
2. count how often c' occurs among the previous K tokens: r = |{i in 1..K : c_{t-i} = c'}| / K;
3. if r >= t_r, discard c' and draw c_t from the full distribution p instead (VALL-E 2's "random sampling");
   otherwise c_t = c'.

The denominator is always K, so a history shorter than K fires only once the count itself reaches
``ceil(t_r * K)`` (CosyVoice's ``ras_sampling`` compares ``count >= K * t_r`` the same way). Nucleus sampling
keeps picking a token that dominates p, which is how autoregressive codec models lock into loops; the full
distribution gives the tail a chance to pull the row out. When the rule does not fire, RAS is plain
nucleus sampling.

The default window and threshold are calibrated for EnCodec codes at 75 frames per second (the measurement:
``bench/ras_calibration.py``, ``bench/README.md``). The sampler that applies it is
:func:`vallex.inference.sampling.draw_tokens_ras` (``Sampling(ras=True)``); this module holds the rule.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

#: Frames of history looked at (K): 75 frames = 1 s of EnCodec codes.
RAS_WINDOW = 75
#: Repetition ratio t_r at which the nucleus draw is replaced. With K = 75 the rule fires when the candidate
#: already occurs 15 times in the last second, which every loop of period <= 5 frames reaches.
RAS_THRESHOLD = 0.2
#: Nucleus of the first draw when the caller gives none: a nucleus of 1.0 is the full distribution, and RAS
#: would then resample from the very distribution it wants to leave (CosyVoice uses 0.8 too).
RAS_TOP_P = 0.8
#: Marks a history entry that is not a token (rows of different lengths are left-padded with it).
PAD = -1


def min_repeats(window: int, threshold: float) -> int:
    """The count ``ceil(threshold * window)`` at which the rule fires (checked arguments).

    Counting in integers avoids float round-off at the boundary (0.2 * 75 is 15.000000000000002).
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"The RAS window must be a positive whole number of frames, got {window!r}.")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"The RAS threshold must be in (0, 1], got {threshold!r}.")
    return max(1, math.ceil(threshold * window - 1e-9))


def repetition_counts(tokens: Tensor, history: Tensor, window: int) -> Tensor:
    """How often each row's ``tokens[b]`` occurs among the last ``window`` entries of ``history[b]``.

    Args:
        tokens: LongTensor [B].
        history: LongTensor [B, T] (T may be 0); the last columns are the most recent frames, entries < 0
            are padding and never match.

    Returns:
        LongTensor [B].
    """
    recent = history[:, -window:] if history.shape[1] else history
    return (recent == tokens[:, None]).sum(dim=1)


def ras_fires(codes: Tensor, window: int = RAS_WINDOW, threshold: float = RAS_THRESHOLD) -> Tensor:
    """Where the rule would fire if a sampler had drawn exactly ``codes``: BoolTensor [B, T].

    Frame t fires when ``codes[b, t]`` occurs at least ``ceil(threshold * window)`` times among
    ``codes[b, t-window:t]`` (fewer frames at the start). This is the trigger rate on natural speech that
    the calibration measures, and the same count that :func:`repetition_aware_sample` makes.

    Args:
        codes: LongTensor [B, T] of codebook-1 tokens (entries < 0 are padding and never match).
    """
    if codes.ndim != 2:
        raise ValueError(f"Expected codes [B, T], got shape {tuple(codes.shape)}.")
    repeats = min_repeats(window, threshold)
    batch, frames = codes.shape
    padded = torch.cat([torch.full((batch, window), PAD, dtype=codes.dtype, device=codes.device), codes], dim=1)
    previous = padded.unfold(1, window, 1)[:, :frames]  # [B, T, K]: the window before each frame
    counts = (previous == codes[:, :, None]).sum(dim=2)
    return (counts >= repeats) & (codes >= 0)
