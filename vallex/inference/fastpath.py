"""Inference fast paths: the same arithmetic as :mod:`vallex.model`, arranged to run faster.

:mod:`vallex.model` is the architecture in plain modules (``nn.Linear``, torch's attention, the two-step
adaptive norm). Everything here exists only for speed, and :func:`install` puts it on a loaded model
(:func:`vallex.inference.precision.apply_precision` calls it for every precision, per its kernel plan; the Linear
kernels it chooses are in :mod:`vallex.inference.kernels`):

* the attention kernels of :class:`vallex.model.InferenceOptions` (:class:`vallex.model.AttentionKernel`: two
  matmuls for 16-bit tensors on CPU, where torch's fused kernel is slower, optionally computing in another dtype:
  the int8 plan's bfloat16 NAR attention), and the AR's KV-cache dtype;
* :class:`FoldedAdaptiveLayerNorm` — each NAR stage's adaptive norm as one ``layer_norm`` whose affine
  folds in the stage's scale and shift, computed once per stage, put in place of each plain one;
* :class:`KVCache` and :class:`OneFrameStep` — the AR's preallocated key/value cache, and one AR step with
  the per-call Python of the module path hoisted out of the loop (:func:`vallex.inference.kernels.inference_function`).

How much each saves, and on which machine, is in bench/README.md. Every path computes what the plain module
computes, up to float32 rounding (the golden parity tests run both).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vallex.inference.kernels import inference_function, replace_modules
from vallex.model import (
    LAYER_NORM_EPS,
    AdaptiveLayerNorm,
    AttentionKernel,
    Decoder,
    DecoderLayer,
    InferenceOptions,
    LayerNorm,
    LayerOps,
    RowPositions,
    VallexModel,
    decoder_layer,
    self_attention,
)

# Adaptive norms ----------------------------------------------------------------------------------------------


class FoldedAdaptiveLayerNorm(AdaptiveLayerNorm):
    """:class:`~vallex.model.AdaptiveLayerNorm` that, without gradients, runs as one ``layer_norm`` per call.

    ``w ⊙ (γ ⊙ n + β) + b = (w ⊙ γ) ⊙ n + (w ⊙ β + b)``: the folded affine is computed in float32 once per
    stage and reused, keyed on the storage and version counters of the stage embedding and of every parameter
    involved (in-place updates or new weights recompute it). Why: it saves a matrix-vector product and a pass
    over the activations per norm and NAR stage. With gradients (training) the two-step form runs as written.
    Made from a plain norm, whose ``project_layer`` and ``norm`` it takes over (the same modules, so the same
    parameters and state-dict keys); :func:`fold_adaptive_norms` puts one in place of each plain norm of a model.
    """

    def __init__(self, plain: AdaptiveLayerNorm) -> None:
        # nn.Module's __init__, not AdaptiveLayerNorm's: that one would allocate and initialise a Linear and a
        # LayerNorm only to drop them for the plain norm's.
        nn.Module.__init__(self)
        self.dim = plain.dim
        self.project_layer = plain.project_layer
        self.norm = plain.norm
        self._folded_cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def forward(self, x: Tensor, stage: Tensor) -> Tensor:  # x [B, T, D], stage [1, D]
        if torch.is_grad_enabled():
            return super().forward(x, stage)
        scale, shift = self._folded_affine(stage)  # [D] each
        return F.layer_norm(x, (self.dim,), scale, shift, LAYER_NORM_EPS)

    def _folded_affine(self, stage: Tensor) -> tuple[Tensor, Tensor]:
        """(w ⊙ γ, w ⊙ β + b) of this stage, [D] each in the norm's dtype."""
        parameters = (stage, self.project_layer.weight, self.project_layer.bias, self.norm.weight, self.norm.bias)
        try:
            key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in parameters)
        except RuntimeError:  # inference-mode tensors have no version counter: nothing to key on
            return self._fold(stage)
        cache = self._folded_cache
        cached = cache.get(key)
        if cached is None:
            if len(cache) >= 16:  # stale entries of replaced weights
                cache.clear()
            cached = cache[key] = self._fold(stage)
        return cached

    def _fold(self, stage: Tensor) -> tuple[Tensor, Tensor]:
        weight, bias = torch.split(self.project_layer(stage).float().view(-1), self.dim)  # [D] each
        gamma, beta = self.norm.weight.float(), self.norm.bias.float()
        dtype = self.norm.weight.dtype
        return (weight * gamma).to(dtype), torch.addcmul(bias, weight, beta).to(dtype)


