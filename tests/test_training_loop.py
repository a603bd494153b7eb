"""The trainer: schedules, config, checkpoint format, resume after an interruption, stages, precision,
growing a model for a new language and fine-tuning it."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from vallex.config import VallexConfig
from vallex.model import VallexModel
from vallex.training import trainer
from vallex.training.espeak_corpus import write_espeak_corpus
from vallex.training.extend import extend_model
from vallex.training.forward import TrainingBatch, training_forward
from vallex.training.prepare import prepare_dataset, scan_folder
from vallex.training.trainer import TrainConfig, TrainingPrecision, learning_rate, train, training_precision
from vallex.weights.checkpoint import load_model, save_checkpoint

MICRO = {"d_model": 32, "nhead": 2, "num_layers": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A prepared folder of 6 espeak utterances (en + zh) and a micro model config."""
    from vallex.weights.random_weights import random_codec

    root = tmp_path_factory.mktemp("loop")
    write_espeak_corpus(root / "raw", {"en": ["Hello there.", "Good morning.", "See you soon.", "Open the door."],
                                       "zh": ["你好。", "再见。"]})
    prepare_dataset(scan_folder(root / "raw"), root / "prep", random_codec(seed=0), progress=False)
    (root / "micro.json").write_text(json.dumps(MICRO), encoding="utf-8")
    return root


def config(root, out, **kwargs) -> TrainConfig:
    base = dict(data=str(root / "prep"), out_dir=str(out), model=str(root / "micro.json"), batch_size=2,
                max_steps=6, lr=2e-3, warmup_steps=2, valid_fraction=0.0, log_every=1, valid_every=100,
                save_every=100, num_threads=1)
    return TrainConfig(**{**base, **kwargs})


