"""Speech recognition with Whisper: what was said, in which language, or its English translation.

Two backends read the same kinds of Whisper model:

* :class:`FasterWhisperRecognizer` (``faster-whisper``, CTranslate2): a size name such as ``"medium"``
  (looked up in the Hugging Face cache, downloaded when online), a Hugging Face repository of a converted
  model, or a local CTranslate2 folder (``model.bin`` + ``config.json``).
* :class:`TransformersWhisperRecognizer` (``transformers``): ``openai/whisper-*`` repositories or a local
  folder saved with ``save_pretrained`` (``config.json`` with ``"model_type": "whisper"``).

:func:`load_recognizer` picks the backend from the name. Both are optional (``pip install 'vallex[s2st]'``)
and load lazily, once; a model that is missing raises :class:`ModelUnavailableError` with what to do.
Whisper itself decides the language; :mod:`vallex.s2st.pipeline` refuses languages VALL-E X cannot speak.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vallex.s2st.errors import ModelUnavailableError

#: Whisper hears 16 kHz audio.
ASR_SAMPLE_RATE = 16_000
#: The reference transcribes prompts with Whisper "medium"; the same default here (``$VALLEX_ASR_MODEL``).
DEFAULT_ASR_MODEL = "medium"
ASR_MODEL_ENV = "VALLEX_ASR_MODEL"
#: Whisper's two tasks: text in the spoken language, or its English translation.
TASKS = ("transcribe", "translate")
#: Enough tokens for the <= 10 s chunks the pipeline feeds in (Whisper's own limit is 448 with the prompt).
MAX_NEW_TOKENS = 224

_INSTALL_HINT = ("Install it with `pip install 'vallex[s2st]'`, or give the transcript and the translation "
                 "yourself (--transcript and --translation) so that no speech model is needed.")


@dataclass(frozen=True)
class Recognition:
    """What Whisper heard in one stretch of audio."""

    text: str  # stripped; "" when nothing was recognised
    language: str  # Whisper's code of the spoken language ("en", "zh", "ja", "ko", ...)
    task: str  # "transcribe" (text in ``language``) or "translate" (English text)


@runtime_checkable
class SpeechRecognizer(Protocol):
    """Anything that can transcribe 16 kHz mono audio; the pipeline needs nothing more."""

    name: str

    def load(self) -> None:
        """Load the model now (raising :class:`ModelUnavailableError` if it is missing)."""

    def recognize(self, wav: np.ndarray, *, language: str | None = None, task: str = "transcribe") -> Recognition:
        """``wav``: float32 ``[N]`` at 16 kHz. ``language=None`` lets Whisper detect it."""


def load_recognizer(model: str | os.PathLike | None = None, device: str = "cpu") -> SpeechRecognizer:
    """A (lazily loading) recognizer for ``model``; default ``$VALLEX_ASR_MODEL`` or ``"medium"``.

    A local folder is read by the backend its files belong to; a name containing ``/`` is a Hugging Face
    repository (``transformers`` unless the name mentions faster-whisper/ct2); any other name is a
    faster-whisper size (``tiny``, ``base``, ``small``, ``medium``, ``large-v3``, ...).
    """
    if model is None:
        model = os.environ.get(ASR_MODEL_ENV, "").strip() or DEFAULT_ASR_MODEL
    name = str(model)
    path = Path(name).expanduser()
    if path.is_dir():
        return _recognizer_for_folder(path, device)
    if name.startswith((".", "/", "~")):
        raise ModelUnavailableError(
            f"Speech-recognition model folder {name} does not exist. Pass a folder holding a faster-whisper "
            "(CTranslate2) or transformers Whisper model, or a model name such as 'medium'."
        )
    if "/" in name and not any(tag in name.lower() for tag in ("faster-whisper", "ct2", "ctranslate2")):
        return TransformersWhisperRecognizer(name, device=device)
    return FasterWhisperRecognizer(name, device=device)


def _recognizer_for_folder(path: Path, device: str) -> SpeechRecognizer:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelUnavailableError(
            f"{path} holds no Whisper model (no config.json). Expected a faster-whisper CTranslate2 folder "
            "(model.bin, config.json, tokenizer.json) or a transformers Whisper folder (save_pretrained)."
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_path} is not valid JSON ({error}).") from None
    if isinstance(config, dict) and config.get("model_type") == "whisper":
        return TransformersWhisperRecognizer(str(path), device=device)
    if (path / "model.bin").is_file():
        return FasterWhisperRecognizer(str(path), device=device)
    raise ModelUnavailableError(
        f"{path} is neither a transformers Whisper model (config.json model_type 'whisper') nor a "
        "faster-whisper CTranslate2 model (model.bin)."
    )


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"Unknown Whisper task {task!r}: expected 'transcribe' or 'translate'.")


def _check_wav(wav: np.ndarray) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or wav.size == 0:
        raise ValueError(f"Speech recognition needs mono float32 samples [N] at 16 kHz, got shape {wav.shape}.")
    return wav


def import_transformers() -> Any:
    """``import transformers`` (which imports torchaudio: through the guard, so CPU torch works too)."""
    from vallex._torchaudio_guard import ensure_torchaudio

    ensure_torchaudio()
    import transformers

    return transformers


def _offline() -> bool:
    from vallex.weights import is_offline

    return is_offline() or os.environ.get("TRANSFORMERS_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


class FasterWhisperRecognizer:
    """Whisper through faster-whisper (CTranslate2): int8 on CPU, float16 on CUDA."""

    def __init__(self, model: str, device: str = "cpu", cpu_threads: int | None = None, beam_size: int = 5):
        self.name = model
        self.device = "cuda" if str(device).startswith("cuda") else "cpu"
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self._model: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FasterWhisperRecognizer({self.name!r}, device={self.device!r})"

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            try:
                from faster_whisper import WhisperModel
            except ImportError:
                raise ModelUnavailableError(f"Speech recognition needs the faster-whisper package. {_INSTALL_HINT}") from None
            import torch

            offline = _offline()
            try:
                self._model = WhisperModel(
                    self.name, device=self.device, compute_type="float16" if self.device == "cuda" else "int8",
                    cpu_threads=self.cpu_threads or torch.get_num_threads(), local_files_only=offline,
                )
            except Exception as error:  # noqa: BLE001 - hub, file and CTranslate2 errors all mean "not usable"
                where = ("the Hugging Face cache, and downloads are off (HF_HUB_OFFLINE)" if offline
                         else "the Hugging Face cache and could not be downloaded")
                raise ModelUnavailableError(
                    f"Whisper model {self.name!r} (faster-whisper) is not in {where}: "
                    f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}. Download it once "
                    "while online, or pass --asr-model with a local model folder, or give --transcript and "
                    "--translation so that no speech model is needed."
                ) from None

    def recognize(self, wav: np.ndarray, *, language: str | None = None, task: str = "transcribe") -> Recognition:
        _check_task(task)
        wav = _check_wav(wav)
        self.load()
        # condition_on_previous_text=False: each chunk stands alone (no hallucinated carry-over).
        segments, info = self._model.transcribe(
            wav, language=language, task=task, beam_size=self.beam_size, condition_on_previous_text=False,
        )
        text = "".join(segment.text for segment in segments).strip()
        return Recognition(text=text, language=language or info.language, task=task)


class TransformersWhisperRecognizer:
    """Whisper through ``transformers`` (``WhisperForConditionalGeneration`` + its processor)."""

    def __init__(self, model: str, device: str = "cpu"):
        self.name = model
        self.device = device
        self._model: Any = None
        self._processor: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TransformersWhisperRecognizer({self.name!r}, device={self.device!r})"

    @classmethod
    def from_objects(cls, model: Any, processor: Any, name: str = "in-memory") -> "TransformersWhisperRecognizer":
        """Wrap an already loaded ``WhisperForConditionalGeneration`` and ``WhisperProcessor``."""
        recognizer = cls(name, device=str(next(model.parameters()).device))
        recognizer._model, recognizer._processor = model.eval(), processor
        return recognizer

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            try:
                transformers = import_transformers()
                WhisperForConditionalGeneration = transformers.WhisperForConditionalGeneration
                WhisperProcessor = transformers.WhisperProcessor
            except ImportError:
                raise ModelUnavailableError(f"This Whisper model needs the transformers package. {_INSTALL_HINT}") from None
            offline = _offline()
            try:
                processor = WhisperProcessor.from_pretrained(self.name, local_files_only=offline)
                model = WhisperForConditionalGeneration.from_pretrained(self.name, local_files_only=offline)
            except (OSError, ValueError) as error:
                raise ModelUnavailableError(
                    f"Whisper model {self.name!r} (transformers) could not be loaded"
                    f"{' offline (HF_HUB_OFFLINE is set)' if offline else ''}: {str(error).splitlines()[0]}. "
                    "Download it once while online, or pass --asr-model with a local folder, or give "
                    "--transcript and --translation so that no speech model is needed."
                ) from None
            self._processor, self._model = processor, model.to(self.device).eval()

    def recognize(self, wav: np.ndarray, *, language: str | None = None, task: str = "transcribe") -> Recognition:
        import torch

        _check_task(task)
        wav = _check_wav(wav)
        self.load()
        features = self._processor.feature_extractor(
            wav, sampling_rate=ASR_SAMPLE_RATE, return_tensors="pt").input_features.to(self.device)  # [1, 80, 3000]
        config = self._model.generation_config
        multilingual = bool(getattr(config, "is_multilingual", bool(getattr(config, "lang_to_id", None))))
        if not multilingual and (task == "translate" or language not in (None, "en")):
            raise ValueError(f"{self.name} is an English-only Whisper model: it can neither hear {language!r} nor "
                             "translate. Use a multilingual Whisper model (--asr-model medium).")
        with torch.no_grad():
            if language is None:
                language = self.detect_language(features)
            budget = self._model.config.max_target_positions - 8  # room for the 3-4 prompt tokens
            # English-only models take no language/task tokens (generate refuses them).
            options = {"language": language, "task": task} if multilingual else {}
            ids = self._model.generate(features, max_new_tokens=max(1, min(MAX_NEW_TOKENS, budget)), **options)
        text = self._processor.tokenizer.batch_decode(ids, skip_special_tokens=True)[0].strip()
        return Recognition(text=text, language=language, task=task)

    def detect_language(self, features: Any) -> str:
        """Whisper's language code for log-mel ``features`` ``[1, n_mels, 3000]``."""
        config = self._model.generation_config
        lang_to_id = getattr(config, "lang_to_id", None)
        if not lang_to_id:
            return "en"  # an English-only model has no language tokens
        token_id = int(self._model.detect_language(input_features=features)[0])
        token = {v: k for k, v in lang_to_id.items()}[token_id]
        return token.strip("<|>")
