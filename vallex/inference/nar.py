"""The NAR: greedy stages for codebooks 1..7 after the AR's codebook 0, as the reference's ``VALLE.inference``
does (prefix mode 1: the prompt's frames carry all 8 codebooks).

There is one entry, :func:`nar_decode`, over a padded batch (one utterance is a batch of one); a streamed
sentence's later passes are windows over the keys and values its earlier passes kept (:class:`NARInput`,
:class:`NARPrefix`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from vallex.inference.sampling import NonFiniteLogits
from vallex.model import AttentionKernel, RowPositions, VallexModel


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

    What streaming (:class:`vallex.synthesis.streaming.SentencePieces`) adds: ``prefix``, an empty
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
        dtype = next(work.logits_dtype for _, work in passes)
        raise NonFiniteLogits.on(device, "the NAR", dtype=dtype, inputs=failed, codes=out)
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
        self.logits_dtype: torch.dtype | None = None  # for NonFiniteLogits's message
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
            self.logits_dtype = logits.dtype
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
        self.logits_dtype: torch.dtype | None = None

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
            self.logits_dtype = logits.dtype
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
