"""The VALL-E X model: an autoregressive (AR) and a non-autoregressive (NAR) transformer decoder.

VALL-E X (Zhang et al. 2023, arXiv 2303.03926, §3) treats TTS as language modelling over EnCodec codes.
Both decoders read one sequence ``[text phonemes ; audio codes]``:

* the **AR** decoder predicts codebook 0 frame by frame (text bidirectional, audio causal);
* the **NAR** decoder predicts codebooks 1..7, one whole codebook per stage, attending everywhere,
  told which stage it is in by a stage embedding fed to every (adaptive) LayerNorm.

A language embedding (en/zh/ja) is added to every text token (§3.2): the prompt transcript gets the prompt's
language, the target text its own language, or the *accent* language when the user overrides it.

Module and parameter names reproduce the reference checkpoint's state-dict keys exactly, so the public
``vallex-checkpoint.pt`` loads with ``strict=True``. The inference loops live in :mod:`vallex.inference.ar` and
:mod:`vallex.inference.nar`; what only makes inference faster (the KV cache, folded norms, Linear kernels) in
:mod:`vallex.inference.fastpath` and :mod:`vallex.inference.kernels`.

What runs is what this file declares. The choices inference makes beyond the weights (each attention's kernel,
the AR's KV-cache dtype) are the fields of :class:`InferenceOptions`, set on a model by
:meth:`VallexModel.set_inference_options` only; the caches the layers write to are the :class:`LayerCache` and
:class:`DecoderCache` protocols, at positions ``int | RowPositions``. Faster kernels are modules put *in place of*
the plain ones (:func:`vallex.inference.precision.apply_precision`: int8 and oneDNN Linears, folded adaptive norms),
never classes changed under a module, so ``print(model)`` lists the modules that run.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vallex.config import VallexConfig

LAYER_NORM_EPS = 1e-5


class TokenEmbedding(nn.Module):
    """``nn.Embedding`` under the reference's key name ``word_embeddings``."""

    def __init__(self, num_embeddings: int, dim: int) -> None:
        super().__init__()
        # nn.Embedding's own N(0, 1) init, skipped on the meta device: there normal_ goes through
        # torch._refs and imports torch._dynamo (~1.5 s), which load_model (built on meta) never needs.
        weight = torch.empty(num_embeddings, dim)
        if not weight.is_meta:
            nn.init.normal_(weight)
        self.word_embeddings = nn.Embedding(num_embeddings, dim, _weight=weight)

    @property
    def weight(self) -> Tensor:
        return self.word_embeddings.weight

    def forward(self, ids: Tensor) -> Tensor:  # ids [B, T] -> [B, T, D]
        return self.word_embeddings(ids)


