"""Inference precisions: float32 (parity), bfloat16/float16 weights and compute, int8 Linear weights.

Where the time goes (bench/inference.py, 2 CPU cores): an AR step reads every AR decoder weight once, so
its cost is set by the bytes of those weights (0.6 GB in float32), and a NAR stage is ~600-row matrix
products. Halving or quartering the weight bytes is the lever:

* ``"float32"`` — the reference's arithmetic; golden parity holds only here. On x86 its Linears run on
  oneDNN's float32 kernel rather than MKL's (:class:`vallex.model.Linear`): one decoder's 48 Linears at one
  row take 27.7 ms instead of 42.9 ms.
* ``"bfloat16"`` / ``"float16"`` — every parameter and activation in 16 bits (the AR's KV cache stays
  float32 on CPU, see :func:`vallex.model.kv_cache_dtype`). float16 is the choice on CUDA. On CPU,
  bfloat16 pays only with AVX512-BF16/AMX (measure with bench/inference.py); float16 is slow there.
* ``"int8"`` (CPU only) — the decoders' attention and feed-forward Linears get int8 weights (symmetric,
  one scale per output channel) and activations quantised per call (per tensor); float32 everywhere else
  (embeddings, norms and their stage projections, attention scores, output heads). Two torch kernels, each
  where it measured fastest (bench/inference.py, 2 cores, the 48 Linears of one decoder):

  - the AR decoder (one row per step) uses fbgemm's dynamic Linear (``torch.ao``): 7.3 ms per step, the
    memory-bandwidth floor for 151 M int8 weights (oneDNN: 8.2 ms);
  - the NAR decoder (~600 rows per stage) uses oneDNN's int8 Linear (``torch.ops.onednn.qlinear_pointwise``,
    the kernel torch.compile's x86 int8 path calls) on uint8 activations: 224 ms vs fbgemm's 283 ms, and with
    8-bit instead of fbgemm's 7-bit activations its outputs are twice as close to float32. Where that op
    is missing (non-x86 builds) the NAR uses fbgemm too.
  - the NAR's attention (q, k, v, scores, weights) runs in bfloat16 on CPUs with native bfloat16
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``): 0.41 vs 0.47 s per stage, and the NAR output's
    deviation from float32 unchanged (0.639 % relative, dominated by the int8 Linears). The AR keeps float32
    attention over a float32 cache: a bfloat16 cache measured slower per step (14.2 vs 11.9 ms).

  torchao 0.18's eager int8 configs measured 8-10x slower at batch 1 on this CPU (weight-only 78 ms,
  dynamic 68 ms vs 6.8 ms), so torch's own kernels are used and torchao is not a dependency.

``apply_precision`` converts a loaded model in place; the output heads and embeddings (the tied NAR
predictors included) keep float32 under int8, so sampling and argmax see full-precision logits. For CPU
models it also lets malloc keep freed activation buffers (:func:`keep_freed_memory_for_reuse`).
"""
from __future__ import annotations

import ctypes
import functools
import sys
import warnings
from typing import Callable

import torch
from torch import Tensor, nn

from vallex.model import Linear, VallexModel

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
    if device.type == "cpu":
        keep_freed_memory_for_reuse()
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
        if cpu_has_native_bfloat16():
            for layer in model.nar_decoder.layers:
                layer.self_attn.attention_dtype = torch.bfloat16
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
    """True when some Linear layer of ``model`` has int8 weights (:func:`int8_linear`)."""
    quantized = (torch.ao.nn.quantized.dynamic.Linear, OneDNNInt8Linear)
    return any(isinstance(module, quantized) for module in model.modules())


#: Linears kept in float32 under int8: the adaptive norms' stage projections. They see one row per call
#: (the stage embedding), so they cost nothing, but their output scales every NAR activation: quantising
#: them cut the NAR's top-1 agreement with float32 from 99.6 % to 97.2 % (trained tiny model, bench/fidelity.py).
KEEP_FLOAT_LINEARS = ("project_layer",)


