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


def test_in_passing_thread_runs_in_place_under_a_torch_function_mode():
    """A torch function mode is thread-local (ZeroGPU's CUDA emulation is one): work moved to another thread would
    escape it, so it runs on the calling thread, and sees the mode."""
    import torch
    from torch.overrides import TorchFunctionMode

    seen: list[str] = []

    class Recording(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    def work() -> tuple[threading.Thread, float]:
        return threading.current_thread(), float(torch.ones(2).sum())

    assert in_passing_thread(work)[0] is not threading.current_thread()  # no mode: a thread of its own
    with Recording():
        thread, total = in_passing_thread(work)
    assert thread is threading.current_thread() and total == 2.0
    assert seen  # the work's torch calls went through the mode
