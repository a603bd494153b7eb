"""Inference precisions and the kernel plan: which kernel runs each part of the model, per CPU class.

Precisions: ``"float32"`` (the reference's arithmetic; golden parity holds only here), ``"bfloat16"`` /
``"float16"`` (every parameter and activation in 16 bits), ``"int8"`` (CPU only: the decoders' attention and
feed-forward Linears in int8, activations quantised per call, float32 elsewhere) and ``"auto"``
(:func:`resolve_precision`: on CPU the fastest measured for this CPU class, :data:`MEASURED_SPEED`; on CUDA
bfloat16 from compute capability 8.0 on, float16 before).

The kernel plan is :data:`CPU_KERNEL_TABLE`, one row per CPU class (:mod:`vallex.inference.cpu_features`) and
precision; :func:`kernel_plan` reads it (with fallbacks for kernels a torch build lacks) and
:func:`apply_precision` follows it. Why each choice: an AR step reads every AR weight once (its cost is set by
weight bytes), a NAR stage is ~600-row matrix products (compute), and each row of the table is what measured
fastest for that part on that class; the measurements are in bench/README.md ("Kernel choices per CPU class").
"""
from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from vallex.inference.cpu_features import CPU_CLASSES, CPUFeatures, cpu_features
from vallex.inference.fastpath import install, model_cache_dtype
from vallex.inference.kernels import (
    AR_ROWS_HINT,
    NAR_ROWS_HINT,
    OneDNNBf16Linear,
    OneDNNFloat32Linear,
    OneDNNInt8Linear,
    fbgemm_int8_linear_class,
    int8_linear,
    onednn_bf16_linear_available,
    onednn_float32_linear_available,
    onednn_int8_available,
    use_onednn_float32_linears,
)
from vallex.inference.memory import keep_freed_memory_for_reuse
from vallex.model import VallexModel

_LOG = logging.getLogger(__name__)

#: Accepted names and their aliases.
PRECISIONS: dict[str, str] = {
    "float32": "float32", "fp32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "int8": "int8", "qint8": "int8",
}

_FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


#: ``dtype`` value that picks the precision for the device (and CPU class): :func:`resolve_precision`.
AUTO = "auto"


def normalize_precision(precision: str | torch.dtype) -> str:
    """``"bf16"``, ``torch.bfloat16`` ... -> the canonical name (``"bfloat16"``); ValueError if unknown.

    ``"auto"`` is not a precision by itself: :func:`resolve_precision` turns it into one for a device.
    """
    name = str(precision).replace("torch.", "").strip().lower()
    if name == AUTO:
        raise ValueError("'auto' depends on the device: resolve it with "
                         "vallex.inference.precision.resolve_precision().")
    if name not in PRECISIONS:
        raise ValueError(
            f"Unknown precision {precision!r}: expected one of auto, float32, bfloat16, float16 or int8."
        )
    return PRECISIONS[name]


def check_precision_option(value: str | torch.dtype | None) -> str | None:
    """``"auto"``, a canonical precision name, or None (unset); ValueError for anything else.

    For settings read before a device is known (the app's ``VALLEX_DTYPE``).
    """
    if value is None:
        return None
    if str(value).strip().lower() == AUTO:
        return AUTO
    return normalize_precision(value)


def default_precision(device: str | torch.device) -> str:
    """float16 on CUDA, float32 elsewhere: the closest-to-float32 choice per device kind.

    Not what ``"auto"`` picks on CPU (that is the fastest measured, e.g. int8: :func:`resolve_precision`).
    """
    return "float16" if torch.device(device).type == "cuda" else "float32"


# Speed per CPU class: what "auto" picks --------------------------------------------------------------
@dataclass(frozen=True)
class MeasuredSpeed:
    """End-to-end real-time factors of bench/inference.py's workload on one CPU class (lower is faster)."""

    rtf: dict[str, float]  # precision -> total time / audio time
    source: str  # which run, where its numbers are kept


#: Measured, per CPU class: the full benchmark (``make bench``) on an idle machine. ``auto`` picks the
#: fastest of these; every one of them is within the fidelity bounds of bench/fidelity.py.
MEASURED_SPEED: Mapping[str, MeasuredSpeed] = MappingProxyType({
    "x86-avx512-bf16-vnni": MeasuredSpeed(
        rtf={"float32": 3.92, "bfloat16": 3.38, "int8": 1.45},
        source="bench/results/inference-cpu-2threads.json: bench/inference.py --dtype all --stream, AMD EPYC "
               "(avx512_bf16, avx512_vnni, no AMX), 2 threads, torch 2.13, 300 frames, medians of 3, each "
               "row started at a load average <= 0.5 (README 'Speed and precision')",
    ),
    "x86-amx": MeasuredSpeed(
        rtf={"float32": 3.19, "bfloat16": 1.61, "int8": 1.02},
        source="bench/results/inference-x86-amx-2threads.json: bench/inference.py --dtype all --stream, Intel "
               "Xeon with AMX (amx_bf16, amx_int8), 2 threads, torch 2.13, 300 frames, medians of 3, each row "
               "started at a load average <= 0.5 (README 'Speed and precision')",
    ),
})

