"""Reading and writing VALL-E X weights without unpickling untrusted code.

Two formats:

* ``.pt`` — the reference format, ``{"model": state_dict}``, read with ``torch.load(weights_only=True)``.
  The public file may also pickle ``pathlib`` paths (its trainer stored them in the pickle), so those classes,
  and only those, are allowed. Anything else in the pickle is refused with a clear message.
* ``.safetensors`` — no pickle at all and memory-mapped; ``vallex convert-checkpoint`` makes one once.
  The tied NAR predictor weights are stored once (safetensors refuses shared tensors) and re-tied on load.

Both load through a model built on the ``meta`` device and ``load_state_dict(assign=True)``, so the
weights are never held twice in memory; the state dict is checked key-by-key and shape-by-shape first,
with an error that names every missing, unexpected and mismatched key.
"""
from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from vallex.config import VallexConfig
from vallex.files import atomic_path
from vallex.model import VallexModel

#: Classes that the public checkpoint's pickle may contain besides tensors (its trainer pickled paths).
SAFE_GLOBALS = [pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath, pathlib.PureWindowsPath]

#: safetensors metadata key holding the model configuration.
CONFIG_METADATA_KEY = "vallex_config"


def _tied_keys(config: VallexConfig) -> dict[str, str]:
    """Predictor key -> the embedding key it shares storage with."""
    return {
        f"nar_predict_layers.{j}.weight": f"nar_audio_embeddings.{j + 2}.word_embeddings.weight"
        for j in range(config.num_quantizers - 2)
    }


def read_state_dict(path: str | Path, mmap: bool = True) -> tuple[dict[str, Tensor], VallexConfig | None]:
    """Read a state dict from ``.pt`` or ``.safetensors``; also returns a config stored in the file, if any."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        state, metadata = read_safetensors_mapped(path)
        config = None
        if CONFIG_METADATA_KEY in metadata:
            config = VallexConfig.from_dict(json.loads(metadata[CONFIG_METADATA_KEY]))
        return state, config
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError as error:
        if mmap and "mmap" in str(error):  # legacy (non-zip) files cannot be memory-mapped
            return read_state_dict_unmapped(path)
        raise
    except Exception as error:  # weights_only refusals are pickle.UnpicklingError
        raise ValueError(
            f"{path} could not be read safely: {error}\n"
            "It holds Python objects that are not tensors; only {'model': state_dict} files are supported. "
            "If you trust this file, convert it once to safetensors in a trusted environment."
        ) from None
    return _unwrap(payload, path), None


#: safetensors dtype names -> torch dtypes (the ones a VALL-E X checkpoint can hold).
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors_mapped(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a ``.safetensors`` file with one private memory map per tensor; returns (state, metadata).

    ``safetensors.safe_open`` maps the whole file once, and that mapping lives as long as any tensor
    of it: after ``apply_precision`` converts the Linear weights to int8 or bfloat16, the float32 pages
    it has read would stay resident because the embeddings still point into the same mapping (peak RSS
    2.1 GB instead of 0.8 GB for int8). A map per tensor is released with its tensor. Pages are
    copy-on-write, so writing to a tensor never touches the file.
    """
    import numpy as np

    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short).")
        header_len = int.from_bytes(prefix, "little")
        if header_len > 100_000_000:
            raise ValueError(f"{path} is not a safetensors file (header of {header_len} bytes).")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not a safetensors file: {error}") from None
    data_start = 8 + header_len
    file_size = path.stat().st_size
    metadata = header.pop("__metadata__", None) or {}
    state: dict[str, Tensor] = {}
    for key, info in header.items():
        dtype = _SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise ValueError(f"{path}: tensor {key!r} has unsupported dtype {info.get('dtype')!r}.")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if not 0 <= begin <= end <= file_size - data_start:
            raise ValueError(f"{path}: tensor {key!r} lies outside the file (truncated download?).")
        if end == begin:
            state[key] = torch.empty(shape, dtype=dtype)
            continue
        raw = np.memmap(path, dtype=np.uint8, mode="c", offset=data_start + begin, shape=(end - begin,))
        state[key] = torch.from_numpy(raw).view(dtype).view(shape)
    return state, metadata


