"""Which Linear and attention kernels are fastest on this CPU: the per-class choices of vallex/inference/precision.py.

Times one decoder's 48 Linears (the checkpoint's shapes: 12 layers x in_proj 1024->3072, out_proj
1024->1024, linear1 1024->4096, linear2 4096->1024; random weights) under every Linear kernel a kernel plan
can name, at the row counts that matter: 1 (an AR step), 8 (an AR step of a batch of 8) and 605 (a NAR
stage: text + prompt + generated frames), and the NAR's attention at 605 positions under every attention
kernel. Each figure is the median of ``--repeats`` timed passes after a warm-up, with its ratio against the
float32 oneDNN kernel (the float32 plan's) measured in the same run::

    .venv/bin/python bench/kernels.py                          # 2 threads, this CPU
    .venv/bin/python bench/kernels.py --json bench/results/kernels-x86-amx.json

Numbers mean something only on an idle machine (check ``uptime``); the CPU class and features are printed
first. Deviation columns give each kernel's max relative error against float32 on the same inputs
(``|y - y32|.max() / |y32|.max()``), so a fast kernel that is wrong shows.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vallex.config import VallexConfig  # noqa: E402
from vallex.inference.cpu_features import cpu_features  # noqa: E402
from vallex.inference.kernels import (  # noqa: E402
    OneDNNBf16Linear,
    OneDNNFloat32Linear,
    inference_function,
    int8_linear,
)
from vallex.inference.precision import LINEAR_KERNELS, runnable_kernel  # noqa: E402
from vallex.model import matmul_attention  # noqa: E402

ROWS = (1, 8, 605)
BASELINE = "onednn-fp32"
#: Candidates measured here that no plan uses (bench/README.md says why): weight-only int4 through torch's CPU
#: kernel (tinygemm layout, bfloat16 activations), groups of 32 and 128 input channels.
CANDIDATES = ("int4-woq-g32", "int4-woq-g128")


class Int4WeightOnlyLinear(nn.Module):
    """A Linear whose weight is int4 per group of ``group`` input channels (asymmetric: scale and zero from
    the group's min and max), multiplied by ``aten._weight_int4pack_mm_for_cpu``; x: bfloat16 [N, in]."""

    def __init__(self, linear: nn.Linear, group: int) -> None:
        super().__init__()
        out_features, in_features = linear.weight.shape
        w = linear.weight.detach().float().reshape(out_features, in_features // group, group)
        low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
        scale = (high - low).clamp(min=1e-8) / 15
        q = ((w - low) / scale).round().clamp(0, 15).to(torch.int32).reshape(out_features, in_features)
        zero = low + 8 * scale  # the kernel computes (q - 8) * scale + zero
        self.scales_and_zeros = torch.stack([scale[..., 0], zero[..., 0]], -1).transpose(0, 1).contiguous().to(
            torch.bfloat16)  # [in / group, out, 2]
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2)
        self.group = group
        self.bias = linear.bias.detach().to(torch.bfloat16) if linear.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, self.group, self.scales_and_zeros)
        return y + self.bias if self.bias is not None else y


def decoder_linears(config: VallexConfig, seed: int = 0) -> list[nn.Linear]:
    """One decoder's attention and feed-forward Linears (float32, random, biased like the checkpoint's)."""
    generator = torch.Generator().manual_seed(seed)
    d, ff = config.d_model, config.d_model * 4
    shapes = [(d, 3 * d), (d, d), (d, ff), (ff, d)] * config.num_layers
    linears = []
    for fan_in, fan_out in shapes:
        linear = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(fan_out, fan_in, generator=generator) * fan_in ** -0.5)
            linear.bias.copy_(torch.randn(fan_out, generator=generator) * 0.02)
        linears.append(linear.eval())
    return linears


def convert(linear: nn.Linear, kernel: str, rows: int) -> tuple[nn.Module, torch.dtype]:
    """``linear`` under ``kernel`` and the activation dtype that kernel takes."""
    if kernel in ("fbgemm-int8", "onednn-int8"):
        return int8_linear(linear, kernel.removesuffix("-int8")), torch.float32
    if kernel == "onednn-bf16-packed":
        return OneDNNBf16Linear(linear, rows), torch.bfloat16
    if kernel.startswith("int4-woq-g"):
        return Int4WeightOnlyLinear(linear, int(kernel.removeprefix("int4-woq-g"))), torch.bfloat16
    dtypes = {"aten-fp32": torch.float32, "onednn-fp32": torch.float32, "aten-bf16": torch.bfloat16,
              "aten-fp16": torch.float16}
    if kernel not in dtypes:
        raise ValueError(f"Unknown kernel {kernel!r}: expected one of {', '.join(LINEAR_KERNELS)}.")
    copy = nn.Linear(linear.in_features, linear.out_features).eval()
    copy.load_state_dict(linear.state_dict())
    copy.to(dtypes[kernel])
    if kernel == "onednn-fp32":
        copy = OneDNNFloat32Linear(copy)
    return copy, dtypes[kernel]


def available(kernel: str) -> bool:
    """Whether this torch build runs ``kernel`` here (else its plan falls back to another)."""
    if kernel in CANDIDATES:
        return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")
    return runnable_kernel(kernel) == kernel


def time_calls(calls, repeats: int, min_time_s: float) -> float:
    """Median seconds of one pass over ``calls`` (each a zero-argument callable)."""
    for call in calls:  # warm-up: oneDNN picks and caches its primitives on the first call
        call()
    passes = []
    deadline = time.perf_counter() + min_time_s
    while len(passes) < repeats or time.perf_counter() < deadline:
        start = time.perf_counter()
        for call in calls:
            call()
        passes.append(time.perf_counter() - start)
        if len(passes) >= 200:
            break
    return statistics.median(passes)