#: Never measured, per CPU class: a best guess and why. Replace by a MEASURED_SPEED entry once measured.
GUESSED_PRECISION: Mapping[str, tuple[str, str]] = MappingProxyType({
    "x86-avx512-vnni": ("int8", "best guess, unmeasured: the same VNNI int8 kernels as the measured class; "
                                "bfloat16 is emulated on this class"),
    "x86-avx512": ("int8", "best guess, unmeasured: fbgemm's AVX-512 int8 kernels read a quarter of "
                           "float32's weight bytes per AR step; bfloat16 is emulated on this class"),
    "x86-avx2": ("int8", "best guess, unmeasured: fbgemm's AVX2 int8 kernels read a quarter of float32's "
                         "weight bytes per AR step; no bfloat16 hardware"),
    "arm64": ("float32", "best guess, unmeasured: the int8 kernels here are x86 ones (torch's arm64 "
                         "quantized engine is untested in this project), so the known-good float32"),
    "other": ("float32", "best guess, unmeasured: no reduced-precision kernel is known to pay here"),
})


@dataclass(frozen=True)
class AutoChoice:
    """What ``"auto"`` means on one CPU class, and on what grounds."""

    cpu_class: str
    precision: str
    measured: bool
    reason: str


def auto_precision_for_cpu(cpu_class: str) -> AutoChoice:
    """The precision ``"auto"`` picks on ``cpu_class``: the fastest measured, else the documented guess."""
    if cpu_class not in CPU_CLASSES:
        raise ValueError(f"Unknown CPU class {cpu_class!r}: expected one of {', '.join(CPU_CLASSES)}.")
    measured = MEASURED_SPEED.get(cpu_class)
    if measured is not None:
        best = min(measured.rtf, key=measured.rtf.__getitem__)
        return AutoChoice(cpu_class, best, True, f"fastest measured (RTF {measured.rtf[best]:.2f}; "
                                                 f"{measured.source})")
    precision, reason = GUESSED_PRECISION[cpu_class]
    return AutoChoice(cpu_class, precision, False, reason)


#: The first CUDA compute capability with bfloat16 arithmetic in hardware (Ampere's tensor cores; Ada and Hopper
#: after it). Below it (V100 sm_70, T4 sm_75) torch emulates bfloat16: correct, but slower than float16 and float32.
CUDA_NATIVE_BFLOAT16 = (8, 0)
#: The first CUDA compute capability with native half-precision arithmetic.
CUDA_NATIVE_FLOAT16 = (5, 3)


def cuda_native_bfloat16(capability: tuple[int, int], bf16_supported: bool = True) -> bool:
    """Whether a CUDA GPU of this compute capability computes in bfloat16 natively (:data:`CUDA_NATIVE_BFLOAT16`).

    ``bf16_supported``: torch's own answer, ``torch.cuda.is_bf16_supported(including_emulation=False)`` (False e.g.
    on a CUDA build too old for bfloat16). Inference's ``"auto"``, training's ``precision: auto`` and the advice of
    :class:`vallex.inference.sampling.NonFiniteLogits` all decide by this.
    """
    return tuple(capability) >= CUDA_NATIVE_BFLOAT16 and bf16_supported


def cuda_auto_precision(capability: tuple[int, int], bf16_supported: bool) -> str:
    """``"auto"`` on a CUDA GPU of this compute capability.

    bfloat16 from sm_80 on (:func:`cuda_native_bfloat16`: Ampere, Hopper, ...: native bfloat16 tensor cores, and
    float32's exponent range, so no activation overflows to inf as float16's can); float16 on sm_53..sm_75 (T4,
    V100: native half arithmetic, bfloat16 only emulated); below that bfloat16 where the GPU has it, else float32.
    How far each is from float32 on the full-size model: ``bench/fidelity.py --dtypes bfloat16,float16`` on a GPU.
    """
    capability = tuple(capability)
    if cuda_native_bfloat16(capability, bf16_supported):
        return "bfloat16"
    if capability >= CUDA_NATIVE_FLOAT16:
        return "float16"
    return "bfloat16" if bf16_supported else "float32"


