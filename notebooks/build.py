"""Build the tutorial notebooks from their reviewable Python sources, executed, with their figures stored.

Each ``notebooks/src/NN_name.py`` is a plain Python file in the "percent" cell format::

    # %% [markdown]
    # # A title
    # Prose, one ``# `` per line.

    # %%
    code()

and becomes ``notebooks/NN_name.ipynb``, executed top to bottom in a kernel of this interpreter, so that a
reader on GitHub sees every figure without running anything. Edit the ``.py`` files, then run::

    python notebooks/build.py                # build and execute every notebook (a few minutes)
    python notebooks/build.py 03 06          # only these (by number or name)
    python notebooks/build.py --check        # exit 1 if a notebook is not what its source builds (the tests run this)

What is stored besides the cells: each code cell's outputs and execution count, and in the notebook's
metadata the SHA-256 of the source it was executed from, which is how ``--check`` knows the outputs are
current. Audio players are replaced by a line of text (GitHub does not play them, and a few seconds of
24 kHz audio would weigh more than all the figures); nbclient's per-cell timestamps are dropped.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import nbformat

NOTEBOOKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = NOTEBOOKS_DIR.parent
SOURCES_DIR = NOTEBOOKS_DIR / "src"
CELL_MARKER = "# %%"
MARKDOWN_MARKER = "# %% [markdown]"

KERNEL_METADATA = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}
#: Notebook metadata key holding what the stored outputs were made from.
EXECUTED_KEY = "vallex"
#: A stuck cell fails instead of hanging; the six notebooks together take a few minutes on 2 CPU cores.
CELL_TIMEOUT_S = 180
AUDIO_PLACEHOLDER = "[audio player: run the notebook to listen]\n"
#: Where 05 and 06 share the tiny model 05 trains (notebooks/tutorial.py); the build gives them a fresh one.
TUTORIAL_DIR_ENV = "VALLEX_TUTORIAL_DIR"


def parse_cells(source: str) -> list[tuple[str, str]]:
    """Split a percent-format source into (kind, text) cells; kind is "markdown" or "code"."""
    cells: list[tuple[str, list[str]]] = []
    for line in source.splitlines():
        if line.startswith(CELL_MARKER):
            marker = line.rstrip()
            if marker not in (CELL_MARKER, MARKDOWN_MARKER):
                raise ValueError(f"Unknown cell marker {line!r}: use {CELL_MARKER!r} or {MARKDOWN_MARKER!r}.")
            cells.append(("markdown" if marker == MARKDOWN_MARKER else "code", []))
            continue
        if not cells:
            if line.strip():
                raise ValueError(f"Text before the first cell marker: {line!r}")
            continue
        kind, lines = cells[-1]
        if kind == "markdown" and line.strip():
            if not (line == "#" or line.startswith("# ")):
                raise ValueError(f"A markdown line must start with '# ': {line!r}")
            line = line[2:]
        elif kind == "markdown":
            line = ""
        lines.append(line)
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in cells]


def build_notebook(source_path: Path) -> nbformat.NotebookNode:
    """The notebook (no outputs, stable cell ids) that ``source_path`` describes."""
    notebook = nbformat.v4.new_notebook(metadata=copy.deepcopy(KERNEL_METADATA))
    stem = source_path.stem
    for index, (kind, text) in enumerate(parse_cells(source_path.read_text(encoding="utf-8"))):
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        cell = make(text)
        cell.id = f"{stem[:2]}-{index:02d}"  # stable ids: rebuilding an unchanged source changes nothing
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def source_digest(source_path: Path) -> str:
    return hashlib.sha256(source_path.read_bytes()).hexdigest()


def without_outputs(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy with no outputs, execution counts or execution metadata: what :func:`build_notebook` makes."""
    bare = copy.deepcopy(notebook)
    bare.metadata.pop(EXECUTED_KEY, None)
    for cell in bare.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
    return bare


def render(notebook: nbformat.NotebookNode) -> str:
    return nbformat.writes(notebook) + "\n"


def sources() -> list[Path]:
    return sorted(SOURCES_DIR.glob("[0-9][0-9]_*.py"))


