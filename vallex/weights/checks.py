"""How a model file is checked: its SHA-256 (the published pin, or a random-weights folder's checksum file) and
its form (the checkpoint's keys and shapes, Vocos's configuration and state dict).

What is checked when (on download, on every load) is said in :mod:`vallex.weights`.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from vallex.weights.sources import VALLEX_CONFIG_NAME, WeightFile

#: The checksum file of a random-weights folder (written by :func:`vallex.weights.random_weights.make_random_weights`):
#: the SHA-256 of every file in the folder, and ``"random": true``, which makes every use warn.
CHECKSUMS_NAME = "vallex-weights.json"

NOISE_WARNING = ("These are RANDOM weights for development and tests: every output made with them is noise, "
                 "not speech.")


class RandomWeightsWarning(UserWarning):
    """The weights folder was made by ``vallex.weights.random_weights.make_random_weights``: outputs are noise."""


def warn_random_weights(weights_dir: Path) -> None:
    """Warn that ``weights_dir`` holds random weights, at the caller's line outside this package.

    Python shows a warning with the file, line and source of the frame it names: the first one outside
    ``vallex/`` is the user's own call (``VallEX.from_pretrained(...)`` in a script), not our ``warnings.warn``.
    Shown once per folder and calling line, however often the folder is resolved.
    """
    package = str(Path(__file__).resolve().parents[1]) + os.sep
    level, frame = 1, sys._getframe(0)
    while frame is not None and os.path.realpath(frame.f_code.co_filename).startswith(package):
        level, frame = level + 1, frame.f_back
    warnings.warn(f"{NOISE_WARNING} ({weights_dir})", RandomWeightsWarning, stacklevel=level)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_checksums(weights_dir: Path | None) -> dict | None:
    """The checksum file of ``weights_dir`` (None when there is none, or no folder).

    Raises:
        ValueError: the file is not JSON, or not of the form ``{"sha256": {name: digest}, "random": bool}``.
    """
    if weights_dir is None or not (weights_dir / CHECKSUMS_NAME).is_file():
        return None
    try:
        checksums = json.loads((weights_dir / CHECKSUMS_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{weights_dir / CHECKSUMS_NAME} is not valid JSON ({error}); delete or "
                         "regenerate it.") from None
    if not isinstance(checksums, dict) or not isinstance(checksums.get("sha256", {}), dict):
        raise ValueError(f"{weights_dir / CHECKSUMS_NAME} is malformed; delete or regenerate it.")
    return checksums


#: What a model file is, as :func:`identify` tells it by its SHA-256.
PUBLISHED = "published"  # the published file: its SHA-256 is the pinned one
RANDOM = "random"  # the random file that make-random-weights wrote there (its checksum file records it)
REPLACED = "replaced"  # not the random file written there, and held to no pin on load: a file placed by hand
UNCHECKED = "unchecked"  # nothing to compare its SHA-256 with (its form is checked when it is loaded)


def identify(weight_file: WeightFile, path: Path, sha256: Callable[[Path], str], checksums: dict | None = None,
             weights_dir: Path | None = None) -> str:
    """What ``path`` is, told by its SHA-256: :data:`PUBLISHED`, :data:`RANDOM`, :data:`REPLACED` or
    :data:`UNCHECKED`; the check every load makes (:meth:`vallex.weights.manager.WeightsManager.resolve`).

    The published SHA-256 wins over the checksum file of ``weights_dir``: it names the one published file, whereas
    the checksum file only records the random files make-random-weights wrote, which a file copied over one of them
    no longer is. A file is hashed only when there is something to hold it to: the checksum file's record, or a pin
    held on every load (EnCodec's and Vocos's weights; the checkpoint's is held on download only, since a folder may
    hold your own checkpoint or its ``.safetensors``). ``sha256`` hashes a file (the manager's hashes each once).

    Raises:
        ValueError: one line: a file held to its pin on every load that is neither the published file nor the
            random one written in its folder (damaged, or another file).
    """
    written = None
    if checksums is not None and weights_dir is not None and path.is_relative_to(weights_dir):
        written = checksums.get("sha256", {}).get(path.relative_to(weights_dir).as_posix())
    pin_held = bool(weight_file.sha256) and not weight_file.same_tensors_suffice
    random_folder = bool(checksums and checksums.get("random"))
    if not written and (not pin_held or random_folder):
        return UNCHECKED
    digest = sha256(path)
    if weight_file.sha256 and digest.startswith(weight_file.sha256.lower()):
        return PUBLISHED
    if written and digest.startswith(str(written).lower()):
        return RANDOM
    if not pin_held:
        return REPLACED
    folder = f" --weights-dir {weights_dir}" if weights_dir is not None else ""
    again = f"`vallex download{folder} --only {weight_file.component} --force`"
    if written:
        raise ValueError(
            f"Checksum mismatch for {path}: SHA-256 {digest[:16]}... is neither the published {weight_file.description}"
            f" ({weight_file.sha256[:16]}...) nor the random file make-random-weights wrote there ({written[:16]}... "
            f"in {CHECKSUMS_NAME}): it is damaged or another file. Get the published one with {again}, or write "
            f"the random files again with `vallex make-random-weights {weights_dir} --force`.")
    raise ValueError(
        f"Checksum mismatch for {path}: SHA-256 {digest[:16]}... is not the published {weight_file.description}'s "
        f"{weight_file.sha256[:16]}...: it is damaged or another file. Delete it and download it again ({again}).")


def checkpoint_config_file(folder: Path | None, checkpoint_kind: str, sha256: Callable[[Path], str],
                           checksums: dict | None) -> Path | None:
    """The ``vallex-config.json`` of ``folder`` that gives the sizes of the checkpoint in it (of
    :func:`identify`'s ``checkpoint_kind``), or None: the public sizes.

    Not the one make-random-weights wrote (``checksums`` records it) once the checkpoint beside it is another
    (:data:`PUBLISHED`, :data:`REPLACED`): it describes the random checkpoint written with it, and nothing else.
    """
    config = folder / VALLEX_CONFIG_NAME if folder is not None else None
    if config is None or not config.is_file():
        return None
    written = (checksums or {}).get("sha256", {}).get(VALLEX_CONFIG_NAME)
    if checkpoint_kind in (PUBLISHED, REPLACED) and written and sha256(config).startswith(str(written).lower()):
        return None
    return config


def check_form(weight_file: WeightFile, path: Path, config_file: Path | None) -> None:
    """Raise ValueError unless ``path`` is what ``weight_file`` must be (checkpoint keys and shapes, Vocos forms).

    ``config_file``: the ``vallex-config.json`` that gives the checkpoint's sizes (:func:`checkpoint_config_file`;
    None: the public sizes).
    """
    if weight_file.component == "vallex":
        from vallex.config import VallexConfig
        from vallex.weights.checkpoint import check_checkpoint

        check_checkpoint(path, VallexConfig.from_json(config_file) if config_file is not None else None)
    elif weight_file.layout_name.endswith(".yaml"):
        import yaml

        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(config, dict) or not {"backbone", "head"} <= set(config):
            raise ValueError(f"{path} is not a Vocos configuration (no backbone and head sections).")
    elif weight_file.component == "vocos":
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path} is not a Vocos state dict of tensors.")
