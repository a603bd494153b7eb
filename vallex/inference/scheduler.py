"""One path from text to audio: a request becomes sentences, sentences become frames, frames become audio.

:class:`Scheduler` is the only place that does it. It plans each request (:func:`plan_text`: the text front end
runs once per request and decides the long-text mode; :func:`plan_request`: the voice, the accent, the
seed), then drives one :class:`vallex.inference.ar.ARBatch` over the current sentence of every running request:
each :meth:`Scheduler.step` samples one frame for all of them, runs the NAR for up to ``nar_batch`` sentences
whose chunk became due or that ended (:mod:`vallex.inference.streaming`), vocodes, and hands the audio to each request's
:class:`Sink`; a request whose sentence ended starts its next one (sliding-window prompts chain), so it joins
the batch at the next step. :meth:`vallex.api.VallEX.synthesize_stream` (and ``synthesize``,
``synthesize_detailed``, ``synthesize_batch``) drive a scheduler on the caller's thread;
:class:`vallex.serving.SpeechEngine` is a thread, a queue and admission around one. With a seed, a request's
audio is the same whoever else is being served.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from vallex.audio.codec_format import FRAME_RATE, SAMPLE_RATE
from vallex.config import MAX_UTTERANCE_SECONDS
from vallex.evaluation.speaker import VerifierUnavailableError
from vallex.inference.ar import MAX_FRAMES_PER_TEXT_TOKEN, ARBatch, ARRequest, ARResult
from vallex.inference.generation import language_ids
from vallex.inference.length_guards import frame_bounds_of_tokens, length_warning
from vallex.inference.nar import NARInput, nar_decode
from vallex.inference.sampling import NonFiniteLogits, seeded_generator
from vallex.inference.sampling_settings import SEED, Sampling, sampling_keywords
from vallex.inference.streaming import SentencePieces, first_chunk_frames
from vallex.inference.verification import CandidateCheck, NoRecognizerError, SentenceCheck, Verifier, choose
from vallex.languages import LANGUAGES, Languages
from vallex.model import VallexModel
from vallex.prompts import VoicePrompt
from vallex.text import TextTokens, detect_language, split_sentences, tokenize
from vallex.text.normalize import MAX_INPUT_CHARS, SPLIT_ADVICE, has_pronounceable

if TYPE_CHECKING:
    from vallex.audio.codec import AudioCodec

#: Target text tokens one utterance may hold without the long-text mode (~15-20 s of speech).
MAX_SINGLE_UTTERANCE_TOKENS = 300
#: A sliding-window prompt longer than this falls back to the user's prompt (keeps room for the output).
MAX_SLIDING_PROMPT_SECONDS = 10.0
#: Pause between sentences of long text, and the fade applied at each edge (no clicks at the joins).
SENTENCE_PAUSE_SECONDS = 0.2
EDGE_FADE_SECONDS = 0.01

LONG_TEXT_MODES = ("fixed-prompt", "sliding-window")
#: ``long_text="auto"``: one utterance when the text fits, else ``"fixed-prompt"`` (the HTTP API's default).
AUTO_LONG_TEXT = "auto"

PromptLike = VoicePrompt | str | Path | tuple | None
FrameLimits = Callable[[int, int], tuple[int, int]]


@dataclass
class SentenceResult:
    """One synthesised utterance."""

    text: str
    tokens: TextTokens
    codes: torch.Tensor  # LongTensor [1, T, 8]
    stop_reason: str
    waveform: np.ndarray  # float32 [320 * T] at 24 kHz (before pauses/fades)
    prompt_language: str | None
    accent: str | None
    ras_fired: int = 0  # AR draws repetition-aware sampling replaced
    verification: SentenceCheck | None = None  # verify="asr": its candidates, scores and rounds

    @property
    def warning(self) -> str | None:
        """One line when the sentence stopped at its length limit instead of ending by itself, or failed (or
        missed) its check by speech recognition."""
        lines = [length_warning(self.stop_reason, self.codes.shape[1]),
                 self.verification.warning if self.verification is not None else None]
        return " ".join(line for line in lines if line) or None


@dataclass
class Synthesis:
    """Everything :meth:`VallEX.synthesize_detailed` produced."""

    waveform: np.ndarray  # float32 [N] at 24 kHz
    sample_rate: int
    sentences: list[SentenceResult]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.waveform) / self.sample_rate

    @property
    def language(self) -> str:
        return ",".join(dict.fromkeys(s.tokens.language for s in self.sentences))

    @property
    def phonemes(self) -> str:
        return " | ".join(s.tokens.phonemes for s in self.sentences)

    @property
    def warnings(self) -> list[str]:
        """Each sentence's :attr:`SentenceResult.warning` (sentences that hit their length limit)."""
        return [f"Sentence {i + 1}: {s.warning}" for i, s in enumerate(self.sentences) if s.warning]


