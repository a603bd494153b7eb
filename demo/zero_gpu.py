"""ZeroGPU (Hugging Face Spaces' shared GPUs): whether the app runs there, and how its work is cut into GPU calls.

On ZeroGPU the app's process has no GPU. ``import spaces`` (which :func:`start` does, on the main thread, before
the model loads) makes torch pretend to have one on that thread only, so the model can be "moved to CUDA" at
start-up; ``spaces`` then packs its weights, and each call of a function decorated by ``@spaces.GPU`` runs in a
forked worker process that holds a real GPU for the seconds the call asked for. Its arguments and results are
pickled across, so they must be plain data on the CPU.

What follows for the app (:mod:`demo.engine`): the model, EnCodec/Vocos and Whisper are loaded at start-up; voice
prompts are encoded on the CPU in the app's process (a CPU EnCodec and Whisper: no GPU call); every synthesis is
a series of GPU calls, each sized to its part of the text (:func:`plan_calls`) and at most :data:`CALL_LIMIT_S`.
"""
from __future__ import annotations

import contextvars
import dataclasses
import functools
import importlib
import inspect
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from vallex.api import synthesis_timings
from vallex.audio import SAMPLE_RATE
from vallex.languages import Languages
from vallex.synthesis.request import SynthesisRequest
from vallex.synthesis.results import SENTENCE_PAUSE_SECONDS, AudioPiece, SentenceResult, Synthesis
from vallex.synthesis.text_plan import TextPlan, plan_text

#: What one GPU call of a synthesis streams back: a piece, and the sentences finished by then.
CallPiece = tuple[AudioPiece, list[SentenceResult]]


def on_zero_gpu() -> bool:
    """Whether this is a ZeroGPU Space: ``SPACES_ZERO_GPU`` is true, read as the ``spaces`` package reads it.

    Not whether ``spaces`` is importable: it is on PyPI and in many Spaces' requirements, and ``@spaces.GPU`` does
    nothing off ZeroGPU (its own ``Config.zero_gpu`` is this same test).
    """
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def start() -> None:
    """On ZeroGPU, import ``spaces`` now, on this (the main) thread, before any model loads; else nothing.

    Why here: ``spaces`` installs its CUDA emulation only on the thread that imports it, and it must be imported
    before anything initialises CUDA.
    """
    if not on_zero_gpu():
        return
    try:
        importlib.import_module("spaces")
    except ImportError:
        raise RuntimeError("SPACES_ZERO_GPU is set but the `spaces` package is not installed: "
                           "pip install spaces (a ZeroGPU Space has it).") from None


#: The longest GPU call asked for (s): ZeroGPU's default, which every visitor may ask for. Signed-in visitors may
#: ask for up to 300 s and anonymous ones for less (their whole day's quota has been reported as 120 s); a call is
#: refused when it asks for more than the visitor has left, and a shorter one waits less in the queue.
CALL_LIMIT_S = 60
#: Estimates of a call's GPU time, not measured on ZeroGPU (no GPU was lent to measure them; bench/gpu_smoke.py
#: prints them beside what the GPU measured): a fixed part (the worker's start, the weights' move onto the GPU,
#: the vocoder), plus per character of text about 0.25 s of speech at the slowest (Mandarin and Japanese, ~4
#: characters a second) times a real-time factor of ~1.2 for AR steps on a shared GPU, plus, when each sentence
#: is checked by speech recognition (Whisper on the CPU), its transcription, every round.
GPU_SECONDS_FIXED = 15
GPU_SECONDS_PER_CHARACTER = 0.3
GPU_SECONDS_ASR_PER_CHARACTER = 0.1
#: Speech translation without a typed translation: Whisper and the translation model run first, and the spoken
#: text is not known yet (at most 15 s of speech in, so about as much out).
GPU_SECONDS_TRANSLATION = CALL_LIMIT_S


def call_seconds(characters: int, verify_rounds: int = 0) -> int:
    """GPU seconds to ask for to speak ``characters`` of text, with ``verify_rounds`` rounds of checking (0: none)."""
    return int(math.ceil(GPU_SECONDS_FIXED + _seconds_per_character(verify_rounds) * max(characters, 0)))


def _seconds_per_character(verify_rounds: int) -> float:
    if not verify_rounds:
        return GPU_SECONDS_PER_CHARACTER
    return (GPU_SECONDS_PER_CHARACTER + GPU_SECONDS_ASR_PER_CHARACTER) * verify_rounds


