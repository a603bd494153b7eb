"""Optional third-party models (Whisper, text translation, WavLM): how they are found, or why not.

These models are not part of VALL-E X: they come from extras (``pip install 'vallex[s2st]'`` /
``'vallex[eval]'``) and the Hugging Face cache or a local folder. Three rules shared by their loaders:

* :class:`ModelUnavailableError` is the one error for a model that is not installed or not on disk; its
  message is one line saying which model, where it was looked for, and what to do, without naming any
  interface's options (the CLI and the app add their own words);
* offline (``HF_HUB_OFFLINE``, ``VALLEX_OFFLINE`` or ``TRANSFORMERS_OFFLINE``) nothing is downloaded;
* :func:`import_transformers` imports ``transformers`` through the torchaudio guard (CPU torch works too).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class ModelUnavailableError(FileNotFoundError):
    """A speech-recognition or translation model is not installed or not on disk.

    The message says which model, where it was looked for, and what to do (install the extra, point to a
    local folder, or supply the text yourself so that the model is not needed). A ``FileNotFoundError`` so
    that ``vallex`` CLI commands print it as one line (exit code 2).

    ``reason``: the bare "what is missing" part, for callers that list several (default: the message).
    """

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def hub_offline() -> bool:
    """True when downloads are off: ``HF_HUB_OFFLINE``, ``VALLEX_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set."""
    from vallex.weights.environment import is_offline

    return is_offline() or os.environ.get("TRANSFORMERS_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def import_transformers() -> Any:
    """``import transformers`` (which imports torchaudio: through the guard, so CPU torch works too)."""
    from vallex.audio._torchaudio_guard import ensure_torchaudio

    ensure_torchaudio()
    import transformers

    return transformers


def looks_like_path(name: str) -> bool:
    """Whether a model name is meant as a folder (``./x``, ``/x``, ``~/x``) rather than a hub name.

    Hub names contain ``/`` too (``facebook/nllb-200-distilled-600M``), so only these prefixes decide.
    """
    return name.startswith((".", "/", "~")) or Path(name).is_absolute()


def check_folder_exists(name: str, what: str, expected: str) -> None:
    """Raise :class:`ModelUnavailableError` "``what`` folder NAME does not exist" for a path-like name that is
    not a folder (instead of the hub's confusing "Repo id must be in the form ..." about a typo)."""
    if looks_like_path(name) and not Path(name).expanduser().is_dir():
        raise ModelUnavailableError(f"{what} folder {name} does not exist. {expected}")


def short_error(error: BaseException, limit: int = 200) -> str:
    """``"TypeName: first sentence of the message"`` (hub errors run to many lines of advice)."""
    lines = str(error).strip().splitlines()
    if not lines:
        return type(error).__name__
    first = lines[0].split(". ")[0].rstrip(".")
    return f"{type(error).__name__}: {first if len(first) <= limit else first[:limit - 1] + '…'}"


__all__ = ["ModelUnavailableError", "check_folder_exists", "hub_offline", "import_transformers",
           "looks_like_path", "short_error"]
