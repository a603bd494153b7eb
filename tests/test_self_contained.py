"""A clone with nothing beside it runs the suite: no file reaches outside the repository, and the golden
fixtures live in it (with a clear message when ``VALLEX_GOLDEN_DIR`` points at an unusable folder)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from golden_fixtures import DEFAULT_GOLDEN_DIR, REPO_ROOT, golden_error, golden_problems

# Written in pieces so that this file does not match itself.
OUTSIDE = [
    re.escape(".." + "/shared"),
    r'parents?\s*(\[\s*\d+\s*\])?\s*/\s*"' + "shared" + '"',
    r'"' + "shared" + r'"\s*/\s*"golden"',
    re.escape("/work" + "/"),
    r"\bREPO(_ROOT)?\.parent\b",
]
SKIPPED_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "node_modules", "build", "dist"}
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".cfg", ".yaml", ".yml", ".json", ".ipynb", ".sh", ".in", ""}


def _project_text_files() -> list[Path]:
    files = []
    for root, dirs, names in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs
                   if d not in SKIPPED_DIRS and not d.endswith(".egg-info") and not d.startswith(".venv")]
        for name in names:
            if name == ".git":  # in a git worktree or submodule, .git is a file naming the real repository
                continue
            path = Path(root) / name
            if path.suffix in TEXT_SUFFIXES and path.stat().st_size < 2_000_000 and "golden" not in path.parts:
                files.append(path)
    return files


def test_no_file_reaches_outside_the_repository():
    pattern = re.compile("|".join(OUTSIDE))
    offenders = []
    for path in _project_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()[:100]}")
    assert offenders == [], "paths outside the repository:\n" + "\n".join(offenders)


def test_the_scan_sees_what_it_must_refuse(tmp_path):
    pattern = re.compile("|".join(OUTSIDE))
    for line in ('ROOT.parent / "' + "shared" + '" / "golden"', "cat .." + "/shared/x", "REPO" + ".parent / 'x'"):
        assert pattern.search(line), line
    assert not pattern.search('REPO / "tests" / "golden" / "public"')


def test_the_public_golden_set_is_in_the_repository():
    assert DEFAULT_GOLDEN_DIR.is_relative_to(REPO_ROOT)
    assert golden_problems(DEFAULT_GOLDEN_DIR) == []


def test_golden_problems_name_what_is_wrong(tmp_path):
    assert golden_problems(tmp_path / "absent") == ["the folder does not exist"]
    copy = tmp_path / "set"
    shutil.copytree(DEFAULT_GOLDEN_DIR, copy)
    assert golden_problems(copy) == []
    (copy / "train.json").unlink()
    (copy / "cases.json").write_text("{not json", encoding="utf-8")
    (copy / "config.json").write_text(json.dumps({"d_model": 8}), encoding="utf-8")
    problems = golden_problems(copy)
    assert any(p.startswith("train.json is missing") for p in problems)
    assert any(p.startswith("cases.json is not valid JSON") for p in problems)
    assert "config.json lacks nhead, num_layers" in problems
    message = golden_error(copy, problems)
    assert str(copy) in message and "VALLEX_GOLDEN_DIR" in message


def _collect_with_golden_dir(path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VALLEX_GOLDEN_DIR": str(path)}
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "tests/test_text_golden.py", "tests/test_model_golden.py"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_an_unusable_golden_folder_is_one_clear_error(tmp_path):
    out = _collect_with_golden_dir(tmp_path / "no-such-set")
    text = out.stdout + out.stderr
    assert out.returncode == 4, text  # pytest's usage error: nothing was collected or run
    assert f"Golden fixture folder {(tmp_path / 'no-such-set').resolve()}" in text
    assert "the folder does not exist" in text
    assert "Traceback" not in text


def test_any_folder_laid_out_the_same_way_is_used(tmp_path):
    """The suite reads the folder VALLEX_GOLDEN_DIR names, not the public set's path or contents."""
    copy = tmp_path / "other-set"
    shutil.copytree(DEFAULT_GOLDEN_DIR, copy)
    cases = json.loads((copy / "cases.json").read_text(encoding="utf-8"))
    cases["cases"] = cases["cases"][:2]  # a different set: fewer cases
    (copy / "cases.json").write_text(json.dumps(cases), encoding="utf-8")
    out = _collect_with_golden_dir(copy)
    assert out.returncode == 0, out.stdout + out.stderr
    greedy = [c["name"] for c in cases["cases"] if c["outputs"]["stop_reason"] != "forced"]
    collected = [line for line in out.stdout.splitlines() if "test_greedy_case_codes_and_first_logits[" in line]
    assert sorted(line.split("[")[1].rstrip("]") for line in collected) == sorted(greedy)
