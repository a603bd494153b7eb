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


def verify_sha256(weight_file: WeightFile, path: Path, sha256: Callable[[Path], str], checksums: dict | None = None,
                  weights_dir: Path | None = None) -> None:
    """Check ``path``'s SHA-256 against the checksum file of ``weights_dir`` (random weights), else the published
    one; a file with neither (or the VALL-E X checkpoint, checked key by key when loaded) passes.

    ``sha256`` hashes a file (the manager's, which hashes each file once).

    Raises:
        ValueError: the digest differs.
    """
    expected = None
    if checksums is not None and weights_dir is not None:
        expected = checksums.get("sha256", {}).get(path.relative_to(weights_dir).as_posix())
    if expected is None and not (checksums and checksums.get("random")) and not weight_file.same_tensors_suffice:
        expected = weight_file.sha256
    if not expected:
        return
    actual = sha256(path)
    if not actual.startswith(expected.lower()):
        raise ValueError(
            f"Checksum mismatch for {path}: SHA-256 {actual[:16]}... does not start with {expected[:16]}. "
            "The file is damaged or not the expected one; delete it and download it again."
        )


def check_form(weight_file: WeightFile, path: Path, folder: Path | None) -> None:
    """Raise ValueError unless ``path`` is what ``weight_file`` must be (checkpoint keys and shapes, Vocos forms).

    ``folder``: the weights folder it goes into, whose ``vallex-config.json`` gives the checkpoint's sizes
    (None: the caches, the public sizes).
    """
    if weight_file.component == "vallex":
        from vallex.config import VallexConfig
        from vallex.weights.checkpoint import check_checkpoint

        config_file = (folder / VALLEX_CONFIG_NAME) if folder is not None else None
        check_checkpoint(path, VallexConfig.from_json(config_file) if config_file and config_file.is_file() else None)
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
