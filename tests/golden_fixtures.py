"""Where the golden fixtures are, and a check that a folder holds a complete set.

The fixtures were made by running the reference implementation (see ``tests/golden/public/README.txt``).
The public set lives in the repository; ``$VALLEX_GOLDEN_DIR`` points the suite at any other folder laid
out the same way (other sets have other model sizes, seeds and sentences).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GOLDEN_DIR = REPO_ROOT / "tests" / "golden" / "public"

#: file -> what a set must hold there (checked by :func:`golden_problems`).
REQUIRED_JSON = {
    "config.json": ("d_model", "nhead", "num_layers"),
    "cases.json": ("cases",),
    "train.json": ("batch", "runs", "grad_norms_natural_draw"),
}


def golden_dir() -> Path:
    """The golden fixture folder: ``$VALLEX_GOLDEN_DIR`` or the in-repository public set."""
    return Path(os.environ.get("VALLEX_GOLDEN_DIR") or DEFAULT_GOLDEN_DIR).resolve()


def golden_problems(path: Path) -> list[str]:
    """What is missing or malformed in the golden folder ``path`` (empty list: a complete set)."""
    if not path.is_dir():
        return ["the folder does not exist"]
    problems = []
    for name, keys in REQUIRED_JSON.items():
        file = path / name
        if not file.is_file():
            problems.append(f"{name} is missing")
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            problems.append(f"{name} is not valid JSON ({error})")
            continue
        missing = [key for key in keys if not isinstance(data, dict) or key not in data]
        if missing:
            problems.append(f"{name} lacks {', '.join(missing)}")
    text = path / "text.jsonl"
    if not text.is_file():
        problems.append("text.jsonl is missing")
    else:
        for number, line in enumerate(text.read_text(encoding="utf-8").splitlines(), 1):
            try:
                if line.strip():
                    json.loads(line)
            except json.JSONDecodeError as error:
                problems.append(f"text.jsonl line {number} is not valid JSON ({error})")
                break
    checkpoint = path / "checkpoint.pt"
    if not checkpoint.is_file() or checkpoint.stat().st_size == 0:
        problems.append("checkpoint.pt is missing or empty")
    presets = path / "presets"
    if not presets.is_dir() or not any(presets.glob("*.npz")):
        problems.append("presets/ with .npz voice presets is missing")
    return problems


def golden_error(path: Path, problems: list[str]) -> str:
    """The one message the suite stops with when the golden folder is unusable."""
    source = "VALLEX_GOLDEN_DIR" if os.environ.get("VALLEX_GOLDEN_DIR") else "the default"
    return (f"Golden fixture folder {path} ({source}) is unusable: {'; '.join(problems)}. "
            f"Point VALLEX_GOLDEN_DIR at a folder laid out like {DEFAULT_GOLDEN_DIR} "
            "(config.json, checkpoint.pt, cases.json, train.json, text.jsonl, presets/), "
            "or unset it to use that one.")
