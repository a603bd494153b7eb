"""vallex.inference.threads: work in a thread that ends with it, its result or error handed back."""
from __future__ import annotations

import threading

import pytest

from vallex.inference.threads import in_passing_thread


def test_in_passing_thread_returns_the_result_from_another_thread_that_has_ended():
    seen: list[threading.Thread] = []
    assert in_passing_thread(lambda: seen.append(threading.current_thread()) or 42) == 42
    assert seen[0] is not threading.current_thread() and not seen[0].is_alive()


def test_in_passing_thread_raises_the_works_error_here():
    with pytest.raises(ValueError, match="bad weights"):
        in_passing_thread(lambda: (_ for _ in ()).throw(ValueError("bad weights")))
