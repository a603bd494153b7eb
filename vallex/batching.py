"""Decoding many utterances at once: the AR over a batch that utterances join and leave, and the NAR stages
of a batch of utterances.

An AR step reads every weight of the decoder once whatever the number of rows, so on a CPU (and at small
batches on a GPU) a step of 8 utterances costs little more than a step of one. :class:`ARBatch` keeps one KV
cache for all its rows; each row has its own length (text + prompt + frames so far differ between
utterances): row b writes its new key at its own position and attends only to its own positions. Every
utterance keeps its own sampling settings and random generator, so its codes are those
:func:`vallex.decoding.ar_decode` gives it alone (up to float32 rounding of the batched products, which only
matters for a draw that lands within ~1e-6 of a probability boundary). A finished utterance leaves the
batch at once and costs nothing more.

:func:`nar_decode_batch` runs the 7 NAR stages of several utterances as one padded batch with a key-padding
mask (padding is never attended to), giving each the codes :func:`vallex.decoding.nar_decode` gives it alone.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from vallex.decoding import ARResult, FrameSampler, NonFiniteLogits, nar_decode, prefill
from vallex.fastpath import KVCache, LayerKVCache, OneFrameStep
from vallex.model import VallexModel

#: Cache columns are allocated in multiples of this (and doubled when a row outgrows them).
_CAPACITY_QUANTUM = 64


@dataclass
class ARRequest:
    """One utterance's AR: the arguments of :func:`vallex.decoding.ar_decode`.

    text, text_langs: LongTensor [1, S]; prompt_codes0: LongTensor [1, P] (P may be 0).
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


