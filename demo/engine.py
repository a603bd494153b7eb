"""The app's one model, its voices, and its scratch files; nothing here knows about Gradio widgets.

``Engine`` loads :class:`vallex.api.VallEX` once (at startup or on the first request) and serves every
synthesis, the tabs' and the HTTP API's, through one :class:`vallex.serving.SpeechEngine` around it, which
decodes concurrent requests together (continuous batching). Other model work (encoding a voice prompt,
speech translation with one :class:`vallex.s2st.SpeechTranslator`, made on first use) runs on that engine's
thread too, between two steps (:meth:`Engine.with_model`): one thread computes (why:
:mod:`vallex.inference.threads`). It also knows the built-in example voices (``assets/voices.json``, made from the
project's own espeak-ng clips) and owns a private scratch folder for files offered for download.
"""
from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from demo.config import AppConfig
from demo.zero_gpu import CallPiece, ZeroGPUStream, in_gpu_call, on_zero_gpu, request_seconds, zero_gpu
from vallex.api import VallEX
from vallex.languages import Languages
from vallex.prompts import NAME_PATTERN, PresetLibrary, VoicePrompt, make_prompt, validate_name
from vallex.s2st import ModelUnavailableError, SpeechTranslator
from vallex.serving import AudioPiece, SpeechEngine, SpeechRequest, SpeechStream
from vallex.synthesis.results import SentenceResult
from vallex.weights import NOISE_WARNING, WeightsManager, WeightsNotFoundError, is_offline
from vallex.weights.checkpoint import checkpoint_languages
from vallex.weights.identity import ModelIdentity, model_identity

_LOG = logging.getLogger(__name__)

T = TypeVar("T")

#: Scratch folders older than this are removed when the next one is made (downloads have started by then).
SCRATCH_MAX_AGE_S = 600.0


@dataclass(frozen=True)
class Voice:
    """A built-in example voice: a clip in ``assets/`` and what it says."""

    name: str
    language: str
    audio_path: Path
    transcript: str


@dataclass(frozen=True)
class WeightsStatus:
    """What the banner at the top of the page says about the model files."""

    level: str  # "ok" | "info" | "warning" | "error"
    message: str


def load_voices(assets_dir: Path) -> list[Voice]:
    """The voices listed in ``assets_dir/voices.json`` whose clip exists (none if there is no voices list)."""
    voices_list = assets_dir / "voices.json"
    if not voices_list.is_file():
        return []
    voices = []
    for entry in json.loads(voices_list.read_text(encoding="utf-8")):
        name = str(entry.get("name", ""))
        path = assets_dir / str(entry.get("file", ""))
        # The list is ours, but a name is still never joined into a path unchecked.
        if NAME_PATTERN.fullmatch(name) and path.is_file() and path.parent == assets_dir:
            voices.append(Voice(name, str(entry["language"]), path, str(entry["transcript"])))
    return voices


def _load_translation_models(s2st: SpeechTranslator) -> None:
    for model in (s2st.recognizer, s2st.translator):
        load = getattr(model, "load", None)  # a plain function as translator has nothing to load
        if callable(load):
            load()


