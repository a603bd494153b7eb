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