def _quantize_decoder_linears(model: VallexModel) -> None:
    """Replace the nn.Linears inside ``ar_decoder`` (fbgemm) and ``nar_decoder`` (oneDNN) by int8 Linears.

    All but :data:`KEEP_FLOAT_LINEARS`. One weight at a time: each float32 weight is released as soon as
    its int8 copy exists, so with memory-mapped weights (``load_model`` of a .safetensors file) the
    float32 model is never resident as a whole.
    """
    for decoder, kernel in ((model.ar_decoder, "fbgemm"), (model.nar_decoder, "onednn")):
        # Collect only the parents: a list holding the Linears themselves would keep every float32
        # weight alive until the end.
        parents = [m for m in decoder.modules() if any(_is_float_linear(c) for c in m.children())]
        for parent in parents:
            names = [name for name, child in parent.named_children()
                     if _is_float_linear(child) and name not in KEEP_FLOAT_LINEARS]
            for name in names:
                setattr(parent, name, int8_linear(getattr(parent, name), kernel))


def _is_float_linear(module: nn.Module) -> bool:
    return type(module) in (nn.Linear, Linear)


def _int8_weight(linear: nn.Linear) -> tuple[Tensor, Tensor | None]:
    """Symmetric per-output-channel int8 weight: (torch.qint8 tensor [out, in], float32 bias or None).

    Each row's scale is max |w| of the row / 127, so a row of small weights keeps its resolution. One
    quantising kernel and no float32 temporaries of the weight's size: freed 16 MB temporaries per Linear
    left the process's heap fragmented (peak RSS +200-400 MB for the int8 model).
    """
    weight = linear.weight.detach()  # [out, in], float32 (memory-mapped after load_model)
    scale = torch.maximum(weight.amax(dim=1), -weight.amin(dim=1)).div_(127.0).clamp_(min=1e-12)  # [out]
    zero_point = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        # torch deprecates its quantized tensor types (qint8/quint8) in favour of torchao; the warning is
        # a C++ warn-once for all of them, so silencing it here also keeps OneDNNInt8Linear.forward quiet.
        warnings.simplefilter("ignore")
        qweight = torch.quantize_per_channel(weight.float(), scale.double(), zero_point, 0, torch.qint8)
    bias = None if linear.bias is None else linear.bias.detach().float().clone()
    return qweight, bias


def int8_linear(linear: nn.Linear, kernel: str = "fbgemm") -> nn.Module:
    """An int8 copy of ``linear`` (float32 in and out, any leading dims).

    ``kernel``: ``"fbgemm"`` (torch.ao's dynamic Linear, fastest for one row) or ``"onednn"`` (fastest for
    hundreds of rows; falls back to fbgemm where torch lacks the op). Both use the same int8 weights.
    """
    if kernel not in ("fbgemm", "onednn"):
        raise ValueError(f"Unknown int8 kernel {kernel!r}: expected 'fbgemm' or 'onednn'.")
    qweight, bias = _int8_weight(linear)
    if kernel == "onednn" and onednn_int8_available():
        return OneDNNInt8Linear(qweight.int_repr(), qweight.q_per_channel_scales().float(), bias)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # see fbgemm_int8_linear_class
        # Built at 1x1 and then packed once: the constructor would first pack a full-size zero weight.
        qlinear = fbgemm_int8_linear_class()(1, 1, bias_=bias is not None, dtype=torch.qint8)
        qlinear.in_features, qlinear.out_features = linear.in_features, linear.out_features
        qlinear.set_weight_bias(qweight, bias)
    return qlinear


@functools.lru_cache(maxsize=None)
def fbgemm_int8_linear_class() -> type:
    """torch.ao's dynamic int8 Linear (fbgemm) with :func:`vallex.model.inference_function` support.

    Defined on first use: torch.ao.nn.quantized is deprecated in favour of torchao (whose eager CPU int8
    kernels measured 8-10x slower at batch 1 on our CPU), and importing it warns about nothing a user can act on.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    class FbgemmInt8Linear(DynamicQuantizedLinear):
        """float32 [..., in] -> float32 [..., out] through fbgemm's dynamic int8 Linear."""

        def inference_function(self) -> Callable[[Tensor], Tensor]:
            # What forward() runs for qint8 weights (reduce_range=True: fbgemm's 7-bit activations),
            # without its per-call checks and dtype cast (the AR's activations are float32 already).
            # The op's own C++ entry point where torch exposes it: calling the op through torch.ops
            # first scans the arguments in Python for traced script objects (~8 us, 48 times per AR step).
            op = getattr(torch.ops.quantized.linear_dynamic, "_op", torch.ops.quantized.linear_dynamic)
            packed = self._packed_params._packed_params
            return lambda x: op(x, packed, True)

    return FbgemmInt8Linear


