"""The AR step on the thread that loaded the model, and on another thread: why one thread computes.

    .venv/bin/python bench/threads.py --json bench/results/threads-amd.json

Each arrangement runs in a fresh process (OpenMP's thread pools live as long as the process's threads): the
full-size model (random weights) under a precision's kernel plan decodes ``--steps`` AR steps of the benchmark
workload (80 text tokens, a 225-frame prompt) as :class:`vallex.inference.ar.ARBatch`, median ms per step:

* ``one thread``: loaded and decoded on the main thread (the CLI, a notebook);
* ``loaded here, decoded there``: loaded on the main thread, decoded on a second one (a server's worker after
  loading on the main thread: what the engine did before :mod:`vallex.inference.threads`);
* ``loaded in passing, decoded there``: loaded in a thread that ends (``in_passing_thread``, as
  ``VallEX.from_pretrained`` does), decoded on a second one (the engine now).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ARRANGEMENTS = {"one thread": "main", "loaded here, decoded there": "other",
                "loaded in passing, decoded there": "passing"}


def measure(arrangement: str, dtype: str, threads: int, steps: int) -> float:
    """Median ms per AR step in this process, arranged as ``arrangement`` (a value of ARRANGEMENTS)."""
    import torch

    from vallex.config import VallexConfig
    from vallex.inference.ar import ARBatch, ARRequest
    from vallex.inference.generation import language_ids
    from vallex.inference.precision import apply_precision
    from vallex.inference.threads import in_passing_thread
    from vallex.model import VallexModel

    torch.set_num_threads(threads)

    def load():
        torch.manual_seed(0)
        return apply_precision(VallexModel(VallexConfig.public()).eval(), dtype, torch.device("cpu"), tune_malloc=True)

    model = in_passing_thread(load) if arrangement == "passing" else load()
    text = torch.randint(5, 500, (1, 80))
    langs = language_ids(80, 30, "en", "en")[None]
    prompt0 = torch.randint(0, 1024, (1, 225))
    times: list[float] = []

    def decode() -> None:
        for run in range(2):  # the first one warms up
            batch = ARBatch(model)
            batch.add("u", ARRequest(text, langs, prompt0, min_frames=steps + 1, max_frames=steps + 1,
                                     generator=torch.Generator().manual_seed(0)))
            for _ in range(steps):
                start = time.perf_counter()
                batch.step()
                if run:
                    times.append(time.perf_counter() - start)

    if arrangement == "main":
        decode()
    else:
        worker = threading.Thread(target=decode)
        worker.start()
        worker.join()
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150, help="timed AR steps per arrangement")
    parser.add_argument("--rounds", type=int, default=2, help="every arrangement this many times, interleaved")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--arrangement", choices=sorted(ARRANGEMENTS.values()), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arrangement:  # one measurement, in this fresh process
        print(json.dumps(measure(args.arrangement, args.dtype, args.threads, args.steps)))
        return 0
    from vallex.inference.cpu_features import cpu_features

    results: dict[str, list[float]] = {name: [] for name in ARRANGEMENTS}
    for _ in range(args.rounds):
        for name, arrangement in ARRANGEMENTS.items():
            out = subprocess.run([sys.executable, __file__, "--arrangement", arrangement, "--dtype", args.dtype,
                                  "--threads", str(args.threads), "--steps", str(args.steps)],
                                 check=True, capture_output=True, text=True).stdout
            results[name].append(round(float(out.strip().splitlines()[-1]), 2))
            print(f"{name}: {results[name][-1]} ms per AR step (load {os.getloadavg()[0]:.2f})", flush=True)
    base = statistics.median(results["one thread"])
    print(f"\nCPU: {cpu_features().describe()}; {args.dtype}, {args.threads} threads, {args.steps} steps\n")
    print("| arrangement | AR ms per step (each round) | vs one thread |\n|---|---:|---:|")
    for name, values in results.items():
        print(f"| {name} | {', '.join(map(str, values))} | {statistics.median(values) / base:.2f}x |")
    if args.json:
        report = {"cpu": cpu_features().as_dict(), "dtype": args.dtype, "threads": args.threads,
                  "steps": args.steps, "ms_per_step": results,
                  "vs_one_thread": {n: round(statistics.median(v) / base, 3) for n, v in results.items()}}
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
