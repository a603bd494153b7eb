"""Choosing tokens from logits: top-k, nucleus (top-p) and temperature (:func:`filter_logits`,
:func:`draw_tokens`), repetition-aware sampling (:func:`draw_tokens_ras`, the rule in :mod:`vallex.inference.ras`),
the error when logits are not finite (:class:`NonFiniteLogits`, raised by the AR and the NAR) and the random
generators draws use (:func:`seeded_generator`).

Draws never read anything back to the host: a caller checks the ``bad`` rows together with whatever else it reads
(one sync per AR step, :class:`vallex.inference.ar.FrameSampler`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vallex.inference.precision import device_overflow_advice
from vallex.inference.ras import RAS_THRESHOLD, RAS_TOP_P, RAS_WINDOW, min_repeats, repetition_counts


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Top-k then nucleus filtering of logits [B, V]; removed entries become -inf.

    Returns a new tensor when anything is filtered, else ``logits`` itself (no copy per AR step).
    """
    if (top_k is None or top_k <= 0) and (top_p is None or top_p >= 1.0):
        return logits
    if top_k is not None and top_k > 0:
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # [B, 1]
        # masked_fill, not logits[mask] = ...: boolean indexing runs a nonzero, a host-device sync on a GPU.
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cumulative > top_p
        remove[..., 1:] = remove[..., :-1].clone()  # keep the token that crosses top_p
        remove[..., 0] = False  # always keep the most likely token
        logits = logits.masked_fill(remove.scatter(-1, sorted_idx, remove), float("-inf"))
    return logits


