"""The speech engine: one worker thread owns the model and serves every request submitted to it.

A request is queued (``submit`` refuses with :class:`ServerBusy` beyond ``max_queue`` waiting requests),
admitted in arrival order while fewer than ``max_batch`` run, and streams its audio back through a
:class:`SpeechStream` as each chunk is ready. A stream whose client goes away is cancelled and leaves at the
next step. Nothing else touches the model, so callers on any thread may submit concurrently.
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from vallex.api import STREAM_CHUNK_SECONDS, VallEX
from vallex.audio import SAMPLE_RATE
from vallex.prompts import VoicePrompt


class ServerBusy(RuntimeError):
    """The queue is full: the request was not accepted (HTTP 503 / the app's "server busy")."""


@dataclass(frozen=True)
class SpeechRequest:
    """One request for speech; every option as in :meth:`vallex.api.VallEX.synthesize_stream`.

    ``voice``: a :class:`VoicePrompt`, a voice name (resolved by the engine's ``voice_resolver``), or None.
    ``chunk_seconds``: first chunk of each sentence (then doubling); None: one chunk per sentence.
    """

    text: str
    voice: VoicePrompt | str | None = None
    language: str = "auto"
    accent: str | None = None
    seed: int | None = None
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    long_text: str | None = None
    chunk_seconds: float | None = STREAM_CHUNK_SECONDS

    def options(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`VallEX.synthesize_stream` (all but text and prompt)."""
        return dict(language=self.language, accent=self.accent, seed=self.seed, temperature=self.temperature,
                    top_k=self.top_k, top_p=self.top_p, long_text=self.long_text, chunk_seconds=self.chunk_seconds)


_DONE = object()


class SpeechStream:
    """The audio of one submitted request: iterate for float32 chunks [n] at 24 kHz.

    Iteration raises the request's error (a ``ValueError`` for bad input) where it happened. ``cancel()``
    (or leaving a ``with`` block early) tells the engine to stop working on it.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, request: SpeechRequest, request_id: int) -> None:
        self.request = request
        self.id = request_id
        self.submitted_at = time.perf_counter()
        self.first_audio_s: float | None = None  # seconds from submit to the first chunk
        self._chunks: queue.Queue = queue.Queue()
        self._cancelled = threading.Event()
        self._finished = False

    # Consumer side --------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            item = self._chunks.get()
            if item is _DONE:
                self._finished = True
                return
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            yield item

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def __enter__(self) -> "SpeechStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self._finished:
            self.cancel()

    # Producer side (the engine) -------------------------------------------------------------------
    def _put(self, chunk: np.ndarray) -> None:
        if self.first_audio_s is None:
            self.first_audio_s = time.perf_counter() - self.submitted_at
        self._chunks.put(chunk)

    def _close(self, error: BaseException | None = None) -> None:
        self._chunks.put(error if error is not None else _DONE)


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
    """

    def __init__(self, tts: VallEX | Callable[[], VallEX], *, max_batch: int = 8, max_queue: int = 32,
                 voice_resolver: Callable[[str], VoicePrompt] | None = None) -> None:
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch must be >= 1 and max_queue >= 0, got {max_batch} and {max_queue}.")
        self.max_batch, self.max_queue = max_batch, max_queue
        self._tts_source = tts
        self._tts: VallEX | None = tts if isinstance(tts, VallEX) else None
        self._voice_resolver = voice_resolver
        self._waiting: deque[SpeechStream] = deque()
        self._lock = threading.Condition()
        self._ids = itertools.count(1)
        self._closed = False
        self.stats = EngineStats()
        self._worker = threading.Thread(target=self._run, name="vallex-speech-engine", daemon=True)
        self._worker.start()

    # Public ---------------------------------------------------------------------------------------
    def submit(self, request: SpeechRequest) -> SpeechStream:
        """Queue ``request``; raises :class:`ServerBusy` if ``max_queue`` requests are already waiting."""
        if not isinstance(request, SpeechRequest):
            raise TypeError("submit() takes a SpeechRequest.")
        if not isinstance(request.text, str) or not request.text.strip():
            raise ValueError("Text is empty: type the sentence you want to hear.")
        with self._lock:
            if self._closed:
                raise RuntimeError("The speech engine is closed.")
            if len(self._waiting) >= self.max_queue:
                self.stats.refused += 1
                raise ServerBusy(f"The server is busy: {len(self._waiting)} requests are already waiting. "
                                 "Try again in a moment.")
            stream = SpeechStream(request, next(self._ids))
            self._waiting.append(stream)
            self.stats.submitted += 1
            self.stats.waiting = len(self._waiting)
            self._lock.notify()
        return stream

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the worker; requests still waiting fail with ``RuntimeError``."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._worker.join(timeout)

    @property
    def tts(self) -> VallEX:
        """The model (loaded on first use)."""
        if self._tts is None:
            self._tts = self._tts_source()  # type: ignore[operator]
        return self._tts

    # Worker ---------------------------------------------------------------------------------------
    def _next(self) -> SpeechStream | None:
        with self._lock:
            while not self._waiting and not self._closed:
                self._lock.wait()
            if self._closed:
                while self._waiting:
                    self._waiting.popleft()._close(RuntimeError("The speech engine was closed."))
                return None
            stream = self._waiting.popleft()
            self.stats.waiting = len(self._waiting)
            self.stats.running = 1
            return stream

    def _run(self) -> None:
        while True:
            stream = self._next()
            if stream is None:
                return
            self._serve(stream)
            with self._lock:
                self.stats.running = 0

    def _resolve_voice(self, voice: VoicePrompt | str | None) -> VoicePrompt | None:
        if isinstance(voice, str) and self._voice_resolver is not None:
            return self._voice_resolver(voice)
        return self.tts.resolve_prompt(voice)

    def _serve(self, stream: SpeechStream) -> None:
        request = stream.request
        try:
            if stream.cancelled:
                raise _Cancelled
            prompt = self._resolve_voice(request.voice)
            for chunk in self.tts.synthesize_stream(request.text, prompt, **request.options()):
                if stream.cancelled:
                    raise _Cancelled
                stream._put(chunk)
        except _Cancelled:
            stream._close()
            self.stats.cancelled += 1
        except Exception as error:  # delivered to the consumer, which raises it
            stream._close(error)
            self.stats.failed += 1
        else:
            stream._close()
            self.stats.completed += 1


class _Cancelled(Exception):
    pass
