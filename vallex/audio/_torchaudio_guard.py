"""Make ``import torchaudio`` work beside a CPU-only torch.

Every torchaudio wheel on PyPI for Linux x86-64 is a CUDA build: its native extension
(``torchaudio/lib/_torchaudio.abi3.so``) links ``libc10_cuda.so`` and fails to load with a CPU torch,
which makes ``import torchaudio`` (and so ``import encodec`` / ``import vocos``) raise ``OSError``. With a
CUDA torch whose CUDA differs from the wheel's, torchaudio 2.11 raises ``RuntimeError`` (its CUDA version
check) or ``ImportError`` (a missing ``libcudart``/``libc10_cuda``, an undefined symbol) instead.
encodec and vocos only use torchaudio's pure-Python parts (``functional.resample``,
``transforms.MelSpectrogram``), so when — and only when — the extension fails to load in one of these ways
(:func:`_extension_failure`), we import torchaudio again with its ``_extension`` module replaced by a stub that
reports the extension unavailable. With a torch that can load the extension this does nothing.

Call :func:`ensure_torchaudio` before importing encodec or vocos.
"""
from __future__ import annotations

import importlib
import logging
import sys
import types

_LOG = logging.getLogger(__name__)
_STUB_FLAG = "_vallex_stub"


def _stub_extension() -> types.ModuleType:
    """A stand-in for ``torchaudio._extension`` that says the native extension is not available."""
    stub = types.ModuleType("torchaudio._extension")
    stub.__doc__ = "Stand-in installed by vallex: torchaudio's CUDA extension cannot load with this torch."
    stub._IS_TORCHAUDIO_EXT_AVAILABLE = False
    stub._IS_ALIGN_AVAILABLE = False

    def fail_if_no_align(func):
        def unavailable(*args, **kwargs):
            raise RuntimeError(f"{func.__name__} needs torchaudio's native extension, which cannot load here.")
        return unavailable

    stub.fail_if_no_align = fail_if_no_align
    stub._load_lib = lambda lib: False
    stub._check_cuda_version = lambda: None
    setattr(stub, _STUB_FLAG, True)
    return stub


def _forget_torchaudio() -> None:
    for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
        del sys.modules[name]


#: Words of a native library that failed to load (dlopen's and the CUDA version check's messages).
_LOAD_FAILURE_WORDS = ("torchaudio", ".so", "shared object", "undefined symbol", "dll", "cuda")


def _extension_failure(error: BaseException) -> bool:
    """Whether ``error``, raised by ``import torchaudio``, says that its native extension could not load.

    Anything else (a broken install of a pure-Python part, a full disk) is not hidden by the stub.
    """
    message = str(error).lower()
    return any(word in message for word in _LOAD_FAILURE_WORDS)


def ensure_torchaudio() -> types.ModuleType:
    """Import and return ``torchaudio``, engaging the stub only if its native extension fails to load."""
    try:
        return importlib.import_module("torchaudio")
    except (OSError, RuntimeError, ImportError) as error:
        if not _extension_failure(error):
            raise
        _LOG.info("torchaudio's native extension cannot load (%s); using its pure-Python parts only.", error)
    _forget_torchaudio()
    sys.modules["torchaudio._extension"] = _stub_extension()
    try:
        return importlib.import_module("torchaudio")
    except Exception:
        _forget_torchaudio()
        raise


def guard_engaged() -> bool:
    """True when torchaudio was imported through the stub."""
    extension = sys.modules.get("torchaudio._extension")
    return bool(getattr(extension, _STUB_FLAG, False))
