"""The Python API: ``VallEX`` turns text (+ an optional voice prompt) into speech.

    from vallex import VallEX
    tts = VallEX.from_pretrained()                        # loads once; reuse the object
    wav, sr = tts.synthesize("Hello!", prompt="my_voice")  # float32 [N] at 24 kHz
    wav, sr = tts.synthesize("你好！", prompt=(audio_path, "transcript of the audio"), accent="en")
    tts = VallEX.from_pretrained(checkpoint="runs/de/checkpoint-00002000.pt")  # a fine-tuned model, its languages
    tts.languages.codes                                   # ("en", "zh", "ja", "de"): what language= and accent= take

It knows nothing of any UI. Long text is split into sentences and synthesised one by one
(``long_text="fixed-prompt"`` or ``"sliding-window"``). :meth:`VallEX.synthesize_stream` yields audio
while it is being made: by default in chunks that start small (0.4 s, so the first audio comes early)
and double up to 3.2 s, several per sentence; ``chunk_seconds=None`` yields one chunk per sentence,
whose concatenation is exactly :meth:`VallEX.synthesize`'s output.

Every synthesis goes through :class:`vallex.synthesis.scheduler.Scheduler` on the caller's thread (how a sentence is
streamed is described in :mod:`vallex.synthesis.streaming`); :meth:`VallEX.synthesize_batch` decodes several requests
together in one scheduler, as the serving engine does on its thread.
"""
from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vallex.audio.codec import AudioCodec
from vallex.audio.codec_format import SAMPLE_RATE
from vallex.inference.sampling_settings import MAX_SEED, Sampling  # noqa: F401  (part of this module's API)
from vallex.languages import Languages
from vallex.model import VallexModel
from vallex.progress import progress_bar
from vallex.prompts import PresetLibrary, VoiceLibrary, VoicePrompt
from vallex.synthesis.request import (
    FrameLimits,
    PromptLike,
    RequestPlan,
    SynthesisRequest,
    default_frame_limits,
    plan_request,
)
from vallex.synthesis.results import AudioPiece, SentenceResult, Synthesis
from vallex.synthesis.scheduler import PARAGRAPH_SENTENCES, Scheduler, default_nar_batch
from vallex.synthesis.streaming import STREAM_CHUNK_SECONDS
from vallex.synthesis.verification import NoRecognizerError, Verifier

if TYPE_CHECKING:
    from vallex.weights.identity import ModelIdentity
    from vallex.weights.manager import WeightPaths, WeightsManager

ProgressCallback = Callable[[str, int, int], None]


def select_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given (checked: it must exist here), else CUDA, then Apple MPS, then CPU (the reference
    preferred MPS over CUDA). Raises ValueError for an unknown or unavailable device."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"Unknown device {device!r}: use cpu, cuda, cuda:N or mps (or leave it out for the "
                         "best available).") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"Device {device!r} is not available: this torch {torch.__version__} sees no CUDA "
                             "GPU. Use cpu (or leave the device out for the best available).")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ValueError(f"Device {device!r} is not available: there are {torch.cuda.device_count()} "
                             "CUDA GPU(s), numbered from 0.")
    elif chosen.type == "mps":
        if not _mps_available():
            raise ValueError(f"Device {device!r} is not available: Apple MPS needs a Mac with Apple silicon. "
                             "Use cpu (or leave the device out for the best available).")
    elif chosen.type != "cpu":
        raise ValueError(f"Unsupported device {device!r}: use cpu, cuda, cuda:N or mps.")
    return chosen


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