def cuda_device_facts(device: str | torch.device = "cuda") -> tuple[tuple[int, int], bool]:
    """(compute capability, torch's answer to "native bfloat16?") of a CUDA device (``"cuda"``: the current one).

    The two inputs of :func:`cuda_auto_precision` and :func:`cuda_native_bfloat16`, read from torch.
    """
    device = torch.device(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch without the keyword
        bf16 = torch.cuda.is_bf16_supported()
    return tuple(torch.cuda.get_device_capability(index)), bf16


def overflow_advice(device_type: str, capability: tuple[int, int] | None = None,
                    cpu_native_bfloat16: bool = True) -> str:
    """The dtypes to advise when float16 overflowed (non-finite logits), on a device of this kind.

    bfloat16 has float32's exponent range at half its bytes, so it is advised where the hardware computes in it:
    on CUDA by ``capability`` (:func:`cuda_native_bfloat16`: not on a T4 or V100, where ``"auto"`` is float16
    and bfloat16 would be emulated, slowly), on CPU by ``cpu_native_bfloat16``
    (:attr:`vallex.inference.cpu_features.CPUFeatures.native_bfloat16`). Elsewhere (MPS, ...) float32 only:
    ``"auto"`` is float32 there. Returns e.g. ``"bfloat16 or float32"`` or ``"float32 (...)"``.
    """
    if device_type == "cuda":
        if capability is None:
            raise ValueError("overflow_advice on CUDA needs the GPU's compute capability, e.g. (7, 5).")
        if cuda_native_bfloat16(capability):
            return "bfloat16 or float32"
        return (f"float32 (this GPU, compute capability {capability[0]}.{capability[1]}, only emulates "
                "bfloat16, slowly)")
    if device_type == "cpu":
        return "bfloat16 or float32" if cpu_native_bfloat16 else "float32 (this CPU only emulates bfloat16, slowly)"
    return "float32"


def device_overflow_advice(device: str | torch.device) -> str:
    """:func:`overflow_advice` for ``device``, with its compute capability or CPU features read here."""
    device = torch.device(device)
    if device.type == "cuda":
        return overflow_advice("cuda", cuda_device_facts(device)[0])
    if device.type == "cpu":
        return overflow_advice("cpu", cpu_native_bfloat16=cpu_features().native_bfloat16)
    return overflow_advice(device.type)


def resolve_precision(
    dtype: str | torch.dtype | None, device: str | torch.device, cpu: CPUFeatures | None = None
) -> str:
    """The concrete precision for a ``dtype`` setting on ``device``.

    None -> ``"float32"`` (the Python API's default: it reproduces the reference's codes). ``"auto"`` -> on
    CPU the choice of :func:`auto_precision_for_cpu` for this CPU's class (``cpu``: default the detected
    one); on CUDA :func:`cuda_auto_precision` (bfloat16 from compute capability 8.0 on, float16 before);
    float32 on other devices (MPS, ...). Anything else is normalised (:func:`normalize_precision`;
    ValueError if unknown).
    """
    if dtype is None:
        return "float32"
    if str(dtype).strip().lower() != AUTO:
        return normalize_precision(dtype)
    device = torch.device(device)
    if device.type == "cpu":
        choice = auto_precision_for_cpu((cpu or cpu_features()).cpu_class)
        _LOG.info("dtype auto -> %s on %s (%s: %s)", choice.precision, choice.cpu_class,
                  "measured" if choice.measured else "guess", choice.reason)
        return choice.precision
    if device.type == "cuda":
        return cuda_auto_precision(*cuda_device_facts(device))
    return "float32"


# Kernel plans: which kernel runs each part, per CPU class --------------------------------------------
#: The Linear kernels a plan can name (the decoders' attention and feed-forward Linears).
LINEAR_KERNELS: dict[str, str] = {
    "onednn-fp32": "float32 on oneDNN's Linear (vallex.inference.kernels.OneDNNFloat32Linear, x86 builds)",
    "aten-fp32": "float32 F.linear (torch's BLAS)",
    "aten-bf16": "bfloat16 F.linear (on x86: oneDNN's matmul, weights in torch's plain layout)",
    "onednn-bf16-packed": "bfloat16 on oneDNN's Linear, weights prepacked once (OneDNNBf16Linear)",
    "aten-fp16": "float16 F.linear",
    "fbgemm-int8": "torch.ao's dynamic int8 Linear (fbgemm on x86, 7-bit activations; torch's quantized "
                   "engine elsewhere)",
    "onednn-int8": "oneDNN's int8 Linear with 8-bit activations (OneDNNInt8Linear)",
}
#: The attention kernels a plan can name.
ATTENTION_KERNELS: dict[str, str] = {
    "sdpa-fp32": "torch's fused scaled_dot_product_attention in float32 (on CPU the AR's KV cache is float32)",
    "sdpa-bf16": "torch's fused scaled_dot_product_attention in bfloat16",
    "sdpa-fp16": "torch's fused scaled_dot_product_attention in float16",
    "matmul-bf16": "two bfloat16 matmuls and a softmax (vallex.model.matmul_attention)",
    "matmul-fp16": "two float16 matmuls and a softmax (vallex.model.matmul_attention)",
}
_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}