def sample_tokens(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw one token per row of logits [B, V]; returns (tokens LongTensor [B], log-probs [B]).

    The log-probability is taken from the filtered, temperature-scaled distribution, as the reference does.
    Raises :class:`NonFiniteLogits` if a row has no finite distribution (see :func:`draw_tokens`).
    """
    tokens, logprobs, bad = draw_tokens(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                                        generator=generator)
    if bool(bad.any()):
        raise NonFiniteLogits.on(logits.device, None, dtype=logits.dtype)
    return tokens, logprobs


class NonFiniteLogits(RuntimeError):
    """The model's logits were NaN or infinite (a 16-bit overflow, damaged weights): nothing can be sampled.

    ``inputs``: raised by :func:`vallex.inference.nar.nar_decode`, the indices of its inputs whose logits were not
    finite, and ``codes`` every input's codes (those of ``inputs`` meaningless), so that a batch's other utterances
    go on.
    """

    #: The message where nothing is known of the device.
    MESSAGE = ("The model produced non-finite logits (NaN or inf), so no token can be sampled. With float16 "
               "weights this is an overflow: use dtype bfloat16 or float32.")

    def __init__(self, message: str = MESSAGE, *, inputs: tuple[int, ...] = (),
                 codes: list[Tensor] | None = None) -> None:
        super().__init__(message)
        self.inputs, self.codes = inputs, codes

    @classmethod
    def on(cls, device: torch.device | str, where: str | None = "the AR", dtype: torch.dtype | None = None,
           **details: Any) -> NonFiniteLogits:
        """The error for logits of ``dtype`` computed on ``device`` (in ``where``, e.g. "the NAR").

        float16 logits (or an unknown dtype) overflowed: the advice names the dtypes that run natively there
        (:func:`vallex.inference.precision.device_overflow_advice`: float32 on a T4). Other dtypes (float32, as
        int8 models compute their logits in; bfloat16, with float32's range) do not overflow at a valid
        temperature, so the message says so instead of blaming float16.
        """
        place = f" in {where}" if where else ""
        if dtype is None or dtype == torch.float16:
            cause = f"With float16 weights this is an overflow: use dtype {device_overflow_advice(device)}."
        else:
            name = str(dtype).removeprefix("torch.")
            cause = (f"The logits were computed in {name}, which does not overflow here: the weights may be "
                     "damaged (check them with `vallex download --check`).")
        return cls(f"The model produced non-finite logits (NaN or inf){place}, so no token can be chosen. {cause}",
                   **details)


def draw_tokens(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`sample_tokens` without reading anything back to the host: (tokens [B], log-probs [B], bad [B]).

    Everything runs in float32, the temperature included (why: float16 logits divided by a small temperature
    overflow to inf). ``bad[b]`` is True where row b's distribution is not finite (NaN or +inf logits, or
    every entry filtered out); that row draws token 0 instead, so that ``torch.multinomial`` never sees it
    (on CUDA a non-finite distribution is a device-side assert, which poisons the process's CUDA context
    for good). The caller checks ``bad`` together with whatever else it reads back (one sync per step).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    logits = filter_logits(logits, top_k, top_p)
    probs = F.softmax(logits, dim=-1)  # [B, V]
    # A NaN or +inf logit, or nothing left after filtering, makes the whole softmax row NaN (its max is NaN or
    # infinite), so one entry tells: [B], True where the row has no distribution.
    bad = probs[:, 0].isnan()
    probs = probs.masked_fill(bad[:, None], 0.0)
    probs[:, 0] = probs[:, 0].masked_fill(bad, 1.0)
    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # [B]
    logprobs = F.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1)
    return tokens, logprobs, bad


def draw_tokens_ras(
    logits: Tensor,
    history: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = RAS_TOP_P,
    window: int = RAS_WINDOW,
    threshold: float = RAS_THRESHOLD,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Repetition-aware sampling (:mod:`vallex.inference.ras`): (tokens [B], log-probs [B], bad [B], fired [B]).

    A candidate is drawn from the nucleus (``top_p``, as it comes: a caller with no nucleus of its own passes
    :data:`~vallex.inference.ras.RAS_TOP_P`, as :attr:`vallex.inference.sampling_settings.Sampling.nucleus`
    does; ``top_k``); where it already occurs ``ceil(threshold * window)`` times among the last ``window`` tokens of
    ``history`` (LongTensor [B, T], the utterance's generated frames, oldest first), the row takes a draw from
    the full distribution instead (its log-probability from that distribution). Both draws go through
    :func:`draw_tokens` (float32, non-finite rows kept from ``multinomial``) and both are made for every row
    at every step, so the random numbers used never depend on the data and nothing is read back.
    """
    if logits.ndim != 2:
        raise ValueError(f"RAS expects logits [B, V], got shape {tuple(logits.shape)}.")
    if history.ndim != 2 or history.shape[0] != logits.shape[0] or history.dtype != torch.long:
        raise ValueError(f"RAS needs its history [B, T] with B = {logits.shape[0]} of token ids (torch.long), got "
                         f"{history.dtype} {tuple(history.shape)}.")
    repeats = min_repeats(window, threshold)
    nucleus, nucleus_logprobs, bad = draw_tokens(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                                                 generator=generator)
    full, full_logprobs, bad_full = draw_tokens(logits, temperature=temperature, generator=generator)
    fired = repetition_counts(nucleus, history, window) >= repeats  # [B]
    tokens = torch.where(fired, full, nucleus)
    return tokens, torch.where(fired, full_logprobs, nucleus_logprobs), bad | bad_full, fired


def seeded_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A random generator on ``device`` seeded with ``seed``: where ``torch.multinomial`` draws for that device's
    tensors (CUDA and MPS refuse a CPU generator). The same seed gives the same codes on the same device."""
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(int(seed))
    return generator


def sentence_generator(seed: int, index: int, device: torch.device | str) -> torch.Generator:
    """The generator sentence ``index`` (> 0) of a fixed-prompt text samples with, for a request's ``seed``.

    Its own stream, mixed from both numbers (seed + index would be another request's seed), so that a sentence's
    codes do not depend on the draws of the sentences before it: decoded one after another or together, the
    same. Sentence 0 samples with ``seed`` itself, as a one-sentence text does.
    """
    mixed = np.random.SeedSequence([int(seed) & (2**64 - 1), int(index)]).generate_state(2, np.uint32)
    return seeded_generator((int(mixed[0]) << 31) ^ int(mixed[1]), device)


def check_generator_device(generator: torch.Generator | None, device: torch.device) -> None:
    """ValueError unless ``generator`` (if any) draws on ``device`` (``cuda`` and ``cuda:0`` are the same)."""
    if generator is None:
        return
    got = generator.device
    if got.type != device.type or (got.index is not None and device.index is not None and got.index != device.index):
        raise ValueError(f"The random generator is on {got} but the model is on {device}: make it there "
                         "(vallex.inference.sampling.seeded_generator(seed, device)).")
