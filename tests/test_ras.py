"""Repetition-aware sampling: the rule on controlled logits, and its trigger rate on real speech codes."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from presets_data import load_presets  # noqa: E402
from ras_calibration import pause_mask  # noqa: E402

from vallex.inference.ras import (  # noqa: E402
    PAD,
    RAS_THRESHOLD,
    RAS_WINDOW,
    min_repeats,
    ras_fires,
    repetition_counts,
)
from vallex.inference.sampling import draw_tokens_ras, sample_tokens  # noqa: E402

VOCAB = 16


def repetition_aware_sample(logits, history, **options):
    """The sampler's RAS draw as (tokens, logprobs, fired); its non-finite flags must stay clear here."""
    tokens, logprobs, bad, fired = draw_tokens_ras(logits, history, **options)
    assert not bad.any()
    return SimpleNamespace(tokens=tokens, logprobs=logprobs, fired=fired)
#: Probability a sticky toy model gives to repeating its last token: above top_p, so the nucleus is that token.
STICKY = 0.85


def sticky_logits(last: torch.Tensor) -> torch.Tensor:
    """Logits [B, VOCAB] of a toy model that repeats its last token with probability STICKY."""
    probs = torch.full((len(last), VOCAB), (1 - STICKY) / (VOCAB - 1))
    probs[torch.arange(len(last)), last] = STICKY
    return probs.log()


def generate(steps: int, rows: int, *, ras: bool, seed: int = 0) -> torch.Tensor:
    """LongTensor [rows, steps] sampled from the sticky model with top_p 0.8, with or without RAS."""
    generator = torch.Generator().manual_seed(seed)
    history = torch.empty(rows, 0, dtype=torch.long)
    last = torch.arange(rows) % VOCAB
    for _ in range(steps):
        logits = sticky_logits(last)
        if ras:
            tokens = repetition_aware_sample(logits, history, top_p=0.8, generator=generator).tokens
        else:
            tokens, _ = sample_tokens(logits, top_p=0.8, generator=generator)
        history = torch.cat([history, tokens[:, None]], dim=1)
        last = tokens
    return history


def longest_run(row: torch.Tensor) -> int:
    best = current = 1
    for a, b in zip(row[:-1].tolist(), row[1:].tolist()):
        current = current + 1 if a == b else 1
        best = max(best, current)
    return best


def test_nucleus_sampling_locks_into_a_loop_and_ras_breaks_out():
    plain = generate(300, 3, ras=False)
    assert all(longest_run(row) == 300 for row in plain)  # the nucleus is the last token: locked for good
    guarded = generate(300, 3, ras=True)
    for row in guarded:
        # RAS fires after 15 repeats within 75 frames; each fired draw leaves with probability 0.15.
        assert len(set(row.tolist())) >= 5 and longest_run(row) < RAS_WINDOW, row.tolist()
    assert torch.equal(guarded, generate(300, 3, ras=True))  # same seed, same tokens


def test_without_repetition_ras_is_nucleus_sampling():
    logits = torch.randn(4, 1025, generator=torch.Generator().manual_seed(1))
    history = torch.full((4, 5), PAD, dtype=torch.long)
    draw = repetition_aware_sample(logits, history, temperature=0.9, top_k=50, top_p=0.9,
                                   generator=torch.Generator().manual_seed(7))
    tokens, logprobs = sample_tokens(logits, temperature=0.9, top_k=50, top_p=0.9,
                                     generator=torch.Generator().manual_seed(7))
    assert not draw.fired.any()
    assert torch.equal(draw.tokens, tokens) and torch.allclose(draw.logprobs, logprobs)