#: The kernel plan: per CPU class and CPU precision, (AR Linears, NAR Linears, AR attention, NAR attention).
#: The AR's attention names its KV cache's dtype (vallex.inference.fastpath.model_cache_dtype): sdpa-fp32 a float32
#: cache, sdpa-bf16 a bfloat16 one. Rows of measured classes are what measured fastest (bench/README.md);
#: the others are reasoned there. Kernels a torch build lacks fall back (:func:`runnable_kernel`).
_PLAN_ROWS: tuple[tuple[str, str, str, str, str, str], ...] = (
    # CPU class             precision   AR Linears            NAR Linears           AR attention NAR attention
    ("x86-avx512-bf16-vnni", "float32",  "onednn-fp32",        "onednn-fp32",        "sdpa-fp32", "sdpa-fp32"),
    ("x86-avx512-bf16-vnni", "bfloat16", "aten-bf16",          "aten-bf16",          "sdpa-fp32", "matmul-bf16"),
    ("x86-avx512-bf16-vnni", "float16",  "aten-fp16",          "aten-fp16",          "sdpa-fp32", "matmul-fp16"),
    ("x86-avx512-bf16-vnni", "int8",     "fbgemm-int8",        "onednn-int8",        "sdpa-fp32", "matmul-bf16"),
    ("x86-amx",              "float32",  "aten-fp32",          "aten-fp32",          "sdpa-fp32", "sdpa-fp32"),
    ("x86-amx",              "bfloat16", "onednn-bf16-packed", "onednn-bf16-packed", "sdpa-bf16", "sdpa-bf16"),
    ("x86-amx",              "float16",  "aten-fp16",          "aten-fp16",          "sdpa-fp32", "matmul-fp16"),
    ("x86-amx",              "int8",     "fbgemm-int8",        "onednn-int8",        "sdpa-bf16", "sdpa-bf16"),
    ("x86-avx512-vnni",      "float32",  "onednn-fp32",        "onednn-fp32",        "sdpa-fp32", "sdpa-fp32"),
    ("x86-avx512-vnni",      "bfloat16", "aten-bf16",          "aten-bf16",          "sdpa-fp32", "matmul-bf16"),
    ("x86-avx512-vnni",      "float16",  "aten-fp16",          "aten-fp16",          "sdpa-fp32", "matmul-fp16"),
    ("x86-avx512-vnni",      "int8",     "fbgemm-int8",        "onednn-int8",        "sdpa-fp32", "sdpa-fp32"),
    ("x86-avx512",           "float32",  "onednn-fp32",        "onednn-fp32",        "sdpa-fp32", "sdpa-fp32"),
    ("x86-avx512",           "bfloat16", "aten-bf16",          "aten-bf16",          "sdpa-fp32", "matmul-bf16"),
    ("x86-avx512",           "float16",  "aten-fp16",          "aten-fp16",          "sdpa-fp32", "matmul-fp16"),
    ("x86-avx512",           "int8",     "fbgemm-int8",        "fbgemm-int8",        "sdpa-fp32", "sdpa-fp32"),
    ("x86-avx2",             "float32",  "onednn-fp32",        "onednn-fp32",        "sdpa-fp32", "sdpa-fp32"),
    ("x86-avx2",             "bfloat16", "aten-bf16",          "aten-bf16",          "sdpa-fp32", "matmul-bf16"),
    ("x86-avx2",             "float16",  "aten-fp16",          "aten-fp16",          "sdpa-fp32", "matmul-fp16"),
    ("x86-avx2",             "int8",     "fbgemm-int8",        "fbgemm-int8",        "sdpa-fp32", "sdpa-fp32"),
    ("arm64",                "float32",  "aten-fp32",          "aten-fp32",          "sdpa-fp32", "sdpa-fp32"),
    ("arm64",                "bfloat16", "aten-bf16",          "aten-bf16",          "sdpa-fp32", "matmul-bf16"),
    ("arm64",                "float16",  "aten-fp16",          "aten-fp16",          "sdpa-fp32", "matmul-fp16"),
    ("arm64",                "int8",     "fbgemm-int8",        "fbgemm-int8",        "sdpa-fp32", "sdpa-fp32"),
    ("other",                "float32",  "aten-fp32",          "aten-fp32",          "sdpa-fp32", "sdpa-fp32"),
    ("other",                "bfloat16", "aten-bf16",          "aten-bf16",          "sdpa-fp32", "matmul-bf16"),
    ("other",                "float16",  "aten-fp16",          "aten-fp16",          "sdpa-fp32", "matmul-fp16"),
    ("other",                "int8",     "fbgemm-int8",        "fbgemm-int8",        "sdpa-fp32", "sdpa-fp32"),
)
CPU_KERNEL_TABLE: Mapping[str, Mapping[str, tuple[str, str, str, str]]] = MappingProxyType({
    cpu_class: MappingProxyType({precision: tuple(kernels) for cls, precision, *kernels in _PLAN_ROWS
                                 if cls == cpu_class})
    for cpu_class in dict.fromkeys(row[0] for row in _PLAN_ROWS)
})
#: Which classes' plans were measured, and where.
MEASURED_PLANS: Mapping[str, str] = MappingProxyType({
    "x86-avx512-bf16-vnni": "bench/README.md and bench/results/ (AMD EPYC, 2 threads)",
    "x86-amx": "bench/kernels.py and bench/inference.py on an Intel Xeon with AMX, 2 threads "
               "(bench/results/kernels-x86-amx.json, inference-x86-amx-2threads.json; bench/README.md)",
})
_EXPECTED = "expected, unmeasured on this class (bench/README.md, 'Kernel choices per CPU class', says why)"

