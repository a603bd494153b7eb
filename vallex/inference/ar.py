"""The AR: sampling codebook 0 after the prompt, as the reference's ``VALLE.inference`` does.

There is one AR loop, :class:`ARBatch`: the decoders of a changing set of utterances, one frame each per
step, over one preallocated KV cache (each row writes at its own position and attends only to its own
positions; after the prefill a new frame needs no mask). One utterance is a batch of one
(:func:`ar_decode`, :func:`iter_ar_decode`). An AR step reads every weight of the decoder once whatever the
number of rows, so on a CPU (and at small batches on a GPU) a step of 8 utterances costs little more than a
step of one. Every utterance keeps its own sampling settings and random generator (its :class:`FrameSampler`),
so its codes are those it gets alone (up to float32 rounding of the batched products, which only matters for a
draw that lands within ~1e-6 of a probability boundary). With ``top_k=1`` the AR is greedy and reproduces the
reference exactly.
"""
from __future__ import annotations

from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from vallex.inference.fastpath import KVCache, LayerKVCache, OneFrameStep, model_cache_dtype
from vallex.inference.sampling import NonFiniteLogits, check_generator_device, draw_tokens, draw_tokens_ras
from vallex.inference.sampling_settings import Sampling
from vallex.model import RowPositions, VallexModel, ar_attention_mask

#: The reference's length rule: at most 16 generated frames per text token (prompt + target).
MAX_FRAMES_PER_TEXT_TOKEN = 16


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
    ras_fired: int = 0  # draws repetition-aware sampling replaced (all rows)
    candidates: tuple[Candidate, ...] = ()  # every row, best first (the first is ``codes``)


@dataclass
class ARRequest:
    """One utterance's AR: its inputs, how to sample (:class:`~vallex.inference.sampling_settings.Sampling`: the
    AR reads temperature, top_k, top_p, best_of and ras) and its limits.

    text, text_langs: LongTensor [1, S] (prompt transcript ids then target ids, and their language ids, see
    :func:`vallex.inference.generation.language_ids`); prompt_codes0: LongTensor [1, P], codebook 0 of the prompt
    (P may be 0). EOS is masked until ``min_frames`` frames exist; at most ``max_frames`` (default 16 per text
    token, the reference's rule). ``generator``: the random generator the draws use (on the model's device);
    ``logits_processor``: ``f(step, logits [rows, 1025]) -> logits``; ``length_penalty``: the best row is the
    one with the highest sum of log-probabilities / frames ** length_penalty.
    """

    text: Tensor
    text_langs: Tensor
    prompt_codes0: Tensor
    sampling: Sampling = Sampling()
    min_frames: int = 1
    max_frames: int | None = None
    generator: torch.Generator | None = None
    logits_processor: Callable[[int, Tensor], Tensor] | None = None
    length_penalty: float = 1.0

    @classmethod
    def of(cls, text: Tensor, text_langs: Tensor, prompt_codes0: Tensor, **options: Any) -> ARRequest:
        """A request from keywords: :class:`Sampling`'s fields (``top_k=1``; or ``sampling=``) and this class's."""
        return cls(text, text_langs, prompt_codes0, Sampling.pop_from(options), **options)


