"""Inductor's weight-only int8 Linears (bfloat16 activations) against fbgemm's dynamic int8, at one row.

    .venv/bin/python bench/woq_inductor.py            # one AR decoder's 48 Linears, 2 threads

The AR step's Linears are its cost (bench/README "ar_profile.py"). Inductor lowers ``mm(x, w.to(bf16).t()) * scale``
with the int8 weights frozen as constants (``torch._inductor.config.freezing``) to its CPU weight-only kernels, which
read int8 weights with no per-call quantisation of the activations (fbgemm's dynamic Linear quantises each call).
Timed: the 48 Linears of the public model's AR decoder (in_proj 1024->3072, out 1024->1024, feed-forward
1024->4096->1024, x 12 layers) on one row, eager, compiled, compiled with max-autotune, and fbgemm's dynamic int8
modules; medians of 30 passes after two warm-ups. Random weights: speed does not depend on the values.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

#: One AR decoder layer's Linears (out, in): in_proj, out_proj, feed-forward up and down.
LAYER_SHAPES = [(3072, 1024), (1024, 1024), (4096, 1024), (1024, 4096)]


class WeightOnlyInt8(torch.nn.Module):
    """The 48 Linears as int8 weights with one bfloat16 scale per output row."""

    def __init__(self, shapes: list[tuple[int, int]]) -> None:
        super().__init__()
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randint(-127, 127, shape, dtype=torch.int8), requires_grad=False)
             for shape in shapes])
        self.scales = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.rand(shape[0], dtype=torch.bfloat16) * 0.01, requires_grad=False)
             for shape in shapes])

    def forward(self, x1024: torch.Tensor, x4096: torch.Tensor) -> list[torch.Tensor]:
        return [torch.mm(x1024 if w.shape[1] == 1024 else x4096, w.to(torch.bfloat16).t()) * s
                for w, s in zip(self.weights, self.scales)]


def median_ms(call, repeats: int = 30) -> float:
    call()
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2] * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=12, help="decoder layers (12: the public model's AR)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import torch._inductor.config as inductor_config

    from vallex.inference.cpu_features import cpu_features

    shapes = LAYER_SHAPES * args.layers
    model = WeightOnlyInt8(shapes).eval()
    x1024, x4096 = torch.randn(1, 1024, dtype=torch.bfloat16), torch.randn(1, 4096, dtype=torch.bfloat16)
    rows: dict[str, float] = {}
    # freezing: the int8 weights become constants, which the weight-only kernels need (only for this run)
    with inductor_config.patch(freezing=True), torch.no_grad():
        rows["eager bf16 x int8 weights"] = median_ms(lambda: model(x1024, x4096))
        for mode in ("default", "max-autotune-no-cudagraphs"):
            compiled = torch.compile(model, mode=None if mode == "default" else mode, dynamic=False)
            rows[f"inductor, freezing, {mode}"] = median_ms(lambda compiled=compiled: compiled(x1024, x4096))
            torch._dynamo.reset()
        linears = [torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(i, o)),
                                                          {torch.nn.Linear}, dtype=torch.qint8)
                   for o, i in shapes]
        inputs = {1024: torch.randn(1, 1024), 4096: torch.randn(1, 4096)}
        rows["fbgemm dynamic int8 (float32 activations)"] = median_ms(
            lambda: [linear(inputs[i]) for linear, (_, i) in zip(linears, shapes)])
    print(f"CPU {cpu_features().describe()}, {args.threads} threads; {len(shapes)} AR Linears at one row:")
    for name, ms in rows.items():
        print(f"  {name:45s} {ms:7.2f} ms")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_features().as_dict(), "threads": args.threads,
                                         "linears": len(shapes), "ms_one_row": rows}, indent=1) + "\n",
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