#: Kernels this torch build may lack, and what runs instead.
_FALLBACKS = {"onednn-int8": "fbgemm-int8", "onednn-bf16-packed": "aten-bf16"}


@dataclass(frozen=True)
class KernelPlan:
    """Which kernel runs each part of the model for one precision on one device (and CPU class).

    ``basis``: ``"measured"`` (the class's choices were benchmarked), ``"expected"`` (reasoned, unmeasured)
    or ``"fixed"`` (no choice: GPUs run torch's kernels in the model's dtype).
    """

    precision: str
    device_type: str
    cpu_class: str | None
    ar_linear: str
    nar_linear: str
    ar_attention: str
    nar_attention: str
    basis: str
    source: str = ""

    def kernels(self) -> dict[str, str]:
        """The four kernel choices, keyed as :func:`kernels_in_use` reports them."""
        return {"ar_linear": self.ar_linear, "nar_linear": self.nar_linear,
                "ar_attention": self.ar_attention, "nar_attention": self.nar_attention}

    def describe(self) -> str:
        """One line: precision, where, the four kernels and whether they were measured."""
        where = self.cpu_class if self.device_type == "cpu" else self.device_type
        return (f"{self.precision} on {where}: AR Linears {self.ar_linear}, NAR Linears {self.nar_linear}, "
                f"AR attention {self.ar_attention}, NAR attention {self.nar_attention} ({self.basis})")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_kernels(self, **kernels: str) -> KernelPlan:
        """This plan with some kernels swapped (for A/B measurements); ValueError for an unknown field or a
        kernel this precision cannot use. The result's basis is ``"override"``."""
        unknown = set(kernels) - {"ar_linear", "nar_linear", "ar_attention", "nar_attention"}
        if unknown:
            raise ValueError(f"Cannot override {', '.join(sorted(unknown))}: a plan's choices are ar_linear, "
                             "nar_linear, ar_attention and nar_attention.")
        plan = dataclasses.replace(self, **kernels, basis="override",
                                   source=f"{self.cpu_class or self.device_type} plan with "
                                          + ", ".join(f"{k}={v}" for k, v in sorted(kernels.items())))
        check_plan(plan)
        return plan


def cpu_plan_table(cpu_class: str, precision: str) -> tuple[str, str, str, str]:
    """(AR Linears, NAR Linears, AR attention, NAR attention) planned for ``precision`` on ``cpu_class``,
    before any fallback for kernels this torch build lacks."""
    if cpu_class not in CPU_KERNEL_TABLE:
        raise ValueError(f"Unknown CPU class {cpu_class!r}: expected one of {', '.join(CPU_KERNEL_TABLE)}.")
    return CPU_KERNEL_TABLE[cpu_class][normalize_precision(precision)]