@dataclass(frozen=True)
class TextPlan:
    """A text through the front end once: its sentences (each with its tokens), language and long-text mode."""

    sentences: tuple[tuple[str, TextTokens], ...]
    language: str
    long_text: str | None  # the mode used: None (one utterance), "fixed-prompt" or "sliding-window"


def plan_text(text: str, language: str = "auto", long_text: str | None = None,
              languages: Languages | None = None) -> TextPlan:
    """Split ``text`` into sentences and run the text front end on each, once; ValueError for what cannot be spoken.

    ``long_text``: None (one utterance), ``"fixed-prompt"``, ``"sliding-window"`` or ``"auto"`` (one utterance
    when it fits in :data:`MAX_SINGLE_UTTERANCE_TOKENS`, else fixed-prompt). ``languages``: the model's
    (``VallEX.languages``; default the public checkpoint's).
    """
    table = languages or Languages.public()
    if long_text is not None and long_text not in (*LONG_TEXT_MODES, AUTO_LONG_TEXT):
        raise ValueError(f"Unknown long-text mode {long_text!r}: expected one of "
                         f"{', '.join(LONG_TEXT_MODES)} (or 'auto').")
    if long_text == AUTO_LONG_TEXT:
        if len(text) <= MAX_INPUT_CHARS:
            try:
                sentences, language_used = _split(text, language, None, table)
                return TextPlan(tuple(sentences), language_used, None)
            except _TooLongForOneUtterance:
                pass
        long_text = "fixed-prompt"
    sentences, language_used = _split(text, language, long_text, table)
    return TextPlan(tuple(sentences), language_used, long_text)


class _TooLongForOneUtterance(ValueError):
    """The text needs the long-text mode (``long_text="auto"`` then takes it)."""


def _split(text: str, language: str, long_text: str | None,
           table: Languages) -> tuple[list[tuple[str, TextTokens]], str]:
    if not isinstance(text, str) or not text.strip():
        raise ValueError("Text is empty: type the sentence you want to hear.")
    if language not in ("auto", "mix", "auto-mix"):
        table.check(language)
    if long_text is None:
        if len(text) > MAX_INPUT_CHARS:  # before the front end, whose message knows nothing of long text
            raise ValueError(
                f"The text is too long for one utterance ({len(text)} characters; at most "
                f"{MAX_INPUT_CHARS}). Use long-text mode (long_text='fixed-prompt' or 'sliding-window'), "
                "which speaks it sentence by sentence."
            )
        tokens = tokenize(text, language, max_tokens=None, languages=table)  # our own, friendlier limit below
        if len(tokens) > MAX_SINGLE_UTTERANCE_TOKENS:
            raise _TooLongForOneUtterance(
                f"The text is too long for one utterance ({len(tokens)} phonemes; at most "
                f"{MAX_SINGLE_UTTERANCE_TOKENS}). Use long-text mode (long_text='fixed-prompt' or "
                "'sliding-window'), which speaks it sentence by sentence."
            )
        return [(text, tokens)], tokens.language
    # Long text: detect the language once on the whole text, as the reference does, then split.
    if language == "auto":
        language = detect_language(text, table.codes)
    planned = []
    for sentence in split_sentences(text, language, table):  # "mix" sentences come back with their tags
        if not has_pronounceable(sentence):
            continue  # a stray punctuation-only piece between sentences
        if len(sentence) > MAX_INPUT_CHARS:
            raise ValueError(
                f"The text runs {len(sentence)} characters without a sentence end (at most "
                f"{MAX_INPUT_CHARS} in one sentence), from {sentence[:40]!r}. {SPLIT_ADVICE}"
            )
        tokens = tokenize(sentence, language, max_tokens=None, languages=table)
        if len(tokens) > MAX_SINGLE_UTTERANCE_TOKENS:
            raise ValueError(
                f"A sentence is too long to speak in one go ({len(tokens)} phonemes; at most "
                f"{MAX_SINGLE_UTTERANCE_TOKENS}): {sentence[:60]!r}... Add punctuation to split it."
            )
        planned.append((sentence, tokens))
    if not planned:
        raise ValueError("The text has nothing to pronounce.")
    return planned, language


