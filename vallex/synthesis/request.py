"""A request for speech and its plan: :class:`SynthesisRequest` (what a caller asks for), :class:`Speaker` (what
speaks it: model, codec, languages, prompts) and :func:`plan_request`, which checks a request against its speaker
and makes the :class:`RequestPlan` the scheduler decodes.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from vallex.audio.codec_format import FRAME_RATE
from vallex.config import MAX_UTTERANCE_SECONDS
from vallex.inference.ar import MAX_FRAMES_PER_TEXT_TOKEN
from vallex.inference.sampling import seeded_generator
from vallex.inference.sampling_settings import SEED, Sampling, sampling_keywords
from vallex.languages import Languages
from vallex.model import VallexModel
from vallex.prompts import VoicePrompt
from vallex.synthesis.streaming import first_chunk_frames
from vallex.synthesis.text_plan import TextPlan, plan_text
from vallex.text import TextTokens

if TYPE_CHECKING:
    from vallex.audio.codec import AudioCodec
    from vallex.synthesis.verification import Verifier

PromptLike = VoicePrompt | str | Path | tuple | None
FrameLimits = Callable[[int, int], tuple[int, int]]

class RequestTooCostly(ValueError):
    """A request would decode more sentence-candidates than the server allows (:func:`check_request_work`).

    ``param``: the request field to lower: "best_of" when it samples several candidates, else "input".
    """

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@sampling_keywords
@dataclass(frozen=True)
class SynthesisRequest:
    """One request: the arguments of :meth:`vallex.api.VallEX.synthesize_detailed` (see there).

    ``sampling``: how to sample (:class:`~vallex.inference.sampling_settings.Sampling`); its fields may also be
    given as keywords, ``SynthesisRequest(text, prompt, top_k=50, ras=True)``. ``text`` may also be a
    :class:`~vallex.synthesis.text_plan.TextPlan` (:func:`~vallex.synthesis.text_plan.plan_text` of it, made
    beforehand: the HTTP API does, to know the long-text mode before it answers); then ``language`` and
    ``long_text`` are the plan's.
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
    seed: int | None  # what seeded ``generator`` (each later fixed-prompt sentence derives its own from it)
    chunk_frames: int | None  # first chunk of each sentence; None: whole sentences
    long_text: str | None
    sampling: Sampling


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


def request_work(sentences: int, sampling: Sampling) -> int:
    """What a request costs at most, in decoded sentence-candidates: every sentence is sampled ``best_of`` times per
    round, and with ``verify`` up to ``verify_rounds`` rounds (each candidate then also through the NAR, the vocoder
    and the recogniser)."""
    rounds = sampling.verify_rounds if sampling.verify is not None else 1
    return sentences * sampling.best_of * rounds


def check_request_work(sentences: int, sampling: Sampling, limit: int | None) -> None:
    """Raise :class:`RequestTooCostly` when :func:`request_work` passes ``limit`` (None: no limit)."""
    work = request_work(sentences, sampling)
    if limit is None or work <= limit:
        return
    rounds = f" x {sampling.verify_rounds} verify_rounds" if sampling.verify is not None else ""
    raise RequestTooCostly(
        f"This request would decode up to {work} sentence-candidates ({sentences} sentence(s) x best_of "
        f"{sampling.best_of}{rounds}), more than this server's limit of {limit} per request: lower best_of or "
        "verify_rounds, or send the text in several requests.",
        param="best_of" if sampling.best_of > 1 or sampling.verify is not None else "input")


class Speaker(Protocol):
    """What the scheduler speaks with (:class:`vallex.api.VallEX` is one)."""

    model: VallexModel
    codec: AudioCodec
    device: torch.device
    frame_limits: FrameLimits
    languages: Languages  # the model's (its language rows)
    paragraph: int  # sentences of a fixed-prompt text decoded together

    def resolve_prompt(self, prompt: PromptLike) -> VoicePrompt | None: ...

    def verifier(self) -> Verifier:
        """The recognisers and speaker encoder of ``verify="asr"`` (loaded once, on first use)."""


def plan_request(speaker: Speaker, request: SynthesisRequest, max_work: int | None = None) -> RequestPlan:
    """Check a request and split it into sentences; raises ValueError for anything it cannot speak (its
    :class:`Sampling` checked itself when it was made), :class:`RequestTooCostly` past ``max_work``
    (:func:`check_request_work`; None: no limit)."""
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
    check_request_work(len(text.sentences), sampling, max_work)
    generator = None
    if seed is not None:  # on the model's device: CUDA's and MPS's multinomial refuse a CPU one
        generator = seeded_generator(seed, speaker.device)
    return RequestPlan(sentences=text.sentences, language=text.language, voice=voice, accent=accent,
                       generator=generator, seed=seed, chunk_frames=chunk_frames, long_text=text.long_text,
                       sampling=sampling)
