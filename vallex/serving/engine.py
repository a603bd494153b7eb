"""The speech engine: continuous batching. One worker thread owns the model and serves every request.

A request is queued (``submit`` refuses with :class:`ServerBusy` beyond ``max_queue`` waiting requests) and
admitted, in arrival order, as soon as fewer than ``max_batch`` requests run: its first sentence's prefill
runs and it joins the running AR batch (:class:`vallex.decoding.ARBatch`) at the next step. Every step
samples one frame for each running sentence; the chunks that became due (:mod:`vallex.streaming`) and the
sentences that ended go through the NAR together (:func:`vallex.decoding.nar_decode`), and the audio
goes back through each request's :class:`SpeechStream` at once. A request whose client went away is
cancelled and leaves at the next step. With a seed, a request's audio is what
:meth:`vallex.api.VallEX.synthesize_stream` gives it alone, whatever else is being served.
Nothing else touches the model, so callers on any thread may submit concurrently.
"""
from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from vallex.api import (
    STREAM_CHUNK_SECONDS,
    RequestPlan,
    SentenceResult,
    Synthesis,
    SynthesisRequest,
    Utterance,
    VallEX,
    sentence_audio,
)
from vallex.audio import SAMPLE_RATE
from vallex.decoding import ARBatch, ARResult, nar_decode
from vallex.prompts import VoicePrompt
from vallex.streaming import SentencePieces


class ServerBusy(RuntimeError):
    """The queue is full: the request was not accepted (HTTP 503 / the app's "server busy")."""


class ModelUnavailable(RuntimeError):
    """The model could not be loaded (e.g. missing weights); the message says why (HTTP 503)."""


def is_device_failure(error: BaseException) -> bool:
    """Whether ``error`` left the accelerator unusable for this process (a CUDA device-side assert, an illegal
    memory access, a lost device): every later call fails too, so serving on is pointless.

    Why a separate case: such an error poisons the CUDA context for good, while the engine would otherwise fail
    each request and still report itself alive, so nothing (Ray Serve's health check, a Space's restart) would
    replace it. Running out of memory is not one (the next, smaller batch may fit).
    """
    if isinstance(error, torch.OutOfMemoryError):
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(error, accelerator_error):
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and any(sign in message for sign in _DEVICE_FAILURE_SIGNS)


#: How torch words an error that leaves the CUDA context unusable (older torch raise a plain RuntimeError).
_DEVICE_FAILURE_SIGNS = ("CUDA error", "device-side assert", "CUBLAS_STATUS_EXECUTION_FAILED",
                         "illegal memory access", "unspecified launch failure")


@dataclass(frozen=True)
class SpeechRequest(SynthesisRequest):
    """One request for speech: the fields of :class:`vallex.api.SynthesisRequest`, streamed in chunks.

    ``prompt``: a :class:`VoicePrompt`, a voice name (resolved by the engine's ``voice_resolver``), or None.
    ``chunk_seconds``: first chunk of each sentence (then doubling, see :mod:`vallex.streaming`); None: one
    chunk per sentence.
    """

    chunk_seconds: float | None = STREAM_CHUNK_SECONDS


_DONE = object()


class AudioPiece(NamedTuple):
    """One chunk of a stream (:meth:`SpeechStream.pieces`)."""

    audio: np.ndarray  # float32 [n] at 24 kHz
    sentence: int  # which sentence it belongs to (0-based)
    sentences: int  # how many the request has
    last: bool  # the sentence's last chunk


