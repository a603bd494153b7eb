"""Cutting long speech at pauses (vallex.s2st.segment)."""
from __future__ import annotations

import numpy as np
import pytest
from test_s2st_models import speechlike

from vallex.s2st.segment import split_speech

SR = 24_000


def test_short_audio_is_one_chunk_and_silence_none():
    wav = speechlike([2.0, 3.0])
    assert split_speech(wav) == [(0, len(wav))]
    assert split_speech(np.zeros(SR * 30, dtype=np.float32)) == []
    assert split_speech(np.zeros(0, dtype=np.float32)) == []


def test_long_audio_is_cut_in_pauses_within_the_limits():
    bursts, pause = [1.2, 2.5, 0.8, 3.1, 1.7, 2.2, 2.9, 1.1, 2.4, 3.3, 1.9], 0.4
    wav = speechlike(bursts, pause=pause, seed=4)
    spans = split_speech(wav, max_seconds=6.0, min_seconds=1.5)
    assert spans[0][0] == 0 and spans[-1][1] == len(wav)
    assert all(a < b for a, b in spans) and all(p[1] == q[0] for p, q in zip(spans, spans[1:]))
    assert all(1.5 * SR <= b - a <= 6.0 * SR for a, b in spans)
    # Every cut lies in a pause (no burst is split).
    edges, t = [], 0
    for duration in bursts:
        edges.append((t, t + int(duration * SR)))
        t += int(duration * SR) + int(pause * SR)
    for _, cut in spans[:-1]:
        assert not any(a < cut < b for a, b in edges), cut / SR


def test_continuous_sound_is_still_bounded():
    wav = (0.3 * np.sin(2 * np.pi * 150 * np.arange(SR * 25) / SR)).astype(np.float32)
    spans = split_speech(wav, max_seconds=10.0, min_seconds=2.0)
    assert len(spans) == 3 and all(b - a <= 10 * SR for a, b in spans) and spans[-1][1] == len(wav)


def test_silent_chunks_are_dropped():
    wav = np.concatenate([speechlike([4.0]), np.zeros(SR * 12, dtype=np.float32), speechlike([4.0], seed=2)])
    spans = split_speech(wav, max_seconds=8.0, min_seconds=2.0)
    assert spans and all(np.max(np.abs(wav[a:b])) > 1e-3 for a, b in spans)
    assert sum(b - a for a, b in spans) < len(wav)


def test_bad_limits():
    with pytest.raises(ValueError, match="min_seconds < max_seconds"):
        split_speech(np.ones(10, dtype=np.float32), max_seconds=2.0, min_seconds=3.0)