@dataclass
class _Item:
    """The state of one utterance in an :class:`ARBatch` (its rows are ``best_of`` consecutive cache rows)."""

    key: Hashable
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

    Not thread-safe: one thread drives it.
    """

    def __init__(self, model: VallexModel) -> None:
        self.model = model
        self.config = model.config
        self.device = next(model.parameters()).device
        self._items: list[_Item] = []
        self._kv: list[Tensor] = []  # per layer [R, 2, H, C, hd]
        # Each row's cache columns in use, twice: host integers for every decision (capacity, masks), and a
        # LongTensor [R] on the device that the steps advance there. Why: reading lengths back from a GPU at
        # every step would wait for the step before to finish (a host-device sync).
        self._host_lengths: list[int] = []
        self._lengths = torch.zeros(0, dtype=torch.long, device=self.device)  # [R]
        self._text_lens = torch.zeros(0, dtype=torch.long, device=self.device)  # [R]: S of each row's utterance
        self._logits: Tensor | None = None  # [R, 1025]: the distribution each row samples next
        self._step: OneFrameStep | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def rows(self) -> int:
        """Cache rows in use (the sum of the utterances' ``best_of``)."""
        return len(self._host_lengths)

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
        sampler = FrameSampler.create(
            self.model, text.shape[1], best_of=request.best_of, max_frames=request.max_frames,
            temperature=request.temperature, top_k=request.top_k, top_p=request.top_p,
            length_penalty=request.length_penalty, min_frames=request.min_frames, generator=request.generator,
            logits_processor=request.logits_processor)
        # The prefill exactly as ar_decode runs it (same shapes, so the same numbers), into a cache of its own size.
        length = text.shape[1] + 1 + prompt0.shape[1]
        cache, logits = prefill(self.model, text, request.text_langs.to(self.device), prompt0, sampler.rows, length)
        item = _Item(key=key, sampler=sampler, first_logits=logits.float().clone())
        self._append_rows([layer.kv for layer in cache.layers], length, text.shape[1], logits)
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
        statuses = torch.stack([status for _, status in drawn]).tolist()  # [N, 2] (stopped, non-finite)
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

        # One decoder call for every row still running. Row b's new frame has audio position (BOS at 0)
        # P + n = its cache position - S (the cache holds [text ; BOS ; prompt ; frames]).
        frames = torch.cat(tokens)  # [R]
        end = max(self._host_lengths) + 1
        self._reserve(end)
        positions = self._lengths
        offsets = positions - self._text_lens
        if min(self._host_lengths) == end - 1:
            start: int | Tensor = end - 1  # all rows alike: the unmasked path of ar_decode
        else:
            start = positions
        hidden = self._step(self.model.embed_ar_frame(frames, offsets, end), start, end)  # [R, 1, D]
        self._lengths = self._lengths + 1
        self._host_lengths = [length + 1 for length in self._host_lengths]
        self._logits = self.model.ar_logits(hidden[:, -1])
        for item in self._items:
            item.steps += 1
        return result

    # Cache bookkeeping --------------------------------------------------------------------------------
    def _append_rows(self, kv: list[Tensor], length: int, text_len: int, logits: Tensor) -> None:
        """Add rows whose caches ``kv`` (per layer [r, 2, H, length, hd]) are filled up to ``length``, for an
        utterance of ``text_len`` text tokens.

        Columns a row does not use are zeros, not uninitialised memory: masked keys still enter the
        products (a NaN there would survive the mask).
        """
        old_rows, new_rows = self.rows, kv[0].shape[0]
        old_used = max(self._host_lengths, default=0)
        capacity = _round_up(max(old_used, length) + 1)
        if self._kv:
            capacity = max(capacity, self._kv[0].shape[3])
        merged_layers = []
        for layer, new in enumerate(kv):
            shape = list(new.shape)
            shape[0], shape[3] = old_rows + new_rows, capacity
            merged = torch.zeros(shape, dtype=new.dtype, device=self.device)
            if old_rows:
                merged[:old_rows, :, :, :old_used] = self._kv[layer][:, :, :, :old_used]
            merged[old_rows:, :, :, :length] = new[:, :, :, :length]
            merged_layers.append(merged)
        self._kv = merged_layers
        self._host_lengths += [length] * new_rows
        self._lengths = torch.cat([self._lengths, torch.full((new_rows,), length, dtype=torch.long,
                                                             device=self.device)])
        self._text_lens = torch.cat([self._text_lens, torch.full((new_rows,), text_len, dtype=torch.long,
                                                                 device=self.device)])
        self._logits = logits if old_rows == 0 or self._logits is None else torch.cat([self._logits, logits])
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
            self._kv, self._logits, self._step = [], None, None
            self._host_lengths, self._lengths, self._text_lens = [], self._lengths[:0], self._text_lens[:0]
            return
        rows = torch.tensor(index, dtype=torch.long, device=self.device)
        self._host_lengths = [self._host_lengths[r] for r in index]
        used = max(self._host_lengths)
        compact = []
        for old in self._kv:
            shape = list(old.shape)
            shape[0] = len(index)
            new = torch.zeros(shape, dtype=old.dtype, device=self.device)
            new[:, :, :, :used] = old[rows, :, :, :used]
            compact.append(new)
        self._kv = compact
        self._lengths = self._lengths[rows]
        self._text_lens = self._text_lens[rows]
        self._logits = self._logits[rows] if self._logits is not None else None
        self._rebuild_step()

    def _reserve(self, columns: int) -> None:
        """Make the cache hold ``columns`` positions per row (doubling its capacity when it must grow)."""
        capacity = self._kv[0].shape[3]
        if columns <= capacity:
            return
        new_capacity = _round_up(max(columns, 2 * capacity))
        used = max(self._host_lengths)
        grown = []
        for old in self._kv:
            shape = list(old.shape)
            shape[3] = new_capacity
            new = torch.zeros(shape, dtype=old.dtype, device=self.device)
            new[:, :, :, :used] = old[:, :, :, :used]
            grown.append(new)
        self._kv = grown
        self._rebuild_step()

    def _rebuild_step(self) -> None:
        self._step = OneFrameStep(self.model.ar_decoder, KVCache([LayerKVCache(kv) for kv in self._kv]))


def _round_up(columns: int) -> int:
    return -(-columns // _CAPACITY_QUANTUM) * _CAPACITY_QUANTUM


@dataclass
class NARInput:
    """One utterance for :func:`nar_decode_batch`: the arguments of :func:`vallex.decoding.nar_decode`.

    text, text_langs: LongTensor [1, S]; prompt_codes: LongTensor [1, P, 8]; codes0: LongTensor [1, T].
    """

    text: Tensor
    text_langs: Tensor
    prompt_codes: Tensor
    codes0: Tensor


@torch.inference_mode()
def nar_decode_batch(model: VallexModel, inputs: Sequence[NARInput]) -> list[Tensor]:
    """:func:`vallex.decoding.nar_decode` for several utterances in one padded batch.

    Each utterance is laid out as alone — ``[text ; prompt ; frames]`` with positions from 0 — then padded to
    the longest text and the longest audio; padded positions are masked out of every attention.
    Returns one LongTensor [1, T_i, 8] per input.
    """
    if not inputs:
        return []
    if len(inputs) == 1:
        one = inputs[0]
        return [nar_decode(model, one.text, one.text_langs, one.prompt_codes, one.codes0)]
    device = next(model.parameters()).device
    n_q = model.config.num_quantizers
    texts = [x.text.to(device).long() for x in inputs]
    prompts = [x.prompt_codes.to(device).long() for x in inputs]
    codes0 = [x.codes0.to(device).long() for x in inputs]
    text_lens = [t.shape[1] for t in texts]
    prompt_lens = [p.shape[1] for p in prompts]
    frames = [c.shape[1] for c in codes0]
    batch, text_width = len(inputs), max(text_lens)
    audio_lens = [p + t for p, t in zip(prompt_lens, frames)]
    audio_width = max(audio_lens)

    text = torch.zeros(batch, text_width, dtype=torch.long, device=device)
    langs = torch.zeros_like(text)
    timeline = torch.zeros(batch, audio_width, n_q, dtype=torch.long, device=device)  # [B, A, 8]
    for i, x in enumerate(inputs):
        text[i, :text_lens[i]] = texts[i][0]
        langs[i, :text_lens[i]] = x.text_langs[0].to(device)
        timeline[i, :prompt_lens[i]] = prompts[i][0]
        timeline[i, prompt_lens[i]:audio_lens[i], 0] = codes0[i][0]
    text_emb = model.embed_text("nar", text, langs)  # [B, S, D]
    audio_emb = model.embed_nar_audio(timeline, torch.tensor(prompt_lens, device=device), stage=1)  # [B, A, D]
    columns = torch.arange(text_width + audio_width, device=device)[None]
    padding = torch.cat([columns[:, :text_width] >= torch.tensor(text_lens, device=device)[:, None],
                         columns[:, :audio_width] >= torch.tensor(audio_lens, device=device)[:, None]], dim=1)

    first = min(prompt_lens)  # the last layer computes the rows from the shortest prompt on
    codes: list[list[Tensor]] = [[c] for c in codes0]
    for stage in range(n_q - 1):
        hidden = model.nar_forward(text_emb, audio_emb, stage, padding, output_start=first)  # [B, A - first, D]
        for i in range(batch):
            rows = hidden[i:i + 1, prompt_lens[i] - first:prompt_lens[i] - first + frames[i]]  # [1, T_i, D]
            predicted = model.nar_predict_layers[stage](rows).argmax(dim=-1)  # [1, T_i]
            codes[i].append(predicted)
            if stage < n_q - 2:
                span = slice(prompt_lens[i], audio_lens[i])
                audio_emb[i, span] = audio_emb[i, span] + model.nar_audio_embeddings[stage + 1](predicted)[0]
    return [torch.stack(c, dim=-1) for c in codes]