def fold_adaptive_norms(model: nn.Module) -> int:
    """Put a :class:`FoldedAdaptiveLayerNorm` in place of every plain :class:`~vallex.model.AdaptiveLayerNorm`
    inside ``model`` (its submodules, not ``model`` itself); returns how many. The parameters stay where they are."""
    return replace_modules(model, AdaptiveLayerNorm, FoldedAdaptiveLayerNorm)


# All of it ---------------------------------------------------------------------------------------------------


def install(model: VallexModel, *, nar_attention_dtype: torch.dtype | None = None,
            nar_attention_fused: bool = False, ar_cache_dtype: torch.dtype | None = None) -> None:
    """Put the precision-independent fast paths on a loaded ``model`` (in place): folded adaptive norms in place of
    the plain ones, and :class:`~vallex.model.InferenceOptions` whose attention kernels take two matmuls for 16-bit
    CPU tensors (the NAR's computing in ``nar_attention_dtype`` if given, on torch's fused kernel if
    ``nar_attention_fused``). ``ar_cache_dtype``: the AR's KV cache in this dtype (None: :func:`kv_cache_dtype`'s
    default); a 16-bit one is attended by torch's fused kernel.

    :func:`vallex.inference.precision.apply_precision` calls it, and chooses the Linears' kernels (e.g.
    :func:`vallex.inference.kernels.use_onednn_float32_linears`) by its kernel plan.
    """
    fold_adaptive_norms(model)
    model.set_inference_options(InferenceOptions(
        ar_attention=AttentionKernel(fused=ar_cache_dtype in (torch.bfloat16, torch.float16)),
        nar_attention=AttentionKernel(nar_attention_dtype, fused=nar_attention_fused),
        ar_cache_dtype=ar_cache_dtype,
    ))


# The AR's KV cache and one-frame step ------------------------------------------------------------------------


@dataclass
class LayerKVCache:
    """Preallocated keys and values of one layer, in one tensor ``kv`` [B, 2, H, capacity, hd] (keys, values): a
    :class:`vallex.model.LayerCache` (positions ``int | RowPositions``, :class:`vallex.model.RowPositions`).

    The cache's dtype may differ from the model's: writes cast.
    """

    kv: Tensor

    @property
    def capacity(self) -> int:
        return self.kv.shape[3]

    def append(self, kv: Tensor, start: int | RowPositions) -> tuple[Tensor, Tensor, Tensor | None]:
        """Write keys and values kv [B, 2, H, T, hd] at positions ``start..`` (one copy); returns the keys and
        values so far [B, H, end, hd] each and the mask to attend with (None: the caller's; per-row positions
        bring their own)."""
        if isinstance(start, RowPositions):  # one new position per row, each at its own place
            if kv.shape[3] != 1 or start.end > self.capacity:
                raise RuntimeError(f"per-row positions take one frame within the capacity {self.capacity}.")
            self.kv[start.rows, :, :, start.index] = kv[:, :, :, 0].to(self.kv.dtype)
            return self.kv[:, 0, :, :start.end], self.kv[:, 1, :, :start.end], start.mask
        end = start + kv.shape[3]
        if end > self.capacity:
            raise RuntimeError(f"KV cache overflow: {end} positions > capacity {self.capacity}.")
        self.kv[:, :, :, start:end] = kv  # casts to the cache's dtype
        return self.kv[:, 0, :, :end], self.kv[:, 1, :, :end], None