@sampling_keywords
@dataclass(frozen=True)
class SynthesisRequest:
    """One request: the arguments of :meth:`vallex.api.VallEX.synthesize_detailed` (see there).

    ``sampling``: how to sample (:class:`~vallex.inference.sampling_settings.Sampling`); its fields may also be
    given as keywords, ``SynthesisRequest(text, prompt, top_k=50, ras=True)``. ``text`` may also be a
    :class:`TextPlan` (:func:`plan_text` of it, made beforehand: the HTTP API does, to know the long-text mode
    before it answers); then ``language`` and ``long_text`` are the plan's.
    """

    text: str | TextPlan
    prompt: PromptLike = None
    language: str = "auto"
    accent: str | None = None
    seed: int | None = None
    long_text: str | None = None
    chunk_seconds: float | None = None
    sampling: Sampling = Sampling()

    def __post_init__(self) -> None:
        if not isinstance(self.sampling, Sampling):
            raise ValueError(f"sampling must be a Sampling, got {type(self.sampling).__name__}.")

    @classmethod
    def coerce(cls, request: SynthesisRequest | dict[str, Any]) -> SynthesisRequest:
        """A request from itself or from a dict of its fields and :class:`Sampling`'s (unknown ones are an error)."""
        if isinstance(request, cls):
            return request
        if isinstance(request, dict):
            unknown = set(request) - {f.name for f in dataclasses.fields(cls)} - set(Sampling.names())
            if unknown:
                raise ValueError(f"Unknown request fields: {', '.join(sorted(unknown))}.")
            return cls(**request)
        raise ValueError("A request must be a SynthesisRequest or a dict of its fields.")


@dataclass
class RequestPlan:
    """A checked request (:func:`plan_request`): its sentences and everything decoding them needs."""

    sentences: Sequence[tuple[str, TextTokens]]
    language: str
    voice: VoicePrompt | None
    accent: str | None
    generator: torch.Generator | None
    chunk_frames: int | None  # first chunk of each sentence; None: whole sentences
    long_text: str | None
    sampling: Sampling


@dataclass
class Utterance:
    """The model inputs of one sentence (on the model's device)."""

    text: str
    tokens: TextTokens
    text_ids: torch.Tensor  # LongTensor [1, S]: prompt transcript ids ++ target ids
    text_langs: torch.Tensor  # LongTensor [1, S]
    prompt_codes: torch.Tensor  # LongTensor [1, P, 8]
    prompt_language: str
    accent: str | None
    min_frames: int
    max_frames: int

    def ar_request(self, plan: RequestPlan) -> ARRequest:
        return ARRequest(self.text_ids, self.text_langs, self.prompt_codes[..., 0], plan.sampling,
                         min_frames=self.min_frames, max_frames=self.max_frames, generator=plan.generator)

    def nar_input(self, codes0: torch.Tensor) -> NARInput:
        return NARInput(self.text_ids, self.text_langs, self.prompt_codes, codes0)

    def result(self, codes: torch.Tensor, ar: ARResult, waveform: np.ndarray,
               verification: SentenceCheck | None = None) -> SentenceResult:
        return SentenceResult(self.text, self.tokens, codes.cpu(), ar.stop_reason, waveform, self.prompt_language,
                              self.accent, ar.ras_fired, verification)