class Engine:
    """The loaded model (lazily, once), the voices, and the scratch files of one app."""

    def __init__(self, config: AppConfig):
        self.config = config
        self.voices: dict[str, Voice] = {v.name: v for v in load_voices(config.assets_dir)}
        self.presets = PresetLibrary(config.presets_dir) if config.presets_dir else PresetLibrary.default()
        self._tts: VallEX | None = None
        self._speech: SpeechEngine | None = None
        self._load_lock = threading.Lock()
        self._s2st: SpeechTranslator | None = None
        self._model_lock = threading.RLock()  # ZeroGPU: model work in the handler's own thread, one at a time
        self._cpu_side: VallEX | None = None  # ZeroGPU: the model's prompt tools on the CPU (see with_model)
        # ZeroGPU: one synthesis call, made before any request so that every GPU worker (a fork) has it.
        self._gpu_pieces = zero_gpu(request_seconds)(self._pieces_here)
        self._voice_cache: dict[str, VoicePrompt] = {}
        self._scratch_root: Path | None = None
        self._scratch_dirs: list[tuple[float, Path]] = []
        self._scratch_lock = threading.Lock()
        self._identity: ModelIdentity | None = None
        self._identity_lock = threading.Lock()  # not _load_lock: /health must not wait for the model to load

    # Model ----------------------------------------------------------------------------------------
    def weights_status(self) -> WeightsStatus:
        """Check the model files without loading them or touching the network."""
        manager = WeightsManager(self.config.weights_dir, checkpoint=self.config.checkpoint)
        try:
            paths = manager.resolve(download=False)
            checkpoint_languages(paths.vallex, paths.vallex_config)  # a checkpoint that cannot say what it speaks
        except WeightsNotFoundError as error:
            own_missing = manager.checkpoint is not None and not manager.checkpoint.is_file()  # not downloadable
            if manager.weights_dir is None and not is_offline() and not own_missing:
                # Whether we are online is unknown until a download is tried, so say both what will happen
                # and what to do if it cannot.
                return WeightsStatus("info", "The model files are not on this machine yet. The first request "
                                     "downloads them (about 1.6 GB, a few minutes) if huggingface.co and "
                                     "dl.fbaipublicfiles.com can be reached. Without network access, provide "
                                     f"them as follows.\n\n```text\n{error}\n```")
            return WeightsStatus("error", str(error))
        except ValueError as error:  # a damaged file or checksum file
            return WeightsStatus("error", str(error))
        if paths.random:
            return WeightsStatus("warning", f"{NOISE_WARNING} Folder: {manager.weights_dir}")
        return WeightsStatus("ok", "")

    @property
    def loaded(self) -> bool:
        return self._tts is not None

    def model_identity(self) -> ModelIdentity | None:
        """Which checkpoint the app runs (file name, SHA-256 prefix, languages, random or not), read from its files
        without loading the model; None while they are missing or unreadable. Worked out once, then kept (the
        checkpoint is hashed only when no record knows its digest: :func:`vallex.weights.model_identity`)."""
        with self._identity_lock:
            if self._identity is None:
                manager = WeightsManager(self.config.weights_dir, checkpoint=self.config.checkpoint)
                try:
                    paths = manager.resolve(("vallex",), download=False)
                    languages = checkpoint_languages(paths.vallex, paths.vallex_config)
                    self._identity = model_identity(manager, paths, languages)
                except (WeightsNotFoundError, ValueError, OSError):  # the banner says what is wrong with the files
                    return None
            return self._identity

    def languages(self) -> Languages:
        """The model's languages: the loaded one's, else its checkpoint's (read, not loaded), else the public ones."""
        if self._tts is not None:
            return self._tts.languages
        try:
            paths = WeightsManager(self.config.weights_dir, checkpoint=self.config.checkpoint).resolve(
                ("vallex",), download=False)
            return checkpoint_languages(paths.vallex, paths.vallex_config)
        except (WeightsNotFoundError, ValueError):
            return Languages.public()

    def tts(self) -> VallEX:
        """The shared :class:`VallEX`, loaded on first use; a missing-weights problem becomes a ValueError."""
        if self._tts is None:
            with self._load_lock:
                if self._tts is None:
                    started = time.perf_counter()
                    try:
                        tts = VallEX.from_pretrained(
                            self.config.weights_dir, device=self.config.device, dtype=self.config.dtype,
                            num_threads=self.config.num_threads, presets_dir=self.presets.directory,
                            checkpoint=self.config.checkpoint,
                        )
                        tts.presets = AppVoices(self)  # built-in voices and presets: one resolver for all
                        self._tts = tts
                    except WeightsNotFoundError as error:
                        _LOG.warning("%s", error)
                        first = str(error).splitlines()[0].rstrip(":")
                        raise ValueError(f"The model cannot be loaded: {first}. The banner at the top of the page "
                                         "says which files are missing and how to provide them.") from None
                    _LOG.info("Model loaded in %.1f s", time.perf_counter() - started)
        return self._tts

    @property
    def speech(self) -> SpeechEngine:
        """The speech engine every synthesis goes through, tabs and HTTP API alike (made on first use).

        It decodes up to ``VALLEX_MAX_BATCH`` requests together (continuous batching) and refuses beyond
        ``VALLEX_MAX_QUEUE`` waiting ones; voice names are resolved by the model (:meth:`VallEX.resolve_prompt`),
        whose voice library is this app's (:meth:`voice`).
        """
        with self._load_lock:
            if self._speech is None:
                self._speech = SpeechEngine(self.tts, max_batch=self.config.max_batch,
                                            max_queue=self.config.max_queue,
                                            max_request_work=self.config.max_request_work)
            return self._speech

    def speak(self, request: SpeechRequest, progress: Callable[[str, int, int], None] | None = None
              ) -> SpeechStream | ZeroGPUStream:
        """Start one synthesis: through :attr:`speech`, or on a ZeroGPU Space as a series of GPU calls
        (:class:`ZeroGPUStream`).

        A missing-weights problem is raised here, as the ValueError of :meth:`tts`; on ZeroGPU, a text that no
        call can speak too.
        """
        self.tts()
        if on_zero_gpu():
            return ZeroGPUStream(request, self._gpu_pieces, self.languages(), progress)
        return self.speech.submit(request, progress)

    def _pieces_here(self, request: SpeechRequest) -> Iterator[CallPiece]:
        """One GPU call of a :class:`ZeroGPUStream` (a generator decorated by :func:`demo.zero_gpu.zero_gpu`): the
        request's pieces, each with the sentences finished by then, their codes on the CPU (results are pickled
        back to a process without a GPU)."""
        tts = self.tts()
        sentences: list[SentenceResult] = []
        sent = 0
        with self._model_lock:  # taken and left within each step: a generator may resume in another thread
            steps = tts.pieces(request, False, sentences)
        while True:
            with self._model_lock:
                piece = next(steps, None)
            if piece is None:
                return
            finished = [dataclasses.replace(s, codes=s.codes.cpu()) for s in sentences[sent:]]
            sent = len(sentences)
            yield AudioPiece(np.asarray(piece.audio), piece.sentence, piece.sentences, piece.last), finished

    def with_model(self, work: Callable[[VallEX], T]) -> T:
        """``work(model)`` for model work other than synthesis (encoding a prompt, translation), returning what it
        returns: on the speech engine's thread between two steps of its batch (:meth:`SpeechEngine.run`).

        On a ZeroGPU Space: inside a GPU call, in this thread under a lock; outside one, where the model's weights
        are on no device this process can use, ``work`` gets the model's CPU side (:meth:`cpu_side`), whose
        EnCodec and Whisper run on the CPU: prompts are made without a GPU call.
        """
        if on_zero_gpu():
            tts = self.tts() if in_gpu_call() else self.cpu_side()
            with self._model_lock:
                return work(tts)
        tts = self.tts()
        return self.speech.run(lambda: work(tts))

    def cpu_side(self) -> VallEX:
        """ZeroGPU: the loaded model's prompt tools (EnCodec, Vocos, Whisper) on the CPU, made once; its model is
        the loaded one, which only a GPU call may run."""
        tts = self.tts()
        with self._load_lock:
            if self._cpu_side is None:
                self._cpu_side = tts.with_cpu_prompts()
                self._cpu_side.codec.load()
            return self._cpu_side

    def with_translator(self, work: Callable[[SpeechTranslator], T]) -> T:
        """``work(translator)`` with the shared speech translator around the shared model, run as :meth:`with_model`.

        Made on first use and kept, so its Whisper/translation models (``$VALLEX_ASR_MODEL``,
        ``$VALLEX_MT_MODEL``) load once, when a request first needs them.
        """
        def translating(tts: VallEX) -> T:
            return work(self._translator(tts))

        return self.with_model(translating)

    def _translator(self, tts: VallEX) -> SpeechTranslator:
        # On ZeroGPU its Whisper and translation model are loaded at start-up, in this process: on the CPU.
        if self._s2st is None:
            self._s2st = SpeechTranslator(tts, device="cpu" if on_zero_gpu() else None)
        return self._s2st

    # Voices ---------------------------------------------------------------------------------------
    def voice_names(self) -> list[str]:
        """Built-in voices first, then the presets of the preset folder."""
        return list(self.voices) + [n for n in self.presets.names() if n not in self.voices]

    def voice(self, name: str) -> VoicePrompt:
        """The prompt of a built-in voice or a preset; a bad or unknown name raises ValueError."""
        validate_name(name)  # "../../etc/passwd" and friends stop here
        if name in self.voices:
            with self._load_lock:
                cached = self._voice_cache.get(name)
            if cached is None:
                voice = self.voices[name]
                cached = self.with_model(lambda tts: self._encode_voice(voice, tts.codec))
                with self._load_lock:
                    self._voice_cache[name] = cached
            return cached
        return self.presets.load(name)

    @staticmethod
    def _encode_voice(voice: Voice, codec: Any) -> VoicePrompt:
        """The prompt of a built-in voice, encoded by ``codec`` (its transcript is known: no Whisper)."""
        return make_prompt(str(voice.audio_path), voice.transcript, voice.language, codec=codec, name=voice.name)

    def warm_up(self, translation_models: bool = False) -> None:
        """Load at start-up what requests would otherwise load: the model, EnCodec and Vocos, the built-in
        voices' prompts, and with ``translation_models`` (if installed and reachable) Whisper (for prompts
        without a transcript, and each sentence's check by speech recognition) and the Speech translation tab's
        Whisper and translation models (gigabytes: only where loading later costs more, on ZeroGPU).
        A missing-weights problem is raised as :meth:`tts`'s ValueError; the translation models' absence only
        logged (that tab explains it to its users).

        On a ZeroGPU Space call it on the main thread after :func:`demo.zero_gpu.start`: the model then goes "to
        CUDA" under ``spaces``' emulation (so each GPU worker finds it there), while everything that can run on the
        CPU is loaded on the CPU, in this process, once, instead of in every GPU call: the voices' prompts (codes
        are integers, the same on any device), Whisper and the translation model.
        """
        if on_zero_gpu():
            self.tts().codec.load()
            self._warm_up(self.cpu_side(), translation_models)
            return
        self.with_model(lambda tts: self._warm_up(tts, translation_models))

    def _warm_up(self, tts: VallEX, translation_models: bool) -> None:
        tts.codec.load()
        for name, voice in self.voices.items():
            if name not in self._voice_cache:
                self._voice_cache[name] = self._encode_voice(voice, tts.codec)
        if not translation_models:
            return
        try:
            tts.load_transcriber()  # Make a prompt's Whisper, for a recording without a transcript
            self.tts().load_verifier(device="cpu" if on_zero_gpu() else None)
            _load_translation_models(self._translator(self.tts()))
        except (ModelUnavailableError, ImportError, OSError) as error:
            _LOG.info("Speech translation models not loaded at start-up: %s", error)

    def verifiable(self) -> bool:
        """Whether each sentence of every language the model speaks can be checked by speech recognition here
        (a recogniser for each is installed); loads the recognisers (once)."""
        try:
            return all(self.with_model(lambda tts: self.tts().load_verifier(
                device="cpu" if on_zero_gpu() else None)).values())
        except ValueError:  # the model cannot load
            return False

    # Scratch files --------------------------------------------------------------------------------
    @contextmanager
    def scratch_dir(self) -> Iterator[Path]:
        """A new private folder for one request's files; old ones (ours only) are removed as we go.

        The folder outlives the request (Gradio copies files into its cache after the handler returns) and
        is deleted by a later request or at exit; if the request fails it is deleted at once.
        """
        with self._scratch_lock:
            if self._scratch_root is None:
                self._scratch_root = Path(tempfile.mkdtemp(prefix="vallex-app-"))
                atexit.register(shutil.rmtree, self._scratch_root, True)
            now = time.monotonic()
            keep = []
            for made, path in self._scratch_dirs:
                if now - made > SCRATCH_MAX_AGE_S:
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    keep.append((made, path))
            path = Path(tempfile.mkdtemp(dir=self._scratch_root))
            keep.append((now, path))
            self._scratch_dirs = keep
        try:
            yield path
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise

    def close(self) -> None:
        """Stop the speech engine (running requests finish) and delete every scratch file this engine made."""
        if self._speech is not None:
            self._speech.close()
        with self._scratch_lock:
            if self._scratch_root is not None:
                shutil.rmtree(self._scratch_root, ignore_errors=True)
            self._scratch_root, self._scratch_dirs = None, []


def describe_voice(engine: Engine, name: str) -> dict[str, Any]:
    """A short description of a voice for the UI (no model needed)."""
    voice = engine.voices.get(name)
    if voice is not None:
        return {"name": name, "kind": "built-in example", "language": voice.language, "transcript": voice.transcript}
    return {"name": name, "kind": "preset", "folder": str(engine.presets.directory)}


class AppVoices:
    """The app's voice library as the model sees it (``VallEX.presets``): built-in voices, then presets.

    Every voice name, from a tab or the HTTP API, is resolved through it by :meth:`VallEX.resolve_prompt`.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def names(self) -> list[str]:
        return self._engine.voice_names()

    def load(self, name: str) -> VoicePrompt:
        return self._engine.voice(name)