def read_log(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_learning_rate_schedules():
    cos = TrainConfig(lr=1.0, warmup_steps=10, max_steps=110, schedule="cosine", min_lr_ratio=0.1)
    assert learning_rate(cos, 0, 0) == pytest.approx(0.1)  # linear warm-up
    assert learning_rate(cos, 9, 0) == pytest.approx(1.0)
    assert learning_rate(cos, 60, 0) == pytest.approx(0.1 + 0.9 * 0.5)  # half way down the cosine
    assert learning_rate(cos, 110, 0) == pytest.approx(0.1)
    eden = TrainConfig(lr=0.05, schedule="eden", warmup_steps=200, eden_lr_batches=5000, eden_lr_epochs=4)
    assert learning_rate(eden, 0, 0) == pytest.approx(0.05 * 0.5)  # warm-up starts at half
    assert learning_rate(eden, 5000, 0) == pytest.approx(0.05 * 2 ** -0.25)
    assert learning_rate(eden, 5000, 4) == pytest.approx(0.05 * 2 ** -0.5)


def test_config_yaml_and_validation(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("data: d\nstage: ar\nlr: 0.0003\nbetas: [0.9, 0.98]\n", encoding="utf-8")
    cfg = TrainConfig.from_yaml(path, max_steps=7, lr=None)
    assert (cfg.stage, cfg.lr, cfg.betas, cfg.max_steps) == ("ar", 3e-4, (0.9, 0.98), 7)
    assert TrainConfig.from_dict(__import__("yaml").safe_load(cfg.to_yaml())) == cfg
    with pytest.raises(ValueError, match="Unknown training option"):
        TrainConfig.from_dict({"learning_rate": 1})
    with pytest.raises(ValueError, match="stage"):
        TrainConfig(stage="decoder")


def test_checkpoint_format_and_resume_after_interruption(data, tmp_path):
    """A crash after step 5 resumes from the step-4 checkpoint and ends exactly where an uninterrupted run does."""
    straight = train(config(data, tmp_path / "a", max_steps=8, save_every=4))

    def crash(step, row):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config(data, tmp_path / "b", max_steps=8, save_every=4), on_step=crash)
    assert json.loads((tmp_path / "b" / "last.json").read_text())["step"] == 4
    resumed = train(config(data, tmp_path / "b", max_steps=8, save_every=4))
    assert resumed.step == 8
    # The app's format: exactly {"model": state_dict}, loadable strictly (config found beside it).
    payload = torch.load(straight.last_checkpoint, map_location="cpu", weights_only=True)
    assert list(payload) == ["model"]
    a, b = load_model(straight.last_checkpoint), load_model(resumed.last_checkpoint)
    assert a.config == VallexConfig(**MICRO)
    assert list(payload["model"]) == list(VallexModel(a.config).state_dict())
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    log_a, log_b = read_log(tmp_path / "a" / "log.csv"), read_log(tmp_path / "b" / "log.csv")
    assert [r["step"] for r in log_b] == [str(s) for s in range(1, 9)]  # the crashed step 5 was not kept twice
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]
    # The optimiser state is stored apart from the model weights.
    state = torch.load(tmp_path / "b" / "checkpoint-00000008.state.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 8 and "optimizer" in state


def test_losses_fall_and_validation_runs(data, tmp_path):
    result = train(config(data, tmp_path / "run", max_steps=30, valid_fraction=0.3, valid_every=15))
    assert result.train_losses[-1] < 0.6 * result.train_losses[0]
    valid = read_log(tmp_path / "run" / "valid.csv")
    assert [r["step"] for r in valid] == ["15", "30"]
    assert all(math.isfinite(float(r["loss"])) for r in valid)
    assert (tmp_path / "run" / "best.pt").is_file() and load_model(tmp_path / "run" / "best.pt")


def test_stage_ar_trains_only_ar_parameters(data, tmp_path):
    torch.manual_seed(42)  # the trainer's initial weights (seed 42)
    initial = VallexModel(VallexConfig(**MICRO)).state_dict()
    result = train(config(data, tmp_path / "ar", stage="ar", max_steps=3, dropout=0.0))
    trained = load_model(result.last_checkpoint).state_dict()
    changed = {k for k in initial if not torch.equal(initial[k], trained[k])}
    assert changed and all(k.startswith("ar_") for k in changed)
    assert "ar_language_embedding.word_embeddings.weight" in changed
    assert (read_log(tmp_path / "ar" / "log.csv")[0]["nar_loss"]) == ""


def test_gradient_accumulation_consumes_several_batches(data, tmp_path):
    rows = []
    train(config(data, tmp_path / "acc", accumulate_grad_steps=2, max_steps=2), on_step=lambda s, r: rows.append(r))
    single = []
    train(config(data, tmp_path / "one", max_steps=2), on_step=lambda s, r: single.append(r))
    assert rows[0]["frames"] > single[0]["frames"]  # two batches of <= 2 utterances per step


def test_bf16_autocast_on_cpu_and_fp16_refused(data, tmp_path):
    result = train(config(data, tmp_path / "bf16", precision="bf16", max_steps=2))
    assert all(math.isfinite(x) for x in result.train_losses)
    with pytest.raises(ValueError, match="fp16"):
        train(config(data, tmp_path / "fp16", precision="fp16", max_steps=1, device="cpu"))


@pytest.mark.parametrize("capability, expected", [
    ((7, 0), TrainingPrecision(torch.float16, grad_scaler=True)),  # V100
    ((7, 5), TrainingPrecision(torch.float16, grad_scaler=True)),  # T4
    ((8, 0), TrainingPrecision(torch.bfloat16)),  # A100
    ((8, 9), TrainingPrecision(torch.bfloat16)),  # L4
    ((9, 0), TrainingPrecision(torch.bfloat16)),  # H100
])
def test_auto_training_precision_follows_the_compute_capability(capability, expected):
    native = capability >= (8, 0)  # torch's is_bf16_supported(including_emulation=False)
    # T4 and V100 answer is_bf16_supported() (emulation counted) True: auto must not take bf16 from it.
    assert training_precision("auto", "cuda", capability, bf16_supported=True, bf16_native=native) == expected
    assert training_precision("fp32", "cuda", capability) == TrainingPrecision(None)
    assert training_precision("fp16", "cuda", capability) == TrainingPrecision(torch.float16, grad_scaler=True)


def test_training_precision_elsewhere_and_the_refusals():
    for device_type in ("cpu", "mps"):
        assert training_precision("auto", device_type) == TrainingPrecision(None)  # float32, as before
    assert training_precision("bf16", "cpu") == TrainingPrecision(torch.bfloat16)
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        training_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="does not support bf16"):
        training_precision("bf16", "cuda", (6, 1), bf16_supported=False, bf16_native=False)
    with pytest.warns(UserWarning, match="emulates bfloat16"):  # asked for: allowed, but said to be slow
        assert training_precision("bf16", "cuda", (7, 5), bf16_native=False) == TrainingPrecision(torch.bfloat16)
    with pytest.raises(ValueError, match="compute capability"):
        training_precision("auto", "cuda")
    with pytest.raises(ValueError, match="Unknown training precision"):
        training_precision("half", "cpu")