def bench_linears(config: VallexConfig, kernels: list[str], rows_list: tuple[int, ...], repeats: int,
                  min_time_s: float) -> list[dict]:
    linears = decoder_linears(config)
    generator = torch.Generator().manual_seed(1)
    results = []
    for rows in rows_list:
        inputs = [torch.randn(rows, lin.in_features, generator=generator) for lin in linears]
        with torch.inference_mode():
            reference = [lin(x) for lin, x in zip(linears, inputs)]
        base_ms = None
        for kernel in kernels:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                converted = [convert(lin, kernel, rows) for lin in linears]
            functions = [inference_function(module) for module, _ in converted]
            xs = [x.to(dtype) for x, (_, dtype) in zip(inputs, converted)]
            with torch.inference_mode():
                outputs = [f(x) for f, x in zip(functions, xs)]
                error = max(float((y.float() - r).abs().max() / r.abs().max()) for y, r in zip(outputs, reference))
                seconds = time_calls([lambda f=f, x=x: f(x) for f, x in zip(functions, xs)], repeats, min_time_s)
            ms = seconds * 1e3
            if kernel == BASELINE:
                base_ms = ms
            results.append({"rows": rows, "kernel": kernel, "ms": round(ms, 3), "_ms": ms,
                            "max_rel_error": float(f"{error:.3g}")})
            del converted, functions
        for row in results:
            if row["rows"] == rows and "_ms" in row:
                raw = row.pop("_ms")  # the ratio from unrounded times: the baseline's own is exactly 1
                row["vs_fp32"] = round(base_ms / raw, 2) if base_ms else None
    return results


def bench_attention(config: VallexConfig, positions: int, repeats: int, min_time_s: float) -> list[dict]:
    """One NAR stage's self-attention products (12 layers, no mask), per attention kernel."""
    generator = torch.Generator().manual_seed(2)
    shape = (1, config.nhead, positions, config.d_model // config.nhead)
    q, k, v = (torch.randn(shape, generator=generator) for _ in range(3))
    with torch.inference_mode():
        reference = nn.functional.scaled_dot_product_attention(q, k, v)
    variants = {
        "sdpa-fp32": (nn.functional.scaled_dot_product_attention, torch.float32),
        "sdpa-bf16": (nn.functional.scaled_dot_product_attention, torch.bfloat16),
        "matmul-fp32": (matmul_attention, torch.float32),
        "matmul-bf16": (matmul_attention, torch.bfloat16),
    }
    results = []
    base_ms = None
    for name, (function, dtype) in variants.items():
        qd, kd, vd = (t.to(dtype) for t in (q, k, v))
        with torch.inference_mode():
            error = float((function(qd, kd, vd).float() - reference).abs().max() / reference.abs().max())
            call = functools.partial(function, qd, kd, vd)
            seconds = time_calls([call] * config.num_layers, repeats, min_time_s)
        ms = seconds * 1e3
        if name == "sdpa-fp32":
            base_ms = ms
        results.append({"positions": positions, "kernel": name, "ms": round(ms, 3),
                        "vs_fp32": round(base_ms / ms, 2), "max_rel_error": float(f"{error:.3g}")})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=7, help="timed passes per figure (median)")
    parser.add_argument("--min-time", type=float, default=1.0, help="keep timing until this many seconds")
    parser.add_argument("--rows", type=int, nargs="+", default=list(ROWS), help="rows per Linear call")
    parser.add_argument("--kernels", nargs="+", default=None, help="Linear kernels (default: all this build runs)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = VallexConfig.public()
    kernels = args.kernels or [k for k in (*LINEAR_KERNELS, *CANDIDATES) if k != "aten-fp16" and available(k)]
    unknown = [k for k in kernels if k not in (*LINEAR_KERNELS, *CANDIDATES)]
    if unknown:
        parser.error(f"unknown kernel(s) {', '.join(unknown)}; expected some of "
                     f"{', '.join((*LINEAR_KERNELS, *CANDIDATES))}")
    if BASELINE not in kernels and available(BASELINE):
        kernels.insert(0, BASELINE)
    features = cpu_features()
    print(f"CPU: {features.describe()}", flush=True)
    print(f"torch {torch.__version__}, {args.threads} threads, medians of >= {args.repeats} passes", flush=True)
    linears = bench_linears(config, kernels, tuple(args.rows), args.repeats, args.min_time)
    print(f"\nOne decoder's {4 * config.num_layers} Linears (ms per pass; vs_fp32 = {BASELINE} / this):")
    print(f"| rows | kernel | ms | vs {BASELINE} | max rel. error |\n| ---: | --- | ---: | ---: | ---: |")
    for row in linears:
        print(f"| {row['rows']} | {row['kernel']} | {row['ms']:.2f} | {row['vs_fp32']}x | {row['max_rel_error']:.2e} |")
    attention = bench_attention(config, max(args.rows), args.repeats, args.min_time)
    print(f"\nNAR attention, {config.num_layers} layers x {config.nhead} heads x {max(args.rows)} positions:")
    print("| kernel | ms | vs sdpa-fp32 | max rel. error |\n| --- | ---: | ---: | ---: |")
    for row in attention:
        print(f"| {row['kernel']} | {row['ms']:.2f} | {row['vs_fp32']}x | {row['max_rel_error']:.2e} |")
    if args.json:
        report = {"cpu": features.as_dict(), "torch": torch.__version__, "threads": args.threads,
                  "load_average": list(os.getloadavg()), "linears": linears, "attention": attention}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