class SpeechStream:
    """The audio of one submitted request: iterate for float32 chunks [n] at 24 kHz.

    Iteration raises the request's error (a ``ValueError`` for bad input) where it happened. ``cancel()``
    (or leaving a ``with`` block early) tells the engine to stop working on it.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, request: SpeechRequest, request_id: int,
                 progress: Callable[[str, int, int], None] | None = None) -> None:
        self.request = request
        self.id = request_id
        self.progress = progress
        self.submitted_at = time.perf_counter()
        self.started_s: float | None = None  # seconds from submit to admission (time spent queued)
        self.first_audio_s: float | None = None  # seconds from submit to the first chunk
        self.total_s: float | None = None  # seconds from submit to the last chunk
        self.sentences: list[SentenceResult] = []  # filled as sentences finish
        self._chunks: queue.Queue = queue.Queue()
        self._audio: list[np.ndarray] = []  # every chunk sent, for result()
        self._cancelled = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._finished = False

    # Consumer side --------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[np.ndarray]:
        for piece in self.pieces():
            yield piece.audio

    def pieces(self) -> Iterator[AudioPiece]:
        """Like iterating the stream, with each chunk's place: which sentence of how many, its last chunk?"""
        while True:
            item = self._chunks.get()
            if item is _DONE:
                self._finished = True
                return
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            yield item

    def result(self, timeout: float | None = None) -> Synthesis:
        """Wait for the end and return everything: the whole waveform, each sentence, timings.

        Raises the request's error, or ``TimeoutError``. Works whether or not the chunks were iterated.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id} is still running")
        if self._error is not None:
            raise self._error
        waveform = np.concatenate(self._audio) if self._audio else np.zeros(0, dtype=np.float32)
        audio_s = len(waveform) / SAMPLE_RATE
        total = self.total_s or 0.0
        timings = {"total_s": total, "first_audio_s": self.first_audio_s if self.first_audio_s is not None
                   else float("inf"), "queued_s": self.started_s or 0.0, "audio_s": audio_s,
                   "rtf": total / audio_s if audio_s else float("inf")}
        return Synthesis(waveform, SAMPLE_RATE, list(self.sentences), timings)

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def __enter__(self) -> SpeechStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self._finished:
            self.cancel()

    # Producer side (the engine) -------------------------------------------------------------------
    def _put(self, piece: AudioPiece) -> None:
        if self.first_audio_s is None:
            self.first_audio_s = time.perf_counter() - self.submitted_at
        self._audio.append(piece.audio)
        self._chunks.put(piece)

    def _close(self, error: BaseException | None = None) -> None:
        self.total_s = time.perf_counter() - self.submitted_at
        self._error = error
        self._chunks.put(error if error is not None else _DONE)
        self._done.set()


@dataclass
class EngineStats:
    """Counters since the engine started (for /health and the benchmark)."""

    submitted: int = 0
    refused: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    running: int = 0
    waiting: int = 0
    started_at: float = field(default_factory=time.time)


class SpeechEngine:
    """Serves :class:`SpeechRequest` s from many threads with one :class:`VallEX`.

    Args:
        tts: the model, or a function that loads it (called once, on the worker thread, at the first request).
        max_batch: requests decoded together at most.
        max_queue: requests that may wait for a slot; more are refused with :class:`ServerBusy`.
        voice_resolver: turns a voice name into a :class:`VoicePrompt` (default: the model's presets).
        nar_batch: sentences whose NAR runs together between two AR steps (default: 1 on CPU, max_batch
            elsewhere; see :attr:`nar_batch`).
        exact_chunks: every request gets exactly the audio :meth:`VallEX.synthesize_stream` gives it alone
            (same seed), however busy the server: a chunk that had to wait is still made from the frames it
            would have had. Default False: a chunk that waited is made from all the frames there are by
            then, one longer chunk instead of several, which saves NAR passes when the server is busy. Either
            way codebook 1 (the AR's) is the one it gets alone.
    """

    def __init__(self, tts: VallEX | Callable[[], VallEX], *, max_batch: int = 8, max_queue: int = 32,
                 voice_resolver: Callable[[str], VoicePrompt] | None = None, nar_batch: int | None = None,
                 exact_chunks: bool = False) -> None:
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch must be >= 1 and max_queue >= 0, got {max_batch} and {max_queue}.")
        if nar_batch is not None and nar_batch < 1:
            raise ValueError(f"nar_batch must be >= 1, got {nar_batch}.")
        self.max_batch, self.max_queue = max_batch, max_queue
        self.exact_chunks = exact_chunks
        self._nar_batch = nar_batch
        self._tts_source = tts
        self._tts: VallEX | None = tts if isinstance(tts, VallEX) else None
        self._voice_resolver = voice_resolver
        self._waiting: deque[SpeechStream] = deque()
        self._lock = threading.Condition()
        self._ids = itertools.count(1)
        self._closed = False
        self._unhealthy: str | None = None
        #: Held by the worker around each step. Other model work (encoding a prompt, translation) takes it
        #: too, so it runs between two steps of the batch instead of at the same time.
        self.model_lock = threading.RLock()
        self.stats = EngineStats()
        self._worker = threading.Thread(target=self._run, name="vallex-speech-engine", daemon=True)
        self._worker.start()

    # Public ---------------------------------------------------------------------------------------
    def submit(self, request: SpeechRequest,
               progress: Callable[[str, int, int], None] | None = None) -> SpeechStream:
        """Queue ``request``; raises :class:`ServerBusy` if ``max_queue`` requests are already waiting.

        ``progress(stage, done, total)`` is called from the worker as in :meth:`VallEX.synthesize`
        (``"sentence"`` when a sentence starts, ``"ar_step"`` after each frame).
        """
        if not isinstance(request, SpeechRequest):
            raise TypeError("submit() takes a SpeechRequest.")
        if not isinstance(request.text, str) or not request.text.strip():
            raise ValueError("Text is empty: type the sentence you want to hear.")
        with self._lock:
            if self._closed:
                raise RuntimeError("The speech engine is closed.")
            if self._unhealthy is not None:
                raise ModelUnavailable(self._unhealthy)
            if len(self._waiting) >= self.max_queue:
                self.stats.refused += 1
                raise ServerBusy(f"The server is busy: {len(self._waiting)} requests are already waiting. "
                                 "Try again in a moment.")
            stream = SpeechStream(request, next(self._ids), progress)
            self._waiting.append(stream)
            self.stats.submitted += 1
            self.stats.waiting = len(self._waiting)
            self._lock.notify()
        return stream

    def close(self, timeout: float | None = 60.0) -> None:
        """Refuse new requests, fail the waiting ones (``RuntimeError``), let the running ones finish."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._worker.join(timeout)

    @property
    def nar_batch(self) -> int:
        """Sentences whose NAR runs together between two AR steps.

        On a CPU the NAR is compute-bound (a batch costs the sum of its parts), so one at a time, the most
        urgent first, keeps the AR going and the first audio of each request early; an accelerator runs
        a batch for about the price of one, so it takes up to ``max_batch``.
        """
        if self._nar_batch is not None:
            return self._nar_batch
        return 1 if self.tts.device.type == "cpu" else self.max_batch

    @property
    def alive(self) -> bool:
        """Whether the worker thread is serving (False once :meth:`close` has let it finish, or after a device
        failure: see :attr:`unhealthy`). Ray Serve's health check replaces a replica that is not alive."""
        return self._worker.is_alive() and not self._closed and self._unhealthy is None

    @property
    def unhealthy(self) -> str | None:
        """Why the engine stopped serving after a device failure (:func:`is_device_failure`), else None."""
        return self._unhealthy

    def _give_up(self, error: BaseException) -> None:
        """After a device failure: refuse every waiting and later request with :class:`ModelUnavailable`."""
        reason = (f"The model's device failed ({type(error).__name__}: {error}); this server cannot synthesise "
                  "any more and must be restarted.")
        with self._lock:
            self._unhealthy = reason
            for stream in self._waiting:
                stream._close(ModelUnavailable(reason))
                self.stats.failed += 1
            self._waiting.clear()
            self.stats.waiting = self.stats.running = 0

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded (it loads on the worker at the first request when given a loader)."""
        return self._tts is not None

    @property
    def tts(self) -> VallEX:
        """The model (loaded on first use)."""
        if self._tts is None:
            self._tts = self._tts_source()  # type: ignore[operator]
        return self._tts

    # Worker ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        batch: _Batch | None = None
        while True:
            with self._lock:
                while not self._waiting and not (batch and batch.active) and not self._closed:
                    self._lock.wait()
                if self._closed:  # no more admissions; the running requests finish
                    for stream in self._waiting:
                        stream._close(RuntimeError("The speech engine was closed before this request started."))
                        self.stats.failed += 1
                    self._waiting.clear()
                    if batch is None or not batch.active:
                        return
                admitted = []
                running = len(batch.active) if batch is not None else 0
                while self._waiting and running + len(admitted) < self.max_batch:
                    admitted.append(self._waiting.popleft())
                self.stats.waiting = len(self._waiting)
            if batch is None:
                try:
                    batch = _Batch(self)  # loads the model at the first request
                except Exception as error:  # noqa: BLE001 - told to every waiting client; the next one retries
                    unavailable = error if isinstance(error, ModelUnavailable) else ModelUnavailable(str(error))
                    for stream in admitted:
                        stream._close(unavailable)
                        self.stats.failed += 1
                    continue
            try:
                with self.model_lock:
                    for stream in admitted:
                        batch.admit(stream)
                    batch.step()
            except Exception as error:  # a failure of the model itself: fail everyone in the batch, go on
                batch.fail_all(error)
                for stream in admitted:  # those the failure kept from joining the batch
                    if not stream._done.is_set():
                        stream._close(error)
                        self.stats.failed += 1
                if is_device_failure(error):  # nothing can run on this device any more: stop for good
                    self._give_up(error)
                    return
                batch = _Batch(self)
            with self._lock:
                self.stats.running = len(batch.active)

    def _resolve_voice(self, voice: Any) -> Any:
        if isinstance(voice, str) and self._voice_resolver is not None:
            return self._voice_resolver(voice)
        return voice


@dataclass
class _Active:
    """A request being served: its plan, the sentence being decoded, and where its audio stands."""

    stream: SpeechStream
    plan: RequestPlan
    index: int = 0  # the sentence being decoded
    voice: VoicePrompt | None = None  # its prompt (the previous sentence in sliding-window mode)
    job: Utterance | None = None
    pieces: SentencePieces | None = None
    first_piece: bool = True
    frames: Tensor | None = None  # LongTensor [1, n]: the sentence's codebook-0 frames so far
    ar: ARResult | None = None  # set when the sentence's AR has stopped

    @property
    def key(self) -> tuple[int, int]:
        return (self.stream.id, self.index)

    @property
    def priority(self) -> tuple[int, int, int]:
        """NAR work order: requests still waiting for their first audio, then the oldest first."""
        return (0 if self.stream.first_audio_s is None else 1, self.stream.id, self.index)


class _Batch:
    """The worker's state: every running request, one AR batch over their current sentences.

    Each :meth:`step` samples one frame for every sentence, then runs the NAR for up to
    ``engine.nar_batch`` sentences that want it (a chunk became due, or the sentence ended), in
    :attr:`_Active.priority` order, as one batch; sends the audio; and starts the next sentence of each
    request whose sentence ended, so that it joins the AR batch at the next step. A sentence whose chunk
    waited (a busy server) gets one longer chunk from all its frames so far instead of several, unless the
    engine keeps exact chunks (then it gets the very pieces it would get alone, later).
    """

    def __init__(self, engine: SpeechEngine) -> None:
        self.engine = engine
        self.tts = engine.tts
        self.ar = ARBatch(self.tts.model)
        self.active: dict[int, _Active] = {}

    def admit(self, stream: SpeechStream) -> None:
        if stream.cancelled:
            self._end(stream, cancelled=True)
            return
        request = stream.request
        try:
            prompt = self.engine._resolve_voice(request.prompt)
            plan = self.tts.plan(dataclasses.replace(request, prompt=prompt))
        except Exception as error:  # bad input: this request fails, the others go on
            self._end(stream, error=error)
            return
        stream.started_s = time.perf_counter() - stream.submitted_at
        state = _Active(stream, plan, voice=plan.voice)
        self.active[stream.id] = state
        self._start_sentence(state)

    def step(self) -> None:
        for state in [s for s in self.active.values() if s.stream.cancelled]:
            self.ar.remove(state.key)
            del self.active[state.stream.id]
            self._end(state.stream, cancelled=True)
        if self.ar:
            out = self.ar.step()
            by_key = {state.key: state for state in self.active.values()}
            for key, frames in out.frames.items():
                state = by_key[key]
                state.frames = frames
                if state.stream.progress is not None:
                    state.stream.progress("ar_step", frames.shape[1], state.job.max_frames)
            for key, result in out.finished.items():
                by_key[key].ar = result
                by_key[key].frames = result.codes
            for key, error in out.failed.items():  # non-finite logits: that request fails, the others go on
                state = by_key[key]
                del self.active[state.stream.id]
                self._end(state.stream, error=error)
        wanting = sorted((s for s in self.active.values() if self._wants_nar(s)), key=lambda s: s.priority)
        work = [(state, *self._nar_work(state)) for state in wanting[:self.engine.nar_batch]]
        codes = nar_decode(self.tts.model, [state.job.nar_input(frames) for state, _, frames in work])
        for (state, final, _), nar in zip(work, codes):
            if final:
                self._finish_sentence(state, nar)
            else:
                self._send(state, state.pieces.chunk(nar), final=False)
        for state in [s for s in self.active.values() if s.ar is not None and not self._wants_nar(s)]:
            self._finish_sentence(state, None)  # the chunks already cover every frame

    def _wants_nar(self, state: _Active) -> bool:
        if state.frames is None:
            return False
        if state.pieces.due(state.frames.shape[1]):
            return True
        return state.ar is not None and state.pieces.needs_final_nar(state.frames.shape[1])

    def _nar_work(self, state: _Active) -> tuple[bool, Tensor]:
        """(is the sentence's final NAR, codebook-0 frames [1, n] to run it on)."""
        frames, pieces = state.frames, state.pieces
        if self.engine.exact_chunks:
            if pieces.due(frames.shape[1]):
                return False, frames[:, :pieces.next_due]  # the chunk a stream alone would make now
            return True, frames
        return state.ar is not None, frames  # everything so far: a late chunk becomes a longer one

    def _finish_sentence(self, state: _Active, nar: Tensor | None) -> None:
        sentence_codes, last = state.pieces.finish(nar)
        self._send(state, last, final=True)
        self._sentence_done(state, state.job.result(sentence_codes, state.ar.stop_reason, state.pieces.waveform))

    def fail_all(self, error: BaseException) -> None:
        for state in self.active.values():
            self._end(state.stream, error=error)
        self.active.clear()

    # Helpers ------------------------------------------------------------------------------------------
    def _start_sentence(self, state: _Active) -> None:
        if state.stream.progress is not None:
            state.stream.progress("sentence", state.index, len(state.plan.sentences))
        text, tokens = state.plan.sentences[state.index]
        state.job = self.tts._utterance(text, tokens, state.voice, state.plan)
        state.pieces = SentencePieces(self.tts.codec, state.plan.chunk_frames)
        state.first_piece, state.frames, state.ar = True, None, None
        self.ar.add(state.key, state.job.ar_request(state.plan))

    def _send(self, state: _Active, wav: np.ndarray, *, final: bool) -> None:
        count = len(state.plan.sentences)
        audio = sentence_audio(wav, state.index, count, first_piece=state.first_piece, final=final)
        state.stream._put(AudioPiece(audio, state.index, count, final))
        state.first_piece = False

    def _sentence_done(self, state: _Active, result: SentenceResult) -> None:
        state.stream.sentences.append(result)
        if state.plan.long_text == "sliding-window":
            state.voice = self.tts._next_sliding_prompt(result, state.plan.voice)
        state.index += 1
        if state.index < len(state.plan.sentences) and not state.stream.cancelled:
            self._start_sentence(state)
            return
        del self.active[state.stream.id]
        if state.stream.progress is not None:
            state.stream.progress("sentence", state.index, len(state.plan.sentences))
        self._end(state.stream, cancelled=state.stream.cancelled)

    def _end(self, stream: SpeechStream, *, error: BaseException | None = None, cancelled: bool = False) -> None:
        stream._close(error)
        stats = self.engine.stats
        if error is not None:
            stats.failed += 1
        elif cancelled:
            stats.cancelled += 1
        else:
            stats.completed += 1
