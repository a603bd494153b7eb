"""Build the tutorial notebooks from their reviewable Python sources.

Each ``notebooks/src/NN_name.py`` is a plain Python file in the "percent" cell format::

    # %% [markdown]
    # # A title
    # Prose, one ``# `` per line.

    # %%
    code()

and becomes ``notebooks/NN_name.ipynb`` with no outputs (outputs are made when you run it). Edit the
``.py`` files, then run::

    python notebooks/build.py            # rewrite every .ipynb
    python notebooks/build.py --check    # exit 1 if an .ipynb is not what its source builds (the tests run this)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

NOTEBOOKS_DIR = Path(__file__).resolve().parent
SOURCES_DIR = NOTEBOOKS_DIR / "src"
CELL_MARKER = "# %%"
MARKDOWN_MARKER = "# %% [markdown]"

KERNEL_METADATA = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


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
    notebook = nbformat.v4.new_notebook(metadata=KERNEL_METADATA)
    stem = source_path.stem
    for index, (kind, text) in enumerate(parse_cells(source_path.read_text(encoding="utf-8"))):
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        cell = make(text)
        cell.id = f"{stem[:2]}-{index:02d}"  # stable ids: rebuilding an unchanged source changes nothing
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def render(notebook: nbformat.NotebookNode) -> str:
    return nbformat.writes(notebook) + "\n"


def sources() -> list[Path]:
    return sorted(SOURCES_DIR.glob("[0-9][0-9]_*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that every .ipynb is up to date")
    args = parser.parse_args(argv)
    stale = []
    for source in sources():
        target = NOTEBOOKS_DIR / f"{source.stem}.ipynb"
        text = render(build_notebook(source))
        if args.check:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                stale.append(target.name)
        else:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(NOTEBOOKS_DIR.parent)}")
    if stale:
        print(f"Out of date (run python notebooks/build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
