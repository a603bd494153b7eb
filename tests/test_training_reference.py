"""Our training forward against an independent oracle of the reference's (tests/reference_training.py) on
batches the public golden lacks: one utterance each of English, Mandarin and Japanese (language id 2), texts of
different lengths (every item but the longest padded), acoustic prompts of several lengths, and a model of
other sizes. Losses and every parameter gradient must agree, the NAR language embedding's above all.
"""
from __future__ import annotations

import pytest
import torch
from reference_training import ReferenceVALLE

from vallex.config import VallexConfig
from vallex.model import VallexModel
from vallex.training.forward import TrainingBatch, sample_prefix_len, training_forward
from vallex.weights.checkpoint import load_model

RTOL = 1e-4


def _other_sizes_model() -> VallexModel:
    """A model of other sizes than the golden one, all layers different (seeded)."""
    torch.manual_seed(11)
    model = VallexModel(VallexConfig(d_model=48, nhead=6, num_layers=3, text_vocab_size=80, num_languages=3))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".bias") or name.endswith("alpha"):
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


@pytest.fixture(scope="module", params=["golden", "other-sizes"])
def models(request, golden):
    if request.param == "golden":
        ours = load_model(golden / "checkpoint.pt", VallexConfig.from_json(golden / "config.json")).eval()
    else:
        ours = _other_sizes_model()
    cfg = ours.config
    oracle = ReferenceVALLE(cfg.d_model, cfg.nhead, cfg.num_layers, cfg.num_quantizers, cfg.text_vocab_size,
                            cfg.audio_vocab_size, cfg.num_languages).eval()
    oracle.load_state_dict(ours.state_dict(), strict=True)
    return ours, oracle


def three_language_batch(text_vocab: int, pad_language: str = "zero", seed: int = 3) -> TrainingBatch:
    """en, zh, ja items; text lengths 21 / 14 / 17 and 46 / 39 / 52 frames (padding everywhere but one item).

    ``pad_language``: padded text positions carry language 0 (what :func:`vallex.training.dataset.collate`
    writes) or each item's own language (a per-utterance id broadcast over the row).
    """
    generator = torch.Generator().manual_seed(seed)
    text_lens, code_lens = [21, 14, 17], [46, 39, 52]
    width, frames = max(text_lens), max(code_lens)
    text = torch.randint(5, min(text_vocab, 70), (3, width), generator=generator)
    langs = torch.tensor([[0] * width, [1] * width, [2] * width])
    for row, length in enumerate(text_lens):
        text[row, length:] = 0
        if pad_language == "zero":
            langs[row, length:] = 0
    codes = torch.randint(0, 1024, (3, frames, 8), generator=generator)
    return TrainingBatch(text, torch.tensor(text_lens), langs, codes, torch.tensor(code_lens))


def _gradients(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    grads = {name.replace("in_proj.weight", "in_proj_weight").replace("in_proj.bias", "in_proj_bias"): p.grad.clone()
             for name, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return grads


def _run_both(ours, oracle, batch, stage, prefix_len):
    ours.zero_grad(set_to_none=True)
    out = training_forward(ours, batch, nar_stage=stage, prefix_len=prefix_len)
    out.loss.backward()
    ref = oracle(batch.text, batch.text_lens, batch.codes, batch.code_lens, batch.text_langs, stage, prefix_len)
    ref["total_loss"].backward()
    return out, ref, _gradients(ours), _gradients(oracle)


@pytest.mark.parametrize("stage,prefix", [(1, 0), (4, None), (7, 9)])
def test_losses_and_every_gradient_match_the_reference(models, stage, prefix):
    ours, oracle = models
    batch = three_language_batch(ours.config.text_vocab_size)
    if prefix is None:  # the natural draw of the reference
        torch.manual_seed(1)
        prefix = sample_prefix_len(int(batch.code_lens.min()))
    out, ref, grads, ref_grads = _run_both(ours, oracle, batch, stage, prefix)
    for name in ("ar_loss", "nar_loss"):
        assert getattr(out, name).item() == pytest.approx(ref[name].item(), rel=1e-5), name
    assert out.loss.item() == pytest.approx(ref["total_loss"].item(), rel=1e-5)
    assert set(grads) == set(ref_grads)
    for name, expected in ref_grads.items():
        scale = expected.abs().max().item()
        torch.testing.assert_close(grads[name], expected, rtol=RTOL, atol=RTOL * scale, msg=name)
    table = "nar_language_embedding.word_embeddings.weight"
    assert ref_grads[table][2].norm() > 0, "the Japanese row must be trained"
    assert grads[table].norm().item() == pytest.approx(ref_grads[table].norm().item(), rel=RTOL)


def test_language_table_gradient_is_the_sum_over_real_positions(models):
    """Which positions reach the NAR language table: each row gets the summed gradient of the real text
    positions of its language; padded positions get exactly zero (their keys are masked and their outputs
    never read), so the id written there cannot matter."""
    ours, _ = models
    batch = three_language_batch(ours.config.text_vocab_size)
    captured = {}

    def keep(module, args, output):
        output.retain_grad()
        captured["language"] = output

    handle = ours.nar_language_embedding.word_embeddings.register_forward_hook(keep)
    try:
        ours.zero_grad(set_to_none=True)
        training_forward(ours, batch, train_stage="nar", nar_stage=3, prefix_len=7).loss.backward()
    finally:
        handle.remove()
    per_position = captured["language"].grad  # [B, S, D]
    real = torch.arange(per_position.shape[1])[None] < batch.text_lens[:, None]  # [B, S]
    assert torch.count_nonzero(per_position[~real]) == 0
    table = ours.nar_language_embedding.weight.grad
    for language in range(3):
        chosen = real & (batch.text_langs == language)
        torch.testing.assert_close(table[language], per_position[chosen].sum(0), rtol=1e-5, atol=1e-5)
    ours.zero_grad(set_to_none=True)


def test_the_padding_language_changes_nothing(models):
    """Padding carrying language 0 (our collate) or the item's own language: same losses and gradients."""
    ours, _ = models
    results = []
    for pad_language in ("zero", "own"):
        batch = three_language_batch(ours.config.text_vocab_size, pad_language)
        ours.zero_grad(set_to_none=True)
        out = training_forward(ours, batch, nar_stage=5, prefix_len=4)
        out.loss.backward()
        results.append((out.loss.item(), _gradients(ours)))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a == loss_b
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name
