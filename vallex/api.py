"""The Python API: ``VallEX`` turns text (+ an optional voice prompt) into speech.

    from vallex import VallEX
    tts = VallEX.from_pretrained()                        # loads once; reuse the object
    wav, sr = tts.synthesize("Hello!", prompt="my_voice")  # float32 [N] at 24 kHz
    wav, sr = tts.synthesize("你好！", prompt=(audio_path, "transcript of the audio"), accent="en")

It knows nothing of any UI. Long text is split into sentences and synthesised one by one
(``long_text="fixed-prompt"`` or ``"sliding-window"``). :meth:`VallEX.synthesize_stream` yields audio
while it is being made: by default in chunks that start small (0.4 s, so the first audio comes early)
and double up to 3.2 s, several per sentence; ``chunk_seconds=None`` yields one chunk per sentence,
whose concatenation is exactly :meth:`VallEX.synthesize`'s output.

How a sentence is streamed is described in :mod:`vallex.streaming`; :meth:`VallEX.synthesize_batch`
decodes several requests together (:class:`vallex.decoding.ARBatch`).
"""
from __future__ import annotations

import dataclasses
import numbers
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vallex.audio import FRAME_RATE, SAMPLE_RATE
from vallex.config import MAX_UTTERANCE_SECONDS
from vallex.decoding import (
    MAX_FRAMES_PER_TEXT_TOKEN,
    ARBatch,
    ARRequest,
    NARInput,
    Returning,
    ar_decode,
    iter_ar_decode,
    language_ids,
    nar_decode,
    seeded_generator,
)
from vallex.languages import check_language, normalize_accent
from vallex.model import VallexModel
from vallex.prompts import VoicePrompt
from vallex.streaming import (  # noqa: F401  (the streaming constants are part of this module's API)
    CHUNK_GROWTH,
    MAX_CHUNK_SECONDS,
    NAR_LOOKAHEAD_FRAMES,
    STREAM_CHUNK_SECONDS,
    VOCODER_LOOKAHEAD_FRAMES,
    SentencePieces,
    first_chunk_frames,
)
from vallex.text import TextTokens, detect_language, split_sentences, tokenize
from vallex.text.normalize import MAX_INPUT_CHARS, SPLIT_ADVICE, has_pronounceable

#: Target text tokens one utterance may hold without the long-text mode (~15-20 s of speech).
MAX_SINGLE_UTTERANCE_TOKENS = 300
#: A sliding-window prompt longer than this falls back to the user's prompt (keeps room for the output).
MAX_SLIDING_PROMPT_SECONDS = 10.0
#: Pause between sentences of long text, and the fade applied at each edge (no clicks at the joins).
SENTENCE_PAUSE_SECONDS = 0.2
EDGE_FADE_SECONDS = 0.01

LONG_TEXT_MODES = ("fixed-prompt", "sliding-window")
#: Largest seed (torch generators take 64-bit seeds; one below 2**63 fits every integer type we pass it through).
MAX_SEED = 2**63 - 1

PromptLike = VoicePrompt | str | Path | tuple | None
ProgressCallback = Callable[[str, int, int], None]
FrameLimits = Callable[[int, int], tuple[int, int]]


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


