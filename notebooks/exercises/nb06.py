"""Notebook 6's exercises (why AR TTS fails): the chance a sampled run is still speaking, the length guards'
frame bounds, and repetition-aware sampling's rule.

Each check compares the learner's function with the library (:mod:`vallex.inference.length_guards`,
:mod:`vallex.inference.ras`) or with a product computed here, in well under a second.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from vallex.inference.length_guards import (
    MAX_RATE_FACTOR,
    MAX_SLACK_FRAMES,
    MIN_RATE_FACTOR,
    SPEAKING_RATE,
    frame_bounds_of_tokens,
)
from vallex.inference.ras import RAS_THRESHOLD, RAS_WINDOW, min_repeats, repetition_counts

# Exercise "survival": the chance a sampled run has not stopped yet -----------------------------------------


def stub_survival(p_eos: np.ndarray) -> np.ndarray:
    """As the notebook ships it: the chance of not stopping at each step alone, forgetting the steps before."""
    return 1.0 - np.asarray(p_eos, dtype=float)


def answer_survival(p_eos: np.ndarray) -> np.ndarray:
    """p_eos float [T], P(EOS) at steps 1..T -> float [T]: P(no EOS drawn in steps 1..t) = prod_{s<=t} (1 - p_s)."""
    return np.cumprod(1.0 - np.asarray(p_eos, dtype=float))


def _survival_cases() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(6)
    return [("a constant P(EOS) of 2 % over 225 steps", np.full(225, 0.02)),
            ("P(EOS) = 0 then 1", np.array([0.0, 0.0, 1.0, 0.0])),
            ("random P(EOS) over 300 steps", rng.uniform(0.0, 0.05, 300))]


def check_survival(survival: Callable[[np.ndarray], np.ndarray]) -> str | None:
    """``survival(p)`` must equal the running product of (1 - p) on a few per-step P(EOS) arrays."""
    for what, p_eos in _survival_cases():
        got = np.asarray(survival(p_eos.copy()), dtype=float)
        want = np.cumprod(1.0 - p_eos)
        if got.shape != want.shape:
            return f"for {what} the result has shape {got.shape}, expected {want.shape} (one value per step)."
        wrong = np.flatnonzero(~np.isclose(got, want, rtol=1e-6, atol=1e-9))
        if len(wrong):
            t = int(wrong[0])
            return (f"for {what}, after step {t + 1} you give {got[t]:.4f}, the chance is {want[t]:.4f} "
                    "(every earlier step must also have missed EOS).")
    return None


# Exercise "length_bounds": the length guards' frame bounds ------------------------------------------------

#: Token-language lists the bounds are checked on: the notebook's three sentences, a short one, mixed text.
BOUNDS_CASES: tuple[tuple[str, ...], ...] = (("en",) * 58, ("zh",) * 46, ("en",) * 34, ("ja",) * 12, ("zh",),
                                             ("en",) * 5 + ("zh",) * 7 + ("ja",) * 3)


def stub_length_bounds(token_languages: Sequence[str]) -> tuple[int, int]:
    """As the notebook ships it: the reference's rule (EOS allowed at once, at most 16 frames per text token)."""
    return 1, 16 * len(token_languages)


def answer_length_bounds(token_languages: Sequence[str]) -> tuple[int, int]:
    """(min_frames, max_frames) for a sentence whose text tokens have these languages ("en", "zh", "ja")."""
    expected = sum(SPEAKING_RATE[language] for language in token_languages)  # E, frames at the median rate
    low = max(1, int(np.floor(MIN_RATE_FACTOR * expected)))
    high = int(np.ceil(MAX_SLACK_FRAMES + MAX_RATE_FACTOR * expected))
    return low, high


def check_length_bounds(length_bounds: Callable[[Sequence[str]], tuple[int, int]]) -> str | None:
    """``length_bounds(langs)`` must equal :func:`vallex.inference.length_guards.frame_bounds_of_tokens`."""
    for langs in BOUNDS_CASES:
        got = tuple(int(x) for x in length_bounds(list(langs)))
        want = tuple(frame_bounds_of_tokens(list(langs)))
        if got != want:
            counts = ", ".join(f"{langs.count(lang)} {lang}" for lang in dict.fromkeys(langs))
            part = "min_frames" if got[0] != want[0] else "max_frames"
            return f"for a sentence of {counts} tokens you give {got}, the guards give {want} ({part} differs)."
    return None


# Exercise "ras_rule": does repetition-aware sampling replace this candidate? -------------------------------


def stub_ras_rule(candidate: int, history: Sequence[int]) -> bool:
    """As the notebook ships it: fires whenever the candidate repeats the last frame (a stutter detector)."""
    return len(history) > 0 and history[-1] == candidate


def answer_ras_rule(candidate: int, history: Sequence[int]) -> bool:
    """True where VALL-E 2's rule replaces ``candidate``: r = (its count in the last K frames) / K >= t_r."""
    recent = list(history)[-RAS_WINDOW:]
    return sum(code == candidate for code in recent) / RAS_WINDOW >= RAS_THRESHOLD


def _ras_cases() -> list[tuple[int, list[int]]]:
    """Histories around the threshold: counts just below, at and above it, short histories, old repeats."""
    rng = np.random.default_rng(38)
    repeats = min_repeats(RAS_WINDOW, RAS_THRESHOLD)
    cases = [(5, []), (5, [5]), (5, [5] * (RAS_WINDOW - 1)), (5, [5] * 200)]
    for count in (repeats - 1, repeats, repeats + 1):
        for length in (count, RAS_WINDOW, 3 * RAS_WINDOW):
            others = list(rng.integers(10, 1024, length))  # never the candidate
            recent = min(length, RAS_WINDOW)
            for i in rng.choice(recent, size=min(count, recent), replace=False):
                others[length - recent + int(i)] = 5
            cases.append((5, others))
    # Many repeats, all older than the window: they do not count.
    cases.append((7, [7] * 40 + [int(x) for x in rng.integers(10, 1024, RAS_WINDOW)]))
    cases.append((7, [7] * repeats + [int(x) for x in rng.integers(10, 1024, RAS_WINDOW - repeats + 1)]))
    return cases


def check_ras_rule(ras_rule: Callable[[int, Sequence[int]], bool]) -> str | None:
    """``ras_rule(candidate, history)`` must agree with :func:`vallex.inference.ras.repetition_counts` and the
    threshold ``min_repeats(RAS_WINDOW, RAS_THRESHOLD)`` on histories around the threshold."""
    repeats = min_repeats(RAS_WINDOW, RAS_THRESHOLD)
    for candidate, history in _ras_cases():
        tokens = torch.tensor([candidate])
        past = torch.tensor(history, dtype=torch.long).reshape(1, -1)
        count = int(repetition_counts(tokens, past, RAS_WINDOW)[0])
        want = count >= repeats
        got = bool(ras_rule(candidate, list(history)))
        if got != want:
            older = sum(code == candidate for code in history) - count
            return (f"candidate {candidate} occurs {count} times in the last {RAS_WINDOW} of {len(history)} frames"
                    f"{f' (and {older} more times before them)' if older else ''}: the rule should "
                    f"{'fire' if want else 'not fire'}, yours {'fires' if got else 'does not'}.")
    return None