class VallEX:
    """Zero-shot cross-lingual TTS with one loaded model; thread-compatible, not thread-safe.

    ``languages``: what the model speaks (its language rows, from its checkpoint: en, zh, ja for the public one),
    the choices of ``language=`` and ``accent=``.
    """

    def __init__(self, model: VallexModel, codec: AudioCodec, presets: VoiceLibrary | None = None,
                 device: torch.device | None = None, frame_limits: FrameLimits | None = None,
                 precision: str = "float32", verifier: Verifier | None = None, paragraph: int = PARAGRAPH_SENTENCES):
        """``frame_limits(text_tokens, prompt_frames) -> (min_frames, max_frames)`` replaces
        :func:`default_frame_limits` (benchmarks and tests hold a random model, which rarely says EOS, to
        a set length with it). ``precision``: what :func:`vallex.inference.precision.apply_precision` made of
        the model (for display; :meth:`from_pretrained` sets it, ``dtype="auto"`` included). ``verifier``: what
        ``verify="asr"`` checks sentences with (default: a :class:`vallex.synthesis.verification.Verifier`
        made on first use). ``paragraph``: sentences of a fixed-prompt text decoded together (1: one after
        another; :class:`vallex.synthesis.scheduler.Scheduler`)."""
        if isinstance(paragraph, bool) or not isinstance(paragraph, int) or paragraph < 1:
            raise ValueError(f"paragraph must be a whole number >= 1, got {paragraph!r}.")
        self.paragraph = paragraph
        self.precision = precision
        self.languages = Languages.of(model.config)  # a ValueError when the checkpoint does not name them
        self.model = model.eval()
        self.codec = codec
        self.presets = presets  # the voice names resolve_prompt knows
        self.device = device or next(model.parameters()).device
        self.frame_limits: FrameLimits = frame_limits or default_frame_limits
        self._transcriber: Any = None  # Whisper, loaded on first use (prompts without a transcript)
        self.transcriber_device: str | None = None  # where that Whisper runs; None: beside the model (cuda:N or cpu)
        self._verifier = verifier
        # Set by from_pretrained: the manager that found the weights and what it found (for identity()).
        self._weights: tuple[WeightsManager, WeightPaths] | None = None
        self._identity: ModelIdentity | None = None

    # Construction -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        weights_dir: str | Path | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        num_threads: int | None = None,
        presets_dir: str | Path | None = None,
        download: bool = True,
        tune_malloc: bool = True,
        checkpoint: str | Path | None = None,
    ) -> VallEX:
        """Load VALL-E X, EnCodec and Vocos through the weights manager (downloading when allowed).

        Args:
            weights_dir: a folder holding the weights in the documented layout (or ``$VALLEX_WEIGHTS_DIR``);
                default: the Hugging Face / torch hub caches.
            device: default CUDA, then MPS, then CPU.
            dtype: ``"float32"`` (default: exact, it reproduces the reference's codes), ``"auto"`` (the fastest
                precision measured for this device and CPU class, e.g. int8 on the AMD EPYC class; on CUDA
                bfloat16 from compute capability 8.0 on, else float16:
                :func:`vallex.inference.precision.resolve_precision`;
                the CLI's and app's default),
                ``"bfloat16"``, ``"float16"`` (CUDA) or ``"int8"`` (CPU).
            num_threads: torch intra-op threads (CPU).
            presets_dir: folder of named ``.npz`` voice presets.
            tune_malloc: on CPU, let glibc's malloc keep freed activation buffers for reuse (a process-wide
                setting, :func:`vallex.inference.memory.keep_freed_memory_for_reuse`; without it each NAR layer
                faults its buffers in afresh). False leaves the process's malloc as it is.
            checkpoint: a VALL-E X checkpoint to use instead of the weights folder's (default
                ``$VALLEX_CHECKPOINT``), e.g. ``runs/de/checkpoint-00002000.pt`` from ``vallex train``: its
                ``.json`` and the run's ``languages.json`` beside it give its size and languages. EnCodec and
                Vocos still come from ``weights_dir``.
        """
        from vallex.weights.checkpoint import load_model
        from vallex.weights.manager import WeightsManager

        if num_threads is not None:
            if num_threads < 1:
                raise ValueError(f"num_threads must be >= 1, got {num_threads}.")
            torch.set_num_threads(num_threads)
        device = select_device(device)
        from vallex.inference.precision import apply_precision, resolve_precision
        from vallex.inference.threads import in_passing_thread

        precision = resolve_precision(dtype, device)  # None: float32; "auto": per device and CPU class
        manager = WeightsManager(weights_dir, checkpoint=checkpoint)
        paths = manager.resolve(download=download)

        def load() -> VallexModel:
            model = load_model(paths.vallex, config=paths.vallex_config, device=device)
            # float32 too: the conversion also puts the inference fast paths on (vallex.inference.fastpath).
            return apply_precision(model, precision, device, tune_malloc=tune_malloc)

        # In a thread of its own, so the caller keeps no OpenMP pool from it (vallex.inference.threads).
        model = in_passing_thread(load)
        codec = AudioCodec.from_paths(paths, device=device)
        presets = PresetLibrary(presets_dir) if presets_dir is not None else PresetLibrary.default()
        tts = cls(model, codec, presets, device, precision=precision)
        tts._weights = (manager, paths)
        return tts

    def identity(self) -> ModelIdentity | None:
        """Which checkpoint this is: its file name, SHA-256 prefix, languages and whether its weights are random
        (:func:`vallex.weights.identity.model_identity`); None for a model not loaded from files. Worked out on the
        first call (the checkpoint is hashed only when no record knows its digest) and kept."""
        if self._identity is None and self._weights is not None:
            from vallex.weights.identity import model_identity

            self._identity = model_identity(*self._weights, self.languages)
        return self._identity

    # Prompts ------------------------------------------------------------------------------------
    def make_prompt(self, audio: Any, transcript: str | None = None, language: str | None = None,
                    name: str | None = None) -> VoicePrompt:
        """A :class:`VoicePrompt` from 1-15 s of audio (path, numpy, Gradio tuple) and its transcript."""
        from vallex.prompts import find_transcriber, make_prompt

        transcriber = None
        if transcript is None or not str(transcript).strip():
            # Whisper loads once per VallEX, on the first prompt that needs it.
            if self._transcriber is None:
                self._transcriber = find_transcriber(device=self._transcriber_device())
            transcriber = self._transcriber
        return make_prompt(audio, transcript=transcript, language=language, codec=self.codec, name=name,
                           transcriber=transcriber, languages=self.languages)

    def load_transcriber(self) -> bool:
        """Find and load now the Whisper model :meth:`make_prompt` uses for a prompt without a transcript (else it
        loads on the first such prompt); returns whether one can run here (installed and on disk)."""
        from vallex.prompts import find_transcriber

        if self._transcriber is None:
            self._transcriber = find_transcriber(device=self._transcriber_device())
        load = getattr(getattr(self._transcriber, "recognizer", None), "load", None)
        if callable(load):
            load()
        return self._transcriber is not None

    def _transcriber_device(self) -> str:
        return self.transcriber_device or self._whisper_device()

    def with_cpu_prompts(self) -> VallEX:
        """A shallow copy whose prompt tools run on the CPU: EnCodec and Vocos (a CPU copy, not loaded yet) and
        the Whisper of :meth:`make_prompt`. It shares this model, which it must not run: it is for a process
        that cannot use the model's device, such as a ZeroGPU Space's own process, where only GPU calls hold a
        GPU and prompts are made on the CPU."""
        side = copy.copy(self)
        if self.codec.device.type != "cpu" and self.codec.paths is not None:
            side.codec = AudioCodec(self.codec.paths, device="cpu")
        side.transcriber_device, side._transcriber = "cpu", None
        return side

    def load_verifier(self, device: str | None = None) -> dict[str, bool]:
        """Make the verifier of ``verify="asr"`` now and load its recogniser for each of :attr:`languages`,
        returning which of them it can check (a recogniser that hears it is installed).

        ``device``: where its recognisers and speaker encoder run (default: CUDA when the model is there, else the
        CPU, as on first use); ignored when the verifier was made already.
        """
        if self._verifier is None:
            self._verifier = Verifier(device=device or self._whisper_device())
        checkable = {}
        for language in self.languages:
            try:
                self._verifier.recognizer(language)
                checkable[language] = True
            except NoRecognizerError:
                checkable[language] = False
        return checkable

    def resolve_prompt(self, prompt: PromptLike) -> VoicePrompt | None:
        """``VoicePrompt`` | preset name (str) | ``Path`` to an ``.npz`` | ``(audio, transcript)`` | None."""
        if prompt is None or isinstance(prompt, VoicePrompt):
            return prompt
        if isinstance(prompt, Path):
            return VoicePrompt.load_npz(prompt)
        if isinstance(prompt, str):
            if self.presets is None:
                raise ValueError(f"Unknown preset {prompt!r}: no preset folder is configured.")
            return self.presets.load(prompt)
        if isinstance(prompt, tuple) and len(prompt) == 2:
            audio, transcript = prompt
            return self.make_prompt(audio, transcript)
        raise ValueError(
            "prompt must be a VoicePrompt, a preset name, a Path to an .npz file, or (audio, transcript)."
        )

    def verifier(self) -> Verifier:
        """The speech recognisers and speaker encoder of ``verify="asr"`` (made once; each model loads on first use)."""
        if self._verifier is None:
            self._verifier = Verifier(device=self._whisper_device())
        return self._verifier

    def _whisper_device(self) -> str:
        from vallex.asr import whisper_device

        return whisper_device(self.device)  # cuda:N kept: beside the model

    # Synthesis ----------------------------------------------------------------------------------
    def synthesize(self, text: str, prompt: PromptLike = None, **options: Any) -> tuple[np.ndarray, int]:
        """Speech for ``text``: (float32 waveform [N], 24000). Options as :meth:`synthesize_detailed`."""
        result = self.synthesize_detailed(text, prompt, **options)
        return result.waveform, result.sample_rate

    def synthesize_detailed(self, text: str, prompt: PromptLike = None, *,
                            progress: bool | ProgressCallback = False, **options: Any) -> Synthesis:
        """Like :meth:`synthesize`, also returning per-sentence codes, phonemes and timings.

        Options (:class:`vallex.synthesis.request.SynthesisRequest`'s fields, and the sampling settings of
        :class:`vallex.inference.sampling_settings.Sampling` one by one or as ``sampling=Sampling(...)``):
        ``language`` ("auto", "mix", "auto-mix" or one of :attr:`languages`: "en", "zh", "ja", ...), ``accent``
        (one of :attr:`languages`), ``seed``, ``temperature``, ``top_k``, ``top_p``, ``best_of``,
        ``long_text`` (None, "fixed-prompt", "sliding-window", "auto"), ``ras`` (repetition-aware sampling
        instead of the reference's plain sampling; False), ``length_guards`` (frame bounds from the text's
        measured speaking rate; False: the reference's 16 frames per token), ``verify`` ("asr": verified
        best-of-N, each sentence's ``best_of`` rows turned into audio, transcribed by Whisper and scored by
        phoneme error rate and similarity to the prompt's voice; the best is kept, and while none reaches
        ``verify_threshold`` (0.25) new rows are sampled, up to ``verify_rounds`` (3) rounds; the scores are in
        each sentence's ``verification``; None: the best row by log-probability), ``chunk_seconds`` (default None: what
        :meth:`synthesize_stream` with that ``chunk_seconds`` yields, with its codes;
        ``timings["first_audio_s"]`` is when the first chunk was ready). ``progress``: True for tqdm bars, or
        a callback ``(stage, done, total)``.
        """
        return self.synthesize_request(SynthesisRequest(text, prompt, **options), progress)

    def synthesize_request(self, request: SynthesisRequest, progress: bool | ProgressCallback = False) -> Synthesis:
        """:meth:`synthesize_detailed` of a whole :class:`SynthesisRequest`."""
        start = time.perf_counter()
        sentences: list[SentenceResult] = []
        chunks = []
        first_audio = float("inf")
        for piece in self.pieces(request, progress, sentences):
            if not chunks:
                first_audio = time.perf_counter() - start
            chunks.append(piece.audio)
        waveform = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return Synthesis(waveform, SAMPLE_RATE, sentences, synthesis_timings(start, waveform, first_audio))

    def synthesize_stream(self, text: str, prompt: PromptLike = None, *,
                          chunk_seconds: float | None = STREAM_CHUNK_SECONDS, progress: bool | ProgressCallback = False,
                          **options: Any) -> Iterator[np.ndarray]:
        """Yield float32 audio chunks at 24 kHz as soon as each is ready; options as :meth:`synthesize_detailed`.

        Args:
            chunk_seconds: audio in the first chunk of each sentence (default 0.4 s); each later chunk of
                the sentence is twice as long as the one before, up to ``MAX_CHUNK_SECONDS`` (3.2 s), and the
                last one holds whatever is left. ``None``: one chunk per sentence, whose concatenation equals
                :meth:`synthesize`'s output for the same arguments and seed.

        With chunks, codebook 1 (the AR's, which carries most of the content) is identical to
        :meth:`synthesize`'s for the same seed; codebooks 2-8 may differ, mostly near chunk boundaries,
        because the NAR that predicts them has seen only ``NAR_LOOKAHEAD_FRAMES`` frames past a chunk.
        ``synthesize_detailed(..., chunk_seconds=x)`` reproduces a stream's audio with its codes. The
        pieces of a sentence join without fades (they are one continuous signal); sentences get the same
        fades and pauses as in :meth:`synthesize`. With ``best_of > 1`` the best row is known only at the
        end of a sentence, so the stream falls back to one chunk per sentence.
        """
        request = SynthesisRequest(text, prompt, chunk_seconds=chunk_seconds, **options)
        for piece in self.pieces(request, progress):
            yield piece.audio

    def synthesize_batch(self, requests: Sequence[SynthesisRequest | dict[str, Any]]) -> list[Synthesis]:
        """Several requests decoded together: what :meth:`synthesize_detailed` gives each one alone.

        Each request is a :class:`SynthesisRequest` (or a dict of its fields): its own text, prompt, language,
        accent, seed and sampling settings. They run through one :class:`vallex.synthesis.scheduler.Scheduler`: one AR
        batch over every request's current sentence (per-utterance lengths, stops and random generators; a
        finished sentence leaves the batch and the request's next sentence joins it). With a seed, each
        request's codes equal what it gets alone. Every request is checked before any is decoded.
        """
        start = time.perf_counter()
        scheduler = Scheduler(self, nar_batch=default_nar_batch(self.device, len(requests)))
        plans = [self.plan(SynthesisRequest.coerce(r)) for r in requests]
        if any(plan.chunk_frames is not None for plan in plans):
            raise ValueError("synthesize_batch makes whole sentences: leave chunk_seconds at None.")
        sinks = [_Collector(_progress_reporter(False)) for _ in plans]
        for plan, sink in zip(plans, sinks):
            scheduler.admit(plan, sink)
        scheduler.run()
        out = []
        for sink in sinks:
            sink.raise_error()
            waveform = np.concatenate([p.audio for p in sink.pieces]) if sink.pieces else np.zeros(0, np.float32)
            timings = synthesis_timings(start, waveform, time.perf_counter() - start)
            timings["batch"] = float(len(plans))
            out.append(Synthesis(waveform, SAMPLE_RATE, sink.sentences, timings))
        return out

    def plan(self, request: SynthesisRequest) -> RequestPlan:
        """Check a request and split it into sentences (:func:`vallex.synthesis.request.plan_request`)."""
        return plan_request(self, request)

    def pieces(self, request: SynthesisRequest, progress: bool | ProgressCallback = False,
               sentences: list[SentenceResult] | None = None) -> Iterator[AudioPiece]:
        """One request through a :class:`vallex.synthesis.scheduler.Scheduler` on the caller's thread: its audio pieces
        (with their sentence and whether each ends one) as they are made; ``sentences`` collects the results."""
        scheduler = Scheduler(self, nar_batch=1)
        sink = _Collector(_progress_reporter(progress), sentences)
        scheduler.admit(request, sink)
        while True:
            while sink.pieces:
                yield sink.pieces.popleft()
            sink.raise_error()
            if not scheduler.active:
                return
            scheduler.step()


