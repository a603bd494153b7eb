"""The speech engine: continuous batching. One worker thread owns the model and serves every request.

A request is queued (``submit`` refuses with :class:`ServerBusy` beyond ``max_queue`` waiting requests) and
admitted, in arrival order, as soon as fewer than ``max_batch`` requests run, into the engine's
:class:`vallex.synthesis.scheduler.Scheduler` (the same one every synthesis of :class:`vallex.api.VallEX` goes through):
its first sentence joins the running AR batch at the next step, chunks and ended sentences go through the NAR
together, and the audio goes back through each request's :class:`SpeechStream` at once. A request whose
client went away is cancelled and leaves at the next step. A request may cost at most ``max_request_work``
decoded sentence-candidates (:func:`vallex.synthesis.request.request_work`), and a verified one checks one
candidate per step, within half of the engine's time while others decode, so one costly request cannot hold
everyone. A stream submitted with ``keep_audio=False`` holds at most ``stream_buffer`` chunks for its reader:
its request pauses while they wait, and is cancelled (:class:`StreamStalled`) when none is read for
``read_timeout_s``. With a seed, a request's audio is what
:meth:`vallex.api.VallEX.synthesize_stream` gives it alone, whatever else is being served.
Nothing else touches the model, so callers on any thread may submit concurrently. Other work with the model
(encoding a voice prompt, translation, loading it) goes to the same thread through :meth:`SpeechEngine.run`, between
two steps: one thread of the process computes (why: :mod:`vallex.inference.threads`).
"""
from __future__ import annotations

import contextvars
import functools
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from vallex.api import VallEX
from vallex.audio.codec_format import SAMPLE_RATE
from vallex.config import DEFAULT_MAX_REQUEST_WORK, DEFAULT_STREAM_TIMEOUT_S
from vallex.inference.sampling_settings import sampling_keywords
from vallex.languages import Languages
from vallex.synthesis.request import SynthesisRequest, check_request_work
from vallex.synthesis.results import AudioPiece, SentenceResult, Sink, Synthesis
from vallex.synthesis.scheduler import Scheduler, default_nar_batch
from vallex.synthesis.streaming import STREAM_CHUNK_SECONDS
from vallex.synthesis.text_plan import TextPlan

T = TypeVar("T")

#: Chunks a streamed request (``keep_audio=False``) may have waiting for its reader before it pauses: a few
#: seconds of audio (chunks grow to 3.2 s; whole sentences, up to 22 s), enough that a reader playing in real
#: time never waits for the engine.
DEFAULT_STREAM_BUFFER = 4


class ServerBusy(RuntimeError):
    """The queue is full: the request was not accepted (HTTP 503 / the app's "server busy")."""


class StreamStalled(TimeoutError):
    """Nobody read a stream's audio for ``read_timeout_s``: its request was cancelled and its audio dropped."""


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


@sampling_keywords
@dataclass(frozen=True)
class SpeechRequest(SynthesisRequest):
    """One request for speech: the fields of :class:`vallex.synthesis.request.SynthesisRequest` (sampling settings
    as keywords too: ``SpeechRequest(text, prompt, seed=1, top_k=50)``), streamed in chunks.

    ``prompt``: a :class:`VoicePrompt`, a voice name (resolved by the model's voice library,
    :meth:`vallex.api.VallEX.resolve_prompt`), or None. ``text`` may be a :class:`vallex.synthesis.text_plan.TextPlan`.
    ``chunk_seconds``: first chunk of each sentence (then doubling, see :mod:`vallex.synthesis.streaming`); None: one
    chunk per sentence.
    """

    chunk_seconds: float | None = STREAM_CHUNK_SECONDS


_DONE = object()