class SinePositionalEmbedding(nn.Module):
    """``x + alpha * PE[offset : offset + T]`` with the standard transformer sinusoid table.

    ``alpha`` is a learned scalar stored in the checkpoint. The table is not a parameter; it is
    computed in float32 exactly as the reference computes it and cached on the module.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.alpha = nn.Parameter(torch.ones(1))
        self._table: Tensor | None = None  # [L, D], grown on demand

    def table(self, length: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """PE rows 0..length-1: [length, D]."""
        cached = self._table
        if cached is None or cached.shape[0] < length or cached.device != device or cached.dtype != dtype:
            rows = max(length, 1024 if cached is None else 2 * cached.shape[0])
            # On the CPU whatever the model's (or torch's default) device: the same table bit for bit everywhere
            # (a GPU's sin and cos may round differently), then moved.
            position = torch.arange(0, rows, dtype=torch.float32, device="cpu").unsqueeze(1)  # [L, 1]
            div_term = torch.exp(
                torch.arange(0, self.dim, 2, dtype=torch.float32, device="cpu") * -(math.log(10000.0) / self.dim)
            )  # [D/2]
            pe = torch.zeros(rows, self.dim, device="cpu")
            pe[:, 0::2] = torch.sin(position * div_term)
            pe[:, 1::2] = torch.cos(position * div_term)
            self._table = cached = pe.to(device=device, dtype=dtype)
        return cached[:length]

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:  # x [B, T, D]
        pe = self.table(offset + x.shape[1], x.device, x.dtype)[offset:]  # [T, D]
        return x + self.alpha * pe


# Attention kernels, cache positions and caches ---------------------------------------------------------------


def matmul_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """softmax(q kᵀ / sqrt(hd)) v with two matmuls: q [B, H, T, hd], k/v [B, H, L, hd] -> [B, H, T, hd].

    Why: on CPU in bfloat16/float16 torch's fused attention kernel is slower than this.
    """
    # Scaling q (T x hd values) rather than the scores (T x L) saves a pass over the largest tensor. k is
    # made contiguous first: its transpose is then a layout the matmul reads as it is (a strided k, a view of
    # the packed projection, made it run a slow transposing copy).
    scores = torch.matmul(q * (q.shape[-1] ** -0.5), k.contiguous().transpose(-1, -2))  # [B, H, T, L]
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


@dataclass(frozen=True)
class AttentionKernel:
    """How an attention computes softmax(q kᵀ / sqrt(hd)) v: q [B, H, T, hd] over k/v [B, H, L, hd] -> [B, H, T, hd]
    (``attn_mask``: bool, True = may attend).

    The default is the reference's: torch's fused kernel in the inputs' dtype. ``dtype``: compute q, k, v, scores
    and weights in this dtype instead (the int8 plan's bfloat16 NAR attention). ``fused=False``: 16-bit tensors on
    CPU take :func:`matmul_attention` (where it measured faster than the fused kernel, bench/README.md), all other
    inputs the fused kernel.
    """

    dtype: torch.dtype | None = None
    fused: bool = True

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        if self.dtype is not None:
            q, k, v = q.to(self.dtype), k.to(self.dtype), v.to(self.dtype)
        if not self.fused and q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
            return matmul_attention(q, k, v, attn_mask)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


@dataclass(frozen=True)
class RowPositions:
    """Each row's own cache position for one new frame (a batch of utterances of different lengths).

    ``index``: LongTensor [B], row b writes at ``index[b]``; ``end``: ``max(index) + 1`` as a host integer
    (no device sync per layer); ``mask``: bool [B, 1, 1, end], row b attends to its positions ``<= index[b]``;
    ``rows``: LongTensor [B], 0..B-1. Built once per step, used by every layer.
    """

    index: Tensor
    end: int
    mask: Tensor
    rows: Tensor

    @classmethod
    def of(cls, positions: list[int], device: torch.device | str) -> RowPositions:
        """From host integers (one per row): one transfer, no sync."""
        index = torch.tensor(positions, dtype=torch.long, device=device)
        end = max(positions) + 1
        mask = (torch.arange(end, device=device) <= index[:, None])[:, None, None, :]
        return cls(index, end, mask, torch.arange(len(positions), device=device))


class LayerCache(Protocol):
    """One layer's keys and values across calls: what :func:`self_attention` writes to and attends over.

    Implementations: the AR's preallocated :class:`vallex.inference.fastpath.LayerKVCache`, and the streamed NAR's
    prefix caches in :mod:`vallex.inference.ar` and :mod:`vallex.inference.nar`.
    """

    def append(self, kv: Tensor, start: int | RowPositions) -> tuple[Tensor, Tensor, Tensor | None]:
        """Take the keys and values kv [B, 2, H, T, hd] of T positions from ``start`` (one position per row
        with :class:`RowPositions`); return the keys and values to attend over ([B, H, L, hd] each) and the mask
        to attend with (None: the caller's)."""
        ...


class DecoderCache(Protocol):
    """One :class:`LayerCache` per decoder layer (``layers[i]`` for layer i), e.g.
    :class:`vallex.inference.fastpath.KVCache`."""

    @property
    def layers(self) -> Sequence[LayerCache]: ...


class MultiheadSelfAttention(nn.Module):
    """Self-attention with one packed QKV projection.

    The packed projection is an ``nn.Linear`` (so quantisation and compilation treat it like any other
    Linear) stored under the reference's names ``in_proj_weight`` / ``in_proj_bias``. ``attend``, an
    :class:`AttentionKernel`, computes the attention itself: the reference's by default, the one
    :class:`InferenceOptions` chooses for this decoder once :meth:`VallexModel.set_inference_options` has run.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self._register_state_dict_hook(_packed_projection_to_reference_keys)
        self._register_load_state_dict_pre_hook(_packed_projection_from_reference_keys)
        self.attend: AttentionKernel = AttentionKernel()

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        cache: LayerCache | None = None,
        start: int | RowPositions = 0,
        query_start: int = 0,
    ) -> Tensor:
        """x [B, T, D] -> [B, T - query_start, D]: :func:`self_attention` with this module's projections."""
        return self_attention(x, attn_mask, cache, start, query_start, in_proj=self.in_proj, out_proj=self.out_proj,
                              attend=self.attend, num_heads=self.num_heads)


def self_attention(
    x: Tensor,
    attn_mask: Tensor | None = None,
    cache: LayerCache | None = None,
    start: int | RowPositions = 0,
    query_start: int = 0,
    *,
    in_proj: Callable[[Tensor], Tensor],
    out_proj: Callable[[Tensor], Tensor],
    attend: AttentionKernel,
    num_heads: int,
) -> Tensor:
    """Multi-head self-attention with a packed QKV projection: x [B, T, D] -> [B, T - query_start, D].

    ``attn_mask``: bool [T, T_total] (or broadcastable, e.g. [B, 1, 1, T_total]), True = may attend.
    With ``cache`` (a :class:`LayerCache`, e.g. :class:`vallex.inference.fastpath.LayerKVCache`), keys/values of
    these T positions are written at ``start`` and the queries attend to cache positions ``< start + T`` (``start``
    may give each row its own position: :class:`RowPositions`). Only positions ``>= query_start`` are queried: every
    position still provides keys and values, but outputs nobody reads are not computed.
    """
    batch, length, dim = x.shape
    qkv = in_proj(x).view(batch, length, 3, num_heads, dim // num_heads).permute(0, 2, 3, 1, 4)  # [B, 3, H, T, hd]
    q = qkv[:, 0]  # [B, H, T, hd]
    if cache is None:
        k, v = qkv[:, 1], qkv[:, 2]
    else:
        k, v, cache_mask = cache.append(qkv[:, 1:], start)  # keys and values in one write; [B, H, start + T, hd]
        attn_mask = attn_mask if cache_mask is None else cache_mask
        if q.dtype != k.dtype:  # the cache may be float32 under a 16-bit model
            q = q.to(k.dtype)
    if query_start:
        q = q[:, :, query_start:]  # [B, H, T', hd]
        if attn_mask is not None and attn_mask.shape[-2] == length:
            attn_mask = attn_mask[..., query_start:, :]
    out = attend(q, k, v, attn_mask).transpose(1, 2).reshape(batch, q.shape[2], dim)  # [B, T', D]
    return out_proj(out if out.dtype == x.dtype else out.to(x.dtype))


def _packed_projection_to_reference_keys(module, state_dict, prefix, local_metadata):
    state_dict[prefix + "in_proj_weight"] = state_dict.pop(prefix + "in_proj.weight")
    state_dict[prefix + "in_proj_bias"] = state_dict.pop(prefix + "in_proj.bias")
    # Keep the reference's key order: in_proj_* first, then out_proj.*.
    for key in (prefix + "out_proj.weight", prefix + "out_proj.bias"):
        state_dict[key] = state_dict.pop(key)
    return state_dict


def _packed_projection_from_reference_keys(state_dict, prefix, *args, **kwargs):
    for old, new in (("in_proj_weight", "in_proj.weight"), ("in_proj_bias", "in_proj.bias")):
        if prefix + old in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)


class LayerNorm(nn.LayerNorm):
    """Plain LayerNorm (eps 1e-5). ``stage`` is accepted and ignored so both layer kinds share code."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, eps=LAYER_NORM_EPS)

    def forward(self, x: Tensor, stage: Tensor | None = None) -> Tensor:
        return super().forward(x)


class AdaptiveLayerNorm(nn.Module):
    """``w ⊙ LayerNorm(x) + b`` with ``[w, b] = project_layer(stage embedding)`` (NAR only)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.project_layer = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, x: Tensor, stage: Tensor) -> Tensor:  # x [B, T, D], stage [1, D]
        weight, bias = torch.split(self.project_layer(stage), self.dim, dim=-1)  # [1, D] each
        return torch.addcmul(bias, weight, self.norm(x))


@dataclass(frozen=True)
class LayerOps:
    """One decoder layer's operations as callables: what :func:`decoder_layer` computes with.

    :meth:`DecoderLayer.ops` gives the layer's own modules (so their hooks, e.g. training dropout, run);
    :mod:`vallex.inference.fastpath` binds the same parameters to plain functions once per generation for the
    AR's one-frame steps. Either way the arithmetic is :func:`decoder_layer`'s and :func:`self_attention`'s.
    """

    norm1: Callable[[Tensor], Tensor]
    attention: Callable[[Tensor, Tensor | None, LayerCache | None, int | RowPositions, int], Tensor]
    # (x, attn_mask, cache, start, query_start) -> :func:`self_attention`
    norm2: Callable[[Tensor], Tensor]
    linear1: Callable[[Tensor], Tensor]
    linear2: Callable[[Tensor], Tensor]


def decoder_layer(
    ops: LayerOps,
    x: Tensor,
    attn_mask: Tensor | None = None,
    cache: LayerCache | None = None,
    start: int | RowPositions = 0,
    query_start: int = 0,
) -> Tensor:
    """Pre-norm block ``h = x + Attn(Norm1(x)); out = h + FFN(Norm2(h))`` (ReLU FFN): x [B, T, D] -> [B, T', D].

    T' = T - query_start; ``cache``/``start`` as in :func:`self_attention`.
    """
    x = (x[:, query_start:] if query_start else x) + ops.attention(ops.norm1(x), attn_mask, cache, start, query_start)
    # In-place ReLU: one [B, T, 4D] buffer less per layer (fresh pages cost page faults on CPU).
    return x + ops.linear2(F.relu(ops.linear1(ops.norm2(x)), inplace=True))


class DecoderLayer(nn.Module):
    """Pre-norm block: ``h = x + Attn(Norm1(x)); out = h + FFN(Norm2(h))`` with a ReLU FFN."""

    def __init__(self, config: VallexConfig, adaptive: bool) -> None:
        super().__init__()
        dim = config.d_model
        self.self_attn = MultiheadSelfAttention(dim, config.nhead)
        self.linear1 = nn.Linear(dim, config.ff_multiplier * dim)
        self.linear2 = nn.Linear(config.ff_multiplier * dim, dim)
        norm = AdaptiveLayerNorm if adaptive else LayerNorm
        self.norm1 = norm(dim)
        self.norm2 = norm(dim)

    def ops(self, stage: Tensor | None = None) -> LayerOps:
        """This layer's modules as :class:`LayerOps` (the norms told the NAR stage)."""
        return LayerOps(norm1=functools.partial(self.norm1, stage=stage), attention=self.self_attn,
                        norm2=functools.partial(self.norm2, stage=stage), linear1=self.linear1, linear2=self.linear2)

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        stage: Tensor | None = None,
        cache: LayerCache | None = None,
        start: int | RowPositions = 0,
        query_start: int = 0,
    ) -> Tensor:  # x [B, T, D] -> [B, T - query_start, D]
        return decoder_layer(self.ops(stage), x, attn_mask, cache, start, query_start)


