"""Inference: AR sampling of codebook 0, then greedy NAR stages for codebooks 1..7, as the reference's
``VALLE.inference`` does (prefix mode 1: the prompt's frames carry all 8 codebooks in the NAR).

The AR loop keeps a preallocated KV cache, embeds only the newest frame each step and needs no mask
after the first step (a new frame may attend to everything before it); its one-frame decoder calls go
through :class:`vallex.fastpath.OneFrameStep`. With ``top_k=1`` it is greedy and
reproduces the reference exactly.
"""
from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from vallex.fastpath import KVCache, OneFrameStep, model_cache_dtype
from vallex.languages import MODEL_LANGUAGE_ID
from vallex.model import VallexModel, ar_attention_mask

T = TypeVar("T")
R = TypeVar("R")

#: The reference's length rule: at most 16 generated frames per text token (prompt + target).
MAX_FRAMES_PER_TEXT_TOKEN = 16


class Returning(Generic[T, R]):
    """Iterate a generator and keep what it returns: ``loop = Returning(gen); for x in loop: ...; loop.value``."""

    def __init__(self, generator: Generator[T, Any, R]) -> None:
        self._generator = generator
        self.value: R | None = None

    def __iter__(self) -> Iterator[T]:
        self.value = yield from self._generator


def language_ids(
    num_tokens: int,
    enroll_len: int,
    prompt_language: str,
    text_language: str | Sequence[str],
    device: torch.device | str | None = None,
) -> Tensor:
    """Per-token language ids LongTensor [S] for ``[prompt transcript ; target text]``.

    The first ``enroll_len`` tokens get ``prompt_language``; the rest get ``text_language``: one
    language for all (accent control) or one per target token (as the text front end returns them).
    """
    if not 0 <= enroll_len <= num_tokens:
        raise ValueError(f"enroll_len must be between 0 and {num_tokens}, got {enroll_len}.")
    target_len = num_tokens - enroll_len
    if isinstance(text_language, str):
        target = [text_language] * target_len
    elif isinstance(text_language, (list, tuple)):
        target = list(text_language)
        if len(target) != target_len:
            raise ValueError(
                f"text_language has {len(target)} entries but there are {target_len} target text tokens."
            )
    else:
        raise ValueError(
            f"text_language must be a language code or a list of them, not {type(text_language).__name__}."
        )
    ids = []
    for lang in [prompt_language] * enroll_len + target:
        if lang not in MODEL_LANGUAGE_ID:
            raise ValueError(f"Unknown language {lang!r}: expected one of {', '.join(MODEL_LANGUAGE_ID)}.")
        ids.append(MODEL_LANGUAGE_ID[lang])
    return torch.tensor(ids, dtype=torch.long, device=device)


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Top-k then nucleus filtering of logits [B, V]; removed entries become -inf.

    Returns a new tensor when anything is filtered, else ``logits`` itself (no copy per AR step).
    """
    if (top_k is None or top_k <= 0) and (top_p is None or top_p >= 1.0):
        return logits
    if top_k is not None and top_k > 0:
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # [B, 1]
        # masked_fill, not logits[mask] = ...: boolean indexing runs a nonzero, a host-device sync on a GPU.
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cumulative > top_p
        remove[..., 1:] = remove[..., :-1].clone()  # keep the token that crosses top_p
        remove[..., 0] = False  # always keep the most likely token
        logits = logits.masked_fill(remove.scatter(-1, sorted_idx, remove), float("-inf"))
    return logits


def sample_tokens(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw one token per row of logits [B, V]; returns (tokens LongTensor [B], log-probs [B]).

    The log-probability is taken from the filtered, temperature-scaled distribution, as the reference does.
    Raises :class:`NonFiniteLogits` if a row has no finite distribution (see :func:`draw_tokens`).
    """
    tokens, logprobs, bad = draw_tokens(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                                        generator=generator)
    if bool(bad.any()):
        raise NonFiniteLogits(NonFiniteLogits.MESSAGE)
    return tokens, logprobs


class NonFiniteLogits(RuntimeError):
    """The model's logits were NaN or infinite (a 16-bit overflow, damaged weights): nothing can be sampled."""

    MESSAGE = ("The model produced non-finite logits (NaN or inf), so no token can be sampled. With float16 "
               "weights this is an overflow: use dtype bfloat16 or float32.")