class SpeechStream:
    """The audio of one submitted request: iterate for float32 chunks [n] at 24 kHz.

    Iteration raises the request's error (a ``ValueError`` for bad input) where it happened. ``cancel()``
    (or leaving a ``with`` block early) tells the engine to stop working on it.

    ``keep_audio``: keep every chunk for :meth:`result` (False: a reader that iterates has them all already).
    ``buffer``: chunks that may wait for the reader at most; the scheduler sends the request nothing more
    while they do (:attr:`full`). None: every chunk is queued (a stream kept whole for :meth:`result`).
    ``wake``: called when a read makes room or the stream is cancelled (the engine may be waiting for it).
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, request: SpeechRequest, request_id: int,
                 progress: Callable[[str, int, int], None] | None = None, *, keep_audio: bool = True,
                 buffer: int | None = None, wake: Callable[[], None] | None = None) -> None:
        self.request = request
        self.id = request_id
        self.progress = progress
        self.submitted_at = time.perf_counter()
        self.started_s: float | None = None  # seconds from submit to admission (time spent queued)
        self.first_audio_s: float | None = None  # seconds from submit to the first chunk
        self.total_s: float | None = None  # seconds from submit to the last chunk
        self.sentences: list[SentenceResult] = []  # filled as sentences finish
        self.keep_audio = keep_audio
        self.buffer = buffer
        self._wake = wake
        self._chunks: deque = deque()  # AudioPieces waiting for the reader, then _DONE or the error
        self._ready = threading.Condition()
        self._full_since: float | None = None  # time.monotonic() when the buffer filled up (None: not full)
        self._audio: list[np.ndarray] = []  # every chunk sent, for result() (keep_audio)
        self._cancelled = threading.Event()
        self._cancel_error: BaseException | None = None  # what the reader gets when the engine cancelled it
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
            with self._ready:
                while not self._chunks:
                    self._ready.wait()
                item = self._chunks.popleft()
                made_room = self._full_since is not None and not self.full
                if made_room:
                    self._full_since = None
            if made_room and self._wake is not None:
                self._wake()
            if item is _DONE:
                self._finished = True
                return
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            yield item

    def result(self, timeout: float | None = None) -> Synthesis:
        """Wait for the end and return everything: the whole waveform, each sentence, timings.

        Raises the request's error, or ``TimeoutError``. Works whether or not the chunks were iterated, unless the
        stream was submitted with ``keep_audio=False`` (then there is nothing to return: ``RuntimeError``).
        """
        if not self.keep_audio:
            raise RuntimeError("This stream keeps no audio (submitted with keep_audio=False): iterate it instead.")
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
        if self._wake is not None:
            self._wake()

    @property
    def buffered(self) -> int:
        """Chunks sent and not read yet."""
        return sum(1 for item in self._chunks if isinstance(item, AudioPiece))

    @property
    def full(self) -> bool:
        """Whether ``buffer`` chunks wait for the reader (the scheduler then pauses the request)."""
        return self.buffer is not None and self.buffered >= self.buffer

    def stalled_for(self, now: float) -> float:
        """Seconds (by ``time.monotonic()``) the buffer has been full with nobody reading; 0 when it is not full."""
        return now - self._full_since if self._full_since is not None else 0.0

    def time_out(self, seconds: float) -> None:
        """Cancel the request because nobody read for ``seconds``; the reader, if it comes back, gets
        :class:`StreamStalled`."""
        self._cancel_error = StreamStalled(f"Nobody read request {self.id}'s audio for {seconds:g} s: it was "
                                           "cancelled.")
        self.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def __enter__(self) -> SpeechStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self._finished:
            self.cancel()

    # Producer side (the engine's scheduler: a vallex.synthesis.results.Sink) --------------------------------
    def report(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def sentence_done(self, result: SentenceResult) -> None:
        self.sentences.append(result)

    def put(self, piece: AudioPiece) -> None:
        if self.first_audio_s is None:
            self.first_audio_s = time.perf_counter() - self.submitted_at
        if self.keep_audio:
            self._audio.append(piece.audio)
        with self._ready:
            self._chunks.append(piece)
            if self.full and self._full_since is None:
                self._full_since = time.monotonic()
            self._ready.notify()

    def close(self, error: BaseException | None = None) -> None:
        self.total_s = time.perf_counter() - self.submitted_at
        if error is None and self.cancelled:
            error = self._cancel_error
        self._error = error
        with self._ready:
            if self.cancelled:  # nobody wants the audio that waits: let its memory go now
                self._chunks.clear()
            self._full_since = None
            self._chunks.append(error if error is not None else _DONE)
            self._ready.notify()
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

    The worker thread is the only one that runs the model: the batch's steps, the loading (given a loader) and
    whatever :meth:`run` is handed. Why one thread: :mod:`vallex.inference.threads`.

    Args:
        tts: the model, or a function that loads it (called once, on the worker thread, at the first request
            or the first use of :attr:`tts`).
        max_batch: requests decoded together at most.
        max_queue: requests that may wait for a slot; more are refused with :class:`ServerBusy`.
        nar_batch: sentences whose NAR runs together between two AR steps (default: 1 on CPU, max_batch
            elsewhere; see :attr:`nar_batch`).
        exact_chunks: every request gets exactly the audio :meth:`VallEX.synthesize_stream` gives it alone
            (same seed), however busy the server: a chunk that had to wait is still made from the frames it
            would have had. Default False: a chunk that waited is made from all the frames there are by
            then, one longer chunk instead of several, which saves NAR passes when the server is busy. Either
            way codebook 1 (the AR's) is the one it gets alone.
        max_request_work: the most decoded sentence-candidates one request may cost
            (:func:`vallex.synthesis.request.request_work`: sentences x best_of x verify rounds); a costlier one
            is refused with :class:`vallex.synthesis.request.RequestTooCostly` (a ValueError). None: no limit.
        stream_buffer: chunks a ``keep_audio=False`` stream may have waiting for its reader; its request
            pauses while they wait.
        read_timeout_s: seconds such a stream may wait with a full buffer before its request is cancelled
            (:class:`StreamStalled`); None: it waits for ever.
    """

    def __init__(self, tts: VallEX | Callable[[], VallEX], *, max_batch: int = 8, max_queue: int = 32,
                 nar_batch: int | None = None, exact_chunks: bool = False,
                 max_request_work: int | None = DEFAULT_MAX_REQUEST_WORK, stream_buffer: int = DEFAULT_STREAM_BUFFER,
                 read_timeout_s: float | None = DEFAULT_STREAM_TIMEOUT_S) -> None:
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch must be >= 1 and max_queue >= 0, got {max_batch} and {max_queue}.")
        if nar_batch is not None and nar_batch < 1:
            raise ValueError(f"nar_batch must be >= 1, got {nar_batch}.")
        if max_request_work is not None and max_request_work < 1:
            raise ValueError(f"max_request_work must be >= 1 (or None: no limit), got {max_request_work}.")
        if stream_buffer < 1:
            raise ValueError(f"stream_buffer must be >= 1 chunk, got {stream_buffer}.")
        if read_timeout_s is not None and not read_timeout_s > 0:
            raise ValueError(f"read_timeout_s must be > 0 seconds (or None: no timeout), got {read_timeout_s}.")
        self.max_batch, self.max_queue = max_batch, max_queue
        self.max_request_work, self.stream_buffer, self.read_timeout_s = max_request_work, stream_buffer, read_timeout_s
        self.exact_chunks = exact_chunks
        self._nar_batch = nar_batch
        self._tts_source = tts
        self._tts: VallEX | None = tts if isinstance(tts, VallEX) else None
        self._waiting: deque[SpeechStream] = deque()
        self._jobs: deque[_Job] = deque()  # run() calls waiting for the worker
        self._streams: dict[int, SpeechStream] = {}  # the admitted ones, until they end (to time out stalled ones)
        # Reentrant: a stream cancelled by the worker, which holds it, wakes the worker through it.
        self._lock = threading.Condition(threading.RLock())
        self._ids = itertools.count(1)
        self._closed = False
        self._unhealthy: str | None = None
        #: Held by the worker around each step and each :meth:`run` job. Work that must run on its own thread
        #: (a ZeroGPU handler's, which alone holds the GPU) takes it to run between two steps.
        self.model_lock = threading.RLock()
        self.stats = EngineStats()
        self._worker = threading.Thread(target=self._run, name="vallex-speech-engine", daemon=True)
        self._worker.start()

    # Public ---------------------------------------------------------------------------------------
    def submit(self, request: SpeechRequest, progress: Callable[[str, int, int], None] | None = None, *,
               keep_audio: bool = True) -> SpeechStream:
        """Queue ``request``; raises :class:`ServerBusy` if ``max_queue`` requests are already waiting, and
        :class:`~vallex.synthesis.request.RequestTooCostly` past ``max_request_work`` (here when the text is a
        :class:`~vallex.synthesis.text_plan.TextPlan`, else from the stream once it is planned).

        ``progress(stage, done, total)`` is called from the worker as in :meth:`VallEX.synthesize`
        (``"sentence"`` when a sentence starts, ``"ar_step"`` after each frame). ``keep_audio``: keep every
        chunk for :meth:`SpeechStream.result`; False for a reader that iterates the chunks (a streamed
        response): then at most ``stream_buffer`` chunks wait for it, and ``read_timeout_s`` applies.
        """
        if not isinstance(request, SpeechRequest):
            raise TypeError("submit() takes a SpeechRequest.")
        if isinstance(request.text, str) and not request.text.strip():
            raise ValueError("Text is empty: type the sentence you want to hear.")
        if isinstance(request.text, TextPlan):  # its sentences are known: refuse a costly one before it waits
            check_request_work(len(request.text.sentences), request.sampling, self.max_request_work)
        with self._lock:
            if self._closed:
                raise RuntimeError("The speech engine is closed.")
            if self._unhealthy is not None:
                raise ModelUnavailable(self._unhealthy)
            if len(self._waiting) >= self.max_queue:
                self.stats.refused += 1
                raise ServerBusy(f"The server is busy: {len(self._waiting)} requests are already waiting. "
                                 "Try again in a moment.")
            stream = SpeechStream(request, next(self._ids), progress, keep_audio=keep_audio,
                                  buffer=None if keep_audio else self.stream_buffer, wake=self._wake)
            self._waiting.append(stream)
            self.stats.submitted += 1
            self.stats.waiting = len(self._waiting)
            self._lock.notify()
        return stream

    def run(self, work: Callable[[], T]) -> T:
        """Call ``work()`` on the worker thread, between two steps of the batch, and return what it returns (or
        raise what it raised). Called on the worker itself (from inside another ``run``), it calls it at once.

        For model work other than synthesis (encoding a voice prompt, translation, loading): it then runs on
        the thread that computes everything else, never at the same time as a step. It runs in a copy of the
        caller's context variables (as ``asyncio.to_thread`` does: a web framework's per-request state, such as
        Gradio's progress bar, finds its request). Work that fails the device (:func:`is_device_failure`) stops
        the engine as a failed step does: the caller and the requests in the batch get the error, the waiting
        and later ones :class:`ModelUnavailable` (:attr:`unhealthy`).
        """
        if threading.current_thread() is self._worker:
            with self.model_lock:
                return work()
        job = _Job(functools.partial(contextvars.copy_context().run, work))
        with self._lock:
            if self._closed:
                raise RuntimeError("The speech engine is closed.")
            if self._unhealthy is not None:
                raise ModelUnavailable(self._unhealthy)
            if not self._worker.is_alive():  # nobody would ever run it
                raise RuntimeError("The speech engine's worker has stopped.")
            self._jobs.append(job)
            self._lock.notify()
        return job.wait()

    def _wake(self) -> None:
        """A stream made room or was cancelled: the worker, if it waits for readers, looks again."""
        with self._lock:
            self._lock.notify()

    def close(self, timeout: float | None = 60.0) -> None:
        """Refuse new requests, fail the waiting ones (``RuntimeError``), let the running ones finish."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._worker.join(timeout)

    @property
    def nar_batch(self) -> int:
        """Sentences whose NAR runs together between two AR steps
        (:func:`vallex.synthesis.scheduler.default_nar_batch`)."""
        if self._nar_batch is not None:
            return self._nar_batch
        return default_nar_batch(self.tts.device, self.max_batch)

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
                stream.close(ModelUnavailable(reason))
                self.stats.failed += 1
            self._waiting.clear()
            for job in self._jobs:
                job.fail(ModelUnavailable(reason))
            self._jobs.clear()
            self.stats.waiting = self.stats.running = 0

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded (it loads on the worker at the first request when given a loader)."""
        return self._tts is not None

    @property
    def languages(self) -> Languages:
        """The languages the model speaks (loads the model if it is not loaded yet)."""
        return self.tts.languages

    @property
    def tts(self) -> VallEX:
        """The model (loaded on first use, once, on the worker thread)."""
        if self._tts is None:
            if threading.current_thread() is not self._worker:
                return self.run(lambda: self.tts)
            self._tts = self._tts_source()  # type: ignore[operator]
        return self._tts

    # Worker ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        scheduler: Scheduler | None = None
        while True:
            failure = self._run_jobs()
            if failure is not None:  # a job broke the device: the batch cannot go on either
                if scheduler is not None:
                    scheduler.fail_all(failure)
                self._give_up(failure)
                return
            with self._lock:
                while (not self._jobs and not self._waiting and not self._closed and not self._time_out_stalled()
                       and not (scheduler and scheduler.active and not scheduler.waiting_for_readers)):
                    self._lock.wait(self._next_timeout())  # a read, a cancel, a request, or a stall's deadline
                if self._jobs:  # waited on: before the next step
                    continue
                if self._closed:  # no more admissions; the running requests finish
                    for stream in self._waiting:
                        stream.close(RuntimeError("The speech engine was closed before this request started."))
                        self.stats.failed += 1
                    self._waiting.clear()
                    if scheduler is None or not scheduler.active:
                        return
                admitted = []
                running = scheduler.active if scheduler is not None else 0
                while self._waiting and running + len(admitted) < self.max_batch:
                    admitted.append(self._waiting.popleft())
                self.stats.waiting = len(self._waiting)
            if scheduler is None:
                try:  # loads the model at the first request
                    scheduler = Scheduler(self.tts, nar_batch=self.nar_batch, exact_chunks=self.exact_chunks,
                                          max_request_work=self.max_request_work, on_end=self._count_end)
                except Exception as error:  # noqa: BLE001 - told to every waiting client; the next one retries
                    unavailable = error if isinstance(error, ModelUnavailable) else ModelUnavailable(str(error))
                    for stream in admitted:
                        stream.close(unavailable)
                        self.stats.failed += 1
                    continue
            try:
                with self.model_lock:
                    for stream in admitted:
                        if not stream.cancelled:
                            stream.started_s = time.perf_counter() - stream.submitted_at
                        self._streams[stream.id] = stream
                        scheduler.admit(stream.request, stream)
                    scheduler.step()
            except Exception as error:  # a failure of the model itself: fail everyone in the batch, go on
                scheduler.fail_all(error)
                for stream in admitted:  # those the failure kept from joining the batch
                    if not stream._done.is_set():
                        stream.close(error)
                        self.stats.failed += 1
                if is_device_failure(error):  # nothing can run on this device any more: stop for good
                    self._give_up(error)
                    return
            with self._lock:
                self.stats.running = scheduler.active

    def _run_jobs(self) -> BaseException | None:
        """Run the :meth:`run` jobs waiting; returns the error of the first that left the device unusable
        (:func:`is_device_failure`, as a failed step), after which none of the others runs (they fail with
        :class:`ModelUnavailable` in :meth:`_give_up`)."""
        with self._lock:
            jobs = list(self._jobs)
            self._jobs.clear()
        for done, job in enumerate(jobs):
            with self.model_lock:
                job.run()
            if job.error is not None and is_device_failure(job.error):
                with self._lock:
                    self._jobs.extendleft(reversed(jobs[done + 1:]))
                return job.error
        return None

    def _time_out_stalled(self) -> bool:
        """Cancel the running streams whose reader has let their buffer stay full for ``read_timeout_s``;
        whether there were any (the scheduler drops them at its next step)."""
        if self.read_timeout_s is None:
            return False
        now = time.monotonic()
        stalled = [stream for stream in self._streams.values()
                   if not stream.cancelled and stream.stalled_for(now) >= self.read_timeout_s]
        for stream in stalled:
            stream.time_out(self.read_timeout_s)
        return bool(stalled)

    def _next_timeout(self) -> float | None:
        """Seconds until the first running stream's reader times out (None: none is waited for)."""
        if self.read_timeout_s is None:
            return None
        now = time.monotonic()
        stalled = [stream.stalled_for(now) for stream in self._streams.values() if stream.full]
        return max(0.0, self.read_timeout_s - max(stalled)) if stalled else None

    def _count_end(self, sink: Sink, error: BaseException | None, cancelled: bool) -> None:
        self._streams.pop(getattr(sink, "id", None), None)
        if error is not None:
            self.stats.failed += 1
        elif cancelled:
            self.stats.cancelled += 1
        else:
            self.stats.completed += 1


class _Job:
    """One :meth:`SpeechEngine.run` call: the work, and its result or error once the worker has run it."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self.work = work
        self._done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._result = self.work()
        except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
            self._error = error
        self._done.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    @property
    def error(self) -> BaseException | None:
        """What the work raised (None: it returned, or has not run)."""
        return self._error

    def wait(self) -> Any:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result
