"""Notebook 4's exercises (zero-shot cross-lingual decoding): nucleus (top-p) filtering by hand, predicting the
temperature table, and the length guard's frame bounds.

The checks compare with the library (:mod:`vallex.inference.sampling`, :mod:`vallex.inference.length_guards`) or
with the table the notebook computes, in well under a second.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from vallex.inference.length_guards import (
    MAX_RATE_FACTOR,
    MAX_SLACK_FRAMES,
    MIN_RATE_FACTOR,
    SPEAKING_RATE,
    frame_bounds,
)
from vallex.inference.sampling import filter_logits

# Exercise "top_p": nucleus filtering ---------------------------------------------------------------------------

#: The library's own test case (tests/test_decoding.py): 0.5 < 0.7, 0.5 + 0.3 crosses 0.7, so two are kept.
LIBRARY_CASE = (torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log(), ((0.7, [True, True, False, False]),
                                                                 (0.1, [True, False, False, False])))


def stub_top_p(logits: Tensor, p: float) -> Tensor:
    """As the notebook ships it: nothing removed."""
    return logits


def answer_top_p(logits: Tensor, p: float) -> Tensor:
    """logits [B, V] -> the same with every id outside the nucleus set to -inf: the most likely ids, in order, up to
    and including the first whose cumulative probability reaches past ``p``."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # [B, V], most likely first
    cumulative = sorted_logits.softmax(-1).cumsum(-1)  # mass of each id and all ids ranked above it
    before = torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], dim=-1)  # mass above it
    keep_sorted = before <= p  # in the nucleus while the mass ranked above it has not passed p (the first always)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def check_top_p(top_p: Callable[[Tensor, float], Tensor]) -> str | None:
    """``top_p(logits, p)`` must keep exactly the ids ``filter_logits(logits, top_p=p)`` keeps, with their logits
    unchanged: on the library test's case and on random logits [4, 1025] for several p."""
    logits, cases = LIBRARY_CASE
    for p, kept in cases:
        got = torch.isfinite(top_p(logits.clone(), p))[0].tolist()
        if got != kept:
            return f"on probabilities [0.5, 0.3, 0.15, 0.05] with p={p}, it keeps {got}, the library keeps {kept}."
    random_logits = 3 * torch.randn(4, 1025, generator=torch.Generator().manual_seed(0))
    for p in (0.05, 0.5, 0.9, 0.99):
        got, want = top_p(random_logits.clone(), p), filter_logits(random_logits, top_p=p)
        if tuple(got.shape) != tuple(want.shape):
            return f"the result has shape {tuple(got.shape)}, expected {tuple(want.shape)}."
        kept_got, kept_want = torch.isfinite(got), torch.isfinite(want)
        if not torch.equal(kept_got, kept_want):
            return (f"with p={p} it keeps {int(kept_got.sum())} ids over 4 rows, the library "
                    f"{int(kept_want.sum())}.")
        if not torch.equal(got[kept_got], random_logits[kept_got]):
            return "the kept ids' logits changed: filtering only removes ids (renormalising is the softmax's job)."
    return None


# Exercise "temperature_order": predict the temperature table before it is computed ---------------------------

#: The settings of the notebook's table, as (temperature, top_k).
SETTINGS: tuple[tuple[float, int | None], ...] = ((0.5, None), (1.0, None), (2.0, None), (1.0, 10))


def peaked_logits() -> Tensor:
    """The notebook's hand-built logits [1, 1025]: the r-th most likely id gets -2.5 ln r (in a random order)."""
    ranks = torch.randperm(1025, generator=torch.Generator().manual_seed(0)) + 1
    return (-2.5 * ranks.float().log())[None]


def entropy_bits(probs: Tensor) -> float:
    """Entropy in bits of a distribution (zeros skipped)."""
    kept = probs[probs > 0]
    return -(kept * kept.log2()).sum().item()


def setting_entropies(logits: Tensor) -> dict[tuple[float, int | None], float]:
    """Entropy (bits) of softmax(filter(logits / T, top_k)) for each of :data:`SETTINGS`."""
    return {(t, k): entropy_bits(torch.softmax(filter_logits(logits / t, top_k=k), -1)[0]) for t, k in SETTINGS}


#: As the notebook ships it: the settings in the order they are listed, not by entropy.
stub_temperature_order = list(SETTINGS)
#: Lowest entropy first: T = 0.5 squares the probabilities' ratios; top-10 cuts only the tail of T = 1; T = 2 flattens.
answer_temperature_order = [(0.5, None), (1.0, 10), (1.0, None), (2.0, None)]


def check_temperature_order(order: Sequence[tuple[float, int | None]]) -> str | None:
    """``order``: the four settings, lowest entropy on the peaked logits first (the notebook's table computes it)."""
    order = [(float(t), None if k is None else int(k)) for t, k in order]
    if sorted(order, key=str) != sorted(SETTINGS, key=str):
        return f"give each of the four settings {list(SETTINGS)} exactly once."
    entropies = setting_entropies(peaked_logits())
    truth = sorted(SETTINGS, key=entropies.get)
    if order != truth:
        # Says where the guess first goes wrong, not what belongs there: the table in the notebook is the answer.
        first_wrong = next(i for i, (a, b) in enumerate(zip(order, truth)) if a != b)
        temperature, top_k = order[first_wrong]
        return (f"position {first_wrong + 1} is wrong: T={temperature}, top_k={top_k} is not the setting with the "
                f"{first_wrong + 1}{'st' if first_wrong == 0 else 'nd' if first_wrong == 1 else 'rd'}-lowest entropy.")
    return None


# Exercise "length_guard": the frames a sentence may take -------------------------------------------------------

def stub_length_guard(text_tokens: int, language: str) -> tuple[int, int]:
    """As the notebook ships it: the reference's rule, at least 1 and at most 16 frames per text token."""
    return 1, 16 * text_tokens


def answer_length_guard(text_tokens: int, language: str) -> tuple[int, int]:
    """(min_frames, max_frames) for ``text_tokens`` target tokens of ``language``: from half the language's median
    speaking rate (at least 1 frame) to twice it plus one second of slack."""
    expected = SPEAKING_RATE[language] * text_tokens  # median codebook-1 frames
    return max(1, math.floor(MIN_RATE_FACTOR * expected)), math.ceil(MAX_SLACK_FRAMES + MAX_RATE_FACTOR * expected)


def check_length_guard(length_guard: Callable[[int, str], tuple[int, int]]) -> str | None:
    """``length_guard(n, language)`` must equal :func:`vallex.inference.length_guards.frame_bounds` for 1..120
    tokens of English, Mandarin and Japanese, each bound within one frame (the library adds the rate token by token,
    so where r * n lands on a whole number its float sum can floor one frame lower than the product does)."""
    for language in ("en", "zh", "ja"):
        for tokens in range(1, 121):
            got = tuple(int(v) for v in length_guard(tokens, language))
            want = tuple(frame_bounds(tokens, language))
            if len(got) != 2 or any(abs(a - b) > 1 for a, b in zip(got, want)):
                return f"for {tokens} {language} tokens it gives (min, max) = {got}, the library {want}."
    return None
