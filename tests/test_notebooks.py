"""The tutorial notebooks: stored as their sources build them, with the figures of their last execution, and
running top to bottom, offline, in a kernel of this interpreter (the project's venv).

The stored outputs are what a reader sees on GitHub; they are not compared with a new run (timings and
machine-dependent numbers differ), only checked to come from the current sources. Each notebook is then
executed afresh with nbclient (``notebooks/build.py``'s ``execute``); any cell error fails the test.

Set ``VALLEX_EXECUTED_NOTEBOOKS_DIR`` to keep the executed copies (with their figures) for reading.
"""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
#: A stuck notebook fails instead of hanging the suite; all six together take a few minutes on 2 CPU cores.
NOTEBOOK_BUDGET_S = 150
#: What a stored notebook may weigh (its figures are moderate-resolution, 256-colour PNGs).
MAX_STORED_BYTES = 400_000


def _load_builder():
    """notebooks/build.py, loaded by path (a plain ``import build`` could find the PyPI ``build`` package)."""
    spec = importlib.util.spec_from_file_location("vallex_notebooks_build", NOTEBOOKS_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_builder()


def _images(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.outputs if "image/png" in output.get("data", {})]


def test_notebooks_exist():
    names = [path.name for path in NOTEBOOKS]
    assert names == [f"{source.stem}.ipynb" for source in build.sources()]
    for expected in ("01_text_frontend", "02_codec_tokens", "03_the_model", "04_zero_shot_cross_lingual",
                     "05_training_a_tiny_model", "06_why_ar_tts_fails"):
        assert f"{expected}.ipynb" in names, f"missing notebooks/{expected}.ipynb"


def test_notebooks_are_current_builds_of_their_sources():
    """Cells equal to the source's, outputs made from this very source, every code cell executed in order."""
    stale = {source.name: reason for source in build.sources() if (reason := build.stale_reason(source))}
    assert not stale, f"out of date (run python notebooks/build.py): {stale}"


def test_stored_notebooks_show_their_figures_and_stay_small():
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        assert _images(notebook), f"{path.name} stores no figure"
        assert path.stat().st_size < MAX_STORED_BYTES, f"{path.name} is {path.stat().st_size} bytes"
        for cell in notebook.cells:
            for output in cell.get("outputs", []):
                assert "<audio" not in str(output.get("data", {}).get("text/html", "")), f"{path.name} stores audio"
                assert output.get("output_type") != "error", f"{path.name} stores an error"


def test_build_replaces_audio_and_keeps_figures(tmp_path):
    source = tmp_path / "99_example.py"
    source.write_text("# %% [markdown]\n# # Title\n\n# %%\nprint('hi')\n", encoding="utf-8")
    notebook = build.build_notebook(source)
    audio = nbformat.v4.new_output("display_data", data={"text/html": "<audio controls src='data:...'></audio>"})
    image = nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="})
    notebook.cells[1].outputs = [audio, image]
    notebook.cells[1].execution_count = 1
    notebook.cells[1].metadata["execution"] = {"iopub.execute_input": "2024-01-01T00:00:00Z"}
    stored = build.for_storage(notebook, source)
    outputs = stored.cells[1].outputs
    assert outputs[0].output_type == "stream" and outputs[0].text == build.AUDIO_PLACEHOLDER
    assert outputs[1] == image and "execution" not in stored.cells[1].metadata
    assert stored.metadata[build.EXECUTED_KEY]["source_sha256"] == build.source_digest(source)
    assert build.render(build.without_outputs(stored)) == build.render(build.build_notebook(source))


@pytest.fixture(scope="module")
def tutorial_dir(tmp_path_factory) -> Path:
    """One fresh folder for the tiny model that notebooks 5 and 6 share (trained by whichever runs first)."""
    return tmp_path_factory.mktemp("tutorial")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs(path: Path, tutorial_dir: Path):
    notebook = build.without_outputs(nbformat.read(path, as_version=4))
    start = time.perf_counter()
    build.execute(notebook, env=build.offline_env(tutorial_dir))  # raises CellExecutionError on any error
    elapsed = time.perf_counter() - start

    keep = os.environ.get("VALLEX_EXECUTED_NOTEBOOKS_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, Path(keep) / path.name)
    assert _images(notebook), f"{path.name} produced no figure"
    assert elapsed < NOTEBOOK_BUDGET_S, f"{path.name} took {elapsed:.0f} s (budget {NOTEBOOK_BUDGET_S} s)"
