"""The one error type speech translation raises for a model it cannot find."""
from __future__ import annotations


class ModelUnavailableError(FileNotFoundError):
    """A speech-recognition or translation model is not installed or not on disk.

    The message says which model, where it was looked for, and what to do (install the ``[s2st]`` extra,
    point to a local folder, or supply the transcript/translation so the model is not needed).
    ``FileNotFoundError`` so that ``vallex`` CLI commands print it as one line (exit code 2).
    """
