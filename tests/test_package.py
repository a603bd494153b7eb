"""The package's import surface: cheap to import, public names resolve."""
from __future__ import annotations

import subprocess
import sys


def test_import_is_cheap_and_public_names_resolve():
    code = ("import sys, vallex; heavy = [m for m in ('torch', 'gradio', 'encodec', 'vocos') if m in sys.modules]; "
            "print(heavy); from vallex import VallEX, VoicePrompt, VallexConfig; print(VallEX.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "VallEX"]


def test_unknown_attribute_is_an_attribute_error():
    import vallex

    try:
        vallex.not_a_thing  # noqa: B018
    except AttributeError as error:
        assert "not_a_thing" in str(error)
    else:
        raise AssertionError("expected AttributeError")


def test_library_never_imports_gradio():
    """vallex/ is UI-free: the app builds on it, never the other way round."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "vallex"
    offenders = [str(p) for p in root.rglob("*.py")
                 if any(line.strip().startswith(("import gradio", "from gradio"))
                        for line in p.read_text(encoding="utf-8").splitlines())]
    assert offenders == []


#: Import edges a cycle may use, each with the reason it still exists. Every other import between vallex
#: modules, at module level, under TYPE_CHECKING or inside a function, must point one way.
ALLOWED_IMPORTS: dict[tuple[str, str], str] = {}


def _vallex_imports() -> dict[str, set[str]]:
    """Module -> the vallex modules it imports anywhere in its file (found with ast, not by importing)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = {}
    for path in sorted((root / "vallex").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path

    def known(name: str) -> str | None:
        """The module ``name`` lives in: itself, or the nearest package or module above it."""
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from . import x, from ..text import y
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # "from vallex.text import frontend" imports the module vallex.text.frontend
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            targets.update(found for name in names if (found := known(name)) not in (None, module))
        graph[module] = targets
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_library_imports_form_no_cycle():
    """Dependencies point one way (app -> api -> model/text/codec): no vallex module imports, directly or
    through others, a module that imports it back, not even lazily inside a function."""
    graph = _vallex_imports()
    for (importer, imported), reason in ALLOWED_IMPORTS.items():
        assert imported in graph.get(importer, set()), f"stale allowance {importer} -> {imported} ({reason})"
        graph[importer].discard(imported)
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_reports_the_path():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_library_installs_without_gradio_and_the_app_extra_brings_the_spaces_version():
    """`pip install .` reads requirements.txt (no gradio); the app extra pins the Space's sdk_version."""
    import re
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]
    requirements = [line.split("#")[0].strip() for line in (root / "requirements.txt").read_text().splitlines()]
    names = [re.split(r"[<>=!~\[; ]", line)[0].lower() for line in requirements if line]
    assert "torch" in names and "gradio" not in names
    sdk = re.search(r"^sdk_version: (\S+)$", (root / "README.md").read_text(encoding="utf-8"), re.M).group(1)
    assert pyproject["project"]["optional-dependencies"]["app"] == [f"gradio=={sdk}"]


def test_app_py_without_gradio_says_how_to_install_it():
    """Run app.py with gradio hidden: one line naming the extra, no traceback."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    hide = ("import sys, importlib.util as u; real = u.find_spec; "
            "u.find_spec = lambda n, *a: None if n == 'gradio' else real(n, *a); "
            f"sys.argv = ['app.py']; exec(compile(open({str(root / 'app.py')!r}).read(), 'app.py', 'exec'), "
            "{'__name__': '__main__'})")
    out = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True, timeout=60, cwd=root)
    assert out.returncode == 1 and "pip install 'vallex[app]'" in out.stderr and "Traceback" not in out.stderr


#: What the tensor floor (vallex.inference) may never import: the request floor and what only it needs.
ABOVE_THE_TENSOR_FLOOR = ("vallex.synthesis", "vallex.text", "vallex.prompts", "vallex.evaluation", "vallex.asr",
                          "vallex.audio.codec", "vallex.api", "vallex.serving")


def test_the_tensor_floor_imports_nothing_above_it():
    """vallex.inference turns ids into codes; requests, text, prompts, the codec and scoring live above it
    (vallex.synthesis), so that no module of it reaches up, not even lazily or for type hints."""
    offenders = sorted(f"{module} -> {target}" for module, targets in _vallex_imports().items()
                       if module.startswith("vallex.inference") for target in targets
                       if any(target == above or target.startswith(above + ".") for above in ABOVE_THE_TENSOR_FLOOR))
    assert offenders == []
