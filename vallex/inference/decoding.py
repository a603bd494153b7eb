"""Inference: AR sampling of codebook 0, then greedy NAR stages for codebooks 1..7, as the reference's
``VALLE.inference`` does (prefix mode 1: the prompt's frames carry all 8 codebooks in the NAR).

There is one AR loop, :class:`ARBatch`: the decoders of a changing set of utterances, one frame each per
step, over one preallocated KV cache (each row writes at its own position and attends only to its own
positions; after the prefill a new frame needs no mask). One utterance is a batch of one
(:func:`ar_decode`, :func:`iter_ar_decode`). An AR step reads every weight of the decoder once whatever the
number of rows, so on a CPU (and at small batches on a GPU) a step of 8 utterances costs little more than a
step of one. Every utterance keeps its own sampling settings and random generator, so its codes are those it
gets alone (up to float32 rounding of the batched products, which only matters for a draw that lands within
~1e-6 of a probability boundary). There is one NAR entry, :func:`nar_decode`, over a padded batch (one
utterance is a batch of one); a streamed sentence's later passes are windows over the keys and values its
earlier passes kept (:class:`NARInput`, :class:`NARPrefix`). With ``top_k=1`` the AR is greedy and reproduces
the reference exactly.
"""
from __future__ import annotations

from collections.abc import Callable, Generator, Hashable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vallex.inference.fastpath import KVCache, LayerKVCache, OneFrameStep, RowPositions, model_cache_dtype
from vallex.inference.precision import device_overflow_advice
from vallex.inference.ras import RAS_THRESHOLD, RAS_TOP_P, RAS_WINDOW, min_repeats, repetition_counts
from vallex.languages import Languages
from vallex.model import AttentionKernel, VallexModel, ar_attention_mask

#: The reference's length rule: at most 16 generated frames per text token (prompt + target).
MAX_FRAMES_PER_TEXT_TOKEN = 16


def language_ids(
    num_tokens: int,
    enroll_len: int,
    prompt_language: str,
    text_language: str | Sequence[str],
    device: torch.device | str | None = None,
    languages: Languages | None = None,
) -> Tensor:
    """Per-token language ids LongTensor [S] for ``[prompt transcript ; target text]``: each language's row in
    ``languages`` (the model's table; default the public checkpoint's en=0, zh=1, ja=2).

    The first ``enroll_len`` tokens get ``prompt_language``; the rest get ``text_language``: one
    language for all (accent control) or one per target token (as the text front end returns them).
    """
    table = languages or Languages.public()
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
    ids = [table.row(lang) for lang in [prompt_language] * enroll_len + target]
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
        raise NonFiniteLogits.on(logits.device, None)
    return tokens, logprobs


class NonFiniteLogits(RuntimeError):
    """The model's logits were NaN or infinite (a 16-bit overflow, damaged weights): nothing can be sampled.

    ``inputs``: raised by :func:`nar_decode`, the indices of its inputs whose logits were not finite, and
    ``codes`` every input's codes (those of ``inputs`` meaningless), so that a batch's other utterances go on.
    """

    #: The message where nothing is known of the device.
    MESSAGE = ("The model produced non-finite logits (NaN or inf), so no token can be sampled. With float16 "
               "weights this is an overflow: use dtype bfloat16 or float32.")

    def __init__(self, message: str = MESSAGE, *, inputs: tuple[int, ...] = (),
                 codes: list[Tensor] | None = None) -> None:
        super().__init__(message)
        self.inputs, self.codes = inputs, codes

    @classmethod
    def on(cls, device: torch.device | str, where: str | None = "the AR", **details: Any) -> NonFiniteLogits:
        """The error for logits computed on ``device`` (in ``where``, e.g. "the NAR"): its advice names the dtypes
        that run natively there (:func:`vallex.inference.precision.device_overflow_advice`: float32 on a T4)."""
        place = f" in {where}" if where else ""
        return cls(f"The model produced non-finite logits (NaN or inf){place}, so no token can be chosen. With "
                   f"float16 weights this is an overflow: use dtype {device_overflow_advice(device)}.",
                   **details)


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
    # A NaN or +inf logit, or nothing left after filtering, makes the whole softmax row NaN (its max is NaN or
    # infinite), so one entry tells: [B], True where the row has no distribution.
    bad = probs[:, 0].isnan()
    probs = probs.masked_fill(bad[:, None], 0.0)
    probs[:, 0] = probs[:, 0].masked_fill(bad, 1.0)
    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # [B]
    logprobs = F.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1)
    return tokens, logprobs, bad