def sentence_audio(wav: np.ndarray, index: int, count: int, *, first_piece: bool, final: bool) -> np.ndarray:
    """A piece of sentence ``index`` of ``count`` as it is played: fades at sentence joins, pauses between."""
    last_sentence = index == count - 1
    return _shape_chunk(wav, pause=SENTENCE_PAUSE_SECONDS if final and not last_sentence else 0.0,
                        fade_in=first_piece and index > 0, fade_out=final and not last_sentence)


def default_frame_limits(text_tokens: int, prompt_frames: int) -> tuple[int, int]:
    """(min_frames, max_frames) the AR may generate for ``text_tokens`` text ids (prompt's + target's).

    The reference's rule (at most 16 frames per text token), and prompt + speech within the 22 s the
    checkpoint was trained on.
    """
    budget = int(MAX_UTTERANCE_SECONDS * FRAME_RATE) - prompt_frames
    if budget < FRAME_RATE:
        raise ValueError(
            f"The voice prompt is too long ({prompt_frames / FRAME_RATE:.1f} s): prompt and speech "
            f"must fit in {MAX_UTTERANCE_SECONDS:.0f} s. Use a 3-10 s prompt."
        )
    return 1, min(MAX_FRAMES_PER_TEXT_TOKEN * text_tokens, budget)