def draw_tokens(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`sample_tokens` without reading anything back to the host: (tokens [B], log-probs [B], bad [B]).

    Everything runs in float32, the temperature included (why: float16 logits divided by a small temperature
    overflow to inf). ``bad[b]`` is True where row b's distribution is not finite (NaN or +inf logits, or
    every entry filtered out); that row draws token 0 instead, so that ``torch.multinomial`` never sees it
    (on CUDA a non-finite distribution is a device-side assert, which poisons the process's CUDA context
    for good). The caller checks ``bad`` together with whatever else it reads back (one sync per step).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    logits = filter_logits(logits, top_k, top_p)
    probs = F.softmax(logits, dim=-1)  # [B, V]
    bad = ~torch.isfinite(probs).all(dim=-1)  # [B]: NaN anywhere, +inf, or nothing left
    probs = probs.masked_fill(bad[:, None], 0.0)
    probs[:, 0] = probs[:, 0].masked_fill(bad, 1.0)
    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # [B]
    logprobs = F.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1)
    return tokens, logprobs, bad


def seeded_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A random generator on ``device`` seeded with ``seed``: where ``torch.multinomial`` draws for that device's
    tensors (CUDA and MPS refuse a CPU generator). The same seed gives the same codes on the same device."""
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(int(seed))
    return generator


def check_generator_device(generator: torch.Generator | None, device: torch.device) -> None:
    """ValueError unless ``generator`` (if any) draws on ``device`` (``cuda`` and ``cuda:0`` are the same)."""
    if generator is None:
        return
    got = generator.device
    if got.type != device.type or (got.index is not None and device.index is not None and got.index != device.index):
        raise ValueError(f"The random generator is on {got} but the model is on {device}: make it there "
                         "(vallex.decoding.seeded_generator(seed, device)).")


@dataclass
class ARResult:
    """Outcome of :func:`ar_decode`."""

    codes: Tensor  # LongTensor [1, T]: generated codebook-0 codes of the best row
    stop_reason: str  # "eos" or "maxlen"
    steps: int  # decoder calls, T + 1 (the call that stopped is not kept)
    first_logits: Tensor  # [B, 1025] logits of the first (prefill) step, for inspection and tests


@torch.inference_mode()
def ar_decode(
    model: VallexModel,
    text: Tensor,
    text_langs: Tensor,
    prompt_codes0: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    best_of: int = 1,
    length_penalty: float = 1.0,
    min_frames: int = 1,
    max_frames: int | None = None,
    generator: torch.Generator | None = None,
    logits_processor: Callable[[int, Tensor], Tensor] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> ARResult:
    """Sample codebook 0 after the prompt.

    Args:
        text: LongTensor [1, S], prompt transcript ids then target ids.
        text_langs: LongTensor [1, S] language ids (see :func:`language_ids`).
        prompt_codes0: LongTensor [1, P], codebook 0 of the prompt (P may be 0).
        best_of: rows sampled in parallel; the row with the highest mean log-probability of its
            *generated* tokens wins (the reference also counted BOS and the prompt's tokens, which favours
            rows with a long prompt over rows that sampled well).
        min_frames: EOS is masked until this many frames exist (the reference could return nothing).
        max_frames: stop after this many frames; default 16 × S, the reference's rule.
        logits_processor: ``f(step, logits [B, 1025]) -> logits``, applied before sampling (benchmarks
            use it to force a length).
        on_step: called with the step index after each decoder call (progress bars).
    """
    loop = Returning(_ar_loop(model, text, text_langs, prompt_codes0, temperature=temperature, top_k=top_k,
                              top_p=top_p, best_of=best_of, length_penalty=length_penalty, min_frames=min_frames,
                              max_frames=max_frames, generator=generator, logits_processor=logits_processor,
                              on_step=on_step, stream=False))
    for _ in loop:  # with stream=False the loop never yields: it runs to the end here
        raise RuntimeError("the AR loop yielded although it was not asked to stream")
    return loop.value  # type: ignore[return-value]


def iter_ar_decode(
    model: VallexModel,
    text: Tensor,
    text_langs: Tensor,
    prompt_codes0: Tensor,
    *,
    best_of: int = 1,
    **options: Any,
) -> Generator[Tensor, None, ARResult]:
    """:func:`ar_decode`, one frame at a time: yields the codebook-0 frames so far after each new frame.

    Each yielded value is LongTensor [1, n] (n = 1, 2, ...), a *view* of the decoder's frame buffer (no
    copy per step): its n values never change afterwards, but do not write to it. The generator's return
    value (``result = yield from iter_ar_decode(...)``, or ``StopIteration.value``) is the
    :class:`ARResult`, equal to what :func:`ar_decode` returns for the same arguments and generator state
    (both run the same loop). Consumers may run other work (the NAR, the vocoder) between steps.

    Args:
        best_of: must be 1: ranking rows needs every row to finish, so there would be nothing to stream.
        options: the other keyword arguments of :func:`ar_decode` (temperature, top_k, generator, ...).
    """
    if best_of != 1:  # checked here, at the call, not at the first next()
        raise ValueError(f"iter_ar_decode streams one row, so best_of must be 1 (got {best_of}); use ar_decode "
                         "to pick the best of several rows.")
    return _streaming_ar_loop(model, text, text_langs, prompt_codes0, **options)


@torch.inference_mode()  # on a generator function: entered around every step, left at every yield
def _streaming_ar_loop(*args: Any, **options: Any) -> Generator[Tensor, None, ARResult]:
    return (yield from _ar_loop(*args, **options, stream=True))


def _ar_loop(
    model: VallexModel,
    text: Tensor,
    text_langs: Tensor,
    prompt_codes0: Tensor,
    *,
    on_step: Callable[[int], None] | None = None,
    stream: bool,
    **settings: Any,
) -> Generator[Tensor, None, ARResult]:
    """The AR loop of :func:`ar_decode` and :func:`iter_ar_decode`; yields frames [1, n] only if ``stream``.

    ``settings``: the sampling keywords of :func:`ar_decode` (see :class:`FrameSampler`). Without ``stream`` it
    is a generator that never yields, so :func:`ar_decode` pays nothing per step for being able to stream.
    """
    if text.ndim != 2 or text.shape[0] != 1:
        raise ValueError(f"text must have shape [1, S], got {tuple(text.shape)}.")
    sampler = FrameSampler.create(model, text.shape[1], **settings)
    prefix_len = text.shape[1] + 1 + prompt_codes0.shape[1]
    cache, logits = prefill(model, text, text_langs, prompt_codes0, sampler.rows, prefix_len + sampler.max_frames)
    first_logits = logits.float().clone()
    step = OneFrameStep(model.ar_decoder, cache)  # the decoder, one new frame per call
    position = prefix_len  # next free cache slot
    steps = 1
    while True:
        if on_step is not None:
            on_step(steps - 1)
        tokens = sampler.sample(logits)
        if tokens is None:
            break
        if stream:
            yield sampler.frames  # [1, n] view: no copy of the frames per step
        # One new frame: its audio position is 1 + P + (n - 1) (BOS at 0).
        step_emb = model.embed_ar_audio(tokens[:, None], offset=prompt_codes0.shape[1] + sampler.num_frames)
        hidden = step(step_emb, position)  # [B, 1, D]
        position += 1
        logits = model.ar_logits(hidden[:, -1])
        steps += 1
    return sampler.result(steps, first_logits)


def prefill(model: VallexModel, text: Tensor, text_langs: Tensor, prompt_codes0: Tensor, rows: int,
            capacity: int) -> tuple[KVCache, Tensor]:
    """The AR's first call: ``[text ; BOS ; prompt]`` through the decoder into a new KV cache.

    text, text_langs: LongTensor [1, S]; prompt_codes0: LongTensor [1, P]; ``rows`` copies (best_of).
    Returns the cache (``capacity`` positions, S + 1 + P of them filled) and the logits [rows, 1025] of the
    first frame. Only the last position's output is computed (all positions fill the cache).
    """
    cfg, device = model.config, text.device
    text_emb = model.embed_text("ar", text, text_langs).expand(rows, -1, -1)  # [B, S, D]
    y = torch.cat([torch.full((1, 1), cfg.bos_id, dtype=torch.long, device=device), prompt_codes0.long()], dim=1)
    prefix = torch.cat([text_emb, model.embed_ar_audio(y.expand(rows, -1))], dim=1)  # [B, S + 1 + P, D]
    cache = KVCache.allocate(cfg, rows, capacity, device, model_cache_dtype(model, text_emb.dtype, device))
    mask = ar_attention_mask(text.shape[1], y.shape[1], device=device)
    hidden = model.ar_decoder(prefix, mask, cache=cache, start=0, output_start=prefix.shape[1] - 1)  # [B, 1, D]
    return cache, model.ar_logits(hidden[:, -1])


class FrameSampler:
    """Draws one utterance's codebook-0 frames from the decoder's logits and knows when it stops.

    Its ``rows`` (``best_of``) sample independently with one generator (on ``device``, where the rows are);
    a row that drew EOS keeps emitting EOS; the utterance stops when every row has, or at ``max_frames``. EOS
    is masked until ``min_frames`` frames exist (the reference could return nothing). The best row has the highest mean
    log-probability of its *generated* tokens (the reference also counted BOS and the prompt's tokens,
    which favours rows with a long prompt over rows that sampled well).
    """

    def __init__(self, rows: int, max_frames: int, eos: int, device: torch.device, *, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, length_penalty: float = 1.0,
                 min_frames: int = 1, generator: torch.Generator | None = None,
                 logits_processor: Callable[[int, Tensor], Tensor] | None = None) -> None:
        if rows < 1:
            raise ValueError(f"best_of must be >= 1, got {rows}.")
        self.rows, self.max_frames, self.eos = rows, max_frames, eos
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.length_penalty, self.min_frames = length_penalty, min_frames
        check_generator_device(generator, torch.device(device))
        self.generator, self.logits_processor = generator, logits_processor
        self.generated = torch.empty(rows, max_frames, dtype=torch.long, device=device)
        self.finished = torch.zeros(rows, dtype=torch.bool, device=device)
        self.sum_logprobs = torch.zeros(rows, device=device)
        self.num_frames = 0
        self.stop_reason: str | None = None

    @classmethod
    def create(cls, model: VallexModel, text_len: int, *, best_of: int = 1, max_frames: int | None = None,
               **settings: Any) -> FrameSampler:
        """A sampler for ``model`` with :func:`ar_decode`'s keywords (max_frames default: 16 per text token)."""
        if max_frames is None:
            max_frames = MAX_FRAMES_PER_TEXT_TOKEN * text_len
        return cls(best_of, max_frames, model.config.eos_id, next(model.parameters()).device, **settings)

    @property
    def frames(self) -> Tensor:
        """LongTensor [rows, n]: every frame so far (a view; do not write to it)."""
        return self.generated[:, :self.num_frames]

    def sample(self, logits: Tensor) -> Tensor | None:
        """Draw the next frame from logits [rows, 1025]: its tokens [rows], or None once the utterance stopped.

        Reads one small tensor back from the device (:meth:`draw`'s status); raises :class:`NonFiniteLogits` if
        a running row's logits were not finite.
        """
        tokens, status = self.draw(logits)
        stopped, nonfinite = status.tolist()
        return self.advance(tokens, stopped, nonfinite)

    def draw(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """The device half of :meth:`sample`: draw tokens [rows] from logits [rows, 1025], reading nothing back.

        Returns the tokens (finished rows keep emitting EOS) and a status BoolTensor [2]: (every row has drawn
        EOS, a running row's logits were not finite). Pass both, the status as Python bools, to :meth:`advance`
        (why split: a batch of utterances reads all their statuses back at once, one sync per step).
        """
        eos = self.eos
        if self.logits_processor is not None:
            logits = self.logits_processor(self.num_frames, logits)
        if self.num_frames < self.min_frames:
            logits = logits.clone()
            logits[:, eos] = float("-inf")
        tokens, logprobs, bad = draw_tokens(logits, temperature=self.temperature, top_k=self.top_k,
                                            top_p=self.top_p, generator=self.generator)
        nonfinite = (bad & ~self.finished).any()  # a finished row's logits are never used
        self.sum_logprobs += torch.where(self.finished, 0.0, logprobs)
        tokens = torch.where(self.finished, eos, tokens)  # finished rows keep emitting EOS
        self.finished |= tokens == eos
        return tokens, torch.stack([self.finished.all(), nonfinite])

    def advance(self, tokens: Tensor, stopped: bool, nonfinite: bool) -> Tensor | None:
        """The host half of :meth:`sample`, with :meth:`draw`'s tokens and status: the tokens, or None at the end."""
        if nonfinite:
            raise NonFiniteLogits(NonFiniteLogits.MESSAGE)
        if stopped:
            self.stop_reason = "eos"
            return None
        if self.num_frames >= self.max_frames:
            self.stop_reason = "maxlen"
            return None
        self.generated[:, self.num_frames] = tokens
        self.num_frames += 1
        return tokens

    def result(self, steps: int, first_logits: Tensor) -> ARResult:
        """The :class:`ARResult` once :meth:`sample` returned None (``steps``: decoder calls made)."""
        rows = self.frames  # [B, T]
        best = 0
        if self.rows > 1:
            lengths = (rows != self.eos).sum(dim=1).clamp(min=1).float()
            best = int(torch.argmax(self.sum_logprobs / lengths**self.length_penalty))
        codes = rows[best][rows[best] != self.eos][None]  # [1, T]
        return ARResult(codes=codes.clone(), stop_reason=self.stop_reason or "maxlen", steps=steps,
                        first_logits=first_logits)


@torch.inference_mode()
def nar_decode(
    model: VallexModel,
    text: Tensor,
    text_langs: Tensor,
    prompt_codes: Tensor,
    codes0: Tensor,
    on_stage: Callable[[int], None] | None = None,
) -> Tensor:
    """Greedy NAR stages (prefix mode 1): predict codebooks 1..7 of the generated frames.

    Args:
        text, text_langs: LongTensor [1, S].
        prompt_codes: LongTensor [1, P, 8] (all codebooks of the prompt; P may be 0).
        codes0: LongTensor [1, T], codebook 0 of the generated frames.
    Returns:
        LongTensor [1, T, 8].
    """
    n_q = model.config.num_quantizers
    prompt_len = prompt_codes.shape[1]
    text_emb = model.embed_text("nar", text, text_langs)  # [1, S, D]
    generated = F.pad(codes0.long()[..., None], (0, n_q - 1))  # [1, T, 8]: codebook 0, the rest unknown yet
    timeline = torch.cat([prompt_codes.long(), generated], dim=1)  # [1, P + T, 8]
    audio_emb = model.embed_nar_audio(timeline, prompt_len, stage=1)  # prompt frames carry all codebooks

    codes = [codes0.long()]
    for stage in range(n_q - 1):
        if on_stage is not None:
            on_stage(stage)
        hidden = model.nar_forward(text_emb, audio_emb, stage, output_start=prompt_len)  # [1, T, D]
        predicted = model.nar_predict_layers[stage](hidden).argmax(dim=-1)  # [1, T]
        codes.append(predicted)
        if stage < n_q - 2:
            target = audio_emb[:, prompt_len:] + model.nar_audio_embeddings[stage + 1](predicted)
            audio_emb = torch.cat([audio_emb[:, :prompt_len], target], dim=1)
    return torch.stack(codes, dim=-1)  # [1, T, 8]


@dataclass
class GenerationResult:
    codes: Tensor  # LongTensor [1, T, 8], generated frames only
    stop_reason: str  # "eos" | "maxlen"
    ar: ARResult


def generate(
    model: VallexModel,
    text: Tensor,
    enroll_len: int,
    prompt_codes: Tensor,
    prompt_language: str,
    text_language: str | Sequence[str],
    **ar_options,
) -> GenerationResult:
    """AR then NAR, from reference-style inputs.

    Args:
        text: LongTensor [1, S] = prompt transcript ids (``enroll_len`` of them) ++ target ids.
        prompt_codes: LongTensor [1, P, 8] (P = 0 without a prompt).
        prompt_language: language of the prompt transcript ("en"/"zh"/"ja").
        text_language: one language (accent override) or one per target token.
        ar_options: forwarded to :func:`ar_decode` (temperature, top_k, top_p, best_of, generator, ...).
    Returns:
        :class:`GenerationResult` with codes [1, T, 8].
    """
    if prompt_codes.ndim != 3 or prompt_codes.shape[0] != 1 or prompt_codes.shape[2] != model.config.num_quantizers:
        raise ValueError(
            f"prompt codes must have shape [1, P, {model.config.num_quantizers}], got {tuple(prompt_codes.shape)}."
        )
    device = next(model.parameters()).device
    text = text.to(device).long()
    prompt_codes = prompt_codes.to(device).long()
    langs = language_ids(text.shape[1], enroll_len, prompt_language, text_language, device)[None]  # [1, S]
    ar = ar_decode(model, text, langs, prompt_codes[..., 0], **ar_options)
    codes = nar_decode(model, text, langs, prompt_codes, ar.codes)
    return GenerationResult(codes=codes, stop_reason=ar.stop_reason, ar=ar)