class Decoder(nn.Module):
    """A stack of decoder layers and a final norm (``layers.{i}``, ``norm``)."""

    def __init__(self, config: VallexConfig, adaptive: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(config, adaptive) for _ in range(config.num_layers))
        self.norm = AdaptiveLayerNorm(config.d_model) if adaptive else LayerNorm(config.d_model)

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        stage: Tensor | None = None,
        cache: DecoderCache | None = None,
        start: int | RowPositions = 0,
        output_start: int = 0,
    ) -> Tensor:  # x [B, T, D] -> [B, T - output_start, D]
        """``output_start``: only positions from there on are returned, and the last layer computes
        only those (earlier layers must run everywhere: their outputs are the last layer's keys/values).
        """
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, attn_mask, stage, None if cache is None else cache.layers[i], start,
                      output_start if i == last else 0)
        return self.norm(x, stage)


@dataclass(frozen=True)
class InferenceOptions:
    """How a model computes at inference beyond its weights; the defaults are the reference's arithmetic.

    ``ar_attention`` / ``nar_attention``: the :class:`AttentionKernel` of every attention of the AR / NAR decoder.
    ``ar_cache_dtype``: the AR's KV cache's dtype (None: :func:`vallex.inference.fastpath.kv_cache_dtype`'s default,
    float32 on CPU, the model's dtype elsewhere). :func:`vallex.inference.precision.apply_precision` sets them from
    its kernel plan (:func:`vallex.inference.fastpath.install`); :meth:`VallexModel.set_inference_options` is the one
    way to change them. Not part of the state dict.
    """

    ar_attention: AttentionKernel = AttentionKernel()
    nar_attention: AttentionKernel = AttentionKernel()
    ar_cache_dtype: torch.dtype | None = None