class _Collector:
    """A :class:`vallex.synthesis.results.Sink` that keeps a request's pieces, sentences and error for the caller."""

    cancelled = False

    def __init__(self, report: ProgressCallback, sentences: list[SentenceResult] | None = None) -> None:
        self.report = report
        self.pieces: deque[AudioPiece] = deque()
        self.sentences: list[SentenceResult] = sentences if sentences is not None else []
        self.error: BaseException | None = None

    def put(self, piece: AudioPiece) -> None:
        self.pieces.append(piece)

    def sentence_done(self, result: SentenceResult) -> None:
        self.sentences.append(result)

    def close(self, error: BaseException | None = None) -> None:
        self.error = error

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


def synthesis_timings(start: float, waveform: np.ndarray, first_audio: float) -> dict[str, float]:
    elapsed = time.perf_counter() - start
    audio_seconds = len(waveform) / SAMPLE_RATE
    return {"total_s": elapsed, "first_audio_s": first_audio, "audio_s": audio_seconds,
            "rtf": elapsed / audio_seconds if audio_seconds else float("inf")}


def _progress_reporter(progress: bool | ProgressCallback) -> ProgressCallback:
    """A callback ``(stage, done, total)``; ``True`` shows tqdm bars for sentences and AR steps."""
    if callable(progress):
        return progress
    if not progress:
        return lambda stage, done, total: None
    bars: dict[str, Any] = {}

    def report(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None or (stage == "ar_step" and done == 0):
            if bar is not None:
                bar.close()
            bar = bars[stage] = progress_bar(total=total, desc="sentences" if stage == "sentence" else "AR steps",
                                             leave=stage == "sentence", fine=stage == "ar_step",
                                             unit="step" if stage == "ar_step" else "sentence")
        bar.update(done - bar.n)  # not refresh(): that redraws on every step, whatever the bar's interval
        if stage == "sentence" and done >= total:
            bar.close()
            for other in bars.values():
                other.close()

    return report
