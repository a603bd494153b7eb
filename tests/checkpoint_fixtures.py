"""Checkpoint files shaped like the published ``vallex-checkpoint.pt``, written without the code under test.

The published file was saved on Windows by an icefall-style ``save_checkpoint``: a plain dict holding
``"model"`` (the state dict), ``None`` for the optimizer, scheduler, grad scaler and sampler, and every training
hyper-parameter as its own top-level key, ``exp_dir`` among them as a ``pathlib.WindowsPath``. Hugging Face's
pickle scan of it lists exactly the globals in :data:`PUBLISHED_GLOBALS`. These writers produce files with the
same structure and globals from any state dict, in torch's zip and legacy formats, with a Windows or a POSIX path
(the latter is what a copy re-saved on Linux or macOS holds).

A ``WindowsPath`` cannot be built on Linux, but it need not be: pickle writes a path as its class plus its
parts, so an object that reduces to ``(pathlib.WindowsPath, parts)`` gives the bytes Windows writes.
"""
from __future__ import annotations

import io
import os
import pathlib
import pickletools
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

#: The globals Hugging Face's pickle scan lists for the published file (module, name).
PUBLISHED_GLOBALS = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
                     ("torch", "FloatStorage"), ("pathlib", "WindowsPath")}

FORMATS = ("zip", "legacy")
PATH_FLAVOURS = ("windows", "posix")


class _WindowsPathAsPickled:
    """Pickles exactly as ``pathlib.WindowsPath(*parts)`` does on Windows (class global + parts + REDUCE)."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __reduce__(self):
        return pathlib.WindowsPath, self.parts


def trainer_payload(state: dict[str, torch.Tensor], flavour: str) -> dict:
    """``{"model": state, ...}`` with the top-level keys an icefall-style trainer writes beside the weights."""
    if flavour == "windows":
        exp_dir = _WindowsPathAsPickled("D:\\", "VALL-E-X", "exp", "valle")
        manifest_dir = _WindowsPathAsPickled("data", "tokenized")
    elif flavour == "posix":
        exp_dir, manifest_dir = pathlib.PosixPath("/home/train/exp/valle"), pathlib.PosixPath("data/tokenized")
    else:
        raise ValueError(f"unknown path flavour {flavour!r}")
    payload: dict = {"model": OrderedDict(state), "optimizer": None, "scheduler": None, "grad_scaler": None,
                     "sampler": None}
    payload.update({
        "best_train_epoch": -1, "best_valid_epoch": -1, "best_train_loss": float("inf"),
        "best_valid_loss": float("inf"), "batch_idx_train": 314000, "log_interval": 100, "reset_interval": 200,
        "valid_interval": 10000, "cur_epoch": 20, "world_size": 1, "master_port": 12354, "tensorboard": True,
        "num_epochs": 20, "start_epoch": 1, "start_batch": 0, "exp_dir": exp_dir, "manifest_dir": manifest_dir,
        "text_tokens": "data/tokenized/unique_text_tokens.k2symbols", "optimizer_name": "ScaledAdam",
        "scheduler_name": "Eden", "base_lr": 0.05, "warmup_steps": 200, "seed": 42, "inf_check": False,
        "save_every_n": 10000, "keep_last_k": 20, "average_period": 0, "accumulate_grad_steps": 4,
        "dtype": "float16", "filter_min_duration": 0.0, "filter_max_duration": 20.0, "train_stage": 0,
        "visualize": False, "oom_check": True, "model_name": "VALL-E", "decoder_dim": 1024, "nhead": 16,
        "num_decoder_layers": 12, "scale_factor": 1.0, "norm_first": True, "add_prenet": False, "prefix_mode": 1,
        "share_embedding": True, "prepend_bos": True, "num_quantizers": 8, "scaling_xformers": False,
        "env_info": {"torch-version": "2.0.1+cu118", "torch-cuda-available": True, "python-version": "3.10",
                     "hostname": "trainer", "IP address": "127.0.0.1"},
    })
    return payload


def write_trainer_checkpoint(state: dict[str, torch.Tensor], path: Path, *, fmt: str, flavour: str) -> Path:
    """Write ``state`` as a trainer-style checkpoint in ``fmt`` ("zip" or "legacy") with ``flavour`` paths."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    torch.save(trainer_payload(state, flavour), path, _use_new_zipfile_serialization=fmt == "zip")
    return path


class _CodeRunner:
    """A pickle payload that would call ``os.system`` when unpickled by a full unpickler."""

    def __reduce__(self):
        return os.system, ("echo this must never run",)


def write_code_running_checkpoint(state: dict[str, torch.Tensor], path: Path, *, fmt: str) -> Path:
    """A trainer-style checkpoint with one extra top-level value that runs a shell command when unpickled."""
    payload = trainer_payload(state, "posix")
    payload["sampler"] = _CodeRunner()
    torch.save(payload, path, _use_new_zipfile_serialization=fmt == "zip")
    return path


def pickle_globals(path: Path) -> set[tuple[str, str]]:
    """(module, name) of every GLOBAL opcode in a zip-format checkpoint's pickle (what a pickle scan lists)."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
        data = archive.read(name)
    found = set()
    for opcode, argument, _ in pickletools.genops(io.BytesIO(data)):
        if opcode.name == "GLOBAL":
            module, _, attribute = argument.partition(" ")
            found.add((module, attribute))
    return found


def tensors_digest_by_hand(state: dict[str, torch.Tensor]) -> str:
    """The canonical state-dict digest as its docstring specifies it, computed with numpy rather than the code
    under test: sorted names; per tensor one JSON line, then its values as little-endian bytes in C order."""
    import hashlib
    import json

    import numpy as np

    digest = hashlib.sha256(b"vallex-state-dict-sha256/1\n")
    for name in sorted(state):
        array = state[name].detach().numpy()  # float/int dtypes only (numpy has no bfloat16)
        header = {"dtype": str(array.dtype), "name": name, "shape": list(array.shape)}
        digest.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n")
        digest.update(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes(order="C"))
    return digest.hexdigest()