@torch.inference_mode()
def ar_decode(
    model: VallexModel,
    text: Tensor,
    text_langs: Tensor,
    prompt_codes0: Tensor,
    *,
    on_step: Callable[[int], None] | None = None,
    **options: Any,
) -> ARResult:
    """Sample codebook 0 after the prompt: one utterance through :class:`ARBatch`.

    Args:
        text: LongTensor [1, S], prompt transcript ids then target ids.
        text_langs: LongTensor [1, S] language ids (see :func:`vallex.inference.generation.language_ids`).
        prompt_codes0: LongTensor [1, P], codebook 0 of the prompt (P may be 0).
        on_step: called with the step index before each sampling step (progress bars).
        options: :class:`~vallex.inference.sampling_settings.Sampling`'s fields (temperature, top_k, top_p,
            ``best_of``: rows sampled in parallel, the row with the highest mean log-probability of its
            *generated* tokens wins; ``ras``: repetition-aware sampling instead of plain sampling), or a whole
            ``sampling=``; and :class:`ARRequest`'s own: ``min_frames``, ``max_frames``, generator,
            ``logits_processor``, ``length_penalty``.
    """
    steps = _iterate_one(model, ARRequest.of(text, text_langs, prompt_codes0, **options), on_step)
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
    on_step: Callable[[int], None] | None = None,
    **options: Any,
) -> Generator[Tensor, None, ARResult]:
    """:func:`ar_decode`, one frame at a time: yields the codebook-0 frames so far after each new frame.

    Each yielded value is LongTensor [1, n] (n = 1, 2, ...), a *view* of the frame buffer (no copy per step):
    its n values never change afterwards, but do not write to it. The generator's return value
    (``result = yield from iter_ar_decode(...)``) is the :class:`ARResult`, equal to what :func:`ar_decode`
    returns for the same arguments and generator state (both run :class:`ARBatch`). Consumers may run other
    work (the NAR, the vocoder) between steps.

    Args:
        options: the keyword arguments of :func:`ar_decode` (temperature, top_k, generator, ...); ``best_of`` must
            be 1: ranking rows needs every row to finish, so there would be nothing to stream.
    """
    request = ARRequest.of(text, text_langs, prompt_codes0, **options)
    if request.sampling.best_of != 1:  # checked here, at the call, not at the first next()
        raise ValueError(f"iter_ar_decode streams one row, so best_of must be 1 (got {request.sampling.best_of}); "
                         "use ar_decode to pick the best of several rows.")
    return _iterate_one(model, request, on_step)


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

    Its ``rows`` (``sampling.best_of``) sample independently with one generator (on ``device``, where the rows
    are), as ``sampling`` says (temperature, top-k, :attr:`~vallex.inference.sampling_settings.Sampling.nucleus`;
    ``ras``: repetition-aware sampling, :func:`vallex.inference.sampling.draw_tokens_ras`, instead of the
    reference's plain sampling); a row that drew EOS keeps emitting EOS; the utterance stops when every row has,
    or at ``max_frames``. EOS is masked until ``min_frames`` frames exist (the reference could return nothing).
    The best row has the highest mean log-probability of its *generated* tokens (the reference also counted BOS
    and the prompt's tokens, which favours rows with a long prompt over rows that sampled well).
    """

    def __init__(self, sampling: Sampling, max_frames: int, eos: int, device: torch.device, *,
                 length_penalty: float = 1.0, min_frames: int = 1, generator: torch.Generator | None = None,
                 logits_processor: Callable[[int, Tensor], Tensor] | None = None) -> None:
        self.sampling = sampling
        self.rows, self.max_frames, self.eos = sampling.best_of, max_frames, eos
        self.length_penalty, self.min_frames = length_penalty, min_frames
        check_generator_device(generator, torch.device(device))
        self.generator, self.logits_processor = generator, logits_processor
        self.generated = torch.empty(self.rows, max_frames, dtype=torch.long, device=device)
        self.finished = torch.zeros(self.rows, dtype=torch.bool, device=device)
        self.sum_logprobs = torch.zeros(self.rows, device=device)
        self.num_frames = 0
        self.stop_reason: str | None = None
        self._ras_fired = torch.zeros((), dtype=torch.long, device=device)  # draws RAS replaced, on the device
        self.logits_dtype: torch.dtype | None = None  # what the model computes logits in (float32 for int8)

    @classmethod
    def for_request(cls, model: VallexModel, request: ARRequest) -> FrameSampler:
        """The sampler of ``request`` on ``model`` (max_frames default: 16 per text token)."""
        max_frames = request.max_frames
        if max_frames is None:
            max_frames = MAX_FRAMES_PER_TEXT_TOKEN * request.text.shape[1]
        return cls(request.sampling, max_frames, model.config.eos_id, next(model.parameters()).device,
                   length_penalty=request.length_penalty, min_frames=request.min_frames,
                   generator=request.generator, logits_processor=request.logits_processor)

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
        eos, self.logits_dtype = self.eos, logits.dtype
        if self.logits_processor is not None:
            logits = self.logits_processor(self.num_frames, logits)
        if self.num_frames < self.min_frames:
            logits = logits.clone()
            logits[:, eos] = float("-inf")
        sampling = self.sampling
        if sampling.ras:  # history: this utterance's generated frames (the prompt is natural speech)
            tokens, logprobs, bad, fired = draw_tokens_ras(logits, self.frames, temperature=sampling.temperature,
                                                           top_k=sampling.top_k, top_p=sampling.nucleus,
                                                           generator=self.generator)
            self._ras_fired += (fired & ~self.finished).sum()
        else:
            tokens, logprobs, bad = draw_tokens(logits, temperature=sampling.temperature, top_k=sampling.top_k,
                                                top_p=sampling.nucleus, generator=self.generator)
        nonfinite = (bad & ~self.finished).any()  # a finished row's logits are never used
        self.sum_logprobs += torch.where(self.finished, 0.0, logprobs)
        tokens = torch.where(self.finished, eos, tokens)  # finished rows keep emitting EOS
        self.finished |= tokens == eos
        return tokens, torch.stack([self.finished.all(), nonfinite])

    def advance(self, tokens: Tensor, stopped: bool, nonfinite: bool) -> Tensor | None:
        """With :meth:`draw`'s tokens and status read back: the tokens, or None once the utterance stopped.

        Raises :class:`NonFiniteLogits` if a running row's logits were not finite."""
        if nonfinite:
            raise NonFiniteLogits.on(self.generated.device, dtype=self.logits_dtype)
        if stopped:
            self.stop_reason = "eos"
            return None
        if self.num_frames >= self.max_frames:
            self.stop_reason = "maxlen"
            return None
        self.generated[:, self.num_frames] = tokens
        self.num_frames += 1
        return tokens

    def result(self, steps: int) -> ARResult:
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
                        ras_fired=int(self._ras_fired) if self.sampling.ras else 0, candidates=candidates)


@dataclass
class _Item:
    """The state of one utterance in an :class:`ARBatch` (its rows are ``best_of`` consecutive cache rows)."""

    key: Hashable
    prompt_len: int
    sampler: FrameSampler
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
        batch.add("a", ARRequest(text, langs, prompt0, Sampling(top_k=50), generator=g_a))
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
        sampler = FrameSampler.for_request(self.model, request)
        length = text.shape[1] + 1 + prompt0.shape[1]
        alone = not self._items
        # Alone, the prefill writes straight into the batch's cache, room for every frame included; joining,
        # into one of its own size that is merged in (the same shapes either way, so the same numbers).
        cache, logits = prefill(self.model, text, request.text_langs.to(self.device), prompt0, sampler.rows,
                                length + sampler.max_frames if alone else length)
        item = _Item(key=key, prompt_len=prompt0.shape[1], sampler=sampler)
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
                result.finished[item.key] = item.sampler.result(item.steps)
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
