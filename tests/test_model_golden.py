"""Model parity with the reference implementation on the golden cases (VALLEX_GOLDEN_DIR)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vallex.config import VallexConfig
from vallex.doctor import GoldenCase
from vallex.inference.ar import ar_decode
from vallex.inference.generation import generate, language_ids
from vallex.inference.nar import NARInput, nar_decode
from vallex.model import ar_attention_mask
from vallex.weights.checkpoint import load_model

pytestmark = pytest.mark.golden_model
LOGIT_ATOL = 1e-3


def load_cases(golden: Path) -> list[dict]:
    return json.loads((golden / "cases.json").read_text(encoding="utf-8"))["cases"]


@pytest.fixture(scope="module")
def model(golden):
    config = VallexConfig.from_json(golden / "config.json")
    return load_model(golden / "checkpoint.pt", config)


@pytest.fixture(scope="module")
def cases(golden):
    return load_cases(golden)


def case_inputs(case: dict) -> dict:
    """The case's inputs as ``generate``'s keyword arguments (read as ``vallex doctor`` reads them)."""
    return GoldenCase.from_json(case).generate_inputs()


def expected_codes(case: dict) -> torch.Tensor:
    """LongTensor [1, T, 8]: the reference's codes."""
    return GoldenCase.from_json(case).codes


def test_golden_set_is_not_empty(cases):
    assert len(cases) > 0


def test_checkpoint_keys_and_tied_weights(model, golden):
    state = torch.load(golden / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    assert list(model.state_dict().keys()) == list(state.keys())
    n_q = model.config.num_quantizers
    for j in range(n_q - 2):
        assert model.nar_predict_layers[j].weight is model.nar_audio_embeddings[j + 2].word_embeddings.weight
    assert model.nar_predict_layers[n_q - 2].weight is not model.nar_audio_embeddings[n_q - 1].word_embeddings.weight
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def pytest_generate_tests(metafunc):
    if "greedy_case" in metafunc.fixturenames or "forced_case" in metafunc.fixturenames:
        from conftest import golden_dir

        cases = load_cases(golden_dir())
        if "greedy_case" in metafunc.fixturenames:
            names = [c["name"] for c in cases if c["outputs"]["stop_reason"] != "forced"]
            metafunc.parametrize("greedy_case", names)
        if "forced_case" in metafunc.fixturenames:
            names = [c["name"] for c in cases if c["outputs"]["stop_reason"] == "forced"]
            metafunc.parametrize("forced_case", names)


def by_name(cases: list[dict], name: str) -> dict:
    return next(c for c in cases if c["name"] == name)


def first_step_logits(into: list[torch.Tensor], then=None):
    """A logits processor that keeps the first AR step's logits [1025] in ``into`` (then applies ``then``)."""
    def processor(step, logits):
        if step == 0:
            into.append(logits[0].clone())
        return logits if then is None else then(step, logits)
    return processor


def test_greedy_case_codes_and_first_logits(model, cases, greedy_case):
    case = by_name(cases, greedy_case)
    out = case["outputs"]
    first = []
    result = generate(model, **case_inputs(case), top_k=1, logits_processor=first_step_logits(first))
    assert result.stop_reason == out["stop_reason"]
    assert result.ar.steps == out["ar_forward_calls"]
    assert torch.equal(result.codes, expected_codes(case))
    reference_logits = torch.tensor(out["ar_first_step_logits"])
    assert (first[0] - reference_logits).abs().max().item() < LOGIT_ATOL


def test_cached_ar_equals_full_recomputation(model, cases, greedy_case):
    """Every cached AR step's logits equal a teacher-forced pass over the whole sequence without cache."""
    case = by_name(cases, greedy_case)
    inputs = case_inputs(case)
    text = inputs["text"]
    langs = language_ids(text.shape[1], inputs["enroll_len"], inputs["prompt_language"],
                         inputs["text_language"])[None]
    step_logits = []

    def record(step, logits):
        step_logits.append(logits[0].clone())
        return logits

    ar = ar_decode(model, text, langs, inputs["prompt_codes"][..., 0], top_k=1, logits_processor=record)
    cfg = model.config
    y = torch.cat([torch.tensor([[cfg.bos_id]]), inputs["prompt_codes"][..., 0], ar.codes], dim=1)  # [1, 1+P+T]
    with torch.no_grad():
        xy = torch.cat([model.embed_text("ar", text, langs), model.embed_ar_audio(y)], dim=1)
        hidden = model.ar_decoder(xy, ar_attention_mask(text.shape[1], y.shape[1]))
        full = model.ar_logits(hidden[0, text.shape[1] + inputs["prompt_codes"].shape[1]:])  # [T+1, 1025]
    cached = torch.stack(step_logits)
    assert cached.shape == full.shape
    assert (cached - full).abs().max().item() < LOGIT_ATOL
    # and the per-step greedy decisions match the reference's
    assert cached.argmax(-1).tolist() == case["outputs"]["ar_step_argmax"]


def test_forced_ar_case_isolates_the_nar(model, cases, forced_case):
    case = by_name(cases, forced_case)
    inputs = case_inputs(case)
    codes = expected_codes(case)
    text = inputs["text"]
    langs = language_ids(text.shape[1], inputs["enroll_len"], inputs["prompt_language"],
                         inputs["text_language"])[None]
    assert torch.equal(nar_decode(model, [NARInput(text, langs, inputs["prompt_codes"], codes[..., 0])])[0], codes)

    # Stage-1 logits of the first frames, and the whole pipeline forced through the AR logits.
    first = torch.tensor(case["outputs"]["nar_stage1_logits_first4"])
    with torch.no_grad():
        text_emb = model.embed_text("nar", text, langs)
        prompt = inputs["prompt_codes"]
        emb = model.nar_audio_embeddings[0](torch.cat([prompt[..., 0], codes[..., 0]], dim=1))
        emb[:, : prompt.shape[1]] += sum(model.nar_audio_embeddings[j](prompt[..., j])
                                         for j in range(1, model.config.num_quantizers))
        hidden = model.nar_forward(text_emb, emb, 0)[:, prompt.shape[1]:]
        logits = model.nar_predict_layers[0](hidden)[0, : first.shape[0]]
    assert (logits - first).abs().max().item() < LOGIT_ATOL

    forced = codes[0, :, 0].tolist()

    def force(step, logits):
        target = forced[step] if step < len(forced) else model.config.eos_id
        out = torch.full_like(logits, -1e4)
        out[:, target] = 1e4
        return out

    first = []
    result = generate(model, **inputs, top_k=1, logits_processor=first_step_logits(first, then=force))
    assert torch.equal(result.codes, codes)
    assert (first[0] - torch.tensor(case["outputs"]["ar_first_step_logits"])).abs().max() < LOGIT_ATOL
