"""The notebooks' exercises: each one's check (and, apart from the notebook, its answer).

A learner's exercise is three cells in a notebook: a **stub** to fill in (it runs as shipped, doing something
plainly wrong or nothing), a **check** cell that calls this package, and the **expected outcome** in prose. The
check never raises: it prints one line, ``✓ ...`` when the learner's attempt is right, ``✗ not yet: ...`` with
what is wrong otherwise, so a notebook still runs top to bottom with every stub as shipped.

One module per notebook (``nb01``, ``nb02`` ...) holds, for each exercise, ``check_<name>(attempt) -> str | None``
(None: right; else what is wrong) and the answer ``answer_<name>`` (kept out of the notebook: the "hidden
answer"). ``tests/test_notebook_exercises.py`` holds every check to both sides: each answer passes its check,
each shipped stub does not.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


def report(name: str, check: Callable[[Any], str | None], attempt: Any) -> bool:
    """Run ``check(attempt)`` and print one line saying whether exercise ``name`` is solved; never raises
    (an attempt that crashes is told its error)."""
    try:
        problem = check(attempt)
    except Exception as error:  # noqa: BLE001 - a learner's code may fail any way; say how, keep the notebook going
        problem = f"it raised {type(error).__name__}: {error}"
    if problem is None:
        print(f"✓ {name}: right.")
        return True
    print(f"✗ {name}: not yet: {problem}")
    return False