class VallEX:
    """Zero-shot cross-lingual TTS with one loaded model; thread-compatible, not thread-safe."""

    def __init__(self, model: VallexModel, codec: Any, presets: Any = None, device: torch.device | None = None,
                 frame_limits: FrameLimits | None = None, precision: str = "float32"):
        """``frame_limits(text_tokens, prompt_frames) -> (min_frames, max_frames)`` replaces
        :func:`default_frame_limits` (benchmarks and tests hold a random model, which rarely says EOS, to
        a set length with it). ``precision``: what :func:`vallex.precision.apply_precision` made of the
        model (for display; :meth:`from_pretrained` sets it, ``dtype="auto"`` included)."""
        self.precision = precision
        self.model = model.eval()
        self.codec = codec
        self.presets = presets
        self.device = device or next(model.parameters()).device
        self.frame_limits: FrameLimits = frame_limits or default_frame_limits
        self._transcriber: Any = None  # Whisper, loaded on first use (prompts without a transcript)

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
    ) -> VallEX:
        """Load VALL-E X, EnCodec and Vocos through the weights manager (downloading when allowed).

        Args:
            weights_dir: a folder holding the weights in the documented layout (or ``$VALLEX_WEIGHTS_DIR``);
                default: the Hugging Face / torch hub caches.
            device: default CUDA, then MPS, then CPU.
            dtype: ``"float32"`` (default: exact, it reproduces the reference's codes), ``"auto"`` (the fastest
                precision measured for this device and CPU class, e.g. int8 on the AMD EPYC class; on CUDA
                bfloat16 from compute capability 8.0 on, else float16: :func:`vallex.precision.resolve_precision`;
                the CLI's and app's default),
                ``"bfloat16"``, ``"float16"`` (CUDA) or ``"int8"`` (CPU).
            num_threads: torch intra-op threads (CPU).
            presets_dir: folder of named ``.npz`` voice presets.
            tune_malloc: on CPU, let glibc's malloc keep freed activation buffers for reuse (a process-wide
                setting, :func:`vallex.memory.keep_freed_memory_for_reuse`; without it each NAR layer
                faults its buffers in afresh). False leaves the process's malloc as it is.
        """
        from vallex.checkpoint import load_model
        from vallex.codec import AudioCodec
        from vallex.prompts import PresetLibrary
        from vallex.weights import resolve_weights

        if num_threads is not None:
            if num_threads < 1:
                raise ValueError(f"num_threads must be >= 1, got {num_threads}.")
            torch.set_num_threads(num_threads)
        device = select_device(device)
        from vallex.precision import apply_precision, resolve_precision

        precision = resolve_precision(dtype, device)  # None: float32; "auto": per device and CPU class
        paths = resolve_weights(weights_dir, download=download)
        model = load_model(paths.vallex, config=paths.vallex_config, device=device)
        # float32 too: the conversion also puts the inference fast paths on (vallex.fastpath).
        model = apply_precision(model, precision, device, tune_malloc=tune_malloc)
        codec = AudioCodec.from_paths(paths, device=device)
        presets = PresetLibrary(presets_dir) if presets_dir is not None else PresetLibrary.default()
        return cls(model, codec, presets, device, precision=precision)

    # Prompts ------------------------------------------------------------------------------------
    def make_prompt(self, audio: Any, transcript: str | None = None, language: str | None = None,
                    name: str | None = None) -> VoicePrompt:
        """A :class:`VoicePrompt` from 1-15 s of audio (path, numpy, Gradio tuple) and its transcript."""
        from vallex.prompts import find_transcriber, make_prompt

        transcriber = None
        if transcript is None or not str(transcript).strip():
            # Whisper loads once per VallEX, on the first prompt that needs it.
            if self._transcriber is None:
                self._transcriber = find_transcriber()
            transcriber = self._transcriber
        return make_prompt(audio, transcript=transcript, language=language, codec=self.codec, name=name,
                           transcriber=transcriber)

    def load_transcriber(self) -> bool:
        """Find and load now the Whisper model :meth:`make_prompt` uses for a prompt without a transcript (else it
        loads on the first such prompt); returns whether one can run here (installed and on disk)."""
        from vallex.prompts import find_transcriber

        if self._transcriber is None:
            self._transcriber = find_transcriber()
        load = getattr(getattr(self._transcriber, "recognizer", None), "load", None)
        if callable(load):
            load()
        return self._transcriber is not None

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

    # Synthesis ----------------------------------------------------------------------------------
    def synthesize(self, text: str, prompt: PromptLike = None, **options: Any) -> tuple[np.ndarray, int]:
        """Speech for ``text``: (float32 waveform [N], 24000). Options as :meth:`synthesize_detailed`."""
        result = self.synthesize_detailed(text, prompt, **options)
        return result.waveform, result.sample_rate

    def synthesize_detailed(self, text: str, prompt: PromptLike = None, **options: Any) -> Synthesis:
        """Like :meth:`synthesize`, also returning per-sentence codes, phonemes and timings.

        ``chunk_seconds=x`` (default None) makes what :meth:`synthesize_stream` with that ``chunk_seconds``
        yields, with its codes; ``timings["first_audio_s"]`` is when the first chunk was ready.
        """
        start = time.perf_counter()
        sentences: list[SentenceResult] = []
        chunks = []
        first_audio = float("inf")
        for chunk in self._stream(text, prompt, sentences, **options):
            if not chunks:
                first_audio = time.perf_counter() - start
            chunks.append(chunk)
        waveform = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        elapsed = time.perf_counter() - start
        audio_seconds = len(waveform) / SAMPLE_RATE
        timings = {"total_s": elapsed, "first_audio_s": first_audio, "audio_s": audio_seconds,
                   "rtf": elapsed / audio_seconds if audio_seconds else float("inf")}
        return Synthesis(waveform, SAMPLE_RATE, sentences, timings)

    def synthesize_stream(self, text: str, prompt: PromptLike = None, *,
                          chunk_seconds: float | None = STREAM_CHUNK_SECONDS, **options: Any) -> Iterator[np.ndarray]:
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
        yield from self._stream(text, prompt, [], chunk_seconds=chunk_seconds, **options)

    def synthesize_batch(self, requests: Sequence[SynthesisRequest | dict[str, Any]]) -> list[Synthesis]:
        """Several requests decoded together: what :meth:`synthesize_detailed` gives each one alone.

        Each request is a :class:`SynthesisRequest` (or a dict of its fields): its own text, prompt, language,
        accent, seed and sampling settings. Sentence k of every request is decoded in one AR batch
        (:class:`vallex.decoding.ARBatch`: per-utterance lengths, stop and random generator; a finished
        utterance leaves the batch) and one NAR batch. With a seed, each request's codes equal what it gets
        alone. Long text works as in :meth:`synthesize` (sliding-window prompts chain within a request).
        """
        start = time.perf_counter()
        plans = [self.plan(SynthesisRequest.coerce(r)) for r in requests]
        if any(plan.chunk_frames is not None for plan in plans):
            raise ValueError("synthesize_batch makes whole sentences: leave chunk_seconds at None.")
        results: list[list[SentenceResult]] = [[] for _ in plans]
        current = [plan.voice for plan in plans]
        for index in range(max((len(plan.sentences) for plan in plans), default=0)):
            jobs: dict[int, Utterance] = {}
            batch = ARBatch(self.model)
            for number, plan in enumerate(plans):
                if index < len(plan.sentences):
                    jobs[number] = self._utterance(*plan.sentences[index], current[number], plan)
                    batch.add(number, jobs[number].ar_request(plan))
            finished = {}
            while batch:
                out = batch.step()
                if out.failed:  # one of the texts gave non-finite logits: the whole call fails, as alone
                    raise next(iter(out.failed.values()))
                finished.update(out.finished)
            inputs = [jobs[n].nar_input(finished[n].codes) for n in jobs]
            for number, codes in zip(jobs, nar_decode(self.model, inputs)):
                pieces = SentencePieces(self.codec, None)
                codes, _ = pieces.finish(codes)
                results[number].append(jobs[number].result(codes, finished[number].stop_reason, pieces.waveform))
                if plans[number].long_text == "sliding-window":
                    current[number] = self._next_sliding_prompt(results[number][-1], plans[number].voice)
        elapsed = time.perf_counter() - start
        out = []
        for sentences in results:
            waveform = np.concatenate([sentence_audio(r.waveform, i, len(sentences), first_piece=True, final=True)
                                       for i, r in enumerate(sentences)])
            audio_seconds = len(waveform) / SAMPLE_RATE
            timings = {"total_s": elapsed, "first_audio_s": elapsed, "audio_s": audio_seconds,
                       "rtf": elapsed / audio_seconds if audio_seconds else float("inf"), "batch": float(len(plans))}
            out.append(Synthesis(waveform, SAMPLE_RATE, sentences, timings))
        return out

    # Planning (shared by one request's stream, synthesize_batch and vallex.serving) -------------------
    def plan(self, request: SynthesisRequest) -> RequestPlan:
        """Check a request and split it into sentences; raises ValueError for anything it cannot speak."""
        check_sampling(request.temperature, request.top_k, request.top_p, request.best_of, request.seed)
        chunk_frames = first_chunk_frames(request.chunk_seconds)
        if request.best_of > 1:
            chunk_frames = None  # the best row is known only when the sentence ends
        accent = normalize_accent(request.accent)
        voice = self.resolve_prompt(request.prompt)
        if request.long_text is not None and request.long_text not in LONG_TEXT_MODES:
            raise ValueError(f"Unknown long-text mode {request.long_text!r}: expected one of "
                             f"{', '.join(LONG_TEXT_MODES)}.")
        sentences, language = self._plan_sentences(request.text, request.language, request.long_text)
        generator = None
        if request.seed is not None:  # on the model's device: CUDA's and MPS's multinomial refuse a CPU one
            generator = seeded_generator(request.seed, self.device)
        return RequestPlan(sentences=sentences, language=language, voice=voice, accent=accent,
                           generator=generator, chunk_frames=chunk_frames, long_text=request.long_text,
                           sampling=dict(temperature=request.temperature, top_k=request.top_k,
                                         top_p=request.top_p, best_of=request.best_of))

    def _utterance(self, text: str, tokens: TextTokens, prompt: VoicePrompt | None,
                   plan: RequestPlan) -> Utterance:
        """The model inputs of one sentence spoken with ``prompt`` (None: no prompt)."""
        n_q = self.model.config.num_quantizers
        if prompt is not None:
            prompt_ids = list(prompt.text_ids)
            prompt_codes = prompt.codes.reshape(1, -1, n_q).long()
            prompt_language = prompt.language
        else:
            prompt_ids = []
            prompt_codes = torch.zeros(1, 0, n_q, dtype=torch.long, device=self.device)
            prompt_language = tokens.langs[0] if tokens.langs else "en"
        text_ids = torch.tensor([prompt_ids + list(tokens.ids)], dtype=torch.long, device=self.device)
        text_language: str | Sequence[str] = plan.accent if plan.accent is not None else list(tokens.langs)
        langs = language_ids(text_ids.shape[1], len(prompt_ids), prompt_language, text_language, self.device)[None]
        min_frames, max_frames = self.frame_limits(text_ids.shape[1], prompt_codes.shape[1])
        return Utterance(text=text, tokens=tokens, text_ids=text_ids, text_langs=langs,
                         prompt_codes=prompt_codes.to(self.device), prompt_language=prompt_language,
                         accent=plan.accent, min_frames=min_frames, max_frames=max_frames)

    # One request, streamed -----------------------------------------------------------------------------
    def _stream(self, text: str, prompt: PromptLike, results: list[SentenceResult], *,
                progress: bool | ProgressCallback = False, **options: Any) -> Iterator[np.ndarray]:
        plan = self.plan(SynthesisRequest(text, prompt, **options))
        report = _progress_reporter(progress)
        current = plan.voice
        count = len(plan.sentences)
        for index, (sentence_text, tokens) in enumerate(plan.sentences):
            report("sentence", index, count)
            pieces = Returning(self._speak(self._utterance(sentence_text, tokens, current, plan), plan, report))
            first_piece = True
            for wav, final in pieces:
                # Fades and the pause only at the sentence's own edges: its pieces are one signal.
                yield sentence_audio(wav, index, count, first_piece=first_piece, final=final)
                first_piece = False
            result: SentenceResult = pieces.value  # type: ignore[assignment]
            results.append(result)
            if plan.long_text == "sliding-window":
                current = self._next_sliding_prompt(result, plan.voice)
        report("sentence", count, count)

    def _plan_sentences(self, text: str, language: str,
                        long_text: str | None) -> tuple[list[tuple[str, TextTokens]], str]:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("Text is empty: type the sentence you want to hear.")
        if language not in ("auto", "mix", "auto-mix"):
            check_language(language)
        if long_text is None:
            if len(text) > MAX_INPUT_CHARS:  # before the front end, whose message knows nothing of long text
                raise ValueError(
                    f"The text is too long for one utterance ({len(text)} characters; at most "
                    f"{MAX_INPUT_CHARS}). Use long-text mode (long_text='fixed-prompt' or 'sliding-window'), "
                    "which speaks it sentence by sentence."
                )
            tokens = tokenize(text, language, max_tokens=None)  # our own, friendlier limit below
            if len(tokens) > MAX_SINGLE_UTTERANCE_TOKENS:
                raise ValueError(
                    f"The text is too long for one utterance ({len(tokens)} phonemes; at most "
                    f"{MAX_SINGLE_UTTERANCE_TOKENS}). Use long-text mode (long_text='fixed-prompt' or "
                    "'sliding-window'), which speaks it sentence by sentence."
                )
            return [(text, tokens)], tokens.language
        # Long text: detect the language once on the whole text, as the reference does, then split.
        if language == "auto":
            language = detect_language(text)
        planned = []
        for sentence in split_sentences(text, language):  # "mix" sentences come back with their tags
            if not has_pronounceable(sentence):
                continue  # a stray punctuation-only piece between sentences
            if len(sentence) > MAX_INPUT_CHARS:
                raise ValueError(
                    f"The text runs {len(sentence)} characters without a sentence end (at most "
                    f"{MAX_INPUT_CHARS} in one sentence), from {sentence[:40]!r}. {SPLIT_ADVICE}"
                )
            tokens = tokenize(sentence, language, max_tokens=None)
            if len(tokens) > MAX_SINGLE_UTTERANCE_TOKENS:
                raise ValueError(
                    f"A sentence is too long to speak in one go ({len(tokens)} phonemes; at most "
                    f"{MAX_SINGLE_UTTERANCE_TOKENS}): {sentence[:60]!r}... Add punctuation to split it."
                )
            planned.append((sentence, tokens))
        if not planned:
            raise ValueError("The text has nothing to pronounce.")
        return planned, language

    def _speak(self, job: Utterance, plan: RequestPlan, report: ProgressCallback
               ) -> Generator[tuple[np.ndarray, bool], None, SentenceResult]:
        """One sentence: yields (float32 samples, is_last_piece), returns its :class:`SentenceResult`.

        ``plan.chunk_frames=None``: one piece, AR then NAR then Vocos on the whole sentence. Otherwise the
        pieces of :class:`vallex.streaming.SentencePieces`; the concatenated pieces are the sentence's
        waveform [320 * T] either way.
        """
        options = dict(min_frames=job.min_frames, max_frames=job.max_frames, generator=plan.generator,
                       on_step=lambda step: report("ar_step", step, job.max_frames), **plan.sampling)
        pieces = SentencePieces(self.codec, plan.chunk_frames)
        prompt0 = job.prompt_codes[..., 0]
        if plan.chunk_frames is None:
            ar = ar_decode(self.model, job.text_ids, job.text_langs, prompt0, **options)
        else:
            options.pop("best_of")  # streamed plans always have best_of 1
            frames = Returning(iter_ar_decode(self.model, job.text_ids, job.text_langs, prompt0, **options))
            for frames0 in frames:  # [1, n] codebook 0 so far
                if pieces.due(frames0.shape[1]):
                    yield pieces.chunk(nar_decode(self.model, [job.nar_input(frames0)])[0]), False
            ar = frames.value  # type: ignore[assignment]
        final = None
        if pieces.needs_final_nar(ar.codes.shape[1]):
            final = nar_decode(self.model, [job.nar_input(ar.codes)])[0]
        codes, last = pieces.finish(final)
        yield last, True
        return job.result(codes, ar.stop_reason, pieces.waveform)

    @staticmethod
    def _next_sliding_prompt(result: SentenceResult, original: VoicePrompt | None) -> VoicePrompt | None:
        """The sentence just spoken becomes the next prompt, with its own language (bounded length)."""
        frames = result.codes.shape[1]
        if frames == 0 or frames > MAX_SLIDING_PROMPT_SECONDS * FRAME_RATE:
            return original
        language = result.tokens.langs[0] if result.tokens.language == "mix" else result.tokens.language
        return VoicePrompt(codes=result.codes, text_ids=list(result.tokens.ids), language=language,
                           transcript=result.text)


