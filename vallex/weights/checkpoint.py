"""Reading and writing VALL-E X weights without unpickling untrusted code.

Two formats:

* ``.pt`` — the reference format, ``{"model": state_dict}``, read with ``torch.load(weights_only=True)``, zip or
  legacy (pre-1.6) layout. The public file was written by a trainer that also pickled its hyper-parameters
  beside the weights, among them ``exp_dir`` as a ``pathlib.WindowsPath``: path objects are read as pure paths
  (:data:`PICKLED_PATH_CLASSES`) and everything but ``["model"]`` is dropped. Any other Python object in the
  pickle is refused with one line.
* ``.safetensors`` — no pickle at all and memory-mapped; ``vallex convert-checkpoint`` makes one once.
  The tied NAR predictor weights are stored once (safetensors refuses shared tensors) and re-tied on load.

Both load through a model built on the ``meta`` device and ``load_state_dict(assign=True)``, so the
weights are never held twice in memory; the state dict is checked key-by-key and shape-by-shape first,
with an error that names every missing, unexpected and mismatched key.

A model file is untrusted input (a download, a file from a stranger): a safetensors header is checked as the format
specifies before a tensor is mapped, the configuration's sizes are bounded (:data:`vallex.config.SIZE_BOUNDS`) and
compared with the sizes the tensors show (:func:`sizes_in_state_dict`) before a module is built, even on ``meta``;
whatever is wrong is one ValueError line naming the file.

Which copy is the published checkpoint: :func:`state_dict_digest` hashes a state dict's tensors in one canonical
form, so a copy re-pickled elsewhere (other bytes, other trainer keys, other path classes) or converted to
safetensors has the digest of the file it came from; :func:`check_published_tensors` compares a download with
other bytes than the published ones against :data:`PUBLISHED_STATE_DIGEST`.

Which language each language-embedding row is comes with the configuration (``"languages"`` in the checkpoint's
``.json`` or safetensors metadata), else from the training run's ``languages.json`` beside the checkpoint; the
public checkpoint's three rows are en, zh, ja. :func:`load_model` checks the list against the embedding table.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pickle
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch
from torch import Tensor

from vallex.config import VallexConfig
from vallex.files import atomic_path, make_folder, read_small_text
from vallex.languages import Languages, check_codes
from vallex.model import VallexModel

#: The path classes a checkpoint's pickle may name, each read as the pure path of the same flavour.
#: Unpickling a ``WindowsPath`` anywhere but Windows raises ``NotImplementedError`` (and a ``PosixPath`` on
#: Windows likewise), so the concrete classes are never built: the public checkpoint, saved on Windows,
#: then loads on every OS, and nothing process-wide is patched. Python 3.13 pickles them from ``pathlib._local``.
PICKLED_PATH_CLASSES: list[tuple[type, str]] = [
    (pure, f"{module}.{name}")
    for module in ("pathlib", "pathlib._local")
    for name, pure in (("WindowsPath", PureWindowsPath), ("PureWindowsPath", PureWindowsPath),
                       ("PosixPath", PurePosixPath), ("PurePosixPath", PurePosixPath))
]

#: safetensors metadata key holding the model configuration.
CONFIG_METADATA_KEY = "vallex_config"
#: Written by ``vallex train`` into every run folder: the language of each language-embedding row, in order.
LANGUAGES_FILE = "languages.json"
#: The state-dict key whose first dimension is the number of language rows.
LANGUAGE_EMBEDDING_KEY = "ar_language_embedding.word_embeddings.weight"

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format since 1.6
#: The legacy (pre-1.6) format starts with torch's magic number pickled at protocol 2.
_LEGACY_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)


def _tied_keys(num_quantizers: int) -> dict[str, str]:
    """Predictor key -> the embedding key it shares storage with."""
    return {
        f"nar_predict_layers.{j}.weight": f"nar_audio_embeddings.{j + 2}.word_embeddings.weight"
        for j in range(num_quantizers - 2)
    }


def read_state_dict(path: str | Path, mmap: bool = True) -> tuple[dict[str, Tensor], VallexConfig | None]:
    """Read a state dict from ``.pt`` or ``.safetensors``; also returns a config stored in the file, if any.

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line saying why the file cannot be used (empty, damaged, not a checkpoint, or a pickle
            that asks for Python objects other than tensors and paths, which is refused without running them).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        state, metadata = read_safetensors_mapped(path)
        config = None
        if CONFIG_METADATA_KEY in metadata:
            config = VallexConfig.from_text(metadata[CONFIG_METADATA_KEY], f"{path} ({CONFIG_METADATA_KEY} metadata)")
        return state, config
    return _unwrap(load_pickled_checkpoint(path, mmap=mmap), path), None