def draw_tokens_ras(
    logits: Tensor,
    history: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    window: int = RAS_WINDOW,
    threshold: float = RAS_THRESHOLD,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Repetition-aware sampling (:mod:`vallex.inference.ras`): (tokens [B], log-probs [B], bad [B], fired [B]).

    A candidate is drawn from the nucleus (``top_p``, default :data:`~vallex.inference.ras.RAS_TOP_P`;
    ``top_k``); where it already occurs ``ceil(threshold * window)`` times among the last ``window`` tokens of
    ``history`` (LongTensor [B, T], the utterance's generated frames, oldest first), the row takes a draw from
    the full distribution instead (its log-probability from that distribution). Both draws go through
    :func:`draw_tokens` (float32, non-finite rows kept from ``multinomial``) and both are made for every row
    at every step, so the random numbers used never depend on the data and nothing is read back.
    """
    if logits.ndim != 2:
        raise ValueError(f"RAS expects logits [B, V], got shape {tuple(logits.shape)}.")
    if history.ndim != 2 or history.shape[0] != logits.shape[0] or history.dtype != torch.long:
        raise ValueError(f"RAS needs its history [B, T] with B = {logits.shape[0]} of token ids (torch.long), got "
                         f"{history.dtype} {tuple(history.shape)}.")
    repeats = min_repeats(window, threshold)
    nucleus_p = RAS_TOP_P if top_p is None or top_p >= 1.0 else top_p
    nucleus, nucleus_logprobs, bad = draw_tokens(logits, temperature=temperature, top_k=top_k, top_p=nucleus_p,
                                                 generator=generator)
    full, full_logprobs, bad_full = draw_tokens(logits, temperature=temperature, generator=generator)
    fired = repetition_counts(nucleus, history, window) >= repeats  # [B]
    tokens = torch.where(fired, full, nucleus)
    return tokens, torch.where(fired, full_logprobs, nucleus_logprobs), bad | bad_full, fired


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
                         "(vallex.inference.decoding.seeded_generator(seed, device)).")


@dataclass(frozen=True)
class Candidate:
    """One row of an utterance's AR (``best_of`` rows make as many candidates)."""

    codes: Tensor  # LongTensor [1, T]: its codebook-0 codes, EOS dropped
    stop_reason: str  # "eos" (it ended by itself) or "maxlen" (cut at the utterance's frame limit)
    mean_logprob: float  # mean log-probability of its generated tokens (EOS included)


@dataclass
class ARResult:
    """Outcome of one utterance's AR."""

    codes: Tensor  # LongTensor [1, T]: generated codebook-0 codes of the best row
    stop_reason: str  # the best row's: "eos" or "maxlen"
    steps: int  # decoder calls, T + 1 (the call that stopped is not kept)
    first_logits: Tensor  # [B, 1025] logits of the first (prefill) step, for inspection and tests
    ras_fired: int = 0  # draws repetition-aware sampling replaced (all rows)
    candidates: tuple[Candidate, ...] = ()  # every row, best first (the first is ``codes``)


#: The fields of an :class:`ARRequest` that are model inputs; the others are its sampler's settings.
_AR_INPUTS = ("text", "text_langs", "prompt_codes0")


@dataclass
class ARRequest:
    """One utterance's AR: the arguments of :func:`ar_decode`.

    text, text_langs: LongTensor [1, S] (prompt transcript ids then target ids, and their language ids, see
    :func:`language_ids`); prompt_codes0: LongTensor [1, P], codebook 0 of the prompt (P may be 0). The
    sampling settings are :class:`FrameSampler`'s.
    """

    text: Tensor
    text_langs: Tensor
    prompt_codes0: Tensor
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    best_of: int = 1
    length_penalty: float = 1.0
    min_frames: int = 1
    max_frames: int | None = None
    generator: torch.Generator | None = None
    logits_processor: Callable[[int, Tensor], Tensor] | None = None
    ras: bool = False


@torch.inference_mode()
def ar_decode(
    model: VallexModel,
    text: Tensor,
    text_langs: Tensor,
    prompt_codes0: Tensor,
    *,
    on_step: Callable[[int], None] | None = None,
    **settings: Any,
) -> ARResult:
    """Sample codebook 0 after the prompt: one utterance through :class:`ARBatch`.

    Args:
        text: LongTensor [1, S], prompt transcript ids then target ids.
        text_langs: LongTensor [1, S] language ids (see :func:`language_ids`).
        prompt_codes0: LongTensor [1, P], codebook 0 of the prompt (P may be 0).
        on_step: called with the step index before each sampling step (progress bars).
        settings: :class:`ARRequest`'s sampling fields: temperature, top_k, top_p, ``best_of`` (rows sampled
            in parallel; the row with the highest mean log-probability of its *generated* tokens wins),
            ``min_frames`` (EOS masked until this many frames exist), ``max_frames`` (default 16 per text
            token, the reference's rule), generator, ``logits_processor`` (``f(step, logits [B, 1025])``),
            ``ras`` (repetition-aware sampling instead of plain sampling).
    """
    steps = _iterate_one(model, ARRequest(text, text_langs, prompt_codes0, **settings), on_step)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def iter_ar_decode(
    model: VallexModel,
    text: Tensor,
    text_langs: Tensor,
    prompt_codes0: Tensor,
    *,
    best_of: int = 1,
    on_step: Callable[[int], None] | None = None,
    **settings: Any,
) -> Generator[Tensor, None, ARResult]:
    """:func:`ar_decode`, one frame at a time: yields the codebook-0 frames so far after each new frame.

    Each yielded value is LongTensor [1, n] (n = 1, 2, ...), a *view* of the frame buffer (no copy per step):
    its n values never change afterwards, but do not write to it. The generator's return value
    (``result = yield from iter_ar_decode(...)``) is the :class:`ARResult`, equal to what :func:`ar_decode`
    returns for the same arguments and generator state (both run :class:`ARBatch`). Consumers may run other
    work (the NAR, the vocoder) between steps.

    Args:
        best_of: must be 1: ranking rows needs every row to finish, so there would be nothing to stream.
        settings: the other keyword arguments of :func:`ar_decode` (temperature, top_k, generator, on_step, ...).
    """
    if best_of != 1:  # checked here, at the call, not at the first next()
        raise ValueError(f"iter_ar_decode streams one row, so best_of must be 1 (got {best_of}); use ar_decode "
                         "to pick the best of several rows.")
    return _iterate_one(model, ARRequest(text, text_langs, prompt_codes0, **settings), on_step)


@torch.inference_mode()  # on a generator function: entered around every step, left at every yield
def _iterate_one(model: VallexModel, request: ARRequest,
                 on_step: Callable[[int], None] | None) -> Generator[Tensor, None, ARResult]:
    """One utterance as a batch of one: yields its frames [1, n] after each step, returns its :class:`ARResult`."""
    batch = ARBatch(model)
    batch.add(0, request)
    step = 0
    while True:
        if on_step is not None:
            on_step(step)
        step += 1
        out = batch.step()
        if 0 in out.failed:
            raise out.failed[0]
        if 0 in out.finished:
            return out.finished[0]
        yield out.frames[0]


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
    which favours rows with a long prompt over rows that sampled well). ``ras``: repetition-aware sampling
    (:func:`draw_tokens_ras`) instead of the reference's plain sampling.
    """

    def __init__(self, rows: int, max_frames: int, eos: int, device: torch.device, *, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, length_penalty: float = 1.0,
                 min_frames: int = 1, generator: torch.Generator | None = None,
                 logits_processor: Callable[[int, Tensor], Tensor] | None = None, ras: bool = False) -> None:
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
        self.ras = ras
        self._ras_fired = torch.zeros((), dtype=torch.long, device=device)  # draws RAS replaced, on the device

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

    def draw(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Draw the next tokens [rows] from logits [rows, 1025] on the device, reading nothing back.

        Returns the tokens (finished rows keep emitting EOS) and a status BoolTensor [2]: (every row has drawn
        EOS, a running row's logits were not finite). Pass both, the status as Python bools, to :meth:`advance`
        (why two halves: a batch of utterances reads all their statuses back at once, one sync per step).
        """
        eos = self.eos
        if self.logits_processor is not None:
            logits = self.logits_processor(self.num_frames, logits)
        if self.num_frames < self.min_frames:
            logits = logits.clone()
            logits[:, eos] = float("-inf")
        if self.ras:  # history: this utterance's generated frames (the prompt is natural speech)
            tokens, logprobs, bad, fired = draw_tokens_ras(logits, self.frames, temperature=self.temperature,
                                                           top_k=self.top_k, top_p=self.top_p,
                                                           generator=self.generator)
            self._ras_fired += (fired & ~self.finished).sum()
        else:
            tokens, logprobs, bad = draw_tokens(logits, temperature=self.temperature, top_k=self.top_k,
                                                top_p=self.top_p, generator=self.generator)
        nonfinite = (bad & ~self.finished).any()  # a finished row's logits are never used
        self.sum_logprobs += torch.where(self.finished, 0.0, logprobs)
        tokens = torch.where(self.finished, eos, tokens)  # finished rows keep emitting EOS
        self.finished |= tokens == eos
        return tokens, torch.stack([self.finished.all(), nonfinite])

    def advance(self, tokens: Tensor, stopped: bool, nonfinite: bool) -> Tensor | None:
        """With :meth:`draw`'s tokens and status read back: the tokens, or None once the utterance stopped.

        Raises :class:`NonFiniteLogits` if a running row's logits were not finite."""
        if nonfinite:
            raise NonFiniteLogits.on(self.generated.device)
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
        """The :class:`ARResult` once :meth:`advance` returned None (``steps``: decoder calls made)."""
        rows = self.frames  # [B, T]
        lengths = (rows != self.eos).sum(dim=1).clamp(min=1).float()
        mean = (self.sum_logprobs / lengths).tolist()
        # Stable: equal scores keep row order (one row: no ranking, as the reference).
        score = (self.sum_logprobs / lengths**self.length_penalty).tolist()
        order = sorted(range(self.rows), key=lambda r: -score[r]) if self.rows > 1 else [0]
        finished = self.finished.tolist()
        candidates = tuple(
            Candidate(rows[r][rows[r] != self.eos][None].clone(),  # [1, T_r]
                      "eos" if finished[r] or self.stop_reason == "eos" else "maxlen", mean[r])
            for r in order)
        return ARResult(codes=candidates[0].codes, stop_reason=candidates[0].stop_reason, steps=steps,
                        first_logits=first_logits, ras_fired=int(self._ras_fired) if self.ras else 0,
                        candidates=candidates)


@dataclass
class _Item:
    """The state of one utterance in an :class:`ARBatch` (its rows are ``best_of`` consecutive cache rows)."""

    key: Hashable
    prompt_len: int
    sampler: FrameSampler
    first_logits: Tensor  # [rows, 1025]
    steps: int = 1  # decoder calls so far (the prefill is the first)

    @property
    def rows(self) -> int:
        return self.sampler.rows


@dataclass
class ARStepResult:
    """What one :meth:`ARBatch.step` produced.

    ``frames[key]``: LongTensor [rows, n], every frame of that utterance so far (a view; do not write to it),
    for the utterances that got a new frame. ``finished[key]``: the :class:`ARResult` of each utterance that
    stopped at this step (it has left the batch). ``failed[key]``: the error of each utterance whose logits
    were not finite (it has left the batch; the others go on).
    """

    frames: dict[Hashable, Tensor] = field(default_factory=dict)
    finished: dict[Hashable, ARResult] = field(default_factory=dict)
    failed: dict[Hashable, NonFiniteLogits] = field(default_factory=dict)


class ARBatch:
    """The AR decoders of a changing set of utterances, advanced one frame each per :meth:`step`.

        batch = ARBatch(model)
        batch.add("a", ARRequest(text, langs, prompt0, generator=g_a))
        batch.add("b", ARRequest(...))                     # any time between steps
        while batch:
            out = batch.step()                             # out.frames / out.finished by key

    An utterance that starts alone (an empty batch: one utterance is a batch of one) decodes in its own prefill
    cache, allocated once for its longest possible length (prefix + ``max_frames``), so it never grows by
    copies. When others join, the rows are merged into a cache sized for what they use, which doubles when a
    row outgrows it (a batch of 16 rows of 10,000 possible frames each would otherwise hold gigabytes it never
    uses). Positions and lengths are host integers: a step makes no device round trip but the one that checks
    which utterances stopped. Not thread-safe: one thread drives it.
    """

    def __init__(self, model: VallexModel) -> None:
        self.model = model
        self.config = model.config
        self.device = next(model.parameters()).device
        self._items: list[_Item] = []
        self._kv: list[Tensor] = []  # per layer [R, 2, H, C, hd]
        self._lengths: list[int] = []  # per row: cache columns in use
        self._logits: Tensor | None = None  # [R, 1025]: the distribution each row samples next
        self._step: OneFrameStep | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def rows(self) -> int:
        """Cache rows in use (the sum of the utterances' ``best_of``)."""
        return len(self._lengths)

    @property
    def keys(self) -> list[Hashable]:
        return [item.key for item in self._items]

    # Joining ------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def add(self, key: Hashable, request: ARRequest) -> None:
        """Run the utterance's prefill (text + BOS + prompt) and add its rows; it samples at the next step."""
        if any(item.key == key for item in self._items):
            raise ValueError(f"An utterance with key {key!r} is already in the batch.")
        text, prompt0 = request.text.to(self.device), request.prompt_codes0.to(self.device)
        if text.ndim != 2 or text.shape[0] != 1:
            raise ValueError(f"text must have shape [1, S], got {tuple(text.shape)}.")
        settings = {f.name: getattr(request, f.name) for f in fields(request) if f.name not in _AR_INPUTS}
        sampler = FrameSampler.create(self.model, text.shape[1], **settings)
        length = text.shape[1] + 1 + prompt0.shape[1]
        alone = not self._items
        # Alone, the prefill writes straight into the batch's cache, room for every frame included; joining,
        # into one of its own size that is merged in (the same shapes either way, so the same numbers).
        cache, logits = prefill(self.model, text, request.text_langs.to(self.device), prompt0, sampler.rows,
                                length + sampler.max_frames if alone else length)
        item = _Item(key=key, prompt_len=prompt0.shape[1], sampler=sampler, first_logits=logits.float().clone())
        if alone:
            self._kv = [layer.kv for layer in cache.layers]
            self._lengths = [length] * sampler.rows
            self._logits = logits
            self._rebuild_step()
        else:
            self._append_rows([layer.kv for layer in cache.layers], length, logits)
        self._items.append(item)

    def remove(self, key: Hashable) -> None:
        """Drop an utterance (e.g. its client went away); unknown keys are ignored."""
        keep = [i for i, item in enumerate(self._items) if item.key != key]
        if len(keep) != len(self._items):
            self._keep_items(keep)

    # Stepping -----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> ARStepResult:
        """Sample one frame for every utterance, drop the finished ones, run the decoder once for the rest."""
        result = ARStepResult()
        if not self._items:
            return result
        if self._logits is None:
            raise RuntimeError("the batch has utterances but no logits to sample from")
        # Every utterance draws on the device; their statuses come back in one read (one sync per step).
        drawn, row = [], 0
        for item in self._items:
            drawn.append(item.sampler.draw(self._logits[row:row + item.rows]))  # its own settings and generator
            row += item.rows
        statuses = (torch.stack([status for _, status in drawn]) if len(drawn) > 1 else drawn[0][1][None]).tolist()
        keep: list[int] = []
        tokens: list[Tensor] = []
        for index, (item, (new, _), (stopped, nonfinite)) in enumerate(zip(self._items, drawn, statuses)):
            try:
                new = item.sampler.advance(new, stopped, nonfinite)
            except NonFiniteLogits as error:  # this utterance cannot go on; the others can
                result.failed[item.key] = error
                continue
            if new is None:
                result.finished[item.key] = item.sampler.result(item.steps, item.first_logits)
                continue
            result.frames[item.key] = item.sampler.frames
            keep.append(index)
            tokens.append(new)
        if len(keep) != len(self._items):
            self._keep_items(keep)
        if not self._items:
            return result

        # One decoder call for every row still running. Each frame's audio position: prompt + frames before
        # it (BOS at 0); its cache position: the row's length.
        frames = tokens[0] if len(tokens) == 1 else torch.cat(tokens)  # [R]
        offsets = [item.prompt_len + item.sampler.num_frames for item in self._items for _ in range(item.rows)]
        lengths = self._lengths
        self._reserve(max(lengths) + 1)
        if all(n == lengths[0] for n in lengths) and all(o == offsets[0] for o in offsets):
            # every row alike (one utterance): the unmasked path, one position for all
            x = self.model.embed_ar_audio(frames[:, None], offset=offsets[0])
            start: int | RowPositions = lengths[0]
        else:
            x = self.model.embed_ar_frame(frames, torch.tensor(offsets, device=self.device), max(offsets) + 1)
            start = RowPositions.of(lengths, self.device)
        hidden = self._step(x, start)  # [R, 1, D]
        self._lengths = [n + 1 for n in lengths]
        self._logits = self.model.ar_logits(hidden[:, -1])
        for item in self._items:
            item.steps += 1
        return result

    # Cache bookkeeping --------------------------------------------------------------------------------
    def _append_rows(self, kv: list[Tensor], length: int, logits: Tensor) -> None:
        """Add rows whose caches ``kv`` (per layer [r, 2, H, length, hd]) are filled up to ``length``.

        Columns a row does not use are zeros, not uninitialised memory: masked keys still enter the
        products (a NaN there would survive the mask).
        """
        old_rows, new_rows = self.rows, kv[0].shape[0]
        old_used = max(self._lengths)
        capacity = _round_up(max(old_used, length) + 1)
        merged_layers = []
        for layer, new in enumerate(kv):
            shape = list(new.shape)
            shape[0], shape[3] = old_rows + new_rows, capacity
            merged = torch.zeros(shape, dtype=new.dtype, device=self.device)
            merged[:old_rows, :, :, :old_used] = self._kv[layer][:, :, :, :old_used]
            merged[old_rows:, :, :, :length] = new[:, :, :, :length]
            merged_layers.append(merged)
        self._kv = merged_layers
        self._lengths = self._lengths + [length] * new_rows
        self._logits = logits if self._logits is None else torch.cat([self._logits, logits])
        self._rebuild_step()

    def _keep_items(self, keep: list[int]) -> None:
        """Keep only the utterances at ``keep`` (indices into the item list), compacting the cache rows."""
        starts, row = [], 0
        for item in self._items:
            starts.append(row)
            row += item.rows
        index = [r for i in keep for r in range(starts[i], starts[i] + self._items[i].rows)]
        self._items = [self._items[i] for i in keep]
        if not index:
            self._kv, self._logits, self._step, self._lengths = [], None, None, []
            return
        rows = torch.tensor(index, dtype=torch.long, device=self.device)
        lengths = [self._lengths[r] for r in index]
        used = max(lengths)
        compact = []
        for old in self._kv:
            shape = list(old.shape)
            shape[0] = len(index)
            new = torch.zeros(shape, dtype=old.dtype, device=self.device)
            new[:, :, :, :used] = old[rows, :, :, :used]
            compact.append(new)
        self._kv = compact
        self._lengths = lengths
        self._logits = self._logits[rows] if self._logits is not None else None
        self._rebuild_step()

    def _reserve(self, columns: int) -> None:
        """Make the cache hold ``columns`` positions per row (doubling its capacity when it must grow; never
        for an utterance alone, whose cache has room for all its frames)."""
        capacity = self._kv[0].shape[3]
        if columns <= capacity:
            return
        used = max(self._lengths)
        grown = []
        for old in self._kv:
            shape = list(old.shape)
            shape[3] = _round_up(max(columns, 2 * capacity))
            new = torch.zeros(shape, dtype=old.dtype, device=self.device)
            new[:, :, :, :used] = old[:, :, :, :used]
            grown.append(new)
        self._kv = grown
        self._rebuild_step()

    def _rebuild_step(self) -> None:
        self._step = OneFrameStep(self.model.ar_decoder, KVCache([LayerKVCache(kv) for kv in self._kv]))


def _round_up(columns: int) -> int:
    """Cache columns of a merged batch, in multiples of 64 (then doubled when a row outgrows them)."""
    return -(-columns // 64) * 64


@dataclass
class NARPrefix:
    """The keys and values a streamed sentence's NAR passes hand on: of its text, its prompt and its fixed frames,
    in every stage and layer.

    Its first (whole) pass fills it, keeping text, prompt and the frames it fixes; each window pass attends to it
    instead of running any of them again, and appends the frames it fixes (:class:`NARInput`'s ``keep``).
    ``kv[stage][layer]``: [1, 2, H, S + P + frames, hd] (keys, values), in the dtype the layer's attention
    computes in (why: storing them finer would change nothing and cost twice the memory under a bfloat16
    attention). Each position costs 7 stages x layers x 2 x d values.
    """

    kv: list[list[Tensor]] = field(default_factory=list)
    frames: int = 0  # fixed frames among the positions (after text and prompt)

    @property
    def ready(self) -> bool:
        return bool(self.kv)

    @property
    def positions(self) -> int:
        """S + P + frames: the positions kept (0 before a pass filled it)."""
        return self.kv[0][0].shape[3] if self.kv else 0


@dataclass
class NARInput:
    """One utterance for :func:`nar_decode`.

    text, text_langs: LongTensor [1, S]; prompt_codes: LongTensor [1, P, 8]; codes0: LongTensor [1, T], the
    codebook 0 of every frame.

    What streaming (:class:`vallex.inference.streaming.SentencePieces`) adds: ``prefix``, an empty
    :class:`NARPrefix` that this (whole) pass fills; or a filled one with ``known`` (LongTensor [1, F, 8],
    F <= T: the codes earlier passes fixed, whose keys and values the prefix holds), a *window pass*: only
    frames F..T-1 are computed, attending to themselves and to the prefix (text, prompt, the F fixed frames),
    and the known codes come back as given. ``keep``: the frames (from the first) whose keys and values the
    prefix holds after this pass, those this pass computes appended (None: as before; a whole pass keeps text
    and prompt). A window costs about its ``T - F`` frames where a whole pass costs ``S + P + T`` positions,
    but the frames it sees saw only what existed when they were computed: bench/fidelity.py measures how far
    its codes move.
    """

    text: Tensor
    text_langs: Tensor
    prompt_codes: Tensor
    codes0: Tensor
    prefix: NARPrefix | None = None
    known: Tensor | None = None
    keep: int | None = None


@torch.inference_mode()
def nar_decode(model: VallexModel, inputs: Sequence[NARInput],
               on_stage: Callable[[int], None] | None = None) -> list[Tensor]:
    """Greedy NAR stages (prefix mode 1) of one or more utterances: predict codebooks 1..7 of their frames.

    Each utterance is laid out as alone — ``[text ; prompt ; frames]`` with positions from 0 — and, when
    their lengths differ, padded to the longest text and the longest audio, the padding masked out of every
    attention (so each gets the codes it gets alone). Window passes (inputs with ``known`` codes, see
    :class:`NARInput`) run as a second batch in the same stages, padded and masked the same way.
    Returns one LongTensor [1, T_i, 8] per input.

    Raises :class:`NonFiniteLogits` when some input's logits were NaN or infinite in some stage (``argmax``
    would pick a NaN as the largest and go on with wrong codes); its ``inputs`` say which, its ``codes`` are
    the others' codes.
    """
    if not inputs:
        return []
    device = next(model.parameters()).device
    for x in inputs:
        _check_streaming(x)
    whole = [i for i, x in enumerate(inputs) if x.known is None]
    windows = [i for i, x in enumerate(inputs) if x.known is not None and x.known.shape[1] < x.codes0.shape[1]]
    passes: list[tuple[list[int], _WholePass | _WindowPass]] = []
    if whole:
        passes.append((whole, _WholePass(model, [inputs[i] for i in whole], device)))
    if windows:
        passes.append((windows, _WindowPass(model, [inputs[i] for i in windows], device)))
    for stage in range(model.config.num_quantizers - 1):
        if on_stage is not None:
            on_stage(stage)
        for _, work in passes:
            work.run_stage(stage)
    # A window with no new frame has nothing to predict: its codes are the known ones.
    out = [x.known for x in inputs]
    for indices, work in passes:
        for i, codes in zip(indices, work.result()):
            out[i] = codes
    if not passes:
        return out
    # Which inputs had non-finite logits in some stage, read back at once (one sync per call).
    flags = torch.cat([work.nonfinite for _, work in passes]).tolist()
    order = [i for indices, _ in passes for i in indices]
    failed = tuple(i for i, bad in zip(order, flags) if bad)
    if failed:
        raise NonFiniteLogits.on(device, "the NAR", inputs=failed, codes=out)
    return out


def _check_streaming(x: NARInput) -> None:
    """ValueError unless ``x``'s streaming fields (:class:`NARInput`) fit together."""
    frames = x.codes0.shape[1]
    known = 0 if x.known is None else x.known.shape[1]
    if x.known is None and x.prefix is not None and x.prefix.ready:
        raise ValueError("A whole pass fills an empty NARPrefix; this one was filled already (a window pass "
                         "gives the known codes).")
    if x.known is not None:
        if not (x.known.ndim == 3 and known <= frames):
            raise ValueError(f"known codes must be [1, F, 8] with F <= {frames} (the frames of codes0), "
                             f"got {tuple(x.known.shape)}.")
        if x.prefix is None or not x.prefix.ready:
            raise ValueError("A window pass needs the NARPrefix its sentence's earlier passes kept.")
        expected = x.text.shape[1] + x.prompt_codes.shape[1] + known
        if x.prefix.frames != known or x.prefix.positions != expected:
            raise ValueError(f"The NARPrefix holds {x.prefix.positions} positions ({x.prefix.frames} frames), but "
                             f"this input has {x.text.shape[1]} text tokens, {x.prompt_codes.shape[1]} prompt frames "
                             f"and {known} known frames.")
    if x.keep is not None:
        if x.prefix is None:
            raise ValueError("keep needs a NARPrefix to keep the keys and values in.")
        if not known <= x.keep <= frames:
            raise ValueError(f"keep must be between the known frames ({known}) and the frames ({frames}), "
                             f"got {x.keep}.")


class _WholePass:
    """``[text ; prompt ; frames]`` of each input, padded to the longest text and audio, one stage at a time.

    Inputs with an empty :class:`NARPrefix` get the keys and values of their text, prompt and first ``keep``
    frames kept in it.
    """

    def __init__(self, model: VallexModel, inputs: Sequence[NARInput], device: torch.device) -> None:
        n_q = model.config.num_quantizers
        self.model = model
        texts = [x.text.to(device).long() for x in inputs]
        prompts = [x.prompt_codes.to(device).long() for x in inputs]
        codes0 = [x.codes0.to(device).long() for x in inputs]
        text_lens = [t.shape[1] for t in texts]
        self.prompt_lens = prompt_lens = [p.shape[1] for p in prompts]
        self.frames = [c.shape[1] for c in codes0]
        batch, text_width = len(inputs), max(text_lens)
        self.audio_lens = audio_lens = [p + t for p, t in zip(prompt_lens, self.frames)]
        audio_width = max(audio_lens)

        text = torch.zeros(batch, text_width, dtype=torch.long, device=device)
        langs = torch.zeros_like(text)
        timeline = torch.zeros(batch, audio_width, n_q, dtype=torch.long, device=device)  # [B, A, 8]
        for i, x in enumerate(inputs):
            text[i, :text_lens[i]] = texts[i][0]
            langs[i, :text_lens[i]] = x.text_langs[0].to(device)
            timeline[i, :prompt_lens[i]] = prompts[i][0]
            timeline[i, prompt_lens[i]:audio_lens[i], 0] = codes0[i][0]
        self.text_emb = model.embed_text("nar", text, langs)  # [B, S, D]
        self.audio_emb = model.embed_nar_audio(timeline, torch.tensor(prompt_lens, device=device), stage=1)  # [B, A, D]
        self.padding = None  # nothing to mask when every utterance has the same text and audio lengths
        if len(set(text_lens)) > 1 or len(set(audio_lens)) > 1:
            columns = torch.arange(text_width + audio_width, device=device)[None]
            self.padding = torch.cat([columns[:, :text_width] >= torch.tensor(text_lens, device=device)[:, None],
                                      columns[:, :audio_width] >= torch.tensor(audio_lens, device=device)[:, None]],
                                     dim=1)
        self.first = min(prompt_lens)  # the last layer computes the rows from the shortest prompt on
        self.codes: list[list[Tensor]] = [[c] for c in codes0]
        # [B]: True once some stage's logits of that input were not finite (checked once, at the end)
        self.nonfinite = torch.zeros(batch, dtype=torch.bool, device=device)
        # (row, prefix, its positions in [text ; audio]: one range unless the text is padded) of the inputs
        # whose prefix this pass fills
        self.keep = []
        for i, x in enumerate(inputs):
            if x.prefix is None:
                continue
            audio = prompt_lens[i] + (x.keep or 0)
            spans = ([range(text_width + audio)] if text_lens[i] == text_width else
                     [range(text_lens[i]), range(text_width, text_width + audio)])
            self.keep.append((i, x.prefix, spans))
        self.kept_frames = [x.keep or 0 for x in inputs if x.prefix is not None]

    def run_stage(self, stage: int) -> None:
        model = self.model
        keeper = _KeepPrefix(model, self.keep) if self.keep else None
        hidden = model.nar_forward(self.text_emb, self.audio_emb, stage, self.padding, output_start=self.first,
                                   cache=keeper)  # [B, A - first, D]
        if keeper is not None:
            keeper.store()
            if stage == model.config.num_quantizers - 2:  # every stage kept: the prefixes are whole
                for (_, prefix, _), frames in zip(self.keep, self.kept_frames):
                    prefix.frames = frames
        first, prompt_lens = self.first, self.prompt_lens
        for i in range(len(self.codes)):
            rows = hidden[i:i + 1, prompt_lens[i] - first:prompt_lens[i] - first + self.frames[i]]  # [1, T_i, D]
            logits = model.nar_predict_layers[stage](rows)  # [1, T_i, 1024]
            self.nonfinite[i] |= ~torch.isfinite(logits).all()  # argmax would take a NaN as the largest
            predicted = logits.argmax(dim=-1)  # [1, T_i]
            self.codes[i].append(predicted)
            if stage < model.config.num_quantizers - 2:
                span = slice(prompt_lens[i], self.audio_lens[i])
                self.audio_emb[i, span] = self.audio_emb[i, span] + model.nar_audio_embeddings[stage + 1](predicted)[0]

    def result(self) -> list[Tensor]:
        return [torch.stack(c, dim=-1) for c in self.codes]


class _WindowPass:
    """The new frames of each streamed input, one stage at a time, attending to themselves and to the input's
    :class:`NARPrefix` (text, prompt, fixed frames), which then gets the frames up to ``keep`` appended.

    Rows are the new frames, padded to the most of them; keys are ``[prefix ; rows]``, each prefix padded to
    the longest; the padding is masked out of every attention.
    """

    def __init__(self, model: VallexModel, inputs: Sequence[NARInput], device: torch.device) -> None:
        self.model, self.device = model, device
        self.inputs = inputs
        self.known = [x.known.to(device).long() for x in inputs]
        known_lens = [k.shape[1] for k in self.known]
        self.new = [x.codes0.shape[1] - f for x, f in zip(inputs, known_lens)]
        # the new frames each input keeps in its prefix after this pass
        self.kept = [0 if x.keep is None else x.keep - f for x, f in zip(inputs, known_lens)]
        width = max(self.new)
        batch = len(inputs)
        # Every row's codes: the new frames' codebook 0, then what each stage predicts.
        self.rows = torch.zeros(batch, width, model.config.num_quantizers, dtype=torch.long, device=device)
        for i, x in enumerate(inputs):
            self.rows[i, :self.new[i], 0] = x.codes0[0, known_lens[i]:].to(device)
        # the audio position of each input's first new frame: prompt + known frames
        self.offsets = [x.prompt_codes.shape[1] + f for x, f in zip(inputs, known_lens)]
        self.audio_emb = model.nar_audio_embeddings[0](self.rows[..., 0])  # [B, W, D], no positions yet
        self.prefixes = [x.prefix for x in inputs]
        self.prefix_lens = [p.positions for p in self.prefixes]
        self.prefix_width = max(self.prefix_lens)
        self.mask = None  # [B, 1, 1, L + W], True = may attend: only when something is padded
        if batch > 1:
            columns = torch.arange(self.prefix_width + width, device=device)
            rows = columns - self.prefix_width
            self.mask = torch.stack([(columns < length) | ((rows >= 0) & (rows < new))
                                     for length, new in zip(self.prefix_lens, self.new)])[:, None, None, :]
        self.predicted: list[list[Tensor]] = [[] for _ in inputs]
        self.nonfinite = torch.zeros(batch, dtype=torch.bool, device=device)  # [B], as _WholePass's

    def run_stage(self, stage: int) -> None:
        model = self.model
        position = model.nar_audio_position
        if len(self.new) == 1:
            x = position(self.audio_emb, self.offsets[0])
        else:  # each input at its own positions; padding rows keep no position (masked anyway)
            x = self.audio_emb.clone()
            for i, new in enumerate(self.new):
                x[i:i + 1, :new] = position(self.audio_emb[i:i + 1, :new], self.offsets[i])
        layers = len(model.nar_decoder.layers)
        cache = _AfterPrefix([self._prefix_keys(stage, layer) for layer in range(layers)], self.mask)
        hidden = model.nar_decoder(x, None, stage=model.nar_stage_embedding(stage), cache=cache)  # [B, W, D]
        for i, new in enumerate(self.new):
            logits = model.nar_predict_layers[stage](hidden[i:i + 1, :new])  # [1, N_i, 1024]
            self.nonfinite[i] |= ~torch.isfinite(logits).all()
            predicted = logits.argmax(dim=-1)  # [1, N_i]
            self.predicted[i].append(predicted)
            self.rows[i, :new, stage + 1] = predicted[0]
        if stage < model.config.num_quantizers - 2:
            self.audio_emb = self.audio_emb + model.nar_audio_embeddings[stage + 1](self.rows[..., stage + 1])
        for layer, layer_cache in enumerate(cache.layers):  # hand the kept frames on
            both = layer_cache.both  # [B, 2, H, L + W, hd]
            for i, prefix in enumerate(self.prefixes):
                if not self.kept[i]:
                    continue
                if len(self.prefixes) == 1:  # a view: no copy (the window's other rows stay with it)
                    prefix.kv[stage][layer] = both[:, :, :, :self.prefix_lens[i] + self.kept[i]]
                else:
                    start = self.prefix_width
                    prefix.kv[stage][layer] = torch.cat([both[i:i + 1, :, :, :self.prefix_lens[i]],
                                                         both[i:i + 1, :, :, start:start + self.kept[i]]], dim=3)
        if stage == model.config.num_quantizers - 2:  # every stage handed on
            for prefix, input_, kept in zip(self.prefixes, self.inputs, self.kept):
                if kept:
                    prefix.frames = input_.keep

    def _prefix_keys(self, stage: int, layer: int) -> Tensor:
        """The prefixes' keys and values of one stage and layer, [B, 2, H, L, hd] (zeros where padded)."""
        kept = [p.kv[stage][layer] for p in self.prefixes]
        if len(kept) == 1:
            return kept[0]
        shape = list(kept[0].shape)
        shape[0], shape[3] = len(kept), self.prefix_width
        # Zeros, not uninitialised memory: masked keys still enter the products (a NaN there would survive the mask).
        batched = torch.zeros(shape, dtype=kept[0].dtype, device=self.device)
        for i, kv in enumerate(kept):
            batched[i, :, :, :kv.shape[3]] = kv[0]
        return batched

    def result(self) -> list[Tensor]:
        out = []
        for i, known in enumerate(self.known):
            codes0 = self.rows[i:i + 1, :self.new[i], 0]
            out.append(torch.cat([known, torch.stack([codes0, *self.predicted[i]], dim=-1)], dim=1))
        return out


class _KeepPrefix:
    """A whole pass's cache that only watches: each layer's keys and values of the kept inputs' text, prompt and
    kept frames are copied into their :class:`NARPrefix` (:meth:`store`); the attention gets them back unchanged."""

    def __init__(self, model: VallexModel, keep: list[tuple[int, NARPrefix, list[range]]]) -> None:
        self.keep = keep
        self.layers = [_KeepLayer(self, layer.self_attn.attend) for layer in model.nar_decoder.layers]

    def store(self) -> None:
        """Append this stage's keys and values (one [1, 2, H, positions, hd] per layer) to each kept prefix."""
        for j, (_, prefix, _) in enumerate(self.keep):
            prefix.kv.append([layer.kept[j] for layer in self.layers])


class _KeepLayer:
    def __init__(self, owner: _KeepPrefix, attend: AttentionKernel) -> None:
        self.owner = owner
        self.dtype = attend.dtype  # the dtype the attention computes in, if it casts
        self.kept: list[Tensor] = []

    def append(self, kv: Tensor, start: int | RowPositions) -> tuple[Tensor, Tensor, None]:
        """kv [B, 2, H, X, hd]: keep the prefix positions of each kept row; return keys and values as they are."""
        self.kept = []
        for row, _, spans in self.owner.keep:
            shape = list(kv.shape)
            shape[0], shape[3] = 1, sum(len(span) for span in spans)
            kept = torch.empty(shape, dtype=self.dtype or kv.dtype, device=kv.device)  # a copy: qkv is freed
            at = 0
            for span in spans:  # one pass per span, the cast included
                kept[:, :, :, at:at + len(span)] = kv[row:row + 1, :, :, span.start:span.stop]
                at += len(span)
            self.kept.append(kept)
        return kv[:, 0], kv[:, 1], None


class _AfterPrefix:
    """A window pass's cache: each layer attends to ``[prefix ; window]`` (and keeps both, to hand on)."""

    def __init__(self, prefixes: list[Tensor], mask: Tensor | None) -> None:
        self.layers = [_AfterPrefixLayer(kv, mask) for kv in prefixes]


class _AfterPrefixLayer:
    def __init__(self, prefix: Tensor, mask: Tensor | None) -> None:
        self.prefix, self.mask = prefix, mask
        self.both: Tensor | None = None

    def append(self, kv: Tensor, start: int | RowPositions) -> tuple[Tensor, Tensor, Tensor | None]:
        """kv [B, 2, H, W, hd] of the window rows -> keys, values [B, H, L + W, hd] and the padding mask."""
        self.both = torch.cat([self.prefix, kv.to(self.prefix.dtype)], dim=3)
        return self.both[:, 0], self.both[:, 1], self.mask


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
    codes = nar_decode(model, [NARInput(text, langs, prompt_codes, ar.codes)])[0]
    return GenerationResult(codes=codes, stop_reason=ar.stop_reason, ar=ar)