def kernel_plan(precision: str | torch.dtype | None, device: str | torch.device = "cpu",
                cpu_class: str | None = None) -> KernelPlan:
    """The :class:`KernelPlan` that :func:`apply_precision` follows for ``precision`` on ``device``.

    ``precision`` may be ``"auto"`` (on CPU: ``cpu_class``'s choice) or None (float32; see
    :func:`resolve_precision`). On CPU the plan is the row of
    :data:`CPU_KERNEL_TABLE` for ``cpu_class`` (default: this machine's,
    :func:`vallex.inference.cpu_features.cpu_features`),
    with kernels this torch build cannot run replaced by their fallbacks (oneDNN int8 -> fbgemm, prepacked
    bf16 -> F.linear) and float32 Linears on oneDNN where this build has it.
    """
    device = torch.device(device)
    if device.type == "cpu":
        cpu_class = cpu_class or cpu_features().cpu_class
        auto = precision is not None and str(precision).strip().lower() == AUTO
        name = auto_precision_for_cpu(cpu_class).precision if auto else resolve_precision(precision, device)
    else:
        name = resolve_precision(precision, device)
        if name == "int8":
            raise ValueError(f"int8 runs on CPU only, not on {device.type}.")
        short = _SHORT[name]
        attention = f"sdpa-{short}"
        return KernelPlan(name, device.type, None, f"aten-{short}", f"aten-{short}", attention, attention,
                          basis="fixed", source="torch's kernels in the model's dtype")
    ar_linear, nar_linear, ar_attention, nar_attention = (runnable_kernel(k) for k in cpu_plan_table(cpu_class, name))
    measured = cpu_class in MEASURED_PLANS
    return KernelPlan(name, "cpu", cpu_class, ar_linear, nar_linear, ar_attention, nar_attention,
                      basis="measured" if measured else "expected",
                      source=MEASURED_PLANS[cpu_class] if measured else _EXPECTED)


def runnable_kernel(kernel: str) -> str:
    """``kernel``, or what runs instead where this torch build lacks it (the plan's fallback)."""
    if kernel == "onednn-fp32" and not onednn_float32_linear_available():
        return "aten-fp32"
    if kernel == "onednn-int8" and not onednn_int8_available():
        return _FALLBACKS[kernel]
    if kernel == "onednn-bf16-packed" and not onednn_bf16_linear_available():
        return _FALLBACKS[kernel]
    return kernel


#: The kernels each CPU precision can use: (AR Linears, NAR Linears, AR attention, NAR attention). The AR's
#: attention names its KV cache's dtype: sdpa-fp32 a float32 cache, sdpa-bf16 a bfloat16 one.
_CPU_CHOICES: dict[str, tuple[set[str], set[str], set[str], set[str]]] = {
    "float32": ({"onednn-fp32", "aten-fp32"}, {"onednn-fp32", "aten-fp32"}, {"sdpa-fp32"}, {"sdpa-fp32"}),
    "bfloat16": ({"aten-bf16", "onednn-bf16-packed"}, {"aten-bf16", "onednn-bf16-packed"},
                 {"sdpa-fp32", "sdpa-bf16"}, {"matmul-bf16", "sdpa-bf16"}),
    "float16": ({"aten-fp16"}, {"aten-fp16"}, {"sdpa-fp32"}, {"matmul-fp16"}),
    "int8": ({"fbgemm-int8", "onednn-int8"}, {"fbgemm-int8", "onednn-int8"}, {"sdpa-fp32", "sdpa-bf16"},
             {"sdpa-fp32", "matmul-bf16", "sdpa-bf16"}),
}


def check_plan(plan: KernelPlan) -> None:
    """ValueError unless ``plan`` names kernels its precision and device can run (this torch build included)."""
    name = normalize_precision(plan.precision)
    if plan.device_type != "cpu":
        if name == "int8":
            raise ValueError(f"int8 runs on CPU only, not on {plan.device_type}.")
        short = _SHORT[name]
        expected = (f"aten-{short}", f"aten-{short}", f"sdpa-{short}", f"sdpa-{short}")
        if (plan.ar_linear, plan.nar_linear, plan.ar_attention, plan.nar_attention) != expected:
            raise ValueError(f"On {plan.device_type}, {name} runs torch's own kernels only: {expected}.")
        return
    fields = (("ar_linear", plan.ar_linear), ("nar_linear", plan.nar_linear), ("ar_attention", plan.ar_attention),
              ("nar_attention", plan.nar_attention))
    for (field_name, kernel), allowed in zip(fields, _CPU_CHOICES[name]):
        if kernel not in allowed:
            raise ValueError(f"{field_name}={kernel!r} is not a kernel for {name} on CPU: expected one of "
                             f"{', '.join(sorted(allowed))}.")
        if runnable_kernel(kernel) != kernel:
            raise ValueError(f"{field_name}={kernel!r} is not what runs with this torch build on this machine "
                             f"({runnable_kernel(kernel)} would run instead).")