def load_pickled_checkpoint(path: Path, mmap: bool = True) -> object:
    """``torch.load(weights_only=True)`` of a ``.pt`` file, zip or legacy, with path objects read as pure paths.

    ``mmap`` applies to zip files only (the legacy layout cannot be memory-mapped). Every failure is one
    ``ValueError`` line; a refused payload is never run.
    """
    with open(path, "rb") as handle:
        head = handle.read(len(_LEGACY_MAGIC))
    if not head:
        raise ValueError(f"{path} is empty (an interrupted download or copy?); fetch the file again.")
    zipped = head.startswith(_ZIP_MAGIC)
    if not zipped and head != _LEGACY_MAGIC:  # plain pickles never reach an unpickler
        raise ValueError(f"{path} is not a PyTorch checkpoint (not written by torch.save, zip or legacy format); "
                         "check that you gave the right file.")
    try:
        with warnings.catch_warnings():
            # torch notes pickle protocols other than its own 2, which plain pickles use; the load is still safe.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            with torch.serialization.safe_globals(PICKLED_PATH_CLASSES):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipped)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path} was refused, and nothing in it was run: {_refusal_reason(error)}. A VALL-E X "
                         "checkpoint holds only tensors, numbers, strings and paths; do not load this file.") from None
    except Exception as error:  # noqa: BLE001 - truncated archives, foreign pickles, bad magic numbers, ...
        raise ValueError(f"{path} could not be read as a PyTorch checkpoint ({_first_line(error)}); it is damaged, "
                         "incomplete or another kind of file: fetch it again.") from None


def _refusal_reason(error: pickle.UnpicklingError) -> str:
    """What was refused (e.g. ``it asks for the Python global posix.system``), without torch's advice.

    torch's message goes on to suggest ``weights_only=False`` or allowlisting the global: advice never to follow
    for a refused file, so only the refused global (or, failing one, the unpickler's first sentence) is kept.
    """
    text = " ".join(str(error).split())
    refused = _REFUSED_GLOBAL.search(text)
    if refused:
        return f"it asks for the Python global {refused.group(1)}"
    reason = text.partition("WeightsUnpickler error:")[2].strip().split(". ")[0].rstrip(".")
    return reason or _first_line(error)


#: The refused global in torch's unpickler messages ("Unsupported global: GLOBAL posix.system was not ...").
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0].split('. ')[0][:200]}" if lines else type(error).__name__


#: safetensors dtype names -> torch dtypes (the ones a VALL-E X checkpoint can hold).
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


#: Largest safetensors header read (the safetensors library's own limit); the public checkpoint's is about 60 kB.
MAX_SAFETENSORS_HEADER_BYTES = 100_000_000
#: Most dimensions a stored tensor may have, and the most elements (2^40, 4 TB of float32): bounds that no real
#: checkpoint nears and that keep every shape computation within int64 even for empty tensors.
MAX_TENSOR_DIMS = 8
MAX_TENSOR_ELEMENTS = 1 << 40