def plan_characters(plan: TextPlan) -> int:
    """The characters of text a plan speaks."""
    return sum(len(text) for text, _ in plan.sentences)


def request_seconds(request: SynthesisRequest) -> int:
    """GPU seconds for one call speaking ``request`` (its text a :class:`TextPlan`, as :func:`plan_calls` makes)."""
    text = request.text
    characters = plan_characters(text) if isinstance(text, TextPlan) else len(text)
    sampling = request.sampling
    return call_seconds(characters, sampling.verify_rounds if sampling.verify else 0)


def plan_calls(request: SynthesisRequest, languages: Languages | None = None) -> list[SynthesisRequest]:
    """``request`` as the GPU calls that speak it, each at most :data:`CALL_LIMIT_S` by :func:`request_seconds`.

    The text goes through the front end once, here (a ValueError for what cannot be spoken); a text that fits
    one call is one call, spoken exactly as on any other hardware. A longer one is spoken sentence by sentence
    (in the request's long-text mode, ``fixed-prompt`` when it had none), its sentences grouped into calls in
    order; a sentence too long for a call with every round of checking gets fewer rounds (at least one). Call
    ``i`` samples with seed ``seed + i``.

    Raises:
        ValueError: a sentence that no call can speak, saying the longest one can.
    """
    plan = request.text if isinstance(request.text, TextPlan) else plan_text(
        request.text, request.language, request.long_text, languages)
    sampling = request.sampling
    rounds = sampling.verify_rounds if sampling.verify else 0
    if call_seconds(plan_characters(plan), rounds) <= CALL_LIMIT_S:
        return [dataclasses.replace(request, text=plan)]
    if plan.long_text is None:  # one utterance too long for a call: speak its sentences
        plan = plan_text(plan_source(plan), request.language, "fixed-prompt", languages)
    calls: list[SynthesisRequest] = []
    group: list[tuple[str, Any]] = []

    def close_group() -> None:
        if group:
            seed = None if request.seed is None else request.seed + len(calls)
            part = TextPlan(tuple(group), plan.language, plan.long_text)
            fitting = _rounds_that_fit(plan_characters(part), rounds) if rounds else sampling.verify_rounds
            calls.append(dataclasses.replace(request, text=part, seed=seed,
                                             sampling=dataclasses.replace(sampling, verify_rounds=fitting)))
            group.clear()

    for sentence in plan.sentences:
        characters = sum(len(text) for text, _ in group) + len(sentence[0])
        if group and call_seconds(characters, rounds) > CALL_LIMIT_S:
            close_group()
        if not group and _rounds_that_fit(len(sentence[0]), max(rounds, 1) if rounds else 0) is None:
            longest = max_characters(1 if rounds else 0)
            check = " with the speech-recognition check on" if rounds else ""
            raise ValueError(f"A sentence of {len(sentence[0])} characters is too long for one GPU call on this "
                             f"Space{check} (at most {longest} characters): split it with punctuation"
                             f"{' or turn the check off' if rounds else ''}.")
        group.append(sentence)
    close_group()
    return calls


def plan_source(plan: TextPlan) -> str:
    """The text of a plan's sentences, joined as a long-text split would find them again."""
    return " ".join(text for text, _ in plan.sentences)


def max_characters(verify_rounds: int = 0) -> int:
    """The most characters one call can speak with ``verify_rounds`` rounds of checking."""
    return int((CALL_LIMIT_S - GPU_SECONDS_FIXED) / _seconds_per_character(verify_rounds))


def _rounds_that_fit(characters: int, rounds: int) -> int | None:
    """The most rounds (up to ``rounds``; 0 when unchecked) a call of ``characters`` fits in, None if none does."""
    for tried in range(rounds, 0, -1) if rounds else (0,):
        if call_seconds(characters, tried) <= CALL_LIMIT_S:
            return tried
    return None


def translation_gpu_seconds(transcript: Any, translation: Any) -> int:
    """GPU seconds for the Speech translation tab: sized by the typed translation when there is one, else
    :data:`GPU_SECONDS_TRANSLATION`; never more than :data:`CALL_LIMIT_S` (the tab refuses longer translations)."""
    if not (isinstance(translation, str) and translation.strip()):
        return GPU_SECONDS_TRANSLATION
    return min(CALL_LIMIT_S, call_seconds(len(translation)))