def apply_precision(
    model: VallexModel,
    precision: str | torch.dtype,
    device: str | torch.device | None = None,
    plan: KernelPlan | None = None,
    tune_malloc: bool = False,
) -> VallexModel:
    """Move ``model`` to ``device`` and convert it to ``precision`` in place; returns the same model.

    Args:
        model: a loaded :class:`VallexModel` in eval mode (weights float32).
        precision: ``"float32"``, ``"bfloat16"``, ``"float16"``, ``"int8"`` (aliases: fp32, bf16, fp16) or
            ``"auto"`` (:func:`resolve_precision`).
        device: target device; default: where the model is.
        plan: the kernels to use; default :func:`kernel_plan` for this precision, device and CPU class.
            Another plan (another class's, or :meth:`KernelPlan.with_kernels`) is for measuring alternatives.
        tune_malloc: on CPU, also tell glibc's malloc to keep freed activation buffers for reuse
            (:func:`keep_freed_memory_for_reuse`; process-wide, so only when asked).
    Raises:
        ValueError: unknown precision, int8 on a non-CPU device, a plan for another precision or device, or
            a model already converted to int8 / prepacked bfloat16 asked for another precision.
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    name = resolve_precision(precision, device)
    if name == "int8" and device.type != "cpu":
        raise ValueError(
            f"int8 weight quantisation runs on CPU only, not on {device.type}; "
            "use precision='float16' or 'bfloat16' on a GPU."
        )
    if plan is None:
        plan = kernel_plan(name, device)
    elif normalize_precision(plan.precision) != name or plan.device_type != device.type:
        raise ValueError(f"The kernel plan is for {plan.precision} on {plan.device_type}, not {name} on "
                         f"{device.type}.")
    check_plan(plan)
    if tune_malloc and device.type == "cpu":
        keep_freed_memory_for_reuse()
    converted = _converted_to(model)
    if converted is not None:
        if converted == name:
            return model
        raise ValueError(
            f"This model's Linear layers are already {converted}; reload the checkpoint to use another precision."
        )
    if name == "int8":
        model.to(device=device, dtype=torch.float32)
        _quantize_decoder_linears(model, plan.ar_linear, plan.nar_linear)
    else:
        if name == "float16" and device.type == "cpu":
            warnings.warn("float16 on CPU is for checking GPU numerics only: its matrix products measured "
                          "~8x slower than float32 here. Use 'bfloat16' or 'int8' for speed.", stacklevel=2)
        model.to(device=device, dtype=_FLOAT_DTYPES[name])
        for decoder, kernel, rows in ((model.ar_decoder, plan.ar_linear, AR_ROWS_HINT),
                                      (model.nar_decoder, plan.nar_linear, NAR_ROWS_HINT)):
            if kernel == "onednn-bf16-packed":
                _replace_decoder_linears(decoder, lambda linear, rows=rows: OneDNNBf16Linear(linear, rows))
    bf16_attention = plan.nar_attention in ("matmul-bf16", "sdpa-bf16")
    install(model, nar_attention_dtype=torch.bfloat16 if bf16_attention else None,
            nar_attention_fused=plan.nar_attention == "sdpa-bf16",
            ar_cache_dtype=torch.bfloat16 if plan.ar_attention == "sdpa-bf16" else None)
    if device.type == "cpu":
        # float32 Linears on oneDNN where the plan says so (float32: per decoder; the output heads follow
        # the AR); under int8 the float32 Linears left (output heads, stage projections) take it too.
        onednn = "onednn-fp32"
        parts = [part for part, kernel in (("ar_decoder", plan.ar_linear), ("nar_decoder", plan.nar_linear))
                 if name != "float32" or kernel == onednn]
        if name != "float32" or plan.ar_linear == onednn:
            parts += ["ar_predict_layer", "nar_predict_layers"]
        use_onednn_float32_linears(model, parts)
    model.eval()
    return model


def is_quantized(model: nn.Module) -> bool:
    """True when some Linear layer of ``model`` has int8 weights (:func:`int8_linear`)."""
    return _converted_to(model) == "int8"


def _converted_to(model: nn.Module) -> str | None:
    """"int8" / "bfloat16" when ``model``'s Linears were replaced by int8 / prepacked bf16 ones, else None."""
    int8 = (fbgemm_int8_linear_class(), OneDNNInt8Linear)
    for module in model.modules():
        if isinstance(module, int8):
            return "int8"
        if isinstance(module, OneDNNBf16Linear):
            return "bfloat16"
    return None