def test_the_trainer_reads_the_gpu_it_trains_on(monkeypatch):
    # What the trainer asks torch, answered as a T4 does: bfloat16 "supported" (emulated), capability 7.5.
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (7, 5))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    chosen = trainer._training_precision(TrainConfig(precision="auto"), torch.device("cuda", 0))
    assert chosen == TrainingPrecision(torch.float16, grad_scaler=True)


def test_fp16_with_a_gradient_scaler_trains_and_resumes_its_scale(data, tmp_path, monkeypatch):
    """The float16 path of a T4, run on the CPU (torch's CPU GradScaler): float16 autocast, the loss scaled
    before backward, the gradients unscaled before clipping, then step and update; the scale is saved with
    the optimiser and restored on resume."""
    monkeypatch.setattr(trainer, "_training_precision",
                        lambda config, device: TrainingPrecision(torch.float16, grad_scaler=True))
    calls: list[str] = []

    class RecordingScaler(torch.amp.GradScaler):
        def scale(self, outputs):
            calls.append("scale")
            return super().scale(outputs)

        def unscale_(self, optimizer):
            calls.append("unscale")
            return super().unscale_(optimizer)

        def step(self, optimizer, *args, **kwargs):
            calls.append("step")
            return super().step(optimizer, *args, **kwargs)

        def update(self, new_scale=None):
            calls.append("update")
            return super().update(new_scale)

    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(parameters, max_norm, *args, **kwargs):
        calls.append("clip")
        return real_clip(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.amp, "GradScaler", RecordingScaler)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    rows = []
    result = train(config(data, tmp_path / "fp16", max_steps=3, save_every=2, accumulate_grad_steps=2),
                   on_step=lambda step, row: rows.append(row))
    assert calls[:6] == ["scale", "scale", "unscale", "clip", "step", "update"]  # two micro-batches per step
    assert calls == calls[:6] * 3
    assert all(math.isfinite(loss) for loss in result.train_losses)
    finite = [row["grad_norm"] for row in rows if math.isfinite(row["grad_norm"])]
    assert finite and max(finite) < 1e3  # clipped after unscaling: the norm of the true gradients, not x 65536
    state = torch.load(tmp_path / "fp16" / "checkpoint-00000003.state.pt", weights_only=True)
    assert set(state["scaler"]) >= {"scale", "_growth_tracker"}
    assert "scaler" in torch.load(tmp_path / "fp16" / "checkpoint-00000002.state.pt", weights_only=True)
    # Resumed: the scaler starts from the saved scale, not from 65536 again.
    state["scaler"]["scale"] = 1024.0
    torch.save(state, tmp_path / "fp16" / "checkpoint-00000003.state.pt")
    run = trainer._set_up(config(data, tmp_path / "fp16", max_steps=4))
    assert run.resumed and run.scaler.get_scale() == 1024.0


def test_float32_and_bf16_checkpoints_hold_no_scaler(data, tmp_path):
    train(config(data, tmp_path / "fp32", max_steps=1))
    state = torch.load(tmp_path / "fp32" / "checkpoint-00000001.state.pt", weights_only=True)
    assert "scaler" not in state


