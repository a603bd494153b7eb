"""The tutorial notebooks run top to bottom, offline, in a kernel of this interpreter (the project's venv).

Each notebook is executed with nbclient; any cell error fails the test. The stored notebooks must carry no
outputs and must be exactly what ``notebooks/build.py`` makes from ``notebooks/src/*.py``.

Set ``VALLEX_EXECUTED_NOTEBOOKS_DIR`` to keep the executed copies (with their figures) for reading.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
#: A stuck cell fails the test instead of hanging the suite; the whole suite must stay within 5 minutes.
CELL_TIMEOUT_S = 120
NOTEBOOK_BUDGET_S = 150


def _load_builder():
    """notebooks/build.py, loaded by path (a plain ``import build`` could find the PyPI ``build`` package)."""
    spec = importlib.util.spec_from_file_location("vallex_notebooks_build", NOTEBOOKS_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_builder()


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """A kernelspec that starts ``sys.executable`` (this venv's python), whatever else is installed."""
    kernels = tmp_path_factory.mktemp("kernels")
    spec_dir = kernels / "vallex-venv"
    spec_dir.mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "vallex venv",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return KernelSpecManager(kernel_dirs=[str(kernels)])


def test_notebooks_exist():
    names = [path.name for path in NOTEBOOKS]
    assert names == [f"{source.stem}.ipynb" for source in build.sources()]
    for expected in ("01_text_frontend", "02_codec_tokens", "03_the_model", "04_zero_shot_cross_lingual",
                     "05_training_a_tiny_model"):
        assert f"{expected}.ipynb" in names, f"missing notebooks/{expected}.ipynb"


def test_notebooks_match_their_sources():
    for source in build.sources():
        target = NOTEBOOKS_DIR / f"{source.stem}.ipynb"
        assert target.read_text(encoding="utf-8") == build.render(build.build_notebook(source)), (
            f"{target.name} is out of date: run python notebooks/build.py"
        )


def test_notebooks_are_stored_without_outputs():
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has stored outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs(path: Path, kernel_specs: KernelSpecManager, monkeypatch: pytest.MonkeyPatch):
    notebook = nbformat.read(path, as_version=4)
    # The kernel inherits this environment: offline hub, no analytics (tests/conftest.py sets the rest).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VALLEX_OFFLINE", "1")
    # The notebooks import the library from this checkout even where it is not pip-installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    manager = KernelManager(kernel_name="vallex-venv", kernel_spec_manager=kernel_specs)
    client = NotebookClient(
        notebook,
        km=manager,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError (with the cell and traceback) on any error
    elapsed = time.perf_counter() - start

    keep = os.environ.get("VALLEX_EXECUTED_NOTEBOOKS_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, Path(keep) / path.name)
    images = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.outputs if "image/png" in output.get("data", {})]
    assert images, f"{path.name} produced no figure"
    assert elapsed < NOTEBOOK_BUDGET_S, f"{path.name} took {elapsed:.0f} s (budget {NOTEBOOK_BUDGET_S} s)"
