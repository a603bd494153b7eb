"""Which threads run torch's CPU work, and why a process should have one that does.

torch's CPU kernels run in parallel through OpenMP (libgomp in the x86 and arm64 Linux wheels). Every thread that
starts a parallel region gets a pool of OpenMP worker threads of its own, which lives as long as that thread.
libgomp lets a pool's workers wait for the next region by spinning, which makes the hundreds of short regions of
an AR step cheap, but only while the process has no more workers than CPUs; past that it makes every pool's
workers sleep between regions instead, and each region then waits for them to wake. So a model loaded on one
thread and run on another (a server's worker, a Gradio handler) decodes an AR step markedly slower than on the
thread that loaded it (bench/threads.py; the figures in bench/README.md, "One thread computes").

The rules that follow: a server's model work all goes to one thread (:meth:`vallex.serving.SpeechEngine.run`), and
loading runs in a thread that ends with it (:func:`in_passing_thread`), whose pool ends with it, so whatever
thread decodes afterwards is the only one with a pool.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def in_passing_thread(work: Callable[[], T], name: str = "vallex-load") -> T:
    """``work()`` in a new thread that ends when it returns; returns its result or raises its exception here.

    Why: torch work done on the calling thread would leave it an OpenMP pool for its whole life (see the module).
    Except when a torch function mode is active on the calling thread: modes are thread-local, so the work would
    escape it. It then runs here. (A ZeroGPU Space's ``spaces`` package emulates CUDA through such a mode on the
    thread that imported it, and a model moved "to CUDA" outside it reaches the real, absent, CUDA.)
    """
    if torch._C._len_torch_function_stack() > 0:
        return work()
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["result"] = work()
        except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]
