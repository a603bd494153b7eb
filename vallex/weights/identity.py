"""Which model is running: the VALL-E X checkpoint's file name, SHA-256 (its first digits), languages, and whether
its weights are random (:class:`ModelIdentity`, made by :func:`model_identity`), for everything that shows users
what they are talking to (the app's banner and details, ``/health``, ``/v1/models``, ``vallex serve``'s first line).

    manager = WeightsManager(weights_dir, checkpoint=checkpoint)
    paths = manager.resolve(("vallex",), download=False)
    model_identity(manager, paths, checkpoint_languages(paths.vallex, paths.vallex_config)).describe()
    # 'vallex-checkpoint.pt (SHA-256 3f7b2c…; languages en, zh, ja)'

The digest is hashed only when nothing already knows it: a random-weights folder's checksum file, the download
record (``vallex-sources.json``) and a Hugging Face cache's blob name (the file's SHA-256) are asked first, so the
1.48 GB public checkpoint is not read again; a checkpoint of your own (a ``vallex train`` run) is hashed once.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vallex.weights.checks import read_checksums
from vallex.weights.manager import WeightPaths, WeightsManager
from vallex.weights.sources import VALLEX_CHECKPOINT

#: Hex digits of the SHA-256 shown: enough to tell two checkpoints apart at a glance.
SHA256_PREFIX = 12
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelIdentity:
    """What a user is told about the running model."""

    file: str  # the checkpoint's file name (not its folder: a server does not show its paths)
    sha256: str  # the first SHA256_PREFIX hex digits of the file's SHA-256
    languages: tuple[str, ...]  # the codes it speaks, in the order of its language rows
    random: bool  # random weights (``vallex make-random-weights``): every output is noise

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``/health``'s and ``/v1/models``' ``checkpoint``)."""
        return {"file": self.file, "sha256": self.sha256, "languages": list(self.languages), "random": self.random}

    def describe(self) -> str:
        """One line, e.g. ``vallex-checkpoint.pt (SHA-256 3f7b2c9a01de; languages en, zh, ja)``."""
        noise = "; RANDOM weights: outputs are noise" if self.random else ""
        return f"{self.file} (SHA-256 {self.sha256}; languages {', '.join(self.languages)}{noise})"


def model_identity(manager: WeightsManager, paths: WeightPaths, languages: Iterable[str]) -> ModelIdentity:
    """The identity of the checkpoint ``paths.vallex`` found by ``manager``, which speaks ``languages``.

    Its SHA-256 comes from what already knows it (see the module's note), else from ``manager.sha256`` (which
    hashes a file once per manager). Raises ValueError when ``paths`` holds no checkpoint.
    """
    if paths.vallex is None:
        raise ValueError("No VALL-E X checkpoint was resolved: resolve the 'vallex' component first.")
    digest = _known_sha256(manager, paths.vallex) or manager.sha256(paths.vallex)
    return ModelIdentity(paths.vallex.name, digest[:SHA256_PREFIX], tuple(languages), paths.random)


def _known_sha256(manager: WeightsManager, path: Path) -> str | None:
    """``path``'s SHA-256 as recorded somewhere, without reading the file (None when nothing records it)."""
    folder = manager.weights_dir
    if folder is not None and path.is_relative_to(folder):
        checksums = read_checksums(folder) or {}
        listed = checksums.get("sha256", {}).get(path.relative_to(folder).as_posix())
        if isinstance(listed, str) and _SHA256.fullmatch(listed.lower()):
            return listed.lower()
    record = manager.record(VALLEX_CHECKPOINT, path) or {}
    recorded = record.get("sha256")
    if isinstance(recorded, str) and _SHA256.fullmatch(recorded) and record.get("size") == path.stat().st_size:
        return recorded
    blob = path.resolve()  # the Hugging Face cache keeps a large file as blobs/<its SHA-256>
    if blob.parent.name == "blobs" and _SHA256.fullmatch(blob.name):
        return blob.name
    return None
