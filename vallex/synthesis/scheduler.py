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
while other sentences have work waiting (frames to sample, NAR passes to run), only as long as the checks have
taken no more of the thread's time than the steps in between: a costly request gets about half the time, never
all of it.
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
from vallex.inference.sampling import NonFiniteLogits, sentence_generator
from vallex.prompts import VoicePrompt
from vallex.synthesis.request import RequestPlan, Speaker, SynthesisRequest, plan_request
from vallex.synthesis.results import AudioPiece, SentenceResult, Sink, sentence_audio
from vallex.synthesis.streaming import SentencePieces
from vallex.synthesis.verification import CandidateCheck, NoRecognizerError, SentenceCheck, choose
from vallex.text import TextTokens

#: A sliding-window prompt longer than this falls back to the user's prompt (keeps room for the output).
MAX_SLIDING_PROMPT_SECONDS = 10.0
#: A paragraph is a batch: sentences of one fixed-prompt request decoded together, and the AR rows beyond which
#: no extra one starts (bench/README.md: what a batch of rows costs against one row).
PARAGRAPH_SENTENCES = 8
PARAGRAPH_MAX_ROWS = 16


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

    def ar_request(self, plan: RequestPlan, generator: torch.Generator | None) -> ARRequest:
        return ARRequest(self.text_ids, self.text_langs, self.prompt_codes[..., 0], plan.sampling,
                         min_frames=self.min_frames, max_frames=self.max_frames, generator=generator)

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
    """A sentence a request is decoding: made afresh when it starts (:meth:`Scheduler._start_sentence`), so that
    nothing of one sentence (its frames, candidates, redraws, notes, timings) can carry over to the next."""

    index: int  # which sentence of the request
    job: Utterance
    pieces: SentencePieces
    generator: torch.Generator | None  # what it samples with (its own in a paragraph, see Scheduler)
    verified: bool  # verify="asr": its candidates are checked, not chunked by the NAR
    pieces_made: bool = False  # any audio of it made yet (the fade-in at a sentence join)
    held: list[AudioPiece] = field(default_factory=list)  # its audio, made before its turn to be played
    result: SentenceResult | None = None  # set when it is done (it waits for its turn if an earlier one is not)
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
    """A request being served: its plan, where its audio stands, and the sentences being decoded.

    Sentence ``turn`` is the one being played: its audio goes to the sink as it comes. In a paragraph
    (:meth:`Scheduler._paragraph`) later sentences are decoded beside it; their audio and results are held until
    their turn.
    """

    sink: Sink
    plan: RequestPlan
    order: int  # admission order (NAR priority among equals)
    sentences: dict[int, _Sentence] = field(default_factory=dict)  # started and not yet played, by index
    started: int = 0  # sentences started so far (the next one to start)
    turn: int = 0  # the sentence being played
    voice: VoicePrompt | None = None  # its prompt (the previous sentence in sliding-window mode)
    sent_audio: bool = False
    no_similarity: str | None = None  # verify: why no sentence of the request gets a similarity (no encoder)
    prompt_wav: np.ndarray | None = None  # verify: the prompt as the codec hears it (for similarity)
    last_check: int = -1  # verify: when it last had a candidate checked (turns between requests)

    def key(self, sentence: _Sentence) -> tuple[int, int]:
        return (self.order, sentence.index)

    def priority(self, sentence: _Sentence) -> tuple[int, int, int]:
        """NAR work order: requests still waiting for their first audio, then the oldest first, then the
        sentence to be played soonest."""
        return (1 if self.sent_audio else 0, self.order, sentence.index)

    def decoding(self) -> list[_Sentence]:
        """Its sentences still being decoded, in order."""
        return [sentence for _, sentence in sorted(self.sentences.items()) if sentence.result is None]


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
        paragraph: sentences of one fixed-prompt request decoded together (1: one after another); default:
            the speaker's ``paragraph`` (:data:`PARAGRAPH_SENTENCES` unless set).
        max_rows: AR rows (sentences x ``best_of``) beyond which no extra paragraph sentence starts.
        max_request_work: a request that would cost more (:func:`vallex.synthesis.request.request_work`) fails
            at admission with :class:`~vallex.synthesis.request.RequestTooCostly`; None: no limit.
        on_end: ``f(sink, error, cancelled)`` once per request when it ends (the engine's counters).
    """

    def __init__(self, speaker: Speaker, *, nar_batch: int | None = None, exact_chunks: bool = False,
                 max_request_work: int | None = None, paragraph: int | None = None,
                 max_rows: int = PARAGRAPH_MAX_ROWS,
                 on_end: Callable[[Sink, BaseException | None, bool], None] | None = None) -> None:
        if nar_batch is not None and nar_batch < 1:
            raise ValueError(f"nar_batch must be >= 1, got {nar_batch}.")
        paragraph = speaker.paragraph if paragraph is None else paragraph
        if paragraph < 1 or max_rows < 1:
            raise ValueError(f"paragraph and max_rows must be >= 1, got {paragraph} and {max_rows}.")
        self.paragraph, self.max_rows = paragraph, max_rows
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
    def rows(self) -> int:
        """AR rows being decoded (each running sentence's ``best_of``)."""
        return self._ar.rows

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
        sink.report("sentence", 0, len(plan.sentences))
        self._start_sentence(state)  # the rest of a paragraph joins after a step (requests admitted with it first)

    def step(self) -> None:
        """One frame for every running sentence, then the NAR work that became due, then the audio, then (within
        its share of the time) one candidate check of verified best-of-N."""
        started = time.perf_counter()
        for state in [s for s in self._running.values() if s.sink.cancelled]:
            self._drop(state)
            self._end(state.sink, cancelled=True)
        # A paragraph's other sentences join here, not at the end of the step that made its first audio: their
        # prefills would otherwise run before a caller on this thread gets that audio.
        for state in list(self._running.values()):
            self._fill(state)
        if self._ar:
            out = self._ar.step()
            by_key = {state.key(sentence): (state, sentence)
                      for state in self._running.values() for sentence in state.sentences.values()}
            for key, frames in out.frames.items():
                state, sentence = by_key[key]
                sentence.frames = frames
                if sentence.index == state.turn:
                    state.sink.report("ar_step", frames.shape[1], sentence.job.max_frames)
            for key, result in out.finished.items():
                sentence = by_key[key][1]
                sentence.ar, sentence.frames = result, result.codes
            for key, error in out.failed.items():  # non-finite logits: that request fails, the others go on
                if by_key[key][0].order in self._running:
                    self._fail(by_key[key][0], error)
        wanting = sorted(self._sentences(self._wants_nar, lambda state: not _reader_behind(state)),
                         key=lambda pair: pair[0].priority(pair[1]))
        work = [(state, sentence, *self._nar_work(sentence)) for state, sentence in wanting[:self.nar_batch]]
        try:
            codes = nar_decode(self.speaker.model,
                               [sentence.pieces.nar_input(sentence.job.nar_input(frames), final=final)
                                for _, sentence, final, frames in work])
        except NonFiniteLogits as error:  # the requests whose NAR logits were not finite fail, the others go on
            if error.codes is None:
                raise
            codes = error.codes
            for index in error.inputs:
                if work[index][0].order in self._running:
                    self._fail(work[index][0], error)
        for (state, sentence, final, _), nar in zip(work, codes):
            if state.order not in self._running:  # failed just now
                continue
            if final:
                self._finish_sentence(state, sentence, nar)
            else:
                self._send(state, sentence, sentence.pieces.chunk(nar), final=False)
        for state, sentence in self._sentences(lambda s: s.ar is not None and not self._wants_nar(s),
                                               lambda state: not _is_verified(state) and not _reader_behind(state)):
            if state.order in self._running:
                self._finish_sentence(state, sentence, None)  # the chunks already cover every frame
        self._check_one_candidate(time.perf_counter() - started)

    def run(self) -> None:
        """Step until every admitted request has ended (on the caller's thread)."""
        while self._running:
            self.step()

    def _sentences(self, wanted: Callable[[_Sentence], bool],
                   request: Callable[[_Running], bool] = lambda state: True) -> list[tuple[_Running, _Sentence]]:
        """(request, sentence) for every sentence being decoded that is ``wanted``, of the requests ``request``
        accepts, in admission order."""
        return [(state, sentence) for state in list(self._running.values()) if request(state)
                for sentence in state.decoding() if wanted(sentence)]

    def _drop(self, state: _Running) -> None:
        """Take a request out: its rows leave the AR batch."""
        for sentence in state.sentences.values():
            self._ar.remove(state.key(sentence))
        del self._running[state.order]

    def _fail(self, state: _Running, error: BaseException) -> None:
        """End one running request with ``error`` (its logits were not finite); the others go on."""
        self._drop(state)
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
        of the other sentences' steps (``step_seconds``: this step's so far) while others have work waiting (frames
        to sample, or NAR passes: a stream's last chunks come after its frames)."""
        sampling = bool(self._ar) or bool(self._sentences(self._wants_nar, lambda state: not _reader_behind(state)))
        self._checks_ahead = max(0.0, self._checks_ahead - step_seconds) if sampling else 0.0
        checking = self._sentences(lambda sentence: sentence.ar is not None,
                                   lambda state: _is_verified(state) and not _reader_behind(state))
        if not checking or self._checks_ahead > 0:
            return
        # the request that waited longest, its sentence to be played soonest
        state, sentence = min(checking, key=lambda pair: (pair[0].last_check, pair[0].order, pair[1].index))
        state.last_check = next(self._check_turns)
        started = time.perf_counter()
        try:
            self._check_next_candidate(state, sentence)  # the last of a round ends it or samples anew
        except NonFiniteLogits as error:  # its NAR's logits: that request fails, the others go on
            self._fail(state, error)
        if sampling:
            self._checks_ahead += time.perf_counter() - started

    def _wants_nar(self, sentence: _Sentence) -> bool:
        if sentence.frames is None or sentence.result is not None or sentence.verified:
            return False  # verified sentences: their candidates are checked instead
        if sentence.pieces.due(sentence.frames.shape[1]):
            return True
        return sentence.ar is not None and sentence.pieces.needs_final_nar(sentence.frames.shape[1])

    def _nar_work(self, sentence: _Sentence) -> tuple[bool, Tensor]:
        """(is the sentence's final NAR, codebook-0 frames [1, n] to run it on)."""
        frames, pieces = sentence.frames, sentence.pieces
        if self.exact_chunks:
            if pieces.due(frames.shape[1]):
                return False, frames[:, :pieces.next_due]  # the chunk a stream alone would make now
            return True, frames
        return sentence.ar is not None, frames  # everything so far: a late chunk becomes a longer one

    def _finish_sentence(self, state: _Running, sentence: _Sentence, nar: Tensor | None) -> None:
        sentence_codes, last = sentence.pieces.finish(nar)
        self._send(state, sentence, last, final=True)
        self._sentence_done(state, sentence,
                            sentence.job.result(sentence_codes, sentence.ar, sentence.pieces.waveform))

    def _paragraph(self, state: _Running) -> int:
        """How many of the request's sentences may be decoded at once: ``paragraph`` for fixed-prompt text (for a
        stream, once its first audio is out), else 1 (a sliding window's prompt is the sentence before)."""
        if state.plan.long_text != "fixed-prompt":
            return 1
        if state.plan.chunk_frames is not None and not state.sent_audio:
            return 1
        return self.paragraph

    def _fill(self, state: _Running) -> None:
        """Start the request's next sentences while its paragraph and the AR batch have room (one is always
        being decoded until the last has started). No extra sentence starts while another request waits for its
        first audio: wider AR steps would make it wait longer."""
        rows = state.plan.sampling.best_of
        while (state.order in self._running and state.started < len(state.plan.sentences)
               and not state.sink.cancelled):
            decoding = len(state.decoding())
            if decoding and (decoding >= self._paragraph(state) or self._others_await_audio(state)
                             or self._ar.rows + self._reserved(state) + rows > self.max_rows):
                return
            self._start_sentence(state)

    def _others_await_audio(self, asking: _Running) -> bool:
        return any(not state.sent_audio and not state.sink.cancelled
                   for state in self._running.values() if state is not asking)

    def _reserved(self, asking: _Running) -> int:
        """AR rows the other requests will take back without asking: those with no sentence sampling now (its
        NAR or checks are running) and another sentence to start."""
        return sum(state.plan.sampling.best_of for state in self._running.values()
                   if state is not asking and state.started < len(state.plan.sentences)
                   and all(sentence.ar is not None for sentence in state.decoding()))

    def _start_sentence(self, state: _Running) -> None:
        index = state.started
        text, tokens = state.plan.sentences[index]
        job = self._utterance(text, tokens, state.voice, state.plan)
        generator = state.plan.generator
        if state.plan.long_text == "fixed-prompt" and state.plan.seed is not None and index > 0:
            generator = sentence_generator(state.plan.seed, index, self.speaker.device)
        sentence = _Sentence(index, job, SentencePieces(self.speaker.codec, state.plan.chunk_frames), generator,
                             _is_verified(state))
        state.sentences[index] = sentence
        state.started += 1
        self._ar.add(state.key(sentence), job.ar_request(state.plan, generator))

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

    def _check_next_candidate(self, state: _Running, sentence: _Sentence) -> None:
        """Verified best-of-N for a sentence whose AR rows ended, one row per call: through the NAR and the vocoder,
        scored by the recogniser (and the speaker encoder, with a prompt). After the round's last row the best so
        far is kept, and while none passes and rounds are left, ``best_of`` new rows are sampled (the request's
        generator goes on: new draws, the same for the same seed). Without a recogniser for the language, the
        best row by log-probability (the only one checked)."""
        start = time.perf_counter()
        plan, job, ar = state.plan, sentence.job, sentence.ar
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
            [check] = self._score(state, job.text, [check], [wav], language)
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
            self._ar.add(state.key(sentence), job.ar_request(plan, sentence.generator))
            return
        check = SentenceCheck(language, recognizer, threshold, round_number, best, tuple(candidates),
                              sentence.verify_note if recognizer is None else state.no_similarity,
                              sentence.check_seconds)
        chosen, nar, wav = sentence.checked[best]
        sentence.ar = dataclasses.replace(ar, codes=nar[..., 0], stop_reason=chosen.stop_reason,
                                          ras_fired=sentence.ras_fired + ar.ras_fired)  # every round's redraws
        sentence_codes, last = sentence.pieces.finish(nar, wav)
        self._send(state, sentence, last, final=True)
        self._sentence_done(state, sentence, job.result(sentence_codes, sentence.ar, sentence.pieces.waveform, check))

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

    def _score(self, state: _Running, text: str, checks: list[CandidateCheck], wavs: list[np.ndarray],
               language: str) -> list[CandidateCheck]:
        """``checks`` with their transcripts, phoneme error rates and similarities to the prompt's voice."""
        verifier = self.speaker.verifier()
        if state.plan.voice is not None and state.prompt_wav is None and state.no_similarity is None:
            state.prompt_wav = np.asarray(self.speaker.codec.decode_codes(state.plan.voice.codes),
                                          dtype=np.float32).reshape(-1)
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

    def _send(self, state: _Running, sentence: _Sentence, wav: np.ndarray, *, final: bool) -> None:
        """A piece of ``sentence``: to the sink if it is its turn, else held until then."""
        count = len(state.plan.sentences)
        audio = sentence_audio(wav, sentence.index, count, first_piece=not sentence.pieces_made, final=final)
        sentence.pieces_made = True
        piece = AudioPiece(audio, sentence.index, count, final)
        if sentence.index != state.turn:
            sentence.held.append(piece)
            return
        state.sink.put(piece)
        state.sent_audio = True

    def _sentence_done(self, state: _Running, sentence: _Sentence, result: SentenceResult) -> None:
        """Keep the result; play every sentence whose turn has come; end the request after its last."""
        sentence.result = result
        if state.plan.long_text == "sliding-window":
            state.voice = next_sliding_prompt(result, state.plan.voice)
        count = len(state.plan.sentences)
        while state.turn in state.sentences and state.sentences[state.turn].result is not None:
            done = state.sentences.pop(state.turn)
            state.sink.sentence_done(done.result)
            state.turn += 1
            if state.turn < count:
                state.sink.report("sentence", state.turn, count)
            following = state.sentences.get(state.turn)
            if following is not None:  # decoded beside the one before: what it has made so far, now
                for piece in following.held:
                    state.sink.put(piece)
                    state.sent_audio = True
                following.held.clear()
        if state.turn < count and not state.sink.cancelled:
            self._fill(state)  # the next sentence joins the AR batch at the next step
            return
        if state.turn < count:  # cancelled: the rest never starts
            self._drop(state)
        else:
            del self._running[state.order]
            state.sink.report("sentence", count, count)
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
