"""Every exercise of the notebooks can be failed and passed: its answer passes its check, its shipped stub does not.

Each ``notebooks/exercises/nbNN.py`` pairs ``check_<name>`` with ``answer_<name>`` and ``stub_<name>`` (the stub
as the notebook ships it). The notebooks themselves run with the stubs (tests/test_notebooks.py).
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))
torch.set_num_threads(1)


def _exercises() -> list[tuple[str, str]]:
    found = []
    for path in sorted((NOTEBOOKS / "exercises").glob("nb*.py")):
        module = importlib.import_module(f"exercises.{path.stem}")
        found += [(path.stem, name[len("check_"):]) for name in dir(module) if name.startswith("check_")]
    return found


def test_every_check_has_its_answer_and_stub_and_the_report_never_raises(capsys):
    from exercises import report

    exercises = _exercises()
    for module_name, name in exercises:
        module = importlib.import_module(f"exercises.{module_name}")
        assert hasattr(module, f"answer_{name}") and hasattr(module, f"stub_{name}"), (module_name, name)
    assert report("crashing", lambda attempt: attempt(), lambda: 1 / 0) is False
    assert "not yet: it raised ZeroDivisionError" in capsys.readouterr().out


@pytest.mark.parametrize(("module_name", "name"), _exercises())
def test_each_answer_passes_and_each_stub_fails(module_name, name):
    module = importlib.import_module(f"exercises.{module_name}")
    check = getattr(module, f"check_{name}")
    assert check(getattr(module, f"answer_{name}")) is None
    problem = check(getattr(module, f"stub_{name}"))
    assert isinstance(problem, str) and problem