def _shape_chunk(wav: np.ndarray, *, pause: float, fade_in: bool, fade_out: bool) -> np.ndarray:
    """Short fades at sentence joins (no clicks) and a pause after every sentence but the last."""
    wav = wav.astype(np.float32, copy=True)
    n = min(int(EDGE_FADE_SECONDS * SAMPLE_RATE), len(wav) // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        if fade_in:
            wav[:n] *= ramp
        if fade_out:
            wav[-n:] *= ramp[::-1]
    if pause > 0:
        wav = np.concatenate([wav, np.zeros(int(pause * SAMPLE_RATE), dtype=np.float32)])
    return wav




# Scheduling ---------------------------------------------------------------------------------------------------
class Speaker(Protocol):
    """What the scheduler speaks with (:class:`vallex.api.VallEX` is one)."""

    model: VallexModel
    codec: AudioCodec
    device: torch.device
    frame_limits: FrameLimits
    languages: Languages  # the model's (its language rows)

    def resolve_prompt(self, prompt: PromptLike) -> VoicePrompt | None: ...

    def verifier(self) -> Verifier:
        """The recognisers and speaker encoder of ``verify="asr"`` (loaded once, on first use)."""


def plan_request(speaker: Speaker, request: SynthesisRequest) -> RequestPlan:
    """Check a request and split it into sentences; raises ValueError for anything it cannot speak (its
    :class:`Sampling` checked itself when it was made)."""
    seed = SEED.check(request.seed)
    sampling = request.sampling
    chunk_frames = first_chunk_frames(request.chunk_seconds)
    if sampling.best_of > 1 or sampling.verify is not None:
        chunk_frames = None  # the best row is known only when the sentence ends
    accent = speaker.languages.accent(request.accent)
    voice = speaker.resolve_prompt(request.prompt)
    text = request.text
    if not isinstance(text, TextPlan):
        text = plan_text(text, request.language, request.long_text, speaker.languages)
    generator = None
    if seed is not None:  # on the model's device: CUDA's and MPS's multinomial refuse a CPU one
        generator = seeded_generator(seed, speaker.device)
    return RequestPlan(sentences=text.sentences, language=text.language, voice=voice, accent=accent,
                       generator=generator, chunk_frames=chunk_frames, long_text=text.long_text, sampling=sampling)


class AudioPiece(NamedTuple):
    """One chunk of a request's audio."""

    audio: np.ndarray  # float32 [n] at 24 kHz, as played (fades and pauses included)
    sentence: int  # which sentence it belongs to (0-based)
    sentences: int  # how many the request has
    last: bool  # the sentence's last chunk


class Sink(Protocol):
    """Where one request's audio goes (:class:`vallex.serving.SpeechStream`, or a caller's collector)."""

    @property
    def cancelled(self) -> bool: ...

    def report(self, stage: str, done: int, total: int) -> None:
        """Progress: ``("sentence", i, n)`` when sentence i starts (and n at the end), ``("ar_step", frames,
        max_frames)`` after each frame."""

    def put(self, piece: AudioPiece) -> None: ...

    def sentence_done(self, result: SentenceResult) -> None: ...

    def close(self, error: BaseException | None = None) -> None:
        """The request ended: done, cancelled, or failed with ``error``."""


def default_nar_batch(device: torch.device, max_batch: int) -> int:
    """Sentences whose NAR runs together between two AR steps.

    On a CPU the NAR is compute-bound (a batch costs the sum of its parts), so one at a time, the most urgent
    first, keeps the AR going and each request's first audio early; an accelerator runs a batch for about
    the price of one, so it takes up to ``max_batch``.
    """
    return 1 if device.type == "cpu" else max(1, max_batch)


@dataclass
class _Running:
    """A request being served: its plan, the sentence being decoded, and where its audio stands."""

    sink: Sink
    plan: RequestPlan
    order: int  # admission order (NAR priority among equals)
    index: int = 0  # the sentence being decoded
    voice: VoicePrompt | None = None  # its prompt (the previous sentence in sliding-window mode)
    job: Utterance | None = None
    pieces: SentencePieces | None = None
    first_piece: bool = True
    sent_audio: bool = False
    frames: Tensor | None = None  # LongTensor [1, n]: the sentence's codebook-0 frames so far
    ar: ARResult | None = None  # set when the sentence's AR has stopped
    # verify: every candidate so far, its NAR codes [1, T, 8] and its audio (None when it was not vocoded)
    checked: list[tuple[CandidateCheck, Tensor, np.ndarray | None]] = field(default_factory=list)
    check_seconds: float = 0.0
    ras_fired: int = 0  # verify: RAS redraws of the sentence's earlier rounds
    verify_note: str | None = None  # verify: why this sentence is not checked (no recogniser for its language)
    no_similarity: str | None = None  # verify: why no sentence of the request gets a similarity (no encoder)
    prompt_wav: np.ndarray | None = None  # verify: the prompt as the codec hears it (for similarity)

    @property
    def key(self) -> tuple[int, int]:
        return (self.order, self.index)

    @property
    def priority(self) -> tuple[int, int, int]:
        """NAR work order: requests still waiting for their first audio, then the oldest first."""
        return (1 if self.sent_audio else 0, self.order, self.index)


class Scheduler:
    """Every running request of one :class:`Speaker`, one AR batch over their current sentences.

    Each :meth:`step` samples one frame for every sentence, then runs the NAR for up to ``nar_batch``
    sentences that want it (a chunk became due, or the sentence ended), in :attr:`_Running.priority` order, as
    one batch; sends the audio; and starts the next sentence of each request whose sentence ended, so that it
    joins the AR batch at the next step. A sentence whose chunk waited (a busy server) gets one longer chunk
    from all its frames so far instead of several, unless ``exact_chunks`` (then it gets the very pieces it
    would get alone, later). Not thread-safe: one thread drives it.

    Args:
        speaker: the model, codec, device, frame limits and prompt resolver.
        nar_batch: see :func:`default_nar_batch` (default: that rule for ``max_batch`` 8).
        on_end: ``f(sink, error, cancelled)`` once per request when it ends (the engine's counters).
    """

    def __init__(self, speaker: Speaker, *, nar_batch: int | None = None, exact_chunks: bool = False,
                 on_end: Callable[[Sink, BaseException | None, bool], None] | None = None) -> None:
        if nar_batch is not None and nar_batch < 1:
            raise ValueError(f"nar_batch must be >= 1, got {nar_batch}.")
        self.speaker = speaker
        self.nar_batch = nar_batch if nar_batch is not None else default_nar_batch(speaker.device, 8)
        self.exact_chunks = exact_chunks
        self._on_end = on_end
        self._ar = ARBatch(speaker.model)
        self._running: dict[int, _Running] = {}
        self._order = itertools.count()

    @property
    def active(self) -> int:
        """Requests running (admitted and not ended)."""
        return len(self._running)

    # Running --------------------------------------------------------------------------------------------
    def admit(self, request: SynthesisRequest | RequestPlan, sink: Sink) -> None:
        """Plan ``request`` (unless it is a plan) and start its first sentence; a bad request ends at once
        (``sink.close(error)``) and the others go on."""
        if sink.cancelled:
            self._end(sink, cancelled=True)
            return
        try:
            plan = request if isinstance(request, RequestPlan) else plan_request(self.speaker, request)
        except Exception as error:  # noqa: BLE001 - bad input: this request fails, the others go on
            self._end(sink, error=error)
            return
        state = _Running(sink, plan, next(self._order), voice=plan.voice)
        self._running[state.order] = state
        self._start_sentence(state)

    def step(self) -> None:
        """One frame for every running sentence, then the NAR work that became due, then the audio."""
        for state in [s for s in self._running.values() if s.sink.cancelled]:
            self._ar.remove(state.key)
            del self._running[state.order]
            self._end(state.sink, cancelled=True)
        if self._ar:
            out = self._ar.step()
            by_key = {state.key: state for state in self._running.values()}
            for key, frames in out.frames.items():
                state = by_key[key]
                state.frames = frames
                state.sink.report("ar_step", frames.shape[1], state.job.max_frames)
            for key, result in out.finished.items():
                by_key[key].ar = result
                by_key[key].frames = result.codes
            for key, error in out.failed.items():  # non-finite logits: that request fails, the others go on
                self._fail(by_key[key], error)
        for state in [s for s in self._running.values() if s.ar is not None and s.plan.sampling.verify is not None]:
            try:
                self._check_candidates(state)  # finishes the sentence, or samples another round of candidates
            except NonFiniteLogits as error:  # its NAR's logits: that request fails, the others go on
                self._fail(state, error)
        wanting = sorted((s for s in self._running.values() if self._wants_nar(s)), key=lambda s: s.priority)
        work = [(state, *self._nar_work(state)) for state in wanting[:self.nar_batch]]
        try:
            codes = nar_decode(self.speaker.model, [state.pieces.nar_input(state.job.nar_input(frames), final=final)
                                                    for state, final, frames in work])
        except NonFiniteLogits as error:  # the requests whose NAR logits were not finite fail, the others go on
            if error.codes is None:
                raise
            codes = error.codes
            for index in error.inputs:
                self._fail(work[index][0], error)
        for (state, final, _), nar in zip(work, codes):
            if state.order not in self._running:  # failed just now
                continue
            if final:
                self._finish_sentence(state, nar)
            else:
                self._send(state, state.pieces.chunk(nar), final=False)
        for state in [s for s in self._running.values() if s.ar is not None and not self._wants_nar(s)]:
            self._finish_sentence(state, None)  # the chunks already cover every frame

    def run(self) -> None:
        """Step until every admitted request has ended (on the caller's thread)."""
        while self._running:
            self.step()

    def _fail(self, state: _Running, error: BaseException) -> None:
        """End one running request with ``error`` (its logits were not finite); the others go on."""
        self._ar.remove(state.key)
        del self._running[state.order]
        self._end(state.sink, error=error)

    def fail_all(self, error: BaseException) -> None:
        """End every running request with ``error`` (the model itself failed) and start afresh."""
        for state in self._running.values():
            self._end(state.sink, error=error)
        self._running.clear()
        self._ar = ARBatch(self.speaker.model)

    # Helpers --------------------------------------------------------------------------------------------
    def _wants_nar(self, state: _Running) -> bool:
        if state.frames is None:
            return False
        if state.pieces.due(state.frames.shape[1]):
            return True
        return state.ar is not None and state.pieces.needs_final_nar(state.frames.shape[1])

    def _nar_work(self, state: _Running) -> tuple[bool, Tensor]:
        """(is the sentence's final NAR, codebook-0 frames [1, n] to run it on)."""
        frames, pieces = state.frames, state.pieces
        if self.exact_chunks:
            if pieces.due(frames.shape[1]):
                return False, frames[:, :pieces.next_due]  # the chunk a stream alone would make now
            return True, frames
        return state.ar is not None, frames  # everything so far: a late chunk becomes a longer one

    def _finish_sentence(self, state: _Running, nar: Tensor | None) -> None:
        sentence_codes, last = state.pieces.finish(nar)
        self._send(state, last, final=True)
        self._sentence_done(state, state.job.result(sentence_codes, state.ar, state.pieces.waveform))

    def _start_sentence(self, state: _Running) -> None:
        state.sink.report("sentence", state.index, len(state.plan.sentences))
        text, tokens = state.plan.sentences[state.index]
        state.job = self._utterance(text, tokens, state.voice, state.plan)
        state.pieces = SentencePieces(self.speaker.codec, state.plan.chunk_frames)
        state.first_piece, state.frames, state.ar = True, None, None
        state.checked, state.check_seconds, state.ras_fired, state.verify_note = [], 0.0, 0, None
        self._ar.add(state.key, state.job.ar_request(state.plan))

    def _utterance(self, text: str, tokens: TextTokens, prompt: VoicePrompt | None, plan: RequestPlan) -> Utterance:
        """The model inputs of one sentence spoken with ``prompt`` (None: no prompt)."""
        device = self.speaker.device
        n_q = self.speaker.model.config.num_quantizers
        if prompt is not None:
            prompt_ids = list(prompt.text_ids)
            prompt_codes = prompt.codes.reshape(1, -1, n_q).long()
            prompt_language = prompt.language
        else:
            prompt_ids = []
            prompt_codes = torch.zeros(1, 0, n_q, dtype=torch.long, device=device)
            prompt_language = tokens.langs[0] if tokens.langs else "en"
        text_ids = torch.tensor([prompt_ids + list(tokens.ids)], dtype=torch.long, device=device)
        text_language: str | Sequence[str] = plan.accent if plan.accent is not None else list(tokens.langs)
        langs = language_ids(text_ids.shape[1], len(prompt_ids), prompt_language, text_language, device,
                             self.speaker.languages)[None]
        min_frames, max_frames = self.speaker.frame_limits(text_ids.shape[1], prompt_codes.shape[1])
        if plan.sampling.length_guards and tokens.langs:  # bounds from the measured speaking rates of the target text
            bounds = frame_bounds_of_tokens(tokens.langs, self.speaker.languages)
            min_frames = min(max(min_frames, bounds.min_frames), max_frames)
            max_frames = max(min(max_frames, bounds.max_frames), min_frames)
        return Utterance(text=text, tokens=tokens, text_ids=text_ids, text_langs=langs,
                         prompt_codes=prompt_codes.to(device), prompt_language=prompt_language,
                         accent=plan.accent, min_frames=min_frames, max_frames=max_frames)

    def _check_candidates(self, state: _Running) -> None:
        """Verified best-of-N for a sentence whose AR rows ended: each row through the NAR and the vocoder, scored by
        the recogniser (and the speaker encoder, with a prompt); the best so far is kept, and while none passes
        and rounds are left, ``best_of`` new rows are sampled (the request's generator goes on: new draws, the
        same for the same seed). Without a recogniser for the language, the best row by log-probability."""
        start = time.perf_counter()
        plan, job, ar = state.plan, state.job, state.ar
        threshold, rounds = plan.sampling.verify_threshold, plan.sampling.verify_rounds
        round_number = 1 + max((check.round for check, _, _ in state.checked), default=0)
        checks = [CandidateCheck(round_number, row, c.codes.shape[1], c.stop_reason, c.mean_logprob)
                  for row, c in enumerate(ar.candidates)]
        language = job.tokens.language
        recognizer = self._recognizer_label(state, language)
        rows = ar.candidates if recognizer is not None else ar.candidates[:1]
        codes = nar_decode(self.speaker.model, [job.nar_input(c.codes.to(self.speaker.device)) for c in rows])
        wavs: list[np.ndarray | None] = [None] * len(codes)
        if recognizer is not None:
            wavs = [np.asarray(self.speaker.codec.decode_codes(c), dtype=np.float32).reshape(-1) for c in codes]
            checks = self._score(state, checks, wavs, language)
        state.checked += list(zip(checks, codes, wavs))
        state.check_seconds += time.perf_counter() - start
        candidates = [check for check, _, _ in state.checked]
        best = choose(candidates)
        if (recognizer is not None and not candidates[best].passes(threshold)
                and round_number < rounds and not state.sink.cancelled):
            state.ras_fired += ar.ras_fired
            state.ar, state.frames = None, None
            self._ar.add(state.key, job.ar_request(plan))
            return
        check = SentenceCheck(language, recognizer, threshold, round_number, best, tuple(candidates),
                              state.verify_note if recognizer is None else state.no_similarity, state.check_seconds)
        chosen, nar, wav = state.checked[best]
        state.ar = dataclasses.replace(ar, codes=nar[..., 0], stop_reason=chosen.stop_reason,
                                       ras_fired=state.ras_fired + ar.ras_fired)  # every round's redraws
        sentence_codes, last = state.pieces.finish(nar, wav)
        self._send(state, last, final=True)
        self._sentence_done(state, job.result(sentence_codes, state.ar, state.pieces.waveform, check))

    def _recognizer_label(self, state: _Running, language: str) -> str | None:
        """The label of the recogniser that checks ``language``, or None (the request's note says why)."""
        if language not in LANGUAGES:  # the phoneme error rate compares English, Mandarin and Japanese
            what = "Mixed-language sentences" if language == "mix" else f"Sentences in {language!r}"
            state.verify_note = f"{what} are not checked by speech recognition; ranked by log-probability."
            return None
        try:
            return self.speaker.verifier().recognizer(language).label
        except NoRecognizerError as error:
            state.verify_note = f"{error} Ranked by log-probability instead."
            return None

    def _score(self, state: _Running, checks: list[CandidateCheck], wavs: list[np.ndarray],
               language: str) -> list[CandidateCheck]:
        """``checks`` with their transcripts, phoneme error rates and similarities to the prompt's voice."""
        verifier = self.speaker.verifier()
        if state.plan.voice is not None and state.prompt_wav is None and state.no_similarity is None:
            state.prompt_wav = np.asarray(self.speaker.codec.decode_codes(state.plan.voice.codes),
                                          dtype=np.float32).reshape(-1)
        text = state.job.text
        try:
            result = verifier.verify(wavs, text, language=language, prompt=state.prompt_wav)
        except VerifierUnavailableError as error:  # no speaker encoder: intelligibility alone
            # once for the request: later rounds and sentences neither vocode the prompt nor try again
            state.no_similarity, state.prompt_wav = f"no speaker similarity: {error}", None
            result = verifier.verify(wavs, text, language=language)
        by_index = {score.index: score for score in result.scores}
        return [dataclasses.replace(check, transcript=by_index[i].transcript,
                                    phoneme_error_rate=by_index[i].phoneme_error_rate,
                                    similarity=by_index[i].similarity)
                for i, check in enumerate(checks)]

    def _send(self, state: _Running, wav: np.ndarray, *, final: bool) -> None:
        count = len(state.plan.sentences)
        audio = sentence_audio(wav, state.index, count, first_piece=state.first_piece, final=final)
        state.sink.put(AudioPiece(audio, state.index, count, final))
        state.first_piece = False
        state.sent_audio = True

    def _sentence_done(self, state: _Running, result: SentenceResult) -> None:
        state.sink.sentence_done(result)
        if state.plan.long_text == "sliding-window":
            state.voice = next_sliding_prompt(result, state.plan.voice)
        state.index += 1
        if state.index < len(state.plan.sentences) and not state.sink.cancelled:
            self._start_sentence(state)
            return
        del self._running[state.order]
        state.sink.report("sentence", state.index, len(state.plan.sentences))
        self._end(state.sink, cancelled=state.sink.cancelled)

    def _end(self, sink: Sink, *, error: BaseException | None = None, cancelled: bool = False) -> None:
        sink.close(error)
        if self._on_end is not None:
            self._on_end(sink, error, cancelled)


def next_sliding_prompt(result: SentenceResult, original: VoicePrompt | None) -> VoicePrompt | None:
    """The sentence just spoken becomes the next prompt, with its own language (bounded length)."""
    frames = result.codes.shape[1]
    if frames == 0 or frames > MAX_SLIDING_PROMPT_SECONDS * FRAME_RATE:
        return original
    language = result.tokens.langs[0] if result.tokens.language == "mix" else result.tokens.language
    return VoicePrompt(codes=result.codes, text_ids=list(result.tokens.ids), language=language,
                       transcript=result.text)
