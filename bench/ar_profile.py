"""Where one AR step's time goes: the decoder's Linears (its weights), attention, and everything else.

    .venv/bin/python bench/ar_profile.py --dtype int8 --json bench/results/ar-profile-amd.json

The full-size model (random weights, the public checkpoint's shape) under a precision's kernel plan decodes
one utterance (the benchmark workload of bench/inference.py: 80 text tokens, a 225-frame prompt) for
``--frames`` steps of :class:`vallex.inference.ar.ARBatch`, first timed alone, then under torch's
profiler; each profiled operator's self time is put in one of three parts by its name: ``linear`` (the
Linear kernels: the weight reads), ``attention`` (scaled dot-product attention and the KV cache's writes)
and ``other`` (norms, residuals, embeddings, sampling, Python between them). The parts are shares of the
profiled step (the profiler's own cost inflates ``other`` a little); the unprofiled step time is printed beside.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from vallex.config import VallexConfig  # noqa: E402
from vallex.inference.ar import ARBatch, ARRequest  # noqa: E402
from vallex.inference.cpu_features import cpu_features  # noqa: E402
from vallex.inference.generation import language_ids  # noqa: E402
from vallex.inference.precision import apply_precision, kernel_plan  # noqa: E402
from vallex.model import VallexModel  # noqa: E402

#: Substrings of profiler operator names, per part (checked in this order; the rest is "other").
PARTS = {
    "linear": ("linear", "addmm", "mm", "matmul", "fbgemm", "onednn", "mkldnn", "int8", "int4", "bmm"),
    "attention": ("scaled_dot_product", "attention", "softmax", "copy_", "index_put", "slice_scatter"),
}


def part_of(name: str) -> str:
    lowered = name.lower()
    for part, keys in PARTS.items():
        if any(key in lowered for key in keys):
            return part
    return "other"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="int8", help="precision (its kernel plan for this CPU class)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=100, help="AR steps timed and profiled")
    parser.add_argument("--json", type=Path, help="write the breakdown here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = VallexModel(VallexConfig.public()).eval()
    plan = kernel_plan(args.dtype, device)
    model = apply_precision(model, plan.precision, device)
    text = torch.randint(5, 500, (1, 80))
    langs = language_ids(80, 30, "en", "en")[None]
    prompt0 = torch.randint(0, 1024, (1, 225))

    def decode(frames: int) -> list[float]:
        batch = ARBatch(model)
        batch.add("u", ARRequest(text, langs, prompt0, min_frames=frames + 1, max_frames=frames + 1,
                                 generator=torch.Generator().manual_seed(0)))
        times = []
        for _ in range(frames):
            start = time.perf_counter()
            batch.step()
            times.append(time.perf_counter() - start)
        return times

    decode(10)  # warm-up: kernels pick and cache their primitives
    step_ms = 1e3 * statistics.median(decode(args.frames))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        decode(args.frames)
    parts: dict[str, float] = defaultdict(float)
    operators: dict[str, float] = defaultdict(float)
    for event in profiler.key_averages():
        parts[part_of(event.key)] += event.self_cpu_time_total
        operators[event.key] += event.self_cpu_time_total
    total = sum(parts.values())
    shares = {part: round(parts[part] / total, 3) for part in ("linear", "attention", "other")}
    top = sorted(operators.items(), key=lambda item: -item[1])[:15]
    print(f"CPU: {cpu_features().describe()}; {args.threads} threads; load average {os.getloadavg()[0]:.2f}")
    print(f"{plan.precision} (AR Linears {plan.ar_linear}, attention {plan.ar_attention}): "
          f"{step_ms:.2f} ms per AR step (median of {args.frames}, unprofiled)")
    for part, share in shares.items():
        print(f"  {part:9s} {share:6.1%}  ~{share * step_ms:.2f} ms")
    print("top operators by self time (profiled):")
    for name, micros in top:
        print(f"  {micros / total:6.1%}  {part_of(name):9s} {name}")
    if args.json:
        report = {"cpu": cpu_features().as_dict(), "threads": args.threads, "load_average": os.getloadavg()[0],
                  "precision": plan.precision, "ar_linear": plan.ar_linear, "ar_attention": plan.ar_attention,
                  "frames": args.frames, "ms_per_step": round(step_ms, 3), "shares": shares,
                  "top_operators": [{"name": n, "share": round(m / total, 4), "part": part_of(n)} for n, m in top]}
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