def stale_reason(source: Path) -> str | None:
    """Why the stored notebook of ``source`` is not what the build makes from it (None when it is)."""
    target = NOTEBOOKS_DIR / f"{source.stem}.ipynb"
    if not target.is_file():
        return "missing"
    stored = nbformat.reads(target.read_text(encoding="utf-8"), as_version=4)
    if render(without_outputs(stored)) != render(build_notebook(source)):
        return "its cells differ from the source"
    if stored.metadata.get(EXECUTED_KEY, {}).get("source_sha256") != source_digest(source):
        return "its outputs were made from another version of the source"
    counts = [cell.execution_count for cell in stored.cells if cell.cell_type == "code"]
    if counts != list(range(1, len(counts) + 1)):
        return "not every code cell was executed, in order"
    return None


def execute(notebook: nbformat.NotebookNode, *, env: dict[str, str] | None = None,
            timeout: int = CELL_TIMEOUT_S) -> nbformat.NotebookNode:
    """Run ``notebook`` in place, top to bottom, in a kernel of this interpreter (whatever Jupyter kernels are
    installed), with the working directory ``notebooks/``; raises nbclient's CellExecutionError on any error.

    ``env``: extra environment variables for the kernel (it inherits this process's environment).
    """
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory(prefix="vallex-kernels-") as kernels:
        spec_dir = Path(kernels) / "vallex-venv"
        spec_dir.mkdir()
        spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "vallex venv", "language": "python"}
        (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
        kernel_env = {**os.environ, **(env or {})}
        # The notebooks import the library from this checkout even where it is not pip-installed.
        kernel_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), kernel_env.get("PYTHONPATH")]))
        manager = KernelManager(kernel_name="vallex-venv", kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernels]))
        client = NotebookClient(notebook, km=manager, timeout=timeout,
                                resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
        client.execute(env=kernel_env)
    return notebook


def offline_env(tutorial_dir: Path) -> dict[str, str]:
    """The kernel's environment for an executed build or test: offline, and a fresh tiny-model folder."""
    return {"HF_HUB_OFFLINE": "1", "VALLEX_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
            "GRADIO_ANALYTICS_ENABLED": "False", TUTORIAL_DIR_ENV: str(tutorial_dir)}


def for_storage(notebook: nbformat.NotebookNode, source: Path) -> nbformat.NotebookNode:
    """The executed ``notebook`` as it is stored: stable metadata, no audio payloads or cell timestamps."""
    stored = copy.deepcopy(notebook)
    stored.metadata = nbformat.from_dict({**copy.deepcopy(KERNEL_METADATA),
                                          EXECUTED_KEY: {"source_sha256": source_digest(source)}})
    for cell in stored.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        outputs = []
        for output in cell.outputs:
            if "<audio" in str(output.get("data", {}).get("text/html", "")):
                output = nbformat.v4.new_output("stream", name="stdout", text=AUDIO_PLACEHOLDER)
            outputs.append(output)
        cell.outputs = outputs
    nbformat.validate(stored)
    return stored


def selected(names: list[str]) -> list[Path]:
    """The sources named by number ("03") or name ("03_the_model"); all of them when none is named."""
    every = sources()
    if not names:
        return every
    chosen = [s for s in every if any(s.stem == n or s.stem[:2] == n for n in names)]
    unknown = [n for n in names if not any(s.stem == n or s.stem[:2] == n for s in every)]
    if unknown:
        raise SystemExit(f"No notebook source named {', '.join(unknown)} in {SOURCES_DIR}.")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="numbers or names of the notebooks to build (default: all)")
    parser.add_argument("--check", action="store_true", help="only check that every .ipynb is up to date")
    args = parser.parse_args(argv)
    if args.check:
        stale = [f"{s.stem}.ipynb ({reason})" for s in selected(args.notebooks) if (reason := stale_reason(s))]
        if stale:
            print(f"Out of date (run python notebooks/build.py): {'; '.join(stale)}", file=sys.stderr)
            return 1
        return 0
    with tempfile.TemporaryDirectory(prefix="vallex-tutorial-") as tutorial_dir:
        for source in selected(args.notebooks):
            target = NOTEBOOKS_DIR / f"{source.stem}.ipynb"
            print(f"executing {source.relative_to(REPO_ROOT)} ...", flush=True)
            notebook = execute(build_notebook(source), env=offline_env(Path(tutorial_dir)))
            target.write_text(render(for_storage(notebook, source)), encoding="utf-8")
            print(f"wrote {target.relative_to(REPO_ROOT)} ({target.stat().st_size // 1024} KB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