def kernels_in_use(model: VallexModel) -> dict[str, str]:
    """The kernels ``model`` runs now, read from its modules (keys as :meth:`KernelPlan.kernels`).

    Linears: the decoders' attention and feed-forward Linears (several kinds joined by ``+``).
    Attention: the AR's over its KV cache (:func:`vallex.inference.fastpath.model_cache_dtype`), the NAR's by its
    attentions' :class:`vallex.model.AttentionKernel` (its dtype, else the model's).
    """
    dtype = model.ar_audio_embedding.weight.dtype
    device = model.ar_audio_embedding.weight.device

    def linears(decoder: nn.Module) -> str:
        kinds = {_linear_kernel(child) for parent in decoder.modules() for child_name, child in
                 parent.named_children() if child_name not in KEEP_FLOAT_LINEARS and _is_linear_like(child)}
        return "+".join(sorted(kinds))

    attend = model.nar_decoder.layers[0].self_attn.attend
    return {"ar_linear": linears(model.ar_decoder), "nar_linear": linears(model.nar_decoder),
            "ar_attention": _attention_kernel(model_cache_dtype(model, dtype, device), device, matmuls=False),
            "nar_attention": _attention_kernel(attend.dtype or dtype, device, matmuls=not attend.fused)}


def _is_linear_like(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, OneDNNInt8Linear, OneDNNBf16Linear, fbgemm_int8_linear_class()))


def _linear_kernel(module: nn.Module) -> str:
    if isinstance(module, OneDNNInt8Linear):
        return "onednn-int8"
    if isinstance(module, fbgemm_int8_linear_class()):
        return "fbgemm-int8"
    if isinstance(module, OneDNNBf16Linear):
        return "onednn-bf16-packed"
    weight = module.weight
    if weight.dtype == torch.float32 and weight.device.type == "cpu" and isinstance(module, OneDNNFloat32Linear):
        return "onednn-fp32"
    return f"aten-{_SHORT.get(str(weight.dtype).replace('torch.', ''), str(weight.dtype))}"


def _attention_kernel(dtype: torch.dtype, device: torch.device, matmuls: bool = True) -> str:
    short = _SHORT.get(str(dtype).replace("torch.", ""), str(dtype))
    # vallex.model.AttentionKernel: 16-bit attention on CPU runs as matmuls unless it is told to use the
    # fused kernel; everything else runs on the fused kernel.
    if matmuls and device.type == "cpu" and dtype in (torch.bfloat16, torch.float16):
        return f"matmul-{short}"
    return f"sdpa-{short}"

#: Linears kept in float32 under int8: the adaptive norms' stage projections. They see one row per call
#: (the stage embedding), so they cost nothing, but their output scales every NAR activation: quantising
#: them cut the NAR's top-1 agreement with float32 from 99.6 % to 97.2 % (trained tiny model, bench/fidelity.py).
KEEP_FLOAT_LINEARS = ("project_layer",)


def _quantize_decoder_linears(model: VallexModel, ar_kernel: str = "fbgemm-int8",
                              nar_kernel: str = "onednn-int8") -> None:
    """Replace the nn.Linears inside ``ar_decoder`` and ``nar_decoder`` by int8 Linears of these kernels
    (``"fbgemm-int8"`` / ``"onednn-int8"``; the defaults are the measured AMD EPYC plan's).

    All but :data:`KEEP_FLOAT_LINEARS`. One weight at a time: each float32 weight is released as soon as
    its int8 copy exists, so with memory-mapped weights (``load_model`` of a .safetensors file) the
    float32 model is never resident as a whole.
    """
    for decoder, kernel in ((model.ar_decoder, ar_kernel), (model.nar_decoder, nar_kernel)):
        backend = kernel.removesuffix("-int8")
        _replace_decoder_linears(decoder, lambda linear, backend=backend: int8_linear(linear, backend))


def _replace_decoder_linears(decoder: nn.Module, convert: Callable[[nn.Linear], nn.Module]) -> None:
    """Replace every float nn.Linear inside ``decoder`` but :data:`KEEP_FLOAT_LINEARS` by ``convert(it)``."""
    # Collect only the parents: a list holding the Linears themselves would keep every float32
    # weight alive until the end.
    parents = [m for m in decoder.modules() if any(_is_float_linear(c) for c in m.children())]
    for parent in parents:
        names = [name for name, child in parent.named_children()
                 if _is_float_linear(child) and name not in KEEP_FLOAT_LINEARS]
        for name in names:
            setattr(parent, name, convert(getattr(parent, name)))


def _is_float_linear(module: nn.Module) -> bool:
    return type(module) in (nn.Linear, OneDNNFloat32Linear)


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 dot products in hardware (AVX512-BF16, AMX-BF16, arm64 BF16) that
    oneDNN uses (:attr:`vallex.inference.cpu_features.CPUFeatures.native_bfloat16`).

    Not ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` alone: that is also True on AVX-512 CPUs without
    them (oneDNN then emulates bfloat16, slower than float32).
    """
    return cpu_features().native_bfloat16


