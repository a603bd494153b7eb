"""Inference precisions: float32 (parity), bfloat16/float16 weights and compute, int8 Linear weights.

Where the time goes (bench/inference.py, 2 CPU cores): an AR step reads every AR decoder weight once, so
its cost is set by the bytes of those weights (0.6 GB in float32), and a NAR stage is ~600-row matrix
products. Halving or quartering the weight bytes is the lever:

* ``"float32"`` — the reference's arithmetic; golden parity holds only here.
* ``"bfloat16"`` / ``"float16"`` — every parameter and activation in 16 bits (the AR's KV cache stays
  float32 on CPU, see :func:`vallex.model.kv_cache_dtype`). float16 is the choice on CUDA. On CPU,
  bfloat16 pays only with AVX512-BF16/AMX (measure with bench/inference.py); float16 is slow there.
* ``"int8"`` (CPU only) — the decoders' attention and feed-forward Linears become dynamically quantised
  Linears: weights int8 per output channel, activations quantised per call, int8 x int8 products in
  fbgemm, float32 everywhere else (embeddings, norms and their stage projections, attention scores,
  output heads, KV cache). torchao 0.18's eager int8 configs measured 8-10x slower at batch 1 on this
  CPU (weight-only 78 ms, dynamic 68 ms vs 6.8 ms for the 48 Linears of one decoder), so torch's own
  dynamic quantisation is used and torchao is not a dependency.

``apply_precision`` converts a loaded model in place; the output heads and embeddings (the tied NAR
predictors included) keep float32 under int8, so sampling and argmax see full-precision logits.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from vallex.model import VallexModel

#: Accepted names and their aliases.
PRECISIONS: dict[str, str] = {
    "float32": "float32", "fp32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "int8": "int8", "qint8": "int8",
}

_FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def normalize_precision(precision: str | torch.dtype) -> str:
    """``"bf16"``, ``torch.bfloat16`` ... -> the canonical name (``"bfloat16"``); ValueError if unknown."""
    name = str(precision).replace("torch.", "").lower()
    if name not in PRECISIONS:
        raise ValueError(
            f"Unknown precision {precision!r}: expected one of float32, bfloat16, float16 or int8."
        )
    return PRECISIONS[name]


def default_precision(device: str | torch.device) -> str:
    """The fastest precision that keeps predictions close to float32 on this device kind.

    CUDA: float16 (tensor cores). CPU: float32 — int8 is much faster but is an explicit opt-in because its
    logits differ measurably from the reference (see bench/fidelity.py).
    """
    return "float16" if torch.device(device).type == "cuda" else "float32"


def apply_precision(
    model: VallexModel, precision: str | torch.dtype, device: str | torch.device | None = None
) -> VallexModel:
    """Move ``model`` to ``device`` and convert it to ``precision`` in place; returns the same model.

    Args:
        model: a loaded :class:`VallexModel` in eval mode (weights float32).
        precision: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"int8"`` (aliases: fp32, bf16, fp16).
        device: target device; default: where the model is.
    Raises:
        ValueError: unknown precision, or int8 on a non-CPU device.
    """
    name = normalize_precision(precision)
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    if name == "int8":
        if device.type != "cpu":
            raise ValueError(
                f"int8 weight quantisation runs on CPU only, not on {device.type}; "
                "use precision='float16' or 'bfloat16' on a GPU."
            )
        if is_quantized(model):
            return model
        model.to(device=device, dtype=torch.float32)
        _quantize_decoder_linears(model)
    else:
        if name == "float16" and device.type == "cpu":
            warnings.warn("float16 on CPU is for checking GPU numerics only: its matrix products measured "
                          "~8x slower than float32 here. Use 'bfloat16' or 'int8' for speed.", stacklevel=2)
        if is_quantized(model):
            raise ValueError(
                "This model's Linear layers are already int8; reload the checkpoint to use another precision."
            )
        model.to(device=device, dtype=_FLOAT_DTYPES[name])
    model.eval()
    return model


def is_quantized(model: nn.Module) -> bool:
    """True when some Linear layer of ``model`` is a dynamically quantised int8 Linear."""
    quantized = torch.ao.nn.quantized.dynamic.Linear
    return any(isinstance(module, quantized) for module in model.modules())


#: Linears kept in float32 under int8: the adaptive norms' stage projections. They see one row per call
#: (the stage embedding), so they cost nothing, but their output scales every NAR activation: quantising
#: them cut the NAR's top-1 agreement with float32 from 99.6 % to 97.2 % (trained tiny model, bench/fidelity.py).
KEEP_FLOAT_LINEARS = ("project_layer",)


def _quantize_decoder_linears(model: VallexModel) -> None:
    """Replace the nn.Linears inside ``ar_decoder`` and ``nar_decoder`` by int8 dynamic Linears.

    All but :data:`KEEP_FLOAT_LINEARS`. One weight at a time: each float32 weight is released as soon as
    its int8 copy exists, so with memory-mapped weights (``load_model`` of a .safetensors file) the
    float32 model is never resident as a whole.
    """
    for decoder in (model.ar_decoder, model.nar_decoder):
        # Collect only the parents: a list holding the Linears themselves would keep every float32
        # weight alive until the end.
        parents = [m for m in decoder.modules() if any(type(c) is nn.Linear for c in m.children())]
        for parent in parents:
            names = [name for name, child in parent.named_children()
                     if type(child) is nn.Linear and name not in KEEP_FLOAT_LINEARS]
            for name in names:
                setattr(parent, name, int8_linear(getattr(parent, name)))


def int8_linear(linear: nn.Linear) -> nn.Module:
    """An int8 dynamically quantised copy of ``linear`` (float32 in and out, any leading dims).

    Weights: symmetric int8 with one scale per output row (max |w| of the row / 127), so a row of small
    weights keeps its resolution. Activations: quantised per call (per tensor) inside the kernel.
    """
    with warnings.catch_warnings():
        # torch.ao.nn.quantized is deprecated in favour of torchao, whose eager CPU int8 kernels measured
        # 8-10x slower at batch 1 on our CPU; the warning says nothing a user can act on.
        warnings.simplefilter("ignore")
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

        weight = linear.weight.detach().float()  # [out, in]
        bias = None if linear.bias is None else linear.bias.detach().float()
        scale = (weight.abs().amax(dim=1) / 127.0).clamp_(min=1e-12).double()  # [out]
        zero_point = torch.zeros(weight.shape[0], dtype=torch.long)
        qweight = torch.quantize_per_channel(weight, scale, zero_point, 0, torch.qint8)
        # Built at 1x1 and then packed once: the constructor would first pack a full-size zero weight.
        qlinear = DynamicQuantizedLinear(1, 1, bias_=bias is not None, dtype=torch.qint8)
        qlinear.in_features, qlinear.out_features = linear.in_features, linear.out_features
        qlinear.set_weight_bias(qweight, bias)
    return qlinear