@dataclass(frozen=True)
class SynthesisRequest:
    """One request: the arguments of :meth:`VallEX.synthesize_detailed` (see there)."""

    text: str
    prompt: PromptLike = None
    language: str = "auto"
    accent: str | None = None
    seed: int | None = None
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    best_of: int = 1
    long_text: str | None = None
    chunk_seconds: float | None = None

    @classmethod
    def coerce(cls, request: SynthesisRequest | dict[str, Any]) -> SynthesisRequest:
        """A request from itself or from a dict of its fields (unknown fields are an error)."""
        if isinstance(request, cls):
            return request
        if isinstance(request, dict):
            unknown = set(request) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"Unknown request fields: {', '.join(sorted(unknown))}.")
            return cls(**request)
        raise ValueError("A request must be a SynthesisRequest or a dict of its fields.")


@dataclass
class RequestPlan:
    """A checked request (:meth:`VallEX.plan`): its sentences and everything decoding them needs."""

    sentences: list[tuple[str, TextTokens]]
    language: str
    voice: VoicePrompt | None
    accent: str | None
    generator: torch.Generator | None
    chunk_frames: int | None  # first chunk of each sentence; None: whole sentences
    long_text: str | None
    sampling: dict[str, Any]  # temperature, top_k, top_p, best_of


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
        return ARRequest(self.text_ids, self.text_langs, self.prompt_codes[..., 0], min_frames=self.min_frames,
                         max_frames=self.max_frames, generator=plan.generator, **plan.sampling)

    def nar_input(self, codes0: torch.Tensor) -> NARInput:
        return NARInput(self.text_ids, self.text_langs, self.prompt_codes, codes0)

    def result(self, codes: torch.Tensor, stop_reason: str, waveform: np.ndarray) -> SentenceResult:
        return SentenceResult(self.text, self.tokens, codes.cpu(), stop_reason, waveform, self.prompt_language,
                              self.accent)


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


