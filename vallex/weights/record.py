"""The download record: the source, size and SHA-256 of every download, kept in ``vallex-sources.json`` in the
folder that holds it (the weights folder, or the root of the cache it went to).

``vallex download --check`` compares each file with its record; the record also finds a download again after
its source is no longer configured.
"""
from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from pathlib import Path

from vallex.weights.environment import torch_hub_dir
from vallex.weights.sources import Source, WeightFile

#: Where each download's source, size and SHA-256 are recorded (in the folder or cache root holding it).
SOURCES_RECORD_NAME = "vallex-sources.json"


def record_roots(weights_dir: Path | None) -> list[Path]:
    """The folders whose records apply: the weights folder, else the Hugging Face and torch hub caches' roots."""
    if weights_dir is not None:
        return [weights_dir]
    from huggingface_hub import constants

    return [Path(constants.HF_HUB_CACHE), torch_hub_dir()]


def recorded_files(roots: Iterable[Path], weight_file: WeightFile) -> list[tuple[dict, Path]]:
    """Each record of ``weight_file`` in ``roots``, with the path it names (which may no longer exist)."""
    found = []
    for root in roots:
        entry = _read_record(root).get(weight_file.layout_name)
        stored = entry.get("path") if isinstance(entry, dict) else None
        if isinstance(stored, str) and stored:
            found.append((entry, root / stored))
    return found


def write_record(roots: Iterable[Path], weight_file: WeightFile, path: Path, source: Source, digest: str) -> None:
    """Record the download ``path`` of ``weight_file``: its source, size and SHA-256, in the first of ``roots``
    that holds it (else in its own folder)."""
    from vallex.files import write_text_atomic

    root = next((r for r in roots if path.absolute().is_relative_to(r.absolute())), path.parent)
    records = _read_record(root)
    stored = path.absolute().relative_to(root.absolute()) if path.absolute().is_relative_to(root.absolute()) \
        else path.absolute()
    records[weight_file.layout_name] = {
        "path": stored.as_posix(), "source": str(source), "sha256": digest, "size": path.stat().st_size,
        "downloaded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(root / SOURCES_RECORD_NAME, json.dumps(records, indent=2, ensure_ascii=False) + "\n")


def _read_record(root: Path) -> dict:
    try:
        records = json.loads((root / SOURCES_RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return records if isinstance(records, dict) else {}
