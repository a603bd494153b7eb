"""The benchmark's reference-algorithm baseline (bench/reference_baseline.py) is the reference's inference.

On the golden checkpoint with greedy decoding it must give the golden codes (made by the unmodified
reference) and the same codes as :func:`vallex.inference.generation.generate`; its length forcing must match ours.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.reference_baseline import reference_ar, reference_generate, reference_nar
from vallex.config import VallexConfig
from vallex.inference.ar import ar_decode
from vallex.inference.generation import generate, language_ids
from vallex.inference.nar import NARInput, nar_decode
from vallex.inference.precision import apply_precision
from vallex.weights.checkpoint import load_model

pytestmark = pytest.mark.golden_model


@pytest.fixture(scope="module")
def model(golden):
    return load_model(golden / "checkpoint.pt", VallexConfig.from_json(golden / "config.json"))


@pytest.fixture(scope="module")
def cases(golden: Path) -> list[dict]:
    return json.loads((golden / "cases.json").read_text(encoding="utf-8"))["cases"]


def inputs_of(case: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """(text [1, S], language ids [1, S], prompt codes [1, P, 8], generate()'s keyword arguments)."""
    raw = case["inputs"]
    text = torch.tensor(raw["text_tokens"], dtype=torch.long)
    prompt = torch.tensor(raw["audio_prompts"], dtype=torch.long).reshape(raw["audio_prompts_shape"])
    enroll_len = int(raw["enroll_x_lens"])
    langs = language_ids(text.shape[1], enroll_len, raw["prompt_language"], raw["text_language"])[None]
    kwargs = dict(text=text, enroll_len=enroll_len, prompt_codes=prompt, prompt_language=raw["prompt_language"],
                  text_language=raw["text_language"])
    return text, langs, prompt, kwargs


def golden_codes(case: dict) -> torch.Tensor:
    out = case["outputs"]
    return torch.tensor(out["codes"], dtype=torch.long).reshape(out["codes_shape"])


def test_greedy_cases_match_golden_and_our_decoding(model, cases):
    greedy = [c for c in cases if c["outputs"]["stop_reason"] != "forced"]
    assert greedy, "the golden set has no greedy case"
    for case in greedy:
        text, langs, prompt, kwargs = inputs_of(case)
        codes0, calls = reference_ar(model, text, langs, prompt[..., 0], top_k=1)
        codes = reference_nar(model, text, langs, prompt, codes0)
        assert calls == case["outputs"]["ar_forward_calls"], case["name"]
        assert torch.equal(codes, golden_codes(case)), case["name"]
        assert torch.equal(codes, generate(model, **kwargs, top_k=1).codes), case["name"]


def test_forced_cases_nar_matches_golden_and_ours(model, cases):
    for case in (c for c in cases if c["outputs"]["stop_reason"] == "forced"):
        text, langs, prompt, _ = inputs_of(case)
        expected = golden_codes(case)
        codes = reference_nar(model, text, langs, prompt, expected[..., 0])
        assert torch.equal(codes, expected), case["name"]
        assert torch.equal(codes, nar_decode(model, [NARInput(text, langs, prompt, expected[..., 0])])[0]), case["name"]


def test_forced_length_matches_ar_decode(model, cases):
    """The benchmark's min/max frames: both loops emit exactly N frames, the same ones, in N + 1 calls."""
    case = next(c for c in cases if c["inputs"]["audio_prompts_shape"][1] > 0)
    text, langs, prompt, _ = inputs_of(case)
    frames = golden_codes(case).shape[1] + 7  # past the golden EOS: the EOS mask must hold
    calls_seen: list[int] = []
    codes0, calls = reference_ar(model, text, langs, prompt[..., 0], top_k=1, min_frames=frames,
                                 max_frames=frames, on_step=calls_seen.append)
    ours = ar_decode(model, text, langs, prompt[..., 0], top_k=1, min_frames=frames, max_frames=frames)
    assert codes0.shape == (1, frames)
    assert torch.equal(codes0, ours.codes)
    assert calls == ours.steps == frames + 1
    assert calls_seen == list(range(frames + 1))


def test_sampling_is_seeded_and_generate_runs_end_to_end(model, cases):
    text, langs, prompt, _ = inputs_of(cases[0])
    runs = [reference_generate(model, text, langs, prompt, min_frames=12, max_frames=12,
                               generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert runs[0].shape == (1, 12, model.config.num_quantizers)
    assert torch.equal(runs[0], runs[1])
    assert int(runs[0].min()) >= 0 and int(runs[0].max()) < model.config.audio_vocab_size


def test_rejects_reduced_precision(golden):
    model = apply_precision(load_model(golden / "checkpoint.pt", VallexConfig.from_json(golden / "config.json")),
                            "bfloat16")
    text = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="float32 only"):
        reference_ar(model, text, text, torch.zeros(1, 0, dtype=torch.long))