def test_fired_rows_draw_from_the_full_distribution_with_its_log_probability():
    # Row 0's nucleus is token 3 alone, and token 3 fills its history: the rule fires there and only there.
    logits = torch.zeros(2, 8)
    logits[:, 3] = 1.0  # p(3) = 0.28: the nucleus of top_p 0.25 is token 3 alone
    history = torch.stack([torch.full((RAS_WINDOW,), 3), torch.arange(RAS_WINDOW) % 8 + 100])
    generator = torch.Generator().manual_seed(0)
    fired_tokens = []
    for _ in range(200):
        draw = repetition_aware_sample(logits, history, top_p=0.25, generator=generator)
        assert draw.fired.tolist() == [True, False] and draw.tokens[1] == 3
        full = torch.log_softmax(logits[0], dim=-1)[draw.tokens[0]]
        assert torch.isclose(draw.logprobs[0], full) and draw.logprobs[1] == 0.0
        fired_tokens.append(int(draw.tokens[0]))
    assert 100 < sum(t != 3 for t in fired_tokens) < 190  # the full distribution: 72 % tail


def test_counting_and_arguments():
    history = torch.tensor([[PAD, 1, 2, 1], [5, 5, 5, 5]])
    assert repetition_counts(torch.tensor([1, 5]), history, 3).tolist() == [2, 3]
    assert repetition_counts(torch.tensor([1, 5]), history, 2).tolist() == [1, 2]
    assert repetition_counts(torch.tensor([1, 5]), history[:, :0], 3).tolist() == [0, 0]
    assert min_repeats(75, 0.2) == 15 and min_repeats(10, 0.1) == 1 and min_repeats(10, 0.15) == 2
    logits = torch.zeros(2, 4)
    for kwargs, message in [({"window": 0}, "positive whole number"), ({"threshold": 0.0}, r"in \(0, 1\]"),
                            ({"temperature": 0.0}, "temperature must be > 0")]:
        with pytest.raises(ValueError, match=message):
            repetition_aware_sample(logits, history[:, :2], **kwargs)
    with pytest.raises(ValueError, match=r"history \[B, T\] with B = 2"):
        repetition_aware_sample(logits, history[:1])
    with pytest.raises(ValueError, match="token ids"):
        repetition_aware_sample(logits, history.float())
    with pytest.raises(ValueError, match=r"logits \[B, V\]"):
        repetition_aware_sample(logits[0], history)


def test_ras_fires_matches_the_sampler_count():
    codes = torch.randint(0, 6, (3, 120), generator=torch.Generator().manual_seed(2))
    fired = ras_fires(codes, window=20, threshold=0.25)
    for t in range(codes.shape[1]):
        counts = repetition_counts(codes[:, t], codes[:, :t], 20)
        assert torch.equal(fired[:, t], counts >= 5), t


# Real speech: the calibration's bound (bench/README.md) ------------------------------------------------

@pytest.fixture(scope="module")
def presets():
    return load_presets()


def test_trigger_rate_on_real_speech_stays_under_the_bound(presets):
    for language in ("en", "zh", "ja"):
        fired = speech = fired_speech = frames = 0
        for preset in (p for p in presets if p.language == language):
            hits = ras_fires(torch.from_numpy(preset.codes)[None])[0].numpy()
            voiced = ~pause_mask(preset.codes)
            fired += int(hits.sum())
            fired_speech += int((hits & voiced).sum())
            frames += len(hits)
            speech += int(voiced.sum())
        assert fired_speech / speech < 0.01, (language, fired_speech / speech)
        if language != "ja":  # the Japanese presets hold 0.6-1.1 s pauses: there a stuck token is natural
            assert fired / frames < 0.015, (language, fired / frames)


@pytest.mark.parametrize("period", [1, 2, 3, 5])
def test_every_loop_after_real_speech_is_caught(presets, period):
    rng = np.random.default_rng(period)
    repeats = min_repeats(RAS_WINDOW, RAS_THRESHOLD)
    for preset in presets:
        loop = np.resize(rng.choice(1024, size=period, replace=False), 4 * RAS_WINDOW)
        codes = torch.from_numpy(np.concatenate([preset.codes, loop]))[None]
        fired = ras_fires(codes)[0, len(preset.codes):]
        assert fired[repeats * period:].all(), (preset.name, period)  # from the 15th repeat of the cycle on