class VallexModel(nn.Module):
    """VALL-E X with the reference checkpoint's parameter names, in its state-dict order.

    Text ids are bpe_69 phoneme ids; audio ids are EnCodec codes 0..1023, EOS = 1024, BOS = 1025.
    Language ids: en=0, zh=1, ja=2 in the public checkpoint (:data:`vallex.languages.MODEL_LANGUAGE_ID`); a model
    trained on more languages has a row for each, named in ``config.languages``. ``inference_options``: its
    :class:`InferenceOptions` (set by :meth:`set_inference_options`).
    """

    inference_options: InferenceOptions

    def __init__(self, config: VallexConfig) -> None:
        super().__init__()
        self.config = config
        d, n_q = config.d_model, config.num_quantizers
        # Registration order = the reference's state-dict order.
        self.ar_text_embedding = TokenEmbedding(config.text_vocab_size, d)
        self.nar_text_embedding = TokenEmbedding(config.text_vocab_size, d)
        self.ar_audio_embedding = TokenEmbedding(config.audio_vocab_size + 2, d)  # + EOS, BOS
        self.ar_text_position = SinePositionalEmbedding(d)
        self.ar_audio_position = SinePositionalEmbedding(d)
        self.ar_decoder = Decoder(config, adaptive=False)
        self.ar_predict_layer = nn.Linear(d, config.audio_vocab_size + 1, bias=False)  # codes + EOS
        # Codebook 0 embedding has an EOS row (the AR output may end the sequence); the others do not.
        self.nar_audio_embeddings = nn.ModuleList(
            [TokenEmbedding(config.audio_vocab_size + 1, d)]
            + [TokenEmbedding(config.audio_vocab_size, d) for _ in range(n_q - 1)]
        )
        self.nar_text_position = SinePositionalEmbedding(d)
        self.nar_audio_position = SinePositionalEmbedding(d)
        self.nar_decoder = Decoder(config, adaptive=True)
        self.nar_predict_layers = nn.ModuleList(
            nn.Linear(d, config.audio_vocab_size, bias=False) for _ in range(n_q - 1)
        )
        self.nar_stage_embeddings = nn.ModuleList(TokenEmbedding(1, d) for _ in range(n_q - 1))
        self.ar_language_embedding = TokenEmbedding(config.num_languages, d)
        self.nar_language_embedding = TokenEmbedding(config.num_languages, d)
        self.tie_weights()
        self.set_inference_options(InferenceOptions())

    def set_inference_options(self, options: InferenceOptions) -> None:
        """Compute as ``options`` say from now on: each decoder's attentions get its :class:`AttentionKernel`
        (``self_attn.attend``), and the AR's caches are allocated in ``options.ar_cache_dtype``."""
        self.inference_options = options
        for decoder, kernel in ((self.ar_decoder, options.ar_attention), (self.nar_decoder, options.nar_attention)):
            for module in decoder.modules():
                if isinstance(module, MultiheadSelfAttention):
                    module.attend = kernel

    def tie_weights(self) -> None:
        """Share NAR predictor j's weight with NAR audio embedding j+2 (j = 0..n_q-3), as the checkpoint does.

        The off-by-one is the reference's: the predictor of codebook j+1 shares with the *input*
        embedding of codebook j+2; the last predictor is untied. Call again after loading with
        ``assign=True``, which replaces parameter objects.
        """
        for j in range(self.config.num_quantizers - 2):
            self.nar_predict_layers[j].weight = self.nar_audio_embeddings[j + 2].word_embeddings.weight

    # Embeddings ---------------------------------------------------------------------------------
    def embed_text(self, side: str, text: Tensor, text_langs: Tensor) -> Tensor:
        """Text input of the ``"ar"`` or ``"nar"`` decoder.

        text, text_langs: LongTensor [B, S] (phoneme ids, language ids) -> [B, S, D]:
        token embedding + language embedding, then + alpha * PE (positions from 0).
        """
        token = getattr(self, f"{side}_text_embedding")
        language = getattr(self, f"{side}_language_embedding")
        position = getattr(self, f"{side}_text_position")
        return position(token(text) + language(text_langs))

    def embed_ar_audio(self, codes: Tensor, offset: int = 0) -> Tensor:
        """AR audio input: codes LongTensor [B, T] (0..1025, BOS first) at positions offset.. -> [B, T, D]."""
        return self.ar_audio_position(self.ar_audio_embedding(codes), offset)

    def embed_ar_frame(self, codes: Tensor, positions: Tensor, table_len: int) -> Tensor:
        """One AR audio input per row at its own position: codes, positions LongTensor [B] -> [B, 1, D].

        Row b equals ``embed_ar_audio(codes[b:b+1, None], offset=positions[b])`` exactly. ``table_len``: more
        than the largest position, a host integer (why: reading ``positions.max()`` back from a GPU would be a
        host-device sync per AR step).
        """
        embedded = self.ar_audio_embedding(codes)  # [B, D]
        table = self.ar_audio_position.table(table_len, embedded.device, embedded.dtype)
        return (embedded + self.ar_audio_position.alpha * table[positions])[:, None]

    def embed_nar_audio(self, codes: Tensor, prompt_lens: int | Tensor, stage: int) -> Tensor:
        """NAR audio input before PE, prefix mode 1: codes LongTensor [B, T, Q] -> [B, T, D].

        Every frame carries its codebooks ``0..stage-1`` (``stage`` = the codebook the NAR predicts next);
        the first ``prompt_lens`` frames (an int, or LongTensor [B] per row) are the acoustic prompt and
        carry all Q. Codebooks a frame does not carry may hold anything. The sums run codebook by
        codebook in the same order for every caller (inference, batches, training), so all agree bit for bit.
        """
        embeddings = self.nar_audio_embeddings
        frames = torch.arange(codes.shape[1], device=codes.device)
        lens = prompt_lens if isinstance(prompt_lens, Tensor) else torch.tensor([prompt_lens], device=codes.device)
        in_prompt = (frames[None] < lens.reshape(-1, 1))[..., None]  # [B or 1, T, 1]
        x = embeddings[0](codes[..., 0])
        for j in range(1, len(embeddings)):
            e = embeddings[j](codes[..., j])
            x = x + (e if j < stage else torch.where(in_prompt, e, 0.0))
        return x

    def nar_stage_embedding(self, stage: int) -> Tensor:
        """Stage embedding [1, D] of NAR stage ``stage`` (0-based; predicts codebook stage+1)."""
        return self.nar_stage_embeddings[stage].weight

    # Decoders -----------------------------------------------------------------------------------
    def ar_logits(self, hidden: Tensor) -> Tensor:
        """[..., D] -> logits [..., 1025] over codes + EOS."""
        return self.ar_predict_layer(hidden)

    def nar_forward(
        self,
        text_emb: Tensor,
        audio_emb: Tensor,
        stage: int,
        key_padding_mask: Tensor | None = None,
        *,
        output_start: int = 0,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """One NAR stage over ``[text ; audio + PE]`` with full attention.

        text_emb [B, S, D] (from :meth:`embed_text`), audio_emb [B, T, D] (summed codebook embeddings
        before PE). ``key_padding_mask`` bool [B, S+T], True = padding (training batches only).
        Returns the decoder output of audio positions ``output_start..T-1`` [B, T - output_start, D]
        (inference passes the prompt length: prompt frames are never predicted). The last layer
        computes only those rows. ``cache``: one :class:`LayerCache` per layer (``cache.layers[i]``), at position 0
        (streaming keeps the text's and prompt's keys and values through it,
        :class:`vallex.inference.nar.NARPrefix`).
        """
        xy = torch.cat([text_emb, self.nar_audio_position(audio_emb)], dim=1)  # [B, S+T, D]
        mask = None
        if key_padding_mask is not None:
            mask = (~key_padding_mask)[:, None, None, :]  # [B, 1, 1, S+T], True = may attend
        return self.nar_decoder(xy, mask, stage=self.nar_stage_embedding(stage), cache=cache,
                                output_start=text_emb.shape[1] + output_start)

    def extra_repr(self) -> str:
        return f"config={self.config}"


def ar_attention_mask(text_len: int, audio_len: int, device=None) -> Tensor:
    """Bool [S+T, S+T], True = may attend: text sees all text; audio sees all text and earlier audio."""
    total = text_len + audio_len
    mask = torch.ones(total, total, dtype=torch.bool, device=device).tril_()
    mask[:, :text_len] = True  # every position sees the whole text
    mask[:text_len, text_len:] = False  # text never sees audio
    return mask


def count_parameters(module: nn.Module) -> int:
    """Unique parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())
