"""``vallex train``: train or fine-tune VALL-E X on a prepared folder (:mod:`vallex.training.prepare`).

One step = ``accumulate_grad_steps`` global batches (duration-bucketed, :class:`BucketBatchSampler`), the
training forward (:func:`training_forward`), AdamW with gradient clipping, a warm-up + cosine / Eden /
constant learning rate. Losses are summed over frames and divided by the frames of the whole step, so a
step's gradient is the same however the batches are split over processes or accumulation steps.

Multi-GPU (or multi-process CPU) runs use PyTorch DDP: start with
``torchrun --nproc_per_node=N -m vallex train ...`` (NCCL on GPUs, gloo on CPU). Every rank builds the same
global batches and takes its slice; random choices (NAR stage, prompt length, dropout) are seeded by
``(seed, step)``, which also makes a resumed run continue exactly as an uninterrupted one would.

Output folder (``out_dir``)::

    checkpoint-00001000.pt        {"model": state_dict}: the format the app and load_model read
    checkpoint-00001000.json      its VallexConfig (load_model finds it beside the .pt)
    checkpoint-00001000.state.pt  optimiser (+ fp16's gradient scaler) + progress, for resuming (weights_only-loadable)
    best.pt / best.json           the checkpoint with the lowest validation loss
    languages.json                the language of each language-embedding row (load_model reads it)
    last.json                     which checkpoint to resume from
    log.csv, valid.csv            training and validation losses
    train_config.yaml             the configuration of the run
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vallex.config import VallexConfig
from vallex.files import atomic_open, atomic_path, make_folder, read_small_text, write_text_atomic
from vallex.inference.precision import cuda_auto_precision, cuda_device_facts, cuda_native_bfloat16
from vallex.model import VallexModel
from vallex.training.dataset import BucketBatchSampler, CodesDataset, collate, shard_batch, split_ids
from vallex.training.dropout import add_dropout
from vallex.training.extend import extend_model
from vallex.training.forward import (
    TRAIN_STAGES,
    ForwardResult,
    TrainingBatch,
    nar_loss_scale,
    sample_nar_stage,
    sample_prefix_len,
    training_forward,
)
from vallex.weights.checkpoint import LANGUAGES_FILE, load_model, save_checkpoint

_LOG = logging.getLogger(__name__)
SCHEDULES = ("cosine", "eden", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything a training run needs; YAML files hold the same keys (:meth:`from_yaml`)."""

    data: str = ""  #: prepared folder (vallex prepare-data)
    out_dir: str = "runs/vallex"
    #: "tiny", "public", or a VallexConfig JSON file; ignored when init_checkpoint brings its own config
    model: str = "tiny"
    #: fine-tune from these weights ({"model": state_dict} .pt or .safetensors), e.g. vallex-checkpoint.pt
    init_checkpoint: str | None = None
    #: new languages' embedding rows start as a copy of this language's row (default: the mean of all rows)
    init_language_from: str | None = None
    #: "both" (AR + NAR, the reference's stage 0), "ar" or "nar" (only that decoder's parameters train)
    stage: str = "both"
    valid_data: str | None = None  #: a separate prepared folder for validation
    valid_fraction: float = 0.05  #: else this share of `data` (by a hash of the id) is held out
    max_steps: int = 10_000
    batch_size: int = 8  #: utterances per global batch (all processes together)
    max_frames: int = 0  #: padded frames per global batch (75 per second); 0 = no limit
    num_buckets: int = 6
    accumulate_grad_steps: int = 1
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01
    grad_clip: float = 1.0  #: max gradient norm; 0 = off
    schedule: str = "cosine"
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05  #: cosine floor as a fraction of lr
    eden_lr_batches: int = 5000
    eden_lr_epochs: float = 4.0
    #: auto: on CUDA bf16 autocast from compute capability 8.0 on, fp16 with a gradient scaler before (T4, V100);
    #: fp32 on CPU (see training_precision)
    precision: str = "auto"
    dropout: float = 0.1
    #: the reference also trains padding frames (EOS -> EOS); off by default (see training_forward)
    ar_loss_on_padding: bool = False
    seed: int = 42
    device: str = "auto"
    num_threads: int | None = None  #: torch CPU threads (None: leave torch's default)
    #: DataLoader worker processes collating batches (None: 2 on CUDA, 0 on CPU; see data_workers)
    num_workers: int | None = None
    log_every: int = 10
    valid_every: int = 500
    save_every: int = 1000
    keep_last: int = 3  #: periodic checkpoints kept (best.pt is kept apart)
    resume: bool = True  #: continue from out_dir/last.json if it exists

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)
        checks = [
            (self.stage in TRAIN_STAGES, f"stage must be one of {TRAIN_STAGES}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (self.max_steps >= 1, "max_steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.accumulate_grad_steps >= 1, "accumulate_grad_steps must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (0 <= self.valid_fraction < 1, "valid_fraction must be in [0, 1)"),
            (self.warmup_steps >= 0 and self.log_every >= 1 and self.valid_every >= 1 and self.save_every >= 1,
             "warmup_steps must be >= 0 and log_every/valid_every/save_every >= 1"),
            (len(self.betas) == 2, "betas must be two numbers"),
            (self.num_workers is None or (isinstance(self.num_workers, int) and self.num_workers >= 0),
             "num_workers must be an integer >= 0 (or unset)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"Bad training configuration: {message}.")

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a YAML file of TrainConfig keys; ``overrides`` (non-None values) win over the file."""
        import yaml

        data = yaml.safe_load(read_small_text(path)) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} must be a YAML mapping of training options.")
        return cls.from_dict({**data, **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Unknown training option(s): {', '.join(unknown)}. Known: {', '.join(sorted(names))}.")
        return cls(**data)

    def to_yaml(self) -> str:
        import yaml

        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


@dataclass
class TrainResult:
    step: int
    out_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    train_losses: list[float] = field(default_factory=list)  # per-frame loss of every step run
    valid_loss: float | None = None


# Learning rate ---------------------------------------------------------------------------------------------

def learning_rate(config: TrainConfig, step: int, epoch: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based) in epoch ``epoch``."""
    base, warm = config.lr, config.warmup_steps
    if config.schedule == "eden":
        # lifeiteng/vall-e's Eden: decays with steps and epochs; warm-up factor 0.5 -> 1.
        factor = ((step**2 + config.eden_lr_batches**2) / config.eden_lr_batches**2) ** -0.25
        factor *= ((epoch**2 + config.eden_lr_epochs**2) / config.eden_lr_epochs**2) ** -0.25
        warmup = 1.0 if step >= warm else 0.5 + 0.5 * step / warm
        return base * factor * warmup
    if step < warm:
        return base * (step + 1) / warm
    if config.schedule == "constant":
        return base
    progress = min(1.0, (step - warm) / max(1, config.max_steps - warm))
    floor = config.min_lr_ratio
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


# Setup -----------------------------------------------------------------------------------------------------

@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_kind: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _device(config: TrainConfig, dist: _Dist) -> torch.device:
    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use device: cpu.")
        device = torch.device("cuda", dist.local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
    return device


@dataclass(frozen=True)
class TrainingPrecision:
    """How a training step computes: the autocast dtype (None: float32) and whether a gradient scaler runs."""

    autocast: torch.dtype | None
    #: float16 only: the loss is scaled up before backward so that small gradients do not flush to zero in
    #: float16, and the gradients scaled back before clipping (bfloat16 has float32's range: no scaler).
    grad_scaler: bool = False


def training_precision(precision: str, device_type: str, capability: tuple[int, int] | None = None,
                       bf16_supported: bool = True, bf16_native: bool = True) -> TrainingPrecision:
    """What ``precision`` (:data:`PRECISIONS`) means on a device of this kind.

    ``auto``: on CUDA inference's choice for the GPU's compute ``capability``
    (:func:`vallex.inference.precision.cuda_auto_precision`): bfloat16 from sm_80 on, float16 with a gradient
    scaler on a T4 or V100 (bfloat16 only emulated there, slowly), float32 below; float32 on any other device.
    ``fp16``: CUDA only (ValueError elsewhere), with a scaler. ``bf16``: ValueError on a GPU without any bfloat16
    (``bf16_supported``: ``torch.cuda.is_bf16_supported()``, emulation included); a warning where it is only
    emulated. ``bf16_native``: torch's ``is_bf16_supported(including_emulation=False)``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown training precision {precision!r}: expected one of {', '.join(PRECISIONS)}.")
    cuda = device_type == "cuda"
    if cuda and capability is None:
        raise ValueError("Deciding the training precision on CUDA needs the GPU's compute capability, e.g. (7, 5).")
    if precision == "auto":
        if not cuda:
            return TrainingPrecision(None)
        precision = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[
            cuda_auto_precision(capability, bf16_native)]
    if precision == "fp32":
        return TrainingPrecision(None)
    if precision == "fp16":
        if not cuda:
            raise ValueError("precision fp16 needs a CUDA GPU; on CPU use fp32 or bf16.")
        return TrainingPrecision(torch.float16, grad_scaler=True)
    if cuda and not bf16_supported:
        raise ValueError("This GPU does not support bf16; use precision fp16 or fp32.")
    if cuda and not cuda_native_bfloat16(capability, bf16_native):
        warnings.warn(f"precision bf16 on a GPU of compute capability {capability[0]}.{capability[1]}: torch only "
                      "emulates bfloat16 there, slowly. precision auto (fp16 with a gradient scaler) runs natively.",
                      stacklevel=2)
    return TrainingPrecision(torch.bfloat16)


def _training_precision(config: TrainConfig, device: torch.device) -> TrainingPrecision:
    """:func:`training_precision` for ``device``, its compute capability read from torch."""
    if device.type != "cuda":
        return training_precision(config.precision, device.type)
    capability, native = cuda_device_facts(device)
    return training_precision(config.precision, "cuda", capability, torch.cuda.is_bf16_supported(), native)


def _build_model(config: TrainConfig, dataset: CodesDataset) -> VallexModel:
    if config.init_checkpoint:
        model = load_model(config.init_checkpoint)  # its languages: its .json or the languages.json beside it
        where = config.init_checkpoint
    else:
        path = Path(config.model)
        model_config = VallexConfig.from_json(path) if path.suffix == ".json" else VallexConfig.named(config.model)
        model = VallexModel(model_config)
        where = f"the model {config.model!r}"
    model = _name_languages(model, dataset.languages, where)
    # The data may use languages or phoneme ids (espeak front end) the model lacks: grow it, keeping old rows.
    needed_languages = len(dataset.languages)
    needed_vocab = dataset.max_text_id + 1
    if needed_languages > model.config.num_languages or needed_vocab > model.config.text_vocab_size:
        _LOG.info("growing the model to %d languages and %d text rows", needed_languages, needed_vocab)
        model = extend_model(model, languages=dataset.languages, text_vocab_size=needed_vocab,
                             init_from=config.init_language_from, seed=config.seed)
    return model


def _name_languages(model: VallexModel, data: list[str], where: str) -> VallexModel:
    """``model`` whose config names its language rows: checked against the data's table, or (for rows the model
    does not name) named by the data when it has exactly as many."""
    known = model.config.languages
    if known is not None:
        _check_language_tables(data, list(known), where)
        return model
    if len(data) != model.config.num_languages:
        raise ValueError(f"{where} has {model.config.num_languages} language rows but does not say which languages "
                         f"they are, and the data names {len(data)} ({', '.join(data)}): put the languages.json of "
                         "the run that made it beside the checkpoint.")
    model.config = dataclasses.replace(model.config, languages=tuple(data))
    return model


def _check_language_tables(data: list[str], other: list[str], where: str | None) -> None:
    """Language ids index a table; two tables must agree on every row they share."""
    shared = min(len(data), len(other))
    if data[:shared] != other[:shared]:
        raise ValueError(
            f"The training data numbers its languages {data}, but {where} uses {other}: the same embedding "
            "row would mean different languages. Prepare both with the same languages in the same order "
            "(prepare-data adds new languages in the order it first meets them)."
        )


def _trainable(model: VallexModel, stage: str) -> list[tuple[str, nn.Parameter]]:
    """Parameters a stage trains: "ar_*", "nar_*" or all. The NAR positional alphas stay frozen, as in the
    reference. Other parameters get requires_grad=False (DDP then ignores them)."""
    chosen = []
    for name, param in model.named_parameters():  # tied weights appear once
        train = stage == "both" or name.startswith(f"{stage}_")
        if name in ("nar_text_position.alpha", "nar_audio_position.alpha"):
            train = False
        param.requires_grad_(train)
        if train:
            chosen.append((name, param))
    return chosen


def _optimizer(config: TrainConfig, params: list[tuple[str, nn.Parameter]]) -> torch.optim.Optimizer:
    # No weight decay on 1-D parameters (biases, norms, alphas): decaying them only fights the norms.
    decay = [p for _, p in params if p.ndim >= 2]
    no_decay = [p for _, p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=1e-8)


class _TrainingModule(nn.Module):
    """Wraps the model so that DDP sees the training forward as the module's forward."""

    def __init__(self, model: VallexModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: TrainingBatch, options: dict) -> tuple[torch.Tensor, ForwardResult]:
        out = training_forward(self.model, batch, **options)
        return out.loss, out


# Checkpoints -----------------------------------------------------------------------------------------------

def _save(out_dir: Path, model: VallexModel, optimizer, progress: dict, keep_last: int,
          scaler: torch.amp.GradScaler | None = None) -> Path:
    name = f"checkpoint-{progress['step']:08d}"
    path = save_checkpoint(model, out_dir / f"{name}.pt")
    model.config.to_json(out_dir / f"{name}.json")
    state = {"optimizer": optimizer.state_dict(), **progress}
    if scaler is not None:  # float16: the loss scale reached, resumed with the optimiser
        state["scaler"] = scaler.state_dict()
    with atomic_path(out_dir / f"{name}.state.pt") as partial:
        torch.save(state, partial)
    # Written last: it names only files that are complete.
    write_text_atomic(out_dir / "last.json",
                      json.dumps({"checkpoint": f"{name}.pt", "state": f"{name}.state.pt", **progress}, indent=1))
    periodic = sorted(out_dir.glob("checkpoint-*.state.pt"))
    for old in periodic[:-keep_last] if keep_last > 0 else []:
        stem = old.name[: -len(".state.pt")]
        for suffix in (".pt", ".json", ".state.pt"):
            (out_dir / f"{stem}{suffix}").unlink(missing_ok=True)
    return path


def _load_resume(out_dir: Path) -> tuple[Path, dict] | None:
    pointer = out_dir / "last.json"
    if not pointer.is_file():
        return None
    info = json.loads(pointer.read_text(encoding="utf-8"))
    for key in ("checkpoint", "state"):
        if Path(info[key]).name != info[key]:
            raise ValueError(f"{pointer} names a file outside the run folder: {info[key]!r}.")
    state = torch.load(out_dir / info["state"], map_location="cpu", weights_only=True)
    return out_dir / info["checkpoint"], state


def _truncate_csv(path: Path, step: int) -> None:
    """Drop rows logged after ``step`` by a run that was interrupted before saving them."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step] if rows else []
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(kept)


class _CsvLog:
    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path, self.columns = path, columns
        if not path.is_file():
            with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
                csv.writer(handle).writerow(columns)

    def write(self, row: dict) -> None:
        with self.path.open("a", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerow([_fmt(row.get(c)) for c in self.columns])


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# The loop --------------------------------------------------------------------------------------------------

def _step_seed(seed: int, step: int, micro: int = 0) -> int:
    return (seed * 1_000_003 + step * 8191 + micro * 131) % (2**63 - 1)


def batch_draws(config: TrainConfig, step: int, micro: int, batch_frames: list[int], num_q: int) -> dict:
    """NAR stage, prompt length and NAR scale of one global batch: identical on every rank."""
    rng = random.Random(_step_seed(config.seed, step, micro))
    generator = torch.Generator().manual_seed(_step_seed(config.seed + 1, step, micro))
    stage = sample_nar_stage(rng, num_q)
    prefix = sample_prefix_len(min(batch_frames), generator)
    return {"nar_stage": stage, "prefix_len": prefix,
            "nar_scale": nar_loss_scale(sum(batch_frames), prefix, len(batch_frames))}


class _LossSums:
    """Losses and top-10 counts summed over the batches of one step (or one validation pass), on the device.

    Losses are sums over frames, not yet divided: dividing once by the frames of the whole step is what
    makes a step's value independent of how its batches are split over processes. The sums stay on the
    device until :meth:`totals` reads them back once (why: a ``float(loss)`` per batch would make the host
    wait for the GPU after every micro-batch).
    """

    FIELDS = ("loss", "ar_loss", "nar_loss", "ar_top10_correct", "ar_targets", "nar_top10_correct", "nar_targets",
              "frames")  # frames: real frames of the batches added (validation divides by these)

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        # float64 as the host floats these were (MPS has no float64).
        self.dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self.values = torch.zeros(len(self.FIELDS), dtype=self.dtype, device=self.device)  # [8]

    def add(self, loss: torch.Tensor, out: ForwardResult, frames: torch.Tensor | int = 0) -> None:
        """Add one batch's loss (0-dim), its parts and counts (0-dim tensors or ints) and ``frames``."""
        parts = (loss.detach(), out.ar_loss, out.nar_loss, out.ar_top10_correct, out.ar_targets,
                 out.nar_top10_correct, out.nar_targets, frames)
        self.values += torch.stack([torch.as_tensor(0 if v is None else v, device=self.device).detach()
                                    .to(self.dtype).reshape(()) for v in parts])

    def totals(self, dist: _Dist) -> dict[str, float]:
        """The sums over every rank, read back to the host in one go: {field: value}."""
        values = self.values
        if dist.enabled:
            import torch.distributed as tdist

            values = values.clone()
            tdist.all_reduce(values)
        return dict(zip(self.FIELDS, values.tolist()))


@torch.no_grad()
def evaluate(model: VallexModel, dataset: CodesDataset, config: TrainConfig, device: torch.device,
             dist: _Dist | None = None, autocast: torch.dtype | None = None) -> dict[str, float]:
    """Validation losses per frame (fixed NAR stage/prefix draws, so evaluations are comparable)."""
    dist = dist or _Dist()
    was_training = model.training
    model.eval()
    sampler = BucketBatchSampler(dataset.frames, config.batch_size, max_frames=config.max_frames,
                                 num_buckets=config.num_buckets, shuffle=False)
    sums = _LossSums(device)
    for i, batch_ids in enumerate(sampler.batches(0)):
        frames = [dataset.frames[j] for j in batch_ids]
        local = shard_batch(batch_ids, dist.rank, dist.world_size)
        if not local:
            continue
        options = batch_draws(config, -1, i, frames, model.config.num_quantizers)
        batch = collate([dataset[j] for j in local]).to(device)
        with _autocast(device, autocast):
            out = training_forward(model, batch, train_stage=config.stage,
                                   ar_loss_on_padding=config.ar_loss_on_padding, **options)
        sums.add(out.loss, out, frames=batch.code_lens.sum())
    totals = sums.totals(dist)
    model.train(was_training)
    frames = max(totals["frames"], 1.0)
    return {"loss": totals["loss"] / frames, "ar_loss": totals["ar_loss"] / frames,
            "nar_loss": totals["nar_loss"] / frames}


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class _Run:
    """What a training run holds from one step to the next (made by :func:`_set_up`)."""

    config: TrainConfig
    dist: _Dist
    device: torch.device
    autocast: torch.dtype | None  # None: float32
    out_dir: Path
    train_set: CodesDataset
    train_frames: list[int]  # frames of each training utterance (computed once)
    valid_set: CodesDataset
    model: VallexModel
    params: list[tuple[str, nn.Parameter]]  # the parameters this stage trains
    optimizer: torch.optim.Optimizer
    module: nn.Module  # the model as the training forward, wrapped in DDP when distributed
    scaler: torch.amp.GradScaler | None  # float16 only
    sampler: BucketBatchSampler
    progress: dict  # step, epoch, position (batches done in the epoch), best_valid: saved with checkpoints
    result: TrainResult
    resumed: bool
    log: _CsvLog | None = None  # main process only
    valid_log: _CsvLog | None = None
    started: float = field(default_factory=time.perf_counter)


def train(config: TrainConfig, on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Run (or resume) a training run; returns where it ended. ``on_step(step, row)`` is called after every
    optimiser step with the logged values (used by tests and notebooks)."""
    run = _set_up(config)
    progress = run.progress
    step, epoch, position = progress["step"], progress["epoch"], progress["position"]
    last_saved = step if run.resumed else -1
    while step < config.max_steps:
        epoch_batches = run.sampler.batches(epoch)
        if len(epoch_batches) < config.accumulate_grad_steps:
            raise ValueError(f"Only {len(epoch_batches)} batches per epoch, fewer than accumulate_grad_steps "
                             f"({config.accumulate_grad_steps}): lower batch_size/accumulate_grad_steps or add data.")
        batches = _local_batches(run, epoch_batches[position:])
        while position + config.accumulate_grad_steps <= len(epoch_batches) and step < config.max_steps:
            group = epoch_batches[position:position + config.accumulate_grad_steps]
            row = _optimisation_step(run, group, step, epoch, batches)
            step += 1
            position += len(group)
            _log_step(run, row, on_step)
            progress.update(step=step, epoch=epoch, position=position)
            if step % config.valid_every == 0 or step == config.max_steps:
                run.result.valid_loss = _validate(run)
            if step % config.save_every == 0 or step == config.max_steps:
                _save_checkpoint(run)
                last_saved = step
        del batches  # stops its worker processes
        epoch += 1
        position = 0
        progress.update(epoch=epoch, position=0)
    if last_saved != step:
        _save_checkpoint(run)
    run.result.step = step
    if run.dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()
    return run.result


def _set_up(config: TrainConfig) -> _Run:
    """Devices and processes, the data, the model (new, fine-tuned or resumed) with its optimiser, and the
    run folder's configuration files and logs."""
    if not config.data:
        raise ValueError("No training data: set `data` to a folder made by `vallex prepare-data`.")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    on_cuda = (config.device == "auto" and torch.cuda.is_available()) or config.device.startswith("cuda")
    dist = _init_distributed("cuda" if on_cuda else "cpu")
    device = _device(config, dist)
    amp = _training_precision(config, device)
    autocast = amp.autocast
    out_dir = Path(config.out_dir)
    make_folder(out_dir)
    full, train_set, valid_set = _load_data(config, dist)

    resume = _load_resume(out_dir) if config.resume else None
    torch.manual_seed(config.seed)  # the initial weights of a model trained from scratch
    # A resumed run's own checkpoint decides the shape (a grown model stays grown).
    if resume is not None:
        model = _name_languages(load_model(resume[0]), full.languages, str(resume[0]))
    else:
        model = _build_model(config, full)
    if model.config.num_quantizers != full.num_quantizers:
        raise ValueError(f"The data has {full.num_quantizers} codebooks but the model expects "
                         f"{model.config.num_quantizers}.")
    model.to(device).train()
    add_dropout(model, config.dropout)
    params = _trainable(model, config.stage)
    optimizer = _optimizer(config, params)
    progress = {"step": 0, "epoch": 0, "position": 0, "best_valid": None}
    if resume is not None:
        optimizer.load_state_dict(resume[1]["optimizer"])
        progress.update({k: resume[1][k] for k in progress if k in resume[1]})
        _LOG.info("resumed from %s at step %d", resume[0].name, progress["step"])
        if dist.main:
            _truncate_csv(out_dir / "log.csv", progress["step"])
            _truncate_csv(out_dir / "valid.csv", progress["step"])

    module: nn.Module = _TrainingModule(model)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # One NAR stage (its predictor, stage embedding) is used per step: the others get no gradient.
        module = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                         find_unused_parameters=True)
    scaler = torch.amp.GradScaler(device.type) if amp.grad_scaler else None
    if scaler is not None and resume is not None and resume[1].get("scaler"):
        scaler.load_state_dict(resume[1]["scaler"])  # its scale, so the resumed run goes on as it left off

    train_frames = train_set.frames
    sampler = BucketBatchSampler(train_frames, config.batch_size, max_frames=config.max_frames,
                                 num_buckets=config.num_buckets, seed=config.seed, min_batch=dist.world_size)
    result = TrainResult(step=progress["step"], out_dir=out_dir,
                         last_checkpoint=resume[0] if resume is not None and dist.main else None,
                         best_checkpoint=out_dir / "best.pt" if (out_dir / "best.pt").is_file() else None)
    run = _Run(config=config, dist=dist, device=device, autocast=autocast, out_dir=out_dir, train_set=train_set,
               train_frames=train_frames, valid_set=valid_set, model=model, params=params, optimizer=optimizer,
               module=module, scaler=scaler, sampler=sampler, progress=progress, result=result,
               resumed=resume is not None)
    if dist.main:
        _start_run_folder(run)
    return run


def _load_data(config: TrainConfig, dist: _Dist) -> tuple[CodesDataset, CodesDataset, CodesDataset]:
    """(all of ``config.data``, the training part, the validation part), with their language tables checked."""
    full = CodesDataset(config.data)
    if len(full) == 0:
        raise ValueError(f"{config.data} holds no utterances; check the prepare-data summary.")
    if config.valid_data:
        train_set, valid_set = full, CodesDataset(config.valid_data)
    else:
        train_ids, valid_ids = split_ids([item["id"] for item in full.items], config.valid_fraction)
        train_set, valid_set = CodesDataset(config.data, train_ids), CodesDataset(config.data, valid_ids)
    _check_language_tables(full.languages, valid_set.languages, config.valid_data)
    if len(train_set) < dist.world_size:
        raise ValueError(f"{len(train_set)} training utterances cannot be shared by {dist.world_size} processes.")
    return full, train_set, valid_set


def _start_run_folder(run: _Run) -> None:
    """The run's configuration files, and its training and validation logs (opened, or continued)."""
    out_dir = run.out_dir
    write_text_atomic(out_dir / "train_config.yaml", run.config.to_yaml())
    run.model.config.to_json(out_dir / "config.json")
    # Which language each embedding row is (the model's, which may hold more than this data): loading a
    # checkpoint of the run, and fine-tuning it on other data, read it.
    write_text_atomic(out_dir / LANGUAGES_FILE, json.dumps(list(run.model.config.languages)))
    run.log = _CsvLog(out_dir / "log.csv", ["step", "epoch", "lr", "loss", "ar_loss", "nar_loss", "ar_top10",
                                           "nar_top10", "frames", "grad_norm", "seconds"])
    run.valid_log = _CsvLog(out_dir / "valid.csv", ["step", "loss", "ar_loss", "nar_loss"])


class _CollatedBatches(torch.utils.data.Dataset):
    """Item i: the utterances ``ids[i]`` of ``dataset``, collated (what a DataLoader worker makes)."""

    def __init__(self, dataset: CodesDataset, ids: list[list[int]]) -> None:
        self.dataset, self.ids = dataset, ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> TrainingBatch:
        return collate([self.dataset[i] for i in self.ids[index]])


def data_workers(config: TrainConfig, device: torch.device) -> int:
    """DataLoader worker processes: ``config.num_workers``, else 2 on an accelerator and 0 (none) on CPU.

    Why 0 on CPU: there the training step itself needs the cores, and collating is a small part of it.
    """
    if config.num_workers is not None:
        return config.num_workers
    return 0 if device.type == "cpu" else 2


def _local_batches(run: _Run, global_batches: list[list[int]]) -> Iterator[TrainingBatch]:
    """This process's share of each of ``global_batches``, collated in order by :func:`data_workers` worker
    processes (while the GPU computes), in pinned memory on CUDA (so the copy to the GPU is asynchronous)."""
    local = [shard_batch(ids, run.dist.rank, run.dist.world_size) for ids in global_batches]
    workers = data_workers(run.config, run.device)
    loader = torch.utils.data.DataLoader(
        _CollatedBatches(run.train_set, local), batch_size=None, shuffle=False, num_workers=workers,
        pin_memory=run.device.type == "cuda", prefetch_factor=2 if workers else None)
    return iter(loader)


def _optimisation_step(run: _Run, group: list[list[int]], step: int, epoch: int,
                       batches: Iterator[TrainingBatch]) -> dict:
    """One optimiser step over the global batches ``group`` (gradients accumulated); returns the row to log.

    ``step`` is the number of steps done before this one (0-based); the row carries ``step + 1``.
    ``batches``: this process's share of each batch of ``group``, collated, in order (:func:`_local_batches`).
    """
    config, dist, frames_of = run.config, run.dist, run.train_frames
    lr = learning_rate(config, step, epoch)
    for param_group in run.optimizer.param_groups:
        param_group["lr"] = lr
    torch.manual_seed(_step_seed(config.seed + 2 + dist.rank, step))  # dropout masks
    step_frames = sum(frames_of[i] for batch in group for i in batch)
    sums = _LossSums(run.device)
    for micro, batch_ids in enumerate(group):
        options = batch_draws(config, step, micro, [frames_of[i] for i in batch_ids], run.model.config.num_quantizers)
        options.update(train_stage=config.stage, ar_loss_on_padding=config.ar_loss_on_padding)
        batch = next(batches).to(run.device)
        sync = micro == len(group) - 1 or not dist.enabled
        with (contextlib.nullcontext() if sync else run.module.no_sync()), _autocast(run.device, run.autocast):
            loss, out = run.module(batch, options)
        # Sum over frames / frames of the whole step; DDP averages over ranks, hence * world_size.
        scaled = loss * (dist.world_size / step_frames)
        (run.scaler.scale(scaled) if run.scaler else scaled).backward()
        sums.add(loss, out)
    grad_norm = _apply_gradients(run, step)
    sums = sums.totals(dist)
    return {"step": step + 1, "epoch": epoch, "lr": lr, "loss": sums["loss"] / step_frames,
            "ar_loss": sums["ar_loss"] / step_frames if config.stage != "nar" else None,
            "nar_loss": sums["nar_loss"] / step_frames if config.stage != "ar" else None,
            "ar_top10": sums["ar_top10_correct"] / max(sums["ar_targets"], 1) if config.stage != "nar" else None,
            "nar_top10": sums["nar_top10_correct"] / max(sums["nar_targets"], 1) if config.stage != "ar" else None,
            "frames": step_frames, "grad_norm": grad_norm,
            "seconds": round(time.perf_counter() - run.started, 3)}


def _apply_gradients(run: _Run, step: int) -> float:
    """Clip the accumulated gradients, update the weights (unless they are not finite), clear the gradients;
    returns the gradient norm before clipping."""
    config, optimizer, scaler = run.config, run.optimizer, run.scaler
    if scaler:
        scaler.unscale_(optimizer)
    trained = [p for _, p in run.params]
    max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(trained, max_norm))
    if scaler:  # skips the update by itself when fp16 gradients overflowed
        scaler.step(optimizer)
        scaler.update()
    elif math.isfinite(grad_norm):  # the norm is of all-reduced gradients: every rank agrees
        optimizer.step()
    else:
        _LOG.warning("step %d: gradient norm is %s; update skipped", step + 1, grad_norm)
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def _log_step(run: _Run, row: dict, on_step: Callable[[int, dict], None] | None) -> None:
    """Record a step's row: in the result, in log.csv (every ``log_every`` steps and the first), to ``on_step``."""
    step = row["step"]
    run.result.train_losses.append(row["loss"])
    if run.log is not None and (step % run.config.log_every == 0 or step == 1):
        run.log.write(row)
        _LOG.info("step %d  loss %.4f  ar %s  nar %s  lr %.3g  %.0f s", step, row["loss"],
                  _fmt(row["ar_loss"]), _fmt(row["nar_loss"]), row["lr"], row["seconds"])
    if on_step is not None:
        on_step(step, row)


def _validate(run: _Run) -> float | None:
    """Validation loss per frame now (None without validation data); a new best is saved as best.pt."""
    if len(run.valid_set) == 0:
        return None
    losses = evaluate(run.model, run.valid_set, run.config, run.device, run.dist, run.autocast)
    progress = run.progress
    if run.valid_log is not None:
        run.valid_log.write({"step": progress["step"], **losses})
        _LOG.info("step %d  validation loss %.4f", progress["step"], losses["loss"])
        best = progress.get("best_valid")
        if best is None or losses["loss"] < best:
            progress["best_valid"] = losses["loss"]
            save_checkpoint(run.model, run.out_dir / "best.pt")
            run.model.config.to_json(run.out_dir / "best.json")
            run.result.best_checkpoint = run.out_dir / "best.pt"
    return losses["loss"]


def _save_checkpoint(run: _Run) -> None:
    """Write a periodic checkpoint with the optimiser and progress (main process only)."""
    if run.dist.main:
        run.result.last_checkpoint = _save(run.out_dir, run.model, run.optimizer, dict(run.progress),
                                           run.config.keep_last, run.scaler)