def read_safetensors_mapped(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a ``.safetensors`` file with one private memory map per tensor; returns (state, metadata).

    ``safetensors.safe_open`` maps the whole file once, and that mapping lives as long as any tensor
    of it: after ``apply_precision`` converts the Linear weights to int8 or bfloat16, the float32 pages
    it has read would stay resident because the embeddings still point into the same mapping (peak RSS
    2.1 GB instead of 0.8 GB for int8). A map per tensor is released with its tensor. Pages are
    copy-on-write, so writing to a tensor never touches the file.

    The header is checked as the format specifies before any tensor is mapped (:func:`_safetensors_entries`):
    any damage is one ValueError line naming the file.
    """
    import numpy as np

    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short).")
        header_len = int.from_bytes(prefix, "little")
        file_size = path.stat().st_size
        if header_len > min(MAX_SAFETENSORS_HEADER_BYTES, file_size - 8):
            raise ValueError(f"{path} is not a safetensors file (a header of {header_len} bytes in a file of "
                             f"{file_size}).")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not a safetensors file: {error}") from None
        except RecursionError:  # json recurses once per level of nesting
            raise ValueError(f"{path} is not a safetensors file: its header is nested too deeply.") from None
    data_start = 8 + header_len
    metadata, entries = _safetensors_entries(header, file_size - data_start, path)
    state: dict[str, Tensor] = {}
    for key, dtype, shape, begin, end in entries:
        if end == begin:
            state[key] = torch.empty(shape, dtype=dtype)
            continue
        raw = np.memmap(path, dtype=np.uint8, mode="c", offset=data_start + begin, shape=(end - begin,))
        state[key] = torch.from_numpy(raw).view(dtype).view(shape)
    return state, metadata


def _safetensors_entries(header: object, data_size: int, path: Path) -> tuple[
        dict[str, str], list[tuple[str, torch.dtype, tuple[int, ...], int, int]]]:
    """The metadata and the (name, dtype, shape, begin, end) of each tensor of a parsed safetensors header.

    Checked as the format specifies: a JSON object; ``__metadata__`` a mapping of strings to strings; each tensor's
    dtype known, its shape whole numbers >= 0, its byte range ``[begin, end)`` exactly its elements' bytes; the
    ranges in offset order tiling the data without gap or overlap up to the end of the file (a shorter or longer
    file is truncated or damaged). ``data_size``: bytes after the header. Raises ValueError naming ``path``.
    """
    def damaged(why: str) -> ValueError:
        return ValueError(f"{path} is not a valid safetensors file: {why}.")

    if not isinstance(header, dict):
        raise damaged(f"its header is a JSON {type(header).__name__}, not an object")
    header = dict(header)
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(value, str) for value in metadata.values()):
        raise damaged("its __metadata__ is not a mapping of names to strings")
    entries = []
    for key, info in header.items():
        name = repr(_shown_name(key))
        if not isinstance(info, dict):
            raise damaged(f"tensor {name} has a malformed header entry")
        dtype = _SAFETENSORS_DTYPES.get(info.get("dtype")) if isinstance(info.get("dtype"), str) else None
        if dtype is None:
            raise damaged(f"tensor {name} has an unsupported dtype {str(info.get('dtype'))[:20]!r}")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not _whole_numbers(shape) or len(shape) > MAX_TENSOR_DIMS:
            raise damaged(f"tensor {name} has no valid shape (at most {MAX_TENSOR_DIMS} whole numbers >= 0)")
        if math.prod(max(size, 1) for size in shape) > MAX_TENSOR_ELEMENTS:
            raise damaged(f"tensor {name} has more than {MAX_TENSOR_ELEMENTS} elements")
        if not _whole_numbers(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
            raise damaged(f"tensor {name} has no valid data_offsets (two whole numbers, begin <= end)")
        begin, end = offsets
        nbytes = math.prod(shape) * dtype.itemsize
        if end - begin != nbytes:
            raise damaged(f"tensor {name} of shape {list(shape)} needs {nbytes} bytes but its data_offsets span "
                          f"{end - begin}")
        if end > data_size:
            raise damaged(f"tensor {name} lies outside the file (bytes {begin}..{end} of {data_size}: truncated "
                          "download?)")
        entries.append((key, dtype, tuple(shape), begin, end))
    position = 0
    for key, _, _, begin, end in sorted(entries, key=lambda entry: (entry[3], entry[4])):
        if begin != position:
            where = "overlaps the tensor before it" if begin < position else "leaves a gap before it"
            raise damaged(f"tensor {_shown_name(key)!r} {where} (bytes {begin}..{end})")
        position = end
    if position != data_size:
        raise damaged(f"its tensors take {position} bytes but the file holds {data_size} after the header "
                      "(truncated or damaged?)")
    return metadata, entries


def _whole_numbers(value: object) -> bool:
    """``value`` is a list of ints >= 0 (not bools, which JSON's true would give)."""
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


def _shown_name(key: str) -> str:
    """A tensor's name as an error shows it: at most 80 characters (a hostile file's may be megabytes)."""
    return key if len(key) <= 80 else key[:80] + "..."


#: What ``torch.nn.parallel.DistributedDataParallel`` puts before every key of the model it wraps.
DDP_PREFIX = "module."


def _unwrap(payload: object, path: Path) -> dict[str, Tensor]:
    """The state dict of a pickled checkpoint: ``payload["model"]`` or ``payload`` itself, with the ``module.`` that
    a DDP-wrapped model's ``state_dict()`` puts before every key removed (all keys have it, or none may)."""
    if isinstance(payload, Mapping) and "model" in payload and isinstance(payload["model"], Mapping):
        payload = payload["model"]
    if not isinstance(payload, Mapping) or not all(isinstance(v, Tensor) for v in payload.values()):
        raise ValueError(f"{path} is not a VALL-E X checkpoint: expected {{'model': state_dict}} of tensors.")
    prefixed = [str(key).startswith(DDP_PREFIX) for key in payload]
    if any(prefixed) and not all(prefixed):
        raise ValueError(f"{path} mixes keys with and without the {DDP_PREFIX!r} prefix that DDP adds "
                         f"({sum(prefixed)} of {len(prefixed)} have it): not one model's state dict; save the "
                         "unwrapped model's (model.module.state_dict()) instead.")
    if prefixed and all(prefixed):  # saved from the DDP wrapper instead of the model inside it
        return {key.removeprefix(DDP_PREFIX): value for key, value in payload.items()}
    return dict(payload)


def check_state_dict(state: Mapping[str, Tensor], model: VallexModel, source: str = "checkpoint") -> None:
    """Raise a ValueError naming every missing, unexpected and wrongly shaped key."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict(keep_vars=True).items()}
    missing = [_shown_name(key) for key in expected if key not in state]
    unexpected = [_shown_name(key) for key in state if key not in expected]
    mismatched = [
        f"{_shown_name(key)}: file {tuple(state[key].shape)} vs model {expected[key]}"
        for key in expected if key in state and tuple(state[key].shape) != expected[key]
    ]
    if missing or unexpected or mismatched:
        parts = []
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", mismatched)):
            if items:  # a hostile file's names may be megabytes long: each is cut, and a dozen at most shown
                shown = ", ".join(items[:12])
                parts.append(f"{title}: {shown}" + (f", ... ({len(items)} in all)" if len(items) > 12 else ""))
        raise ValueError(f"{source} does not match the model configuration {model.config}: {'; '.join(parts)}. "
                         "Check that the configuration (config.json / --config) matches the weights file.")


def model_from_state_dict(
    state: dict[str, Tensor], config: VallexConfig, device: str | torch.device = "cpu", source: str = "checkpoint"
) -> VallexModel:
    """Build a model on ``meta``, check the state dict strictly, and adopt its tensors (no copy on CPU)."""
    model, state = _checked_on_meta(state, config, source)
    # In the reference both tied keys hold the same values and the later key wins; drop the predictors
    # so the embedding's tensor is the one kept, then tie again (assign=True replaced the parameters).
    for predictor, embedding in _tied_keys(config.num_quantizers).items():
        state[predictor] = state[embedding]
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    return model.to(device).eval()


def _checked_on_meta(state: Mapping[str, Tensor], config: VallexConfig,
                     source: str) -> tuple[VallexModel, dict[str, Tensor]]:
    """A model of ``config`` on ``meta`` and ``state`` with both tied keys, checked key by key and shape by shape."""
    state = dict(state)
    for predictor, embedding in _tied_keys(config.num_quantizers).items():
        state.setdefault(predictor, state.get(embedding))  # safetensors files store the pair once
    state = {key: value for key, value in state.items() if value is not None}
    # Sizes first, from the shapes alone: a configuration that does not describe these tensors (one from a
    # hostile file: 2000 layers, say) is refused before a module of it is built, even on ``meta``.
    differences = [f"{name} {stored} in the file, {getattr(config, name)} in the configuration"
                   for name, stored in sizes_in_state_dict(state).items() if stored != getattr(config, name)]
    if differences:
        raise ValueError(f"{source} does not match the model configuration: {'; '.join(differences)}. Check that "
                         "the configuration (config.json / --config) belongs to this weights file.")
    with torch.device("meta"):
        model = VallexModel(config)
    check_state_dict(state, model, source)
    return model, state


#: A decoder layer's index in a state-dict key (``ar_decoder.layers.11.linear1.weight``).
_AR_LAYER = re.compile(r"ar_decoder\.layers\.(\d+)\.")


def sizes_in_state_dict(state: Mapping[str, Tensor]) -> dict[str, int]:
    """The :class:`VallexConfig` sizes the state dict's tensors show (all but ``nhead``, which no shape shows).

    Read from the AR side's text and audio embeddings, language embedding, first feed-forward layer, and the
    counts of AR decoder layers and NAR audio embeddings; a field whose tensor is missing or of another rank is
    left out (the key-by-key check names it). Only shapes are read, so it is cheap and bounded by the file.
    """
    def shape(key: str) -> tuple[int, ...] | None:
        value = state.get(key)
        return tuple(value.shape) if isinstance(value, Tensor) and value.dim() == 2 else None

    sizes: dict[str, int] = {
        "num_layers": len({m.group(1) for key in state if (m := _AR_LAYER.match(key))}),
        "num_quantizers": sum(1 for key in state if _NAR_EMBEDDING.fullmatch(key)),
    }
    if text := shape("ar_text_embedding.word_embeddings.weight"):
        sizes["text_vocab_size"], sizes["d_model"] = text
    if audio := shape("ar_audio_embedding.word_embeddings.weight"):
        sizes["audio_vocab_size"] = audio[0] - 2  # + EOS and BOS rows
    if languages := shape(LANGUAGE_EMBEDDING_KEY):
        sizes["num_languages"] = languages[0]
    feed_forward = shape("ar_decoder.layers.0.linear1.weight")
    if feed_forward and "d_model" in sizes and sizes["d_model"] and feed_forward[0] % sizes["d_model"] == 0:
        sizes["ff_multiplier"] = feed_forward[0] // sizes["d_model"]
    return sizes


def check_checkpoint(path: str | Path, config: VallexConfig | None = None) -> None:
    """Raise ValueError unless the file at ``path`` is a readable checkpoint whose every key and shape fits the
    model of ``config`` (default: the one stored in the file, else the public checkpoint's), and whose languages
    agree with its rows as :func:`load_model` checks them. Loads nothing."""
    path = Path(path)
    state, stored = read_state_dict(path)
    rows = state[LANGUAGE_EMBEDDING_KEY].shape[0] if LANGUAGE_EMBEDDING_KEY in state else None
    _checked_on_meta(state, _with_languages(config or stored or VallexConfig.public(), path, rows), str(path))


#: :func:`state_dict_digest` of the published checkpoint (the file of SHA-256 ``c5fcd05e…``, published as
#: ``vallex-checkpoint.pt`` and ``epoch-10.pt``): a download with other bytes is accepted when its tensors have this
#: digest. None: not recorded yet. It must be computed once from the real 1.48 GB file (``vallex checkpoint-digest
#: vallex-checkpoint.pt`` on a copy whose SHA-256 is the published one), which was not at hand when this was
#: written; until it is, such a copy is refused (:func:`check_published_tensors` says why and what to do).
PUBLISHED_STATE_DIGEST: str | None = None
#: Hashed first; a change to the canonical form of :func:`state_dict_digest` must change it.
STATE_DIGEST_FORM = b"vallex-state-dict-sha256/1\n"
_NAR_EMBEDDING = re.compile(r"nar_audio_embeddings\.\d+\.word_embeddings\.weight")


def state_dict_digest(state: Mapping[str, Tensor]) -> str:
    """Hex SHA-256 of a state dict's tensors in one canonical form, whatever file they were read from.

    Hashed: :data:`STATE_DIGEST_FORM`, then for each key in sorted (code point) order the line
    ``json.dumps({"dtype": "float32", "name": key, "shape": [1024, 32]}, sort_keys=True, separators=(",", ":"))``
    plus ``"\\n"``, then the tensor's values in row-major order as little-endian bytes. So the pickle's bytes,
    anything beside the state dict (trainer hyper-parameters, path classes), the format (zip, legacy, safetensors),
    storage sharing, strides and offsets do not enter; a changed value (bit for bit), dtype, shape or name does.
    """
    digest = hashlib.sha256(STATE_DIGEST_FORM)
    for name in sorted(state):
        tensor = state[name].detach().cpu()
        header = {"dtype": str(tensor.dtype).removeprefix("torch."), "name": name, "shape": list(tensor.shape)}
        digest.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n")
        raw = tensor.contiguous().reshape(-1).view(torch.uint8)  # no copy when already contiguous (mmapped files)
        if sys.byteorder == "big" and tensor.element_size() > 1:
            raw = raw.view(-1, tensor.element_size()).flip(1).reshape(-1)
        digest.update(raw.numpy())
    return digest.hexdigest()


def checkpoint_digest(path: str | Path) -> str:
    """:func:`state_dict_digest` of a ``.pt`` or ``.safetensors`` checkpoint (read safely, mmapped).

    A safetensors file stores each tied NAR predictor once, under its embedding's name; it is counted under both
    names, as in the ``.pt`` it was converted from, so both files have one digest.
    """
    state, _ = read_state_dict(path)
    quantizers = sum(1 for key in state if _NAR_EMBEDDING.fullmatch(key))
    for predictor, embedding in _tied_keys(quantizers).items():
        if predictor not in state and embedding in state:
            state[predictor] = state[embedding]
    return state_dict_digest(state)


def check_published_tensors(path: str | Path, sha256: str, published_sha256: str) -> str:
    """Accept a copy of the published checkpoint whose bytes differ (SHA-256 ``sha256``, not ``published_sha256``)
    only when its tensors are the published ones; return its :func:`checkpoint_digest`.

    While :data:`PUBLISHED_STATE_DIGEST` is not recorded, every such copy is refused, not accepted with a warning:
    the key-by-key and shape checks say nothing about the values, so a damaged or altered copy would pass them and
    load without a sign; downloads run unattended (a Space's first start), where a warning is read by nobody; and
    the byte-identical sources are tried first, so a re-pickled copy is reached only when they all failed.

    Raises:
        ValueError: the tensors differ from the published ones, or there is nothing to compare them with; the
            message says how to check the file and use it anyway.
    """
    what = f"{Path(path).name}: SHA-256 {sha256[:16]}... is not the published {published_sha256[:16]}..."
    if PUBLISHED_STATE_DIGEST is None:
        raise ValueError(f"{what}, and no digest of the published tensors is recorded to compare with: refused "
                         "(`vallex checkpoint-digest` compares it with a published copy; place a file you trust by "
                         "hand, or use --checkpoint).")
    digest = checkpoint_digest(path)
    if digest != PUBLISHED_STATE_DIGEST:
        raise ValueError(f"{what}, and its tensors are not the published ones either (state-dict digest "
                         f"{digest[:16]}..., published {PUBLISHED_STATE_DIGEST[:16]}...): another model or a damaged "
                         "copy; refused.")
    return digest


def load_model(
    path: str | Path,
    config: VallexConfig | None = None,
    device: str | torch.device = "cpu",
) -> VallexModel:
    """Load a VALL-E X model from ``.pt`` or ``.safetensors`` in eval mode.

    The configuration comes from ``config``, else from the file (safetensors metadata), else from a
    ``<name>.json`` / ``vallex-config.json`` / ``config.json`` beside the file, else the public checkpoint's. Its
    languages (``model.config.languages``) are the configuration's, else those of a ``languages.json`` beside the
    file; a list that disagrees with the checkpoint's language-embedding rows is a ValueError naming both.
    """
    path = Path(path)
    state, stored = read_state_dict(path)
    if config is None:
        config = stored or _config_beside(path) or VallexConfig.public()
    rows = state[LANGUAGE_EMBEDDING_KEY].shape[0] if LANGUAGE_EMBEDDING_KEY in state else None
    config = _with_languages(config, path, rows)
    return model_from_state_dict(state, config, device, source=str(path))


def checkpoint_languages(path: str | Path, config: VallexConfig | None = None) -> Languages:
    """The languages the checkpoint at ``path`` speaks, found as :func:`load_model` finds them, without reading
    its weights (fast enough to build a menu from); ValueError when they cannot be told or do not agree."""
    path = Path(path)
    if config is None:
        stored = read_state_dict(path)[1] if path.suffix == ".safetensors" else None  # metadata; tensors mapped
        config = stored or _config_beside(path) or VallexConfig.public()
    return Languages.of(_with_languages(config, path, None))


def _with_languages(config: VallexConfig, path: Path, rows: int | None) -> VallexConfig:
    """``config`` naming the language of each of its rows: its own list, or the ``languages.json`` beside the
    checkpoint (which must then agree with it); ``rows``: the checkpoint's language-embedding rows, if read."""
    def known() -> str:
        return f" ({', '.join(config.languages)})" if config.languages else ""

    if rows is not None and rows != config.num_languages:
        raise ValueError(f"{path} has {rows} language-embedding rows, but its configuration has {config.num_languages}"
                         f"{known()}: use the .json written with this checkpoint (or none, for the public one).")
    table = path.with_name(LANGUAGES_FILE)
    if not table.is_file():
        return config
    listed = read_languages_file(table)
    if len(listed) != config.num_languages:
        raise ValueError(f"{table} names {len(listed)} languages ({', '.join(listed)}), but {path.name} has "
                         f"{config.num_languages} language-embedding rows{known()}: the file belongs to another "
                         "checkpoint; fix or remove it.")
    if config.languages is not None and listed != config.languages:
        raise ValueError(f"{table} names the rows {', '.join(listed)}, but {path.name}'s configuration names them "
                         f"{', '.join(config.languages)}: the file belongs to another checkpoint; fix or remove it.")
    return dataclasses.replace(config, languages=listed)


def read_languages_file(path: str | Path) -> tuple[str, ...]:
    """The codes of a ``languages.json`` (a JSON list, one code per language-embedding row); ValueError if it is
    not one."""
    try:
        codes = json.loads(read_small_text(path))
    except (json.JSONDecodeError, RecursionError) as error:
        why = "nested too deeply" if isinstance(error, RecursionError) else error
        raise ValueError(f"{path} is not valid JSON ({why}); it must list one language code per row, e.g. "
                         '["en", "zh", "ja", "de"].') from None
    return check_codes(codes, str(path))


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
    make_folder(path.parent)
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    with atomic_path(path) as partial:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            for predictor in _tied_keys(model.config.num_quantizers):
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