def test_extend_model_keeps_old_rows():
    torch.manual_seed(0)
    model = VallexModel(VallexConfig(d_model=32, nhead=2, num_layers=1, text_vocab_size=80)).eval()
    grown = extend_model(model, num_languages=4, text_vocab_size=100, init_from="zh").eval()
    assert grown.config.num_languages == 4 and grown.config.text_vocab_size == 100
    for side in ("ar", "nar"):
        lang = getattr(grown, f"{side}_language_embedding").weight
        assert torch.equal(lang[:3], getattr(model, f"{side}_language_embedding").weight)
        assert torch.equal(lang[3], lang[1])  # seeded from zh
        text = getattr(grown, f"{side}_text_embedding").weight
        assert torch.equal(text[:80], getattr(model, f"{side}_text_embedding").weight)
    assert grown.nar_predict_layers[0].weight is grown.nar_audio_embeddings[2].weight  # tie kept
    batch = TrainingBatch(torch.tensor([[3, 4, 5]]), torch.tensor([3]), torch.tensor([[0, 1, 2]]),
                          torch.randint(0, 1024, (1, 12, 8)), torch.tensor([12]))
    before = training_forward(model, batch, nar_stage=2, prefix_len=1)
    after = training_forward(grown, batch, nar_stage=2, prefix_len=1)
    assert after.loss.item() == pytest.approx(before.loss.item(), rel=1e-6)  # old languages unchanged


def test_fine_tune_adds_a_language(data, tmp_path):
    """Fine-tuning a 3-language checkpoint on German data grows it to 4 languages; the app can load the result."""
    from vallex.weights.random_weights import random_codec

    write_espeak_corpus(tmp_path / "raw", {"de": ["Guten Tag.", "Danke schön."]})
    prepare_dataset(scan_folder(tmp_path / "raw"), tmp_path / "prep", random_codec(seed=0), progress=False)
    torch.manual_seed(1)
    base = VallexModel(VallexConfig(**MICRO))
    save_checkpoint(base, tmp_path / "base.pt")
    (tmp_path / "base.json").write_text(json.dumps(MICRO), encoding="utf-8")
    result = train(config(data, tmp_path / "ft", data=str(tmp_path / "prep"), init_checkpoint=str(tmp_path / "base.pt"),
                          init_language_from="en", max_steps=3))
    tuned = load_model(result.last_checkpoint)
    assert tuned.config.num_languages == 4
    assert tuned.ar_language_embedding.weight.shape[0] == 4
    assert tuned.config.text_vocab_size == base.config.text_vocab_size  # espeak ids fit in the 2048 rows
    assert json.loads((tmp_path / "ft" / "languages.json").read_text()) == ["en", "zh", "ja", "de"]
    # Fine-tuning that checkpoint on data whose row 3 is another language is refused, not silently mixed.
    write_espeak_corpus(tmp_path / "raw_fr", {"fr-fr": ["Bonjour."]})
    prepare_dataset(scan_folder(tmp_path / "raw_fr"), tmp_path / "prep_fr", random_codec(seed=0), progress=False)
    with pytest.raises(ValueError, match="same embedding row"):
        train(config(data, tmp_path / "ft_fr", data=str(tmp_path / "prep_fr"),
                     init_checkpoint=str(result.last_checkpoint), max_steps=1, batch_size=1))


def test_non_finite_gradient_skips_the_update(data, tmp_path, monkeypatch):
    """A batch that gives inf/NaN gradients leaves the weights as they were instead of poisoning them."""
    import vallex.training.trainer as trainer_module

    real = trainer_module.training_forward

    def poisoned(model, batch, **options):
        out = real(model, batch, **options)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(trainer_module, "training_forward", poisoned)
    torch.manual_seed(42)
    initial = VallexModel(VallexConfig(**MICRO)).state_dict()
    result = train(config(data, tmp_path / "nan", max_steps=2, dropout=0.0))
    trained = load_model(result.last_checkpoint).state_dict()
    assert all(torch.equal(initial[k], trained[k]) for k in initial)


def test_dropout_hooks_act_only_in_training():
    from vallex.training.dropout import add_dropout

    torch.manual_seed(0)
    model = VallexModel(VallexConfig(**MICRO))
    batch = TrainingBatch(torch.tensor([[3, 4, 5]]), torch.tensor([3]), torch.tensor([[0, 0, 0]]),
                          torch.randint(0, 1024, (1, 12, 8)), torch.tensor([12]))
    model.eval()
    plain = training_forward(model, batch, nar_stage=3, prefix_len=2).loss.item()
    handles = add_dropout(model, 0.3)
    assert training_forward(model, batch, nar_stage=3, prefix_len=2).loss.item() == plain  # eval: no dropout
    model.train()
    noisy = {training_forward(model, batch, nar_stage=3, prefix_len=2).loss.item() for _ in range(3)}
    assert len(noisy) == 3 and plain not in noisy
    for handle in handles:
        handle.remove()
    assert training_forward(model, batch, nar_stage=3, prefix_len=2).loss.item() == plain