def read_state_dict_unmapped(path: Path) -> tuple[dict[str, Tensor], None]:
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        payload = torch.load(path, map_location="cpu", weights_only=True)
    return _unwrap(payload, path), None


def _unwrap(payload: object, path: Path) -> dict[str, Tensor]:
    if isinstance(payload, Mapping) and "model" in payload and isinstance(payload["model"], Mapping):
        payload = payload["model"]
    if not isinstance(payload, Mapping) or not all(isinstance(v, Tensor) for v in payload.values()):
        raise ValueError(f"{path} is not a VALL-E X checkpoint: expected {{'model': state_dict}} of tensors.")
    return dict(payload)


def check_state_dict(state: Mapping[str, Tensor], model: VallexModel, source: str = "checkpoint") -> None:
    """Raise a ValueError naming every missing, unexpected and wrongly shaped key."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict(keep_vars=True).items()}
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key}: file {tuple(state[key].shape)} vs model {expected[key]}"
        for key in expected if key in state and tuple(state[key].shape) != expected[key]
    ]
    if missing or unexpected or mismatched:
        lines = [f"{source} does not match the model configuration {model.config}:"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", mismatched)):
            if items:
                shown = ", ".join(items[:12]) + (f", ... ({len(items)} in all)" if len(items) > 12 else "")
                lines.append(f"  {title}: {shown}")
        lines.append("Check that the configuration (config.json / --size) matches the weights file.")
        raise ValueError("\n".join(lines))


def model_from_state_dict(
    state: dict[str, Tensor], config: VallexConfig, device: str | torch.device = "cpu", source: str = "checkpoint"
) -> VallexModel:
    """Build a model on ``meta``, check the state dict strictly, and adopt its tensors (no copy on CPU)."""
    state = dict(state)
    for predictor, embedding in _tied_keys(config).items():
        state.setdefault(predictor, state.get(embedding))  # safetensors files store the pair once
    state = {key: value for key, value in state.items() if value is not None}
    with torch.device("meta"):
        model = VallexModel(config)
    check_state_dict(state, model, source)
    # In the reference both tied keys hold the same values and the later key wins; drop the predictors
    # so the embedding's tensor is the one kept, then tie again (assign=True replaced the parameters).
    for predictor in _tied_keys(config):
        state[predictor] = state[_tied_keys(config)[predictor]]
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    return model.to(device).eval()


def load_model(
    path: str | Path,
    config: VallexConfig | None = None,
    device: str | torch.device = "cpu",
) -> VallexModel:
    """Load a VALL-E X model from ``.pt`` or ``.safetensors`` in eval mode.

    The configuration comes from ``config``, else from the file (safetensors metadata), else from a
    ``config.json`` / ``vallex-config.json`` beside the file, else the public checkpoint's.
    """
    path = Path(path)
    state, stored = read_state_dict(path)
    if config is None:
        config = stored or _config_beside(path) or VallexConfig.public()
    return model_from_state_dict(state, config, device, source=str(path))


def _config_beside(path: Path) -> VallexConfig | None:
    for name in (path.stem + ".json", "vallex-config.json", "config.json"):
        candidate = path.with_name(name)
        if candidate.is_file():
            return VallexConfig.from_json(candidate)
    return None


def save_checkpoint(model: VallexModel, path: str | Path) -> Path:
    """Write the model's weights: ``.safetensors`` by suffix, else the reference ``{"model": state_dict}``.

    Atomic (:mod:`vallex.files`): an interrupted save leaves the previous file, never half a checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    with atomic_path(path) as partial:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            for predictor in _tied_keys(model.config):
                state.pop(predictor)
            metadata = {CONFIG_METADATA_KEY: json.dumps(model.config.to_dict())}
            save_file({k: v.contiguous() for k, v in state.items()}, str(partial), metadata=metadata)
        else:
            torch.save({"model": state}, partial)
    return path


def convert_checkpoint(source: str | Path, target: str | Path, config: VallexConfig | None = None) -> Path:
    """Convert a reference ``.pt`` checkpoint to ``.safetensors`` (or back), checking it strictly."""
    model = load_model(source, config)
    return save_checkpoint(model, target)
