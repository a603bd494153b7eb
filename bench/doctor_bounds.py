"""How far each precision's golden-case results are from the reference's on this CPU: the measurement behind
``vallex doctor``'s bounds (:data:`vallex.doctor.BOUNDS`, bench/README.md "vallex doctor's bounds").

    python bench/doctor_bounds.py                    # writes bench/results/doctor-bounds.json (~30 s, 1 thread)

For every precision and every CPU class's kernel plan this torch build can run here (other classes' plans show
how much the kernel choice moves the numbers), the doctor's two deviations per golden case (the fraction of
teacher-forced decisions that differ, and the first AR step's max |logit - reference|), their worst over the
cases, and the same with torch's scaled_dot_product_attention made to ignore its mask (a simulated attention
bug, the kind torch's MPS back end has had): what the bounds must still catch.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@contextmanager
def attention_without_mask() -> Iterator[None]:
    """torch's fused attention ignoring ``attn_mask`` (every query sees every key), while inside."""
    real = F.scaled_dot_product_attention

    def broken(q, k, v, attn_mask=None, *args, **kwargs):
        return real(q, k, v, None, *args, **kwargs)

    F.scaled_dot_product_attention = broken
    try:
        yield
    finally:
        F.scaled_dot_product_attention = real


def worst(model, cases, precision: str) -> dict[str, float]:
    from vallex.doctor import BOUNDS, run_case

    checks = [check for case in cases for check in run_case(model, case, BOUNDS[precision])]
    return {kind: max(c.deviation for c in checks if c.kind == kind) for kind in ("codes", "logits")} | {
        "min_logits": min(c.deviation for c in checks if c.kind == "logits"),
        "failed_checks": sum(not c.passed for c in checks)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", type=Path, help="golden folder (default: as vallex doctor finds it)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "doctor-bounds.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from vallex.config import VallexConfig
    from vallex.doctor import BOUNDS, GoldenCase, golden_folder, read_cases, torch_build
    from vallex.inference.cpu_features import cpu_features
    from vallex.inference.precision import CPU_KERNEL_TABLE, apply_precision, kernel_plan
    from vallex.weights.checkpoint import load_model

    folder = golden_folder(args.golden)
    cases = [GoldenCase.from_json(case) for case in read_cases(folder)]
    rows = []
    started = time.perf_counter()
    for precision in BOUNDS:
        seen: set[tuple] = set()
        for cpu_class in CPU_KERNEL_TABLE:
            plan = kernel_plan(precision, "cpu", cpu_class)
            kernels = tuple(plan.kernels().values())
            if kernels in seen:  # another class with the same kernels: the same numbers
                continue
            seen.add(kernels)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = apply_precision(load_model(folder / "checkpoint.pt",
                                                   VallexConfig.from_json(folder / "config.json")),
                                        precision, "cpu", plan=plan)
            clean = worst(model, cases, precision)
            with attention_without_mask():
                broken = worst(model, cases, precision)
            rows.append({"precision": precision, "plan_of": cpu_class, "kernels": plan.kernels(), "clean": clean,
                         "attention_mask_ignored": broken, "bound": vars(BOUNDS[precision])})
            print(f"{precision:9} {cpu_class:22} clean: codes {clean['codes']:.3f} logits {clean['logits']:.3f} | "
                  f"mask ignored: codes {broken['codes']:.3f} logits {broken['logits']:.3f} "
                  f"({broken['failed_checks']} checks fail) | bound {vars(BOUNDS[precision])}", flush=True)
    where = folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder
    out = {"what": "bench/doctor_bounds.py: worst doctor deviations over the golden cases per precision and "
                   "kernel plan, clean and with attention masks ignored",
           "cpu": cpu_features().describe(), "torch_build": torch_build(), "golden": str(where),
           "threads": args.threads, "seconds": round(time.perf_counter() - started, 1), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
