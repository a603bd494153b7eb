"""One path from text to audio: a request becomes sentences, sentences become frames, frames become audio.

:class:`Scheduler` is the only place that does it. It plans each request
(:func:`vallex.synthesis.request.plan_request`: the voice, the accent, the seed, and the text through
:func:`vallex.synthesis.text_plan.plan_text`, which runs the front end once and decides the long-text mode),
then drives one :class:`vallex.inference.ar.ARBatch` over the current sentence of every running request: each
:meth:`Scheduler.step` samples one frame for all of them, runs the NAR for up to ``nar_batch`` sentences whose
chunk became due or that ended (:mod:`vallex.synthesis.streaming`), vocodes, and hands the audio to each
request's :class:`~vallex.synthesis.results.Sink`; a request whose sentence ended starts its next one
(sliding-window prompts chain), so it joins the batch at the next step. A request whose reader has fallen behind
(its sink is ``full``) is sent nothing until it catches up: its frames wait, its audio is not made.

Verified best-of-N (``verify="asr"``) checks a sentence's candidates (each through the NAR, the vocoder and the
recogniser: far costlier than a frame) one per step, taking turns between the requests that have some, and,
while other sentences are being sampled, only as long as the checks have taken no more of the thread's time
than the steps in between: a costly request gets about half the time, never all of it.
:meth:`vallex.api.VallEX.synthesize_stream`
(and ``synthesize``, ``synthesize_detailed``, ``synthesize_batch``) drive a scheduler on the caller's thread;
:class:`vallex.serving.SpeechEngine` is a thread, a queue and admission around one. With a seed, a request's
audio is the same whoever else is being served.

What belongs to a request (:class:`_Running`) and what to its current sentence (:class:`_Sentence`, made
afresh for each) are two objects, so that nothing of one sentence can reach the next.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from vallex.audio.codec_format import FRAME_RATE
from vallex.evaluation.speaker import VerifierUnavailableError
from vallex.inference.ar import ARBatch, ARRequest, ARResult, Candidate
from vallex.inference.generation import language_ids
from vallex.inference.length_guards import frame_bounds_of_tokens
from vallex.inference.nar import NARInput, nar_decode
from vallex.inference.sampling import NonFiniteLogits
from vallex.prompts import VoicePrompt
from vallex.synthesis.request import RequestPlan, Speaker, SynthesisRequest, plan_request
from vallex.synthesis.results import AudioPiece, SentenceResult, Sink, sentence_audio
from vallex.synthesis.streaming import SentencePieces
from vallex.synthesis.verification import CandidateCheck, NoRecognizerError, SentenceCheck, choose
from vallex.text import TextTokens

#: A sliding-window prompt longer than this falls back to the user's prompt (keeps room for the output).
MAX_SLIDING_PROMPT_SECONDS = 10.0


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


def default_nar_batch(device: torch.device, max_batch: int) -> int:
    """Sentences whose NAR runs together between two AR steps.

    On a CPU the NAR is compute-bound (a batch costs the sum of its parts), so one at a time, the most urgent
    first, keeps the AR going and each request's first audio early; an accelerator runs a batch for about
    the price of one, so it takes up to ``max_batch``.
    """
    return 1 if device.type == "cpu" else max(1, max_batch)


@dataclass
class _Sentence:
    """The sentence a request is decoding: made afresh when it starts (:meth:`Scheduler._start_sentence`), so that
    nothing of one sentence (its frames, candidates, redraws, notes, timings) can carry over to the next."""

    job: Utterance
    pieces: SentencePieces
    first_piece: bool = True  # no audio of it sent yet (the fade-in at a sentence join)
    frames: Tensor | None = None  # LongTensor [1, n]: its codebook-0 frames so far (of this round)
    ar: ARResult | None = None  # set when its AR has stopped (this round)
    # verify: every candidate so far, its NAR codes [1, T, 8] and its audio (None when it was not vocoded)
    checked: list[tuple[CandidateCheck, Tensor, np.ndarray | None]] = field(default_factory=list)
    check_seconds: float = 0.0  # verify: spent on the NAR, vocoder and scoring of its candidates
    ras_fired: int = 0  # verify: RAS redraws of its earlier rounds
    verify_note: str | None = None  # verify: why it is not checked (no recogniser for its language)
    round: int = 0  # verify: the round being checked (1 for the first)
    recognizer: str | None = None  # verify: the label of the recogniser that checks this round (None: none)
    unchecked: deque[tuple[int, Candidate]] | None = None  # verify: this round's (row, candidate)s left to check


@dataclass
class _Running:
    """A request being served: its plan, where its audio stands, and the sentence being decoded."""

    sink: Sink
    plan: RequestPlan
    order: int  # admission order (NAR priority among equals)
    # the sentence being decoded: set by Scheduler._start_sentence, replaced (never reset) by the next one
    sentence: _Sentence = field(init=False)
    index: int = 0  # which sentence that is
    voice: VoicePrompt | None = None  # its prompt (the previous sentence in sliding-window mode)
    sent_audio: bool = False
    no_similarity: str | None = None  # verify: why no sentence of the request gets a similarity (no encoder)
    prompt_wav: np.ndarray | None = None  # verify: the prompt as the codec hears it (for similarity)
    last_check: int = -1  # verify: when it last had a candidate checked (turns between requests)

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
        max_request_work: a request that would cost more (:func:`vallex.synthesis.request.request_work`) fails
            at admission with :class:`~vallex.synthesis.request.RequestTooCostly`; None: no limit.
        on_end: ``f(sink, error, cancelled)`` once per request when it ends (the engine's counters).
    """

    def __init__(self, speaker: Speaker, *, nar_batch: int | None = None, exact_chunks: bool = False,
                 max_request_work: int | None = None,
                 on_end: Callable[[Sink, BaseException | None, bool], None] | None = None) -> None:
        if nar_batch is not None and nar_batch < 1:
            raise ValueError(f"nar_batch must be >= 1, got {nar_batch}.")
        self.speaker = speaker
        self.nar_batch = nar_batch if nar_batch is not None else default_nar_batch(speaker.device, 8)
        self.exact_chunks = exact_chunks
        self.max_request_work = max_request_work
        self._on_end = on_end
        self._ar = ARBatch(speaker.model)
        self._running: dict[int, _Running] = {}
        self._order = itertools.count()
        self._check_turns = itertools.count()
        # Seconds of candidate checks not yet matched by as many seconds of the other sentences' steps.
        self._checks_ahead = 0.0

    @property
    def active(self) -> int:
        """Requests running (admitted and not ended)."""
        return len(self._running)

    @property
    def waiting_for_readers(self) -> bool:
        """Whether nothing can go on until a reader reads: every running request's sink is full and no sentence
        is being sampled (a caller that drives :meth:`step` should wait instead)."""
        return (bool(self._running) and not self._ar
                and all(_reader_behind(s) and not s.sink.cancelled for s in self._running.values()))

    # Running --------------------------------------------------------------------------------------------
    def admit(self, request: SynthesisRequest | RequestPlan, sink: Sink) -> None:
        """Plan ``request`` (unless it is a plan) and start its first sentence; a bad request ends at once
        (``sink.close(error)``) and the others go on."""
        if sink.cancelled:
            self._end(sink, cancelled=True)
            return
        try:
            plan = (request if isinstance(request, RequestPlan)
                    else plan_request(self.speaker, request, self.max_request_work))
        except Exception as error:  # noqa: BLE001 - bad input: this request fails, the others go on
            self._end(sink, error=error)
            return
        state = _Running(sink, plan, next(self._order), voice=plan.voice)
        self._running[state.order] = state
        self._start_sentence(state)

    def step(self) -> None:
        """One frame for every running sentence, then the NAR work that became due, then the audio, then (within
        its share of the time) one candidate check of verified best-of-N."""
        started = time.perf_counter()
        for state in [s for s in self._running.values() if s.sink.cancelled]:
            self._ar.remove(state.key)
            del self._running[state.order]
            self._end(state.sink, cancelled=True)
        if self._ar:
            out = self._ar.step()
            by_key = {state.key: state for state in self._running.values()}
            for key, frames in out.frames.items():
                state = by_key[key]
                state.sentence.frames = frames
                state.sink.report("ar_step", frames.shape[1], state.sentence.job.max_frames)
            for key, result in out.finished.items():
                by_key[key].sentence.ar = result
                by_key[key].sentence.frames = result.codes
            for key, error in out.failed.items():  # non-finite logits: that request fails, the others go on
                self._fail(by_key[key], error)
        wanting = sorted((s for s in self._running.values() if self._wants_nar(s) and not _reader_behind(s)),
                         key=lambda s: s.priority)
        work = [(state, *self._nar_work(state)) for state in wanting[:self.nar_batch]]
        try:
            codes = nar_decode(self.speaker.model,
                               [state.sentence.pieces.nar_input(state.sentence.job.nar_input(frames), final=final)
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
                self._send(state, state.sentence.pieces.chunk(nar), final=False)
        for state in [s for s in self._running.values() if s.sentence.ar is not None and not _is_verified(s)
                      and not self._wants_nar(s) and not _reader_behind(s)]:
            self._finish_sentence(state, None)  # the chunks already cover every frame
        self._check_one_candidate(time.perf_counter() - started)

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
    def _check_one_candidate(self, step_seconds: float) -> None:
        """Check one candidate of verified best-of-N, of the request whose turn it is, unless the checks are ahead
        of the other sentences' steps (``step_seconds``: this step's so far) while some are being sampled."""
        sampling = bool(self._ar)  # other sentences are waiting for their next frame
        self._checks_ahead = max(0.0, self._checks_ahead - step_seconds) if sampling else 0.0
        checking = [s for s in self._running.values()
                    if _is_verified(s) and s.sentence.ar is not None and not _reader_behind(s)]
        if not checking or self._checks_ahead > 0:
            return
        state = min(checking, key=lambda s: (s.last_check, s.order))  # the one that waited longest
        state.last_check = next(self._check_turns)
        started = time.perf_counter()
        try:
            self._check_next_candidate(state)  # the last of a round finishes the sentence, or samples another round
        except NonFiniteLogits as error:  # its NAR's logits: that request fails, the others go on
            self._fail(state, error)
        if sampling:
            self._checks_ahead += time.perf_counter() - started

    def _wants_nar(self, state: _Running) -> bool:
        sentence = state.sentence
        if sentence.frames is None or _is_verified(state):  # verified sentences: their candidates are checked instead
            return False
        if sentence.pieces.due(sentence.frames.shape[1]):
            return True
        return sentence.ar is not None and sentence.pieces.needs_final_nar(sentence.frames.shape[1])

    def _nar_work(self, state: _Running) -> tuple[bool, Tensor]:
        """(is the sentence's final NAR, codebook-0 frames [1, n] to run it on)."""
        frames, pieces = state.sentence.frames, state.sentence.pieces
        if self.exact_chunks:
            if pieces.due(frames.shape[1]):
                return False, frames[:, :pieces.next_due]  # the chunk a stream alone would make now
            return True, frames
        return state.sentence.ar is not None, frames  # everything so far: a late chunk becomes a longer one

    def _finish_sentence(self, state: _Running, nar: Tensor | None) -> None:
        sentence = state.sentence
        sentence_codes, last = sentence.pieces.finish(nar)
        self._send(state, last, final=True)
        self._sentence_done(state, sentence.job.result(sentence_codes, sentence.ar, sentence.pieces.waveform))

    def _start_sentence(self, state: _Running) -> None:
        state.sink.report("sentence", state.index, len(state.plan.sentences))
        text, tokens = state.plan.sentences[state.index]
        job = self._utterance(text, tokens, state.voice, state.plan)
        state.sentence = _Sentence(job, SentencePieces(self.speaker.codec, state.plan.chunk_frames))
        self._ar.add(state.key, job.ar_request(state.plan))

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

    def _check_next_candidate(self, state: _Running) -> None:
        """Verified best-of-N for a sentence whose AR rows ended, one row per call: through the NAR and the vocoder,
        scored by the recogniser (and the speaker encoder, with a prompt). After the round's last row the best so
        far is kept, and while none passes and rounds are left, ``best_of`` new rows are sampled (the request's
        generator goes on: new draws, the same for the same seed). Without a recogniser for the language, the
        best row by log-probability (the only one checked)."""
        start = time.perf_counter()
        plan, sentence = state.plan, state.sentence
        job, ar = sentence.job, sentence.ar
        threshold, rounds = plan.sampling.verify_threshold, plan.sampling.verify_rounds
        language = job.tokens.language
        if sentence.unchecked is None:  # the round's rows have just ended
            sentence.round += 1
            sentence.recognizer = self._recognizer_label(sentence, language)
            rows = ar.candidates if sentence.recognizer is not None else ar.candidates[:1]
            sentence.unchecked = deque(enumerate(rows))
        row, candidate = sentence.unchecked.popleft()
        check = CandidateCheck(sentence.round, row, candidate.codes.shape[1], candidate.stop_reason,
                               candidate.mean_logprob)
        [codes] = nar_decode(self.speaker.model, [job.nar_input(candidate.codes.to(self.speaker.device))])
        wav: np.ndarray | None = None
        recognizer = sentence.recognizer
        if recognizer is not None:
            wav = np.asarray(self.speaker.codec.decode_codes(codes), dtype=np.float32).reshape(-1)
            [check] = self._score(state, [check], [wav], language)
        sentence.checked.append((check, codes, wav))
        sentence.check_seconds += time.perf_counter() - start
        if sentence.unchecked:  # the round's other rows: at the next steps
            return
        sentence.unchecked = None
        round_number = sentence.round
        candidates = [check for check, _, _ in sentence.checked]
        best = choose(candidates)
        if (recognizer is not None and not candidates[best].passes(threshold)
                and round_number < rounds and not state.sink.cancelled):
            sentence.ras_fired += ar.ras_fired
            sentence.ar, sentence.frames = None, None
            self._ar.add(state.key, job.ar_request(plan))
            return
        check = SentenceCheck(language, recognizer, threshold, round_number, best, tuple(candidates),
                              sentence.verify_note if recognizer is None else state.no_similarity,
                              sentence.check_seconds)
        chosen, nar, wav = sentence.checked[best]
        sentence.ar = dataclasses.replace(ar, codes=nar[..., 0], stop_reason=chosen.stop_reason,
                                          ras_fired=sentence.ras_fired + ar.ras_fired)  # every round's redraws
        sentence_codes, last = sentence.pieces.finish(nar, wav)
        self._send(state, last, final=True)
        self._sentence_done(state, job.result(sentence_codes, sentence.ar, sentence.pieces.waveform, check))

    def _recognizer_label(self, sentence: _Sentence, language: str) -> str | None:
        """The label of the recogniser that checks ``language``, or None (the sentence's note says why)."""
        if language == "mix":  # one recogniser pass is told one language
            sentence.verify_note = ("Mixed-language sentences are not checked by speech recognition; ranked by "
                                    "log-probability.")
            return None
        try:  # the verifier remembers a language it has no recogniser for: no second load, no second round
            return self.speaker.verifier().recognizer(language).label
        except NoRecognizerError as error:
            sentence.verify_note = f"{error} Ranked by log-probability instead."
            return None

    def _score(self, state: _Running, checks: list[CandidateCheck], wavs: list[np.ndarray],
               language: str) -> list[CandidateCheck]:
        """``checks`` with their transcripts, phoneme error rates and similarities to the prompt's voice."""
        verifier = self.speaker.verifier()
        if state.plan.voice is not None and state.prompt_wav is None and state.no_similarity is None:
            state.prompt_wav = np.asarray(self.speaker.codec.decode_codes(state.plan.voice.codes),
                                          dtype=np.float32).reshape(-1)
        text = state.sentence.job.text
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
        audio = sentence_audio(wav, state.index, count, first_piece=state.sentence.first_piece, final=final)
        state.sink.put(AudioPiece(audio, state.index, count, final))
        state.sentence.first_piece = False
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


def _is_verified(state: _Running) -> bool:
    return state.plan.sampling.verify is not None


def _reader_behind(state: _Running) -> bool:
    """Whether the request's reader has fallen behind (its sink is ``full``): it is sent nothing until it reads."""
    return bool(getattr(state.sink, "full", False))


def next_sliding_prompt(result: SentenceResult, original: VoicePrompt | None) -> VoicePrompt | None:
    """The sentence just spoken becomes the next prompt, with its own language (bounded length)."""
    frames = result.codes.shape[1]
    if frames == 0 or frames > MAX_SLIDING_PROMPT_SECONDS * FRAME_RATE:
        return original
    language = result.tokens.langs[0] if result.tokens.language == "mix" else result.tokens.language
    return VoicePrompt(codes=result.codes, text_ids=list(result.tokens.ids), language=language,
                       transcript=result.text)