def check_sampling(temperature: Any = 1.0, top_k: Any = None, top_p: Any = None, best_of: Any = 1,
                   seed: Any = None, *, names: Mapping[str, str] | None = None) -> None:
    """Raise ValueError unless the sampling options are usable (NaN, booleans and out-of-range values are not).

    ``names`` maps a parameter to what the caller calls it (the CLI: ``{"top_k": "--top-k"}``), so each
    front end's message names the option its user typed.
    """
    def name(key: str) -> str:
        return (names or {}).get(key, key)

    def number(value: Any) -> bool:  # numbers.Real: numpy scalars too; a bool is a mistake, not 0 or 1
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))

    def integer(value: Any) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))

    if not number(temperature) or not 0 < temperature <= 10:  # NaN fails the comparison too
        raise ValueError(f"{name('temperature')} must be a number in (0, 10], got {temperature!r}.")
    if top_k is not None and (not integer(top_k) or top_k < 1):
        raise ValueError(f"{name('top_k')} must be a positive whole number (or left out), got {top_k!r}.")
    if top_p is not None and (not number(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"{name('top_p')} must be a number in (0, 1] (or left out), got {top_p!r}.")
    if not integer(best_of) or not 1 <= best_of <= 16:
        raise ValueError(f"{name('best_of')} must be a whole number from 1 to 16, got {best_of!r}.")
    if seed is not None and (not integer(seed) or not 0 <= seed <= MAX_SEED):
        raise ValueError(f"{name('seed')} must be a whole number from 0 to {MAX_SEED} (or left out), "
                         f"got {seed!r}.")


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


def _progress_reporter(progress: bool | ProgressCallback) -> ProgressCallback:
    """A callback ``(stage, done, total)``; ``True`` shows tqdm bars for sentences and AR steps."""
    if callable(progress):
        return progress
    if not progress:
        return lambda stage, done, total: None
    from tqdm.auto import tqdm

    bars: dict[str, Any] = {}

    def report(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None or (stage == "ar_step" and done == 0):
            if bar is not None:
                bar.close()
            bar = bars[stage] = tqdm(total=total, desc="sentences" if stage == "sentence" else "AR steps",
                                     leave=stage == "sentence", unit="step" if stage == "ar_step" else "sentence")
        bar.n = done
        bar.refresh()
        if stage == "sentence" and done >= total:
            bar.close()
            for other in bars.values():
                other.close()

    return report