@dataclass
class KVCache:
    """One :class:`LayerKVCache` per decoder layer, allocated once for the whole generation (a
    :class:`vallex.model.DecoderCache`)."""

    layers: list[LayerKVCache]

    @classmethod
    def allocate(cls, config, batch: int, capacity: int, device, dtype) -> KVCache:
        """``config``: a :class:`~vallex.config.VallexConfig`; ``dtype``: use :func:`model_cache_dtype`."""
        shape = (batch, 2, config.nhead, capacity, config.head_dim)
        return cls([LayerKVCache(torch.empty(shape, device=device, dtype=dtype)) for _ in range(config.num_layers)])


def kv_cache_dtype(model_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The default: float32 on CPU whatever the model's dtype; the model's dtype elsewhere.

    Why: on CPU, 16-bit matmuls go through oneDNN, which compiles a kernel for every new shape, and
    attention over a cache that grows by one key per step would compile one every step. A float32 cache
    keeps the AR step's attention on the fused float32 kernel (one new key and one query per step are cast).
    A kernel plan may choose a bfloat16 cache with the fused bfloat16 kernel instead (:func:`model_cache_dtype`).
    """
    return torch.float32 if device.type == "cpu" else model_dtype


def model_cache_dtype(model: VallexModel, activation_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The AR KV cache's dtype for ``model``: its ``inference_options.ar_cache_dtype`` (what :func:`install` was
    told), else :func:`kv_cache_dtype`'s."""
    chosen = model.inference_options.ar_cache_dtype
    return chosen if chosen is not None else kv_cache_dtype(activation_dtype, device)


class OneFrameStep:
    """``decoder(x, None, cache=cache, start=start)`` for one new position, with the per-call Python work hoisted.

    An AR step runs every layer's ~25 small operations on one row; through the modules, their Python and
    dispatch (module calls, per-call dtype checks) are a noticeable part of a step. This binds every layer's
    Linears to plain functions (:func:`vallex.inference.kernels.inference_function`) and its norms' parameters to
    ``F.layer_norm`` once per generation, then runs the model's own layer arithmetic
    (:func:`vallex.model.decoder_layer`) with them, so its outputs equal the module path's bit for bit
    (tests/test_decoding.py). For inference only (no autograd); plain (non-adaptive) decoders only. Build a new
    one if the decoder's weights are replaced.
    """

    def __init__(self, decoder: Decoder, cache: KVCache) -> None:
        if not all(isinstance(layer.norm1, LayerNorm) for layer in decoder.layers):
            raise ValueError("OneFrameStep runs decoders with plain LayerNorms (the AR decoder) only.")
        if len(cache.layers) != len(decoder.layers):
            raise ValueError(f"the cache has {len(cache.layers)} layers, the decoder {len(decoder.layers)}.")
        self.cache = cache
        self.layers = [(_bound_ops(layer), layer_cache) for layer, layer_cache in zip(decoder.layers, cache.layers)]
        self.final_norm = _bound_norm(decoder.norm)

    def __call__(self, x: Tensor, start: int | RowPositions) -> Tensor:
        """x [B, 1, D], the input at cache position ``start`` (or each row's, :class:`RowPositions`) ->
        decoder output [B, 1, D]."""
        for ops, layer_cache in self.layers:
            x = decoder_layer(ops, x, None, layer_cache, start)
        return self.final_norm(x)


def _bound_norm(norm: LayerNorm) -> Callable[[Tensor], Tensor]:
    return functools.partial(F.layer_norm, normalized_shape=norm.normalized_shape, weight=norm.weight,
                             bias=norm.bias, eps=LAYER_NORM_EPS)


def _bound_ops(layer: DecoderLayer) -> LayerOps:
    """A plain layer's :class:`~vallex.model.LayerOps` as plain functions over its current parameters."""
    attn = layer.self_attn
    attention = functools.partial(self_attention, in_proj=inference_function(attn.in_proj),
                                  out_proj=inference_function(attn.out_proj), attend=attn.attend,
                                  num_heads=attn.num_heads)
    return LayerOps(norm1=_bound_norm(layer.norm1), attention=attention, norm2=_bound_norm(layer.norm2),
                    linear1=inference_function(layer.linear1), linear2=inference_function(layer.linear2))