def test_every_dropout_point_is_reached_by_the_training_forward():
    """Each module add_dropout hooks (positional embeddings, every layer's attention and feed-forward) is called
    in a training forward, so no dropout is silently lost to a path that bypasses the module."""
    from vallex.training.dropout import add_dropout

    model = VallexModel(VallexConfig(**MICRO)).train()
    handles = add_dropout(model, 0.1)
    hooked = {id(handle.hooks_dict_ref()): handle for handle in handles}  # one hook dict per hooked module
    called = set()
    modules = [m for m in model.modules() if any(id(m._forward_hooks) == key or id(m._forward_pre_hooks) == key
                                                 for key in hooked)]
    probes = [m.register_forward_hook(lambda m, i, o: called.add(id(m))) for m in modules]
    batch = TrainingBatch(torch.tensor([[3, 4, 5]]), torch.tensor([3]), torch.tensor([[0, 0, 0]]),
                          torch.randint(0, 1024, (1, 12, 8)), torch.tensor([12]))
    training_forward(model, batch, nar_stage=3, prefix_len=2)
    assert modules and {id(m) for m in modules} == called, [type(m).__name__ for m in modules if id(m) not in called]
    for handle in handles + probes:
        handle.remove()


def test_data_workers_give_the_same_run(data, tmp_path):
    # Batches collated by worker processes (what CUDA runs use by default) train exactly as in-process ones.
    serial = train(config(data, tmp_path / "serial", max_steps=4, num_workers=0))
    workers = train(config(data, tmp_path / "workers", max_steps=4, num_workers=2))
    assert workers.train_losses == serial.train_losses


def test_data_workers_default_to_the_device():
    from vallex.training.trainer import data_workers

    assert data_workers(TrainConfig(), torch.device("cpu")) == 0
    assert data_workers(TrainConfig(), torch.device("cuda")) == 2
    assert data_workers(TrainConfig(num_workers=5), torch.device("cpu")) == 5
    with pytest.raises(ValueError, match="num_workers"):
        TrainConfig(num_workers=-1)


def test_a_batch_pins_all_its_tensors(monkeypatch):
    # This machine has no CUDA to pin for; Tensor.pin_memory stands in, marking what it was asked to pin.
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda tensor: pinned.append(tensor) or tensor.clone())
    batch = TrainingBatch(torch.ones(2, 3, dtype=torch.long), torch.tensor([3, 2]), torch.zeros(2, 3, dtype=torch.long),
                          torch.zeros(2, 4, 8, dtype=torch.long), torch.tensor([4, 3]))
    again = batch.pin_memory()
    assert len(pinned) == 5 and all(torch.equal(a, b) for a, b in zip(vars(again).values(), vars(batch).values()))


def test_step_losses_are_summed_on_the_device(data, monkeypatch):
    from sync_counter import HostSyncCounter

    from vallex.training.dataset import CodesDataset, collate
    from vallex.training.trainer import _Dist, _LossSums

    torch.manual_seed(0)
    model = VallexModel(VallexConfig(**MICRO)).train()
    dataset = CodesDataset(data / "prep")
    outs = [training_forward(model, collate([dataset[i], dataset[i + 1]]), nar_stage=1 + i, prefix_len=0)
            for i in range(3)]
    sums = _LossSums(torch.device("cpu"))
    counter = HostSyncCounter(monkeypatch)
    with counter:
        for out in outs:
            sums.add(out.loss, out, frames=torch.tensor(7))
    assert counter.count == 0  # nothing read back per batch
    with counter:
        totals = sums.totals(_Dist())
    assert counter.count == 1  # one read for the whole step
    assert totals["loss"] == pytest.approx(sum(out.loss.item() for out in outs))
    assert totals["nar_targets"] == sum(int(out.nar_targets) for out in outs) and totals["frames"] == 21
