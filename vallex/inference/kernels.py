"""Linear-layer kernels: the same ``x @ W.T + b`` on the CPU kernels that measured fastest per part and class.

Each kernel is an ``nn.Module`` made from an ``nn.Linear`` (same inputs and outputs, float32 or bfloat16 in
and out) with an ``inference_function()`` that hot loops call without ``nn.Module``'s per-call work
(:func:`inference_function`). Which kernel runs where is the kernel plan's choice (:mod:`vallex.inference.precision`);
what each one measured, and on which CPU, is in bench/README.md.

* :class:`OneDNNFloat32Linear` — float32 on oneDNN (x86), in place of MKL's ``F.linear``;
* :func:`int8_linear` — int8 weights (symmetric, per output channel), activations quantised per call: torch.ao's
  dynamic Linear (fbgemm, :func:`fbgemm_int8_linear_class`) or oneDNN's (:class:`OneDNNInt8Linear`);
* :class:`OneDNNBf16Linear` — bfloat16 with the weight prepacked once into oneDNN's blocked layout (AMX).
"""
from __future__ import annotations

import functools
import platform
import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@functools.cache
def onednn_float32_linear_available() -> bool:
    """Whether oneDNN's float32 Linear runs here (x86 torch builds with oneDNN); checked once, on first use."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return False
    try:
        x, weight, bias = torch.ones(2, 3), torch.ones(4, 3), torch.ones(4)
        out = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return bool(torch.equal(out, torch.full((2, 4), 4.0)))


Plain = TypeVar("Plain", bound=nn.Module)


def replace_modules(model: nn.Module, plain: type[Plain], make: Callable[[Plain], nn.Module],
                    where: Callable[[str, Plain], bool] | None = None) -> int:
    """Put ``make(module)`` in place of every submodule of ``model`` whose class is exactly ``plain`` (and for which
    ``where(qualified name, module)`` holds, if given); returns how many.

    Each new module takes the old one's place in its parent (same attribute, so the same state-dict keys); ``model``
    itself is never replaced. How inference puts faster kernels on a loaded model: a module of another class where
    the plain one was, never the class of a module changed under it. Exactly ``plain``: a subclass (a replacement
    made earlier) stays.
    """
    count = 0
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if type(child) is plain and (where is None or where(f"{parent_name}.{name}" if parent_name else name,
                                                                child)):
                setattr(parent, name, make(child))
                count += 1
    return count


class OneDNNFloat32Linear(nn.Linear):
    """``nn.Linear`` whose float32 CPU inference runs on oneDNN (why: MKL's kernel measured slower on x86).

    Made from an ``nn.Linear`` whose parameters it takes over (the same tensors, so the same keys, and tied weights
    stay tied); anything with gradients, other dtypes and other devices take ``F.linear``.
    :func:`use_onednn_float32_linears` puts one in place of each float32 Linear of a model.
    """

    def __init__(self, linear: nn.Linear) -> None:
        # nn.Module's __init__, not nn.Linear's: that one would allocate and initialise a weight only to drop it.
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.register_parameter("bias", linear.bias)

    def forward(self, x: Tensor) -> Tensor:  # [..., in] -> [..., out]
        if (x.dtype == torch.float32 and x.device.type == "cpu" and self.weight.dtype == torch.float32
                and not torch.is_grad_enabled()):
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)

    def inference_function(self) -> Callable[[Tensor], Tensor]:
        """This layer as a plain function for repeated no-grad calls (see :func:`inference_function`)."""
        weight, bias = self.weight, self.bias
        if weight.dtype == torch.float32 and weight.device.type == "cpu":
            op = torch.ops.mkldnn._linear_pointwise
            return lambda x: op(x, weight, bias, "none", [], "")
        return functools.partial(F.linear, weight=weight, bias=bias)


def use_onednn_float32_linears(model: nn.Module, parts: Sequence[str] | None = None) -> int:
    """Put a :class:`OneDNNFloat32Linear` in place of every float32 CPU ``nn.Linear`` in ``model``; returns how many.

    ``parts``: only inside these submodules (qualified names, e.g. ``"ar_decoder"``; a Linear named here is
    replaced itself); None: all of ``model`` (not ``model`` itself). Does nothing where oneDNN's float32 Linear is
    missing. The new modules hold the old ones' parameters, so tied weights stay tied.
    """
    if not onednn_float32_linear_available():
        return 0

    def where(name: str, linear: nn.Linear) -> bool:
        return (linear.weight.dtype == torch.float32 and linear.weight.device.type == "cpu"
                and (parts is None or any(name == part or name.startswith(part + ".") for part in parts)))

    return replace_modules(model, nn.Linear, OneDNNFloat32Linear, where)


def inference_function(module: nn.Module) -> Callable[[Tensor], Tensor]:
    """``module``'s forward as a plain function, for hot loops that call it many times without gradients.

    Modules that can skip ``nn.Module.__call__`` and their per-call checks say how through an
    ``inference_function()`` method (:class:`OneDNNFloat32Linear`, the int8 and bfloat16 Linears below);
    a plain ``nn.Linear`` becomes ``F.linear`` with its weights bound; any other module is returned as it is.
    Resolve it again after the module's weights or dtype change.
    """
    make = getattr(module, "inference_function", None)
    if callable(make):
        return make()
    if type(module) is nn.Linear:
        return functools.partial(F.linear, weight=module.weight, bias=module.bias)
    return module


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


@functools.cache
def fbgemm_int8_linear_class() -> type:
    """torch.ao's dynamic int8 Linear (fbgemm) with :func:`vallex.inference.fastpath.inference_function` support.

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


@functools.cache
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


#: Rows the prepacked bfloat16 weights are laid out for (oneDNN picks its blocking by the expected rows):
#: one per AR step, a NAR stage's ~600 (text + prompt + generated frames).
AR_ROWS_HINT = 1
NAR_ROWS_HINT = 512


class OneDNNBf16Linear(nn.Module):
    """bfloat16 ``x @ W.T + b`` on oneDNN, ``W`` reordered once into oneDNN's blocked layout.

    x: bfloat16 [..., in] -> bfloat16 [..., out]; inference only (no autograd). ``F.linear`` in bfloat16
    runs the same oneDNN matmul on x86 but passes the weight in torch's plain layout on every call; AMX's
    tile kernels need the blocked one. What torch.compile's CPU backend does for bf16 Linears
    (``mkldnn._reorder_linear_weight`` + ``mkldnn._linear_pointwise``). The same bf16 products as
    ``F.linear`` (equal outputs for single Linears on the AMD machine; a whole model may differ by summation
    order, tests/test_kernel_plan.py).
    """

    def __init__(self, linear: nn.Linear, rows_hint: int = AR_ROWS_HINT) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().to(torch.bfloat16)
        self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint))
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16).clone()
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def inference_function(self) -> Callable[[Tensor], Tensor]:
        op, weight, bias = torch.ops.mkldnn._linear_pointwise, self.packed_weight, self.bias
        return lambda x: op(x, weight, bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel=onednn-bf16-packed"


@functools.cache
def onednn_bf16_linear_available() -> bool:
    """Whether this torch build runs :class:`OneDNNBf16Linear` here (oneDNN built in); checked once."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        linear = nn.Linear(4, 2)
        with torch.no_grad():
            linear.weight.fill_(0.5)
            linear.bias.fill_(1.0)
        out = OneDNNBf16Linear(linear)(torch.full((3, 4), 2.0, dtype=torch.bfloat16))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return bool(torch.equal(out.float(), torch.full((3, 2), 5.0)))  # 4 x 2 x 0.5 + 1