# The calls of one synthesis -------------------------------------------------------------------------------

class ZeroGPUStream:
    """A synthesis on a ZeroGPU Space: the GPU calls of :func:`demo.zero_gpu.plan_calls`, one after another, with
    the iteration and ``result()`` of a :class:`SpeechStream`.

    ``run_call(call)`` is the GPU call (decorated by :func:`zero_gpu`): it runs in a GPU worker and streams back
    each piece with the sentences finished by then. Their sentences are numbered across calls, and calls join
    with the pause that joins sentences.
    """

    def __init__(self, request: SynthesisRequest, run_call: Callable[[SynthesisRequest], Iterator[CallPiece]],
                 languages: Languages, progress: Callable[[str, int, int], None] | None = None) -> None:
        self.request, self._run_call, self._progress = request, run_call, progress
        self.calls = plan_calls(request, languages)
        self.sentences: list[SentenceResult] = []
        self.timings: dict[str, float] = {}

    def __iter__(self) -> Iterator[Any]:
        for piece in self.pieces():
            yield piece.audio

    def pieces(self) -> Iterator[AudioPiece]:
        """The chunks of every call, numbered by sentence over the whole text."""
        started = time.perf_counter()
        total = sum(len(call.text.sentences) for call in self.calls)
        offset = 0
        for index, call in enumerate(self.calls):
            if self._progress is not None and len(self.calls) > 1:
                self._progress("sentence", offset, total)
            for piece, finished in self._run_call(call):
                self.sentences.extend(finished)
                if "first_audio_s" not in self.timings:
                    self.timings["first_audio_s"] = time.perf_counter() - started
                audio = piece.audio
                if piece.last and piece.sentence == piece.sentences - 1 and index < len(self.calls) - 1:
                    audio = np.concatenate([audio, np.zeros(int(SENTENCE_PAUSE_SECONDS * SAMPLE_RATE), np.float32)])
                yield AudioPiece(audio, offset + piece.sentence, total, piece.last)
            offset += len(call.text.sentences)
        self.timings["gpu_calls"] = float(len(self.calls))

    def result(self, timeout: float | None = None) -> Synthesis:
        started = time.perf_counter()
        chunks = [piece.audio for piece in self.pieces()]
        waveform = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        timings = synthesis_timings(started, waveform, self.timings.get("first_audio_s", float("inf")))
        return Synthesis(waveform, SAMPLE_RATE, self.sentences, {**timings, "gpu_calls": self.timings["gpu_calls"]})

    def __enter__(self) -> ZeroGPUStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


# In a GPU call ------------------------------------------------------------------------------------------------

_IN_GPU_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("vallex_in_gpu_call", default=False)


def in_gpu_call() -> bool:
    """Whether this code runs inside a function decorated by :func:`zero_gpu` (on ZeroGPU: in its GPU worker)."""
    return _IN_GPU_CALL.get()


def zero_gpu(duration: int | Callable[..., int]) -> Callable[[Callable], Callable]:
    """``spaces.GPU(duration=...)`` on a ZeroGPU Space, else a plain call; either way :func:`in_gpu_call` is true
    inside.

    ``duration``: seconds, or a function of the decorated function's own arguments returning them (ZeroGPU calls it
    before each call, so each call asks for what its input needs).
    """
    def decorate(function: Callable) -> Callable:
        if inspect.isgeneratorfunction(function):
            @functools.wraps(function)
            def marked_generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
                # Marked step by step: a generator may be resumed in another thread's context.
                steps = function(*args, **kwargs)
                try:
                    while True:
                        token = _IN_GPU_CALL.set(True)
                        try:
                            item = next(steps)
                        except StopIteration:
                            return
                        finally:
                            _IN_GPU_CALL.reset(token)
                        yield item
                finally:
                    steps.close()
            marked: Callable = marked_generator
        else:
            @functools.wraps(function)
            def marked_function(*args: Any, **kwargs: Any) -> Any:
                token = _IN_GPU_CALL.set(True)
                try:
                    return function(*args, **kwargs)
                finally:
                    _IN_GPU_CALL.reset(token)
            marked = marked_function
        if not on_zero_gpu():
            return marked
        import spaces  # type: ignore[import-not-found]

        return spaces.GPU(duration=duration)(marked)

    return decorate
