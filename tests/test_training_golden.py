"""Training-forward parity with the reference trainer on the golden batch (VALLEX_GOLDEN_DIR/train.json)."""
from __future__ import annotations

import json
import random

import pytest
import torch

from vallex.config import VallexConfig
from vallex.training.forward import TrainingBatch, sample_nar_stage, sample_prefix_len, training_forward
from vallex.weights.checkpoint import load_model

pytestmark = pytest.mark.golden_train
RTOL = 1e-4


@pytest.fixture(scope="module")
def train_golden(golden) -> dict:
    return json.loads((golden / "train.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def model(golden):
    model = load_model(golden / "checkpoint.pt", VallexConfig.from_json(golden / "config.json"))
    return model.eval()  # the goldens were made with dropout off


def golden_batch(data: dict) -> TrainingBatch:
    b = data["batch"]
    return TrainingBatch(
        text=torch.tensor(b["x"], dtype=torch.long),
        text_lens=torch.tensor(b["x_lens"], dtype=torch.long),
        text_langs=torch.tensor(b["lang_ids"], dtype=torch.long),
        codes=torch.tensor(b["y"], dtype=torch.long),
        code_lens=torch.tensor(b["y_lens"], dtype=torch.long),
    )


def assert_close(actual: float, expected: float, what: str) -> None:
    assert abs(actual - expected) <= RTOL * abs(expected), f"{what}: {actual} != {expected}"


def run_forward(model, data: dict, run: dict, **kwargs):
    """Draw the NAR stage and prefix length exactly as the golden recipe states, then run the forward."""
    rng = random.Random(0)  # model.rng of a fresh reference model, reset before every call
    drawn_stage = sample_nar_stage(rng, model.config.num_quantizers)
    assert drawn_stage == run["nar_stage_drawn_from_model_rng"]
    stage = run["nar_stage_forced"] or drawn_stage
    torch.manual_seed(run.get("prefix_len_seed", data["meta"]["prefix_len_seed"]))
    batch = golden_batch(data)
    prefix_len = sample_prefix_len(int(batch.code_lens.min()))  # global torch RNG, as the reference
    assert prefix_len == run["prefix_len"]
    return training_forward(model, batch, nar_stage=stage, prefix_len=prefix_len, keep_logits=True, **kwargs)


def test_golden_has_runs(train_golden):
    assert len(train_golden["runs"]) > 0


def test_every_run_losses_match(model, train_golden):
    for run in train_golden["runs"]:
        out = run_forward(model, train_golden, run)
        label = run["label"]
        assert out.nar_stage == run["nar_stage"]
        assert_close(out.ar_loss.item(), run["ar_loss"], f"{label} ar_loss")
        assert_close(out.nar_ce.item(), run["nar_ce"], f"{label} nar_ce")
        assert_close(out.nar_scale, run["nar_scale"], f"{label} nar_scale")
        assert_close(out.nar_loss.item(), run["nar_loss"], f"{label} nar_loss")
        assert_close(out.loss.item(), run["total_loss"], f"{label} total_loss")
        y_lens = train_golden["batch"]["y_lens"]
        assert int(out.ar_top10_correct) == pytest.approx(run["ar_top10_accuracy_x_frames"], rel=1e-4)
        assert int(out.nar_top10_correct) * out.nar_scale == pytest.approx(run["nar_top10_accuracy_x_frames"],
                                                                          rel=1e-4)
        assert int(out.ar_targets) == len(y_lens) * (max(y_lens) + 1)  # padding positions count too
        expected = torch.tensor(run["nar_logits_b0_first2"])
        torch.testing.assert_close(out.nar_logits[0, : expected.shape[0]], expected, atol=1e-3, rtol=1e-4)


def natural_run(data: dict) -> dict:
    """The run whose NAR stage was drawn, not forced (and whose prefix seed is the common one)."""
    runs = [r for r in data["runs"] if r["nar_stage_forced"] is None and "prefix_len_seed" not in r]
    assert runs, "train.json has no run with a drawn NAR stage"
    return runs[0]


def test_default_draws_are_the_references(model, train_golden):
    """Without explicit choices the forward draws the stage from Random(0) and the prefix from the torch RNG."""
    run = natural_run(train_golden)
    torch.manual_seed(train_golden["meta"]["prefix_len_seed"])
    out = training_forward(model, golden_batch(train_golden))
    assert (out.nar_stage, out.prefix_len) == (run["nar_stage"], run["prefix_len"])
    assert_close(out.loss.item(), run["total_loss"], "total_loss")


def test_ar_logits_and_argmax(model, train_golden):
    out = run_forward(model, train_golden, natural_run(train_golden))
    expected = torch.tensor(train_golden["ar_logits_b0_first3"])
    torch.testing.assert_close(out.ar_logits[0, : expected.shape[0]], expected, atol=1e-3, rtol=1e-4)
    assert out.ar_logits[0].argmax(-1).tolist() == train_golden["ar_argmax_b0"]


def test_gradient_norms(model, train_golden):
    run = natural_run(train_golden)  # the README: grad norms after the natural draw's total_loss.backward()
    model.zero_grad(set_to_none=True)
    out = run_forward(model, train_golden, run)
    out.loss.backward()
    params = dict(model.named_parameters(remove_duplicate=False))
    for name, expected in train_golden["grad_norms_natural_draw"].items():
        # Our attention keeps the packed projection as an nn.Linear (in_proj.weight); the state dict
        # and the golden use the reference's key in_proj_weight.
        ours = name.replace("in_proj_weight", "in_proj.weight").replace("in_proj_bias", "in_proj.bias")
        assert_close(params[ours].grad.norm().item(), expected, f"grad norm {name}")
    model.zero_grad(set_to_none=True)


def test_padding_free_ar_loss_ignores_padding(model, train_golden):
    """ar_loss_on_padding=False: same loss whatever extra padding the batch carries."""
    batch = golden_batch(train_golden)
    base = training_forward(model, batch, train_stage="ar", ar_loss_on_padding=False)
    padded = TrainingBatch(
        text=torch.nn.functional.pad(batch.text, (0, 5)),
        text_lens=batch.text_lens,
        text_langs=torch.nn.functional.pad(batch.text_langs, (0, 5)),
        codes=torch.nn.functional.pad(batch.codes, (0, 0, 0, 7), value=3),
        code_lens=batch.code_lens,
    )
    again = training_forward(model, padded, train_stage="ar", ar_loss_on_padding=False)
    assert int(again.ar_targets) == int(batch.code_lens.sum()) + batch.size
    assert_close(again.loss.item(), base.loss.item(), "padding-free AR loss")