class OneDNNInt8Linear(nn.Module):
    """``x @ W.T + b`` with int8 ``W`` (per output channel) and ``x`` quantised to uint8 per call, in oneDNN.

    x: float32 [..., in] -> float32 [..., out]. Activations use the full 8 bits (zero point from the
    tensor's min/max), weights are prepacked once into oneDNN's blocked layout.
    """

    def __init__(self, qweight: Tensor, scale: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.register_buffer("packed_weight", torch.ops.onednn.qlinear_prepack(qweight, None))
        self.register_buffer("weight_scale", scale.float().contiguous())
        self.register_buffer("weight_zero_point", torch.zeros(self.out_features, dtype=torch.long))
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        leading = x.shape[:-1]
        q = torch.quantize_per_tensor_dynamic(x.reshape(-1, self.in_features), torch.quint8, False)
        # The kernel takes plain uint8: view q's bytes as such (int_repr() would copy them, ~8 ms per stage).
        codes = torch.empty(0, dtype=torch.uint8, device=q.device).set_(
            q.untyped_storage(), q.storage_offset(), q.shape, q.stride())
        out = torch.ops.onednn.qlinear_pointwise(
            codes, q.q_scale(), q.q_zero_point(), self.packed_weight, self.weight_scale,
            self.weight_zero_point, self.bias, 1.0, 0, torch.float32, "none", [], "",
        )  # [N, out]
        return out.view(*leading, self.out_features)

    def inference_function(self) -> Callable[[Tensor], Tensor]:
        return self.forward

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel=onednn"


@functools.lru_cache(maxsize=None)
def onednn_int8_available() -> bool:
    """Whether this torch build runs oneDNN's int8 Linear here (x86 builds with oneDNN); checked once."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        packed = torch.ops.onednn.qlinear_prepack(torch.ones(2, 4, dtype=torch.int8), None)
        x = torch.full((1, 4), 3, dtype=torch.uint8)
        out = torch.ops.onednn.qlinear_pointwise(
            x, 0.5, 1, packed, torch.ones(2), torch.zeros(2, dtype=torch.long), None, 1.0, 0,
            torch.float32, "none", [], "",
        )
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return bool(torch.allclose(out, torch.full((1, 2), 4.0)))  # 4 x (3 - 1) x 0.5 x 1


@functools.lru_cache(maxsize=None)
def cpu_has_native_bfloat16() -> bool:
    """Whether oneDNN runs bfloat16 matmuls natively on this CPU (AVX512-BF16 or AMX); checked once."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (RuntimeError, AttributeError):
        return False


#: glibc ``mallopt`` parameters (malloc.h) and the values :func:`keep_freed_memory_for_reuse` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's maximum on 64-bit
_TRIM_THRESHOLD_BYTES = 1 << 30


@functools.lru_cache(maxsize=None)
def keep_freed_memory_for_reuse() -> bool:
    """Let glibc's malloc keep freed activation buffers for reuse instead of returning them to the kernel.

    A NAR stage allocates and frees dozens of 2-23 MB tensors (scores, feed-forward activations). glibc maps
    every block over its dynamic threshold with ``mmap`` and unmaps it on free, so each stage faulted in
    (zero-filled) the same memory again: 2.1 M page faults and ~4 s of kernel time per three 7-stage NARs of
    the public model, 0.1 s per stage. Serving all blocks up to 32 MB from the heap and trimming the heap
    only past 1 GB free measured NAR 3.36 -> 2.75 s (int8, 2 cores) and peak RSS 914 -> 876 MB. Affects
    the whole process (as ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` would); done once, on
    Linux with glibc only; returns whether it was applied. :func:`apply_precision` calls it for CPU models.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))
