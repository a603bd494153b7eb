"""Notebook 2's exercises (codec tokens): each checked against EnCodec's own quantizer, the one the library runs.

* ``rvq_encode``: residual vector quantisation by hand: ``q_i = argmin_j ‖r_{i-1} - c_i[j]‖``,
  ``r_i = r_{i-1} - c_i[q_i]``, ``r_0 = x``;
* ``rvq_decode``: the quantised vector as a sum, ``x̂ = Σ_i c_i[q_i]``;
* ``bitrate``: predict the bit rate of 8 codebooks and how many codebooks each EnCodec bandwidth keeps.

The checks fill the quantizer of the library's EnCodec skeleton (:func:`vallex.audio.codec.encodec_skeleton`)
with seeded random codebooks in float64, where a tie between two entries' distances cannot happen by rounding.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from vallex.audio.codec import CODEBOOK_SIZE, ENCODEC_BANDWIDTH, NUM_CODEBOOKS, encodec_skeleton
from vallex.audio.codec_format import FRAME_RATE

#: The bandwidths EnCodec 24 kHz offers (kbps).
BANDWIDTHS_KBPS = (1.5, 3.0, 6.0, 12.0, 24.0)
_FRAMES = 40  # frames of test data: 320 nearest-entry searches, a fraction of a second


@functools.lru_cache(maxsize=1)
def _quantizer():
    """EnCodec's ResidualVectorQuantizer with 8 of its layers filled with seeded random codebooks (float64)."""
    quantizer = encodec_skeleton().quantizer.double()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for i, layer in enumerate(quantizer.vq.layers):
            # Later codebooks smaller, as trained ones are: each refines what the earlier ones left.
            layer._codebook.embed.copy_(torch.randn(layer._codebook.embed.shape, generator=generator,
                                                    dtype=torch.float64) * 0.6 ** i)
    return quantizer


def _codebooks() -> torch.Tensor:
    """The check's 8 codebooks, float64 [8, 1024, 128]."""
    return torch.stack([layer.codebook for layer in _quantizer().vq.layers[:NUM_CODEBOOKS]]).clone()


def _shape_problem(result, expected: tuple[int, ...]) -> str | None:
    if not isinstance(result, torch.Tensor):
        return f"it returned {type(result).__name__}, not a torch.Tensor."
    if tuple(result.shape) != expected:
        return f"it returned shape {tuple(result.shape)}, expected {expected}."
    return None


# RVQ encoding -----------------------------------------------------------------------------------------------

def check_rvq_encode(attempt: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> str | None:
    """``attempt(x [T, 128], codebooks [8, 1024, 128]) -> codes [T, 8]`` must equal EnCodec's RVQ encoder."""
    x = torch.randn(_FRAMES, 128, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    truth = _quantizer().vq.encode(x.T.unsqueeze(0), n_q=NUM_CODEBOOKS)[:, 0].T  # [8, 1, T] -> [T, 8]
    mine = attempt(x.clone(), _codebooks())
    if problem := _shape_problem(mine, (_FRAMES, NUM_CODEBOOKS)):
        return problem
    wrong = (mine.long() != truth).sum(0)  # [8]: mismatches per codebook
    if wrong.any():
        first = int(wrong.nonzero()[0])
        return (f"codebook q{first} differs from EnCodec's in {int(wrong[first])} of {_FRAMES} frames"
                + (" (q0 is right: is each later stage searching the residual, not x?)" if first else "."))
    return None


def answer_rvq_encode(x: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """Stage i: the entry of codebook i nearest to what is left, then subtract it."""
    residual, codes = x, []
    for codebook in codebooks:  # [1024, 128]
        ids = torch.cdist(residual, codebook).argmin(dim=1)  # [T]
        residual = residual - codebook[ids]
        codes.append(ids)
    return torch.stack(codes, dim=1)  # [T, 8]


def stub_rvq_encode(x: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """As shipped: the loop without its two lines, so every code is 0."""
    return torch.zeros(x.shape[0], len(codebooks), dtype=torch.long)


# RVQ decoding -----------------------------------------------------------------------------------------------

def check_rvq_decode(attempt: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> str | None:
    """``attempt(codes [T, 8], codebooks [8, 1024, 128]) -> [T, 128]`` must equal EnCodec's RVQ decoder."""
    codes = torch.randint(0, CODEBOOK_SIZE, (_FRAMES, NUM_CODEBOOKS), generator=torch.Generator().manual_seed(2))
    truth = _quantizer().decode(codes.T.unsqueeze(1))[0].T  # [8, 1, T] -> [1, 128, T] -> [T, 128]
    mine = attempt(codes.clone(), _codebooks())
    if problem := _shape_problem(mine, (_FRAMES, 128)):
        return problem
    if not torch.allclose(mine.double(), truth, atol=1e-9):
        one = torch.allclose(mine.double(), _codebooks()[0][codes[:, 0]], atol=1e-9)
        return ("it gives codebook q0's entry alone: add the other 7." if one else
                f"it differs from EnCodec's decoder by up to {float((mine.double() - truth).abs().max()):.3g}.")
    return None


def answer_rvq_decode(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """x̂ = Σ_i c_i[q_i]: one entry per codebook, summed."""
    return sum(codebooks[i][codes[:, i]] for i in range(codes.shape[1]))


def stub_rvq_decode(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """As shipped: zeros of the right shape."""
    return torch.zeros(codes.shape[0], codebooks.shape[-1])


# Bitrate prediction ---------------------------------------------------------------------------------------

def check_bitrate(prediction: dict) -> str | None:
    """``prediction = {"bits_per_second": ..., "codebooks": {kbps: n, ...}}`` for 8 codebooks at 75 Hz, and the
    number of codebooks EnCodec keeps at each of its bandwidths (asked of EnCodec's quantizer itself)."""
    truth_bits = NUM_CODEBOOKS * math.log2(CODEBOOK_SIZE) * FRAME_RATE
    assert truth_bits == ENCODEC_BANDWIDTH * 1000  # the library's 6 kbps is this arithmetic
    bits = prediction.get("bits_per_second")
    if bits != truth_bits:
        return f"bits_per_second: {bits} is not it (how many bits does one id out of {CODEBOOK_SIZE} take?)."
    quantizer = _quantizer()
    for kbps in BANDWIDTHS_KBPS:
        truth = quantizer.get_num_quantizers_for_bandwidth(FRAME_RATE, kbps)
        mine = prediction.get("codebooks", {}).get(kbps)
        if mine != truth:
            return f"at {kbps:g} kbps you predict {mine} codebooks; EnCodec keeps another number."
    return None


answer_bitrate = {"bits_per_second": 8 * 10 * 75, "codebooks": {1.5: 2, 3.0: 4, 6.0: 8, 12.0: 16, 24.0: 32}}

#: As shipped: a guess that counts ids where it should count bits, and 8 codebooks at every bandwidth.
stub_bitrate = {"bits_per_second": 8 * 1024 * 75, "codebooks": {1.5: 8, 3.0: 8, 6.0: 8, 12.0: 8, 24.0: 8}}
