"""Serving many clients: batched AR steps, and a closed loop of concurrent HTTP clients, against the serial engine.

    .venv/bin/python bench/serving.py                          # everything below, int8 on CPU (float16 on CUDA)
    .venv/bin/python bench/serving.py --part ar-step           # only the AR step at each batch size
    .venv/bin/python bench/serving.py --part soak --soak 200   # only the soak (tiny model, checks every answer)

Parts (``--part``, default all):

* ``ar-step``: the full-size model (random weights, the public checkpoint's shape), an :class:`ARBatch` of B
  utterances (80 text tokens, a 3 s prompt each), the median time of one :meth:`ARBatch.step` (sampling
  included) over ``--steps`` steps, for B in ``--batches``; the ratio to B = 1 is the cost of batching.
* ``clients``: the full-size model behind the OpenAI-compatible endpoint (``POST /v1/audio/speech``, PCM,
  streamed) on a loopback port; C concurrent clients in a closed loop (each sends its next request when the
  previous answer is complete), each request ~4 s of speech (a two-sentence-free 50-phoneme text, a 3 s
  voice, the AR held to exactly 300 frames since a random model never says EOS). For each C in
  ``--clients``: throughput (seconds of audio per wall second), time to first audio p50/p95 (request sent
  -> first audio bytes), per-request real-time factor (request time / its audio), with the batching
  engine (``--max-batch``) and with the serial engine (``max_batch=1``) in the same run; the ratio is the
  gain of batching.
* ``soak``: ``--soak`` requests from 8 client threads over HTTP with the official ``openai`` client on the
  tiny model, random cancellations (a client that closes the connection after the first bytes) and bad
  requests interleaved; every completed answer must equal the PCM of that request made alone (same seed):
  nothing lost, nothing mixed up.

The machine must be idle (``--wait-idle``): the 1-minute load average before each part is recorded.
Results: ``--json`` (default bench/results/serving-<device>.json) and a table on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

TEXT_TOKENS = 80
ENROLL_TOKENS = 30
PROMPT_FRAMES = 225
GENERATED_FRAMES = 300  # 4 s at 75 Hz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "ar-step", "clients", "soak"), default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="default: int8 on CPU, float16 on CUDA")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="1,2,4,8,16", help="AR batch sizes (ar-step)")
    parser.add_argument("--steps", type=int, default=40, help="timed AR steps per batch size (ar-step)")
    parser.add_argument("--clients", default="1,2,4,8,16", help="concurrent clients (clients)")
    parser.add_argument("--requests-per-client", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--soak", type=int, default=200, help="requests in the soak")
    parser.add_argument("--wait-idle", type=float, default=0.0, help="wait up to this many seconds for load < 0.5")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = args.dtype or ("float16" if device.type == "cuda" else "int8")
    report: dict = {"machine": _machine(args.threads), "device": str(device), "dtype": dtype}
    with tempfile.TemporaryDirectory(prefix="vallex-bench-serving-") as tmp:
        if args.part in ("all", "ar-step"):
            _wait_for_idle(args.wait_idle)
            report["ar_step"] = measure_ar_steps(Path(tmp), device, dtype, [int(b) for b in args.batches.split(",")],
                                                 args.steps)
        if args.part in ("all", "clients"):
            _wait_for_idle(args.wait_idle)
            report["clients"] = measure_clients(Path(tmp), device, dtype, [int(c) for c in args.clients.split(",")],
                                                args.requests_per_client, args.max_batch)
        if args.part in ("all", "soak"):
            report["soak"] = run_soak(Path(tmp), args.soak)
    print(format_report(report))
    out = args.json or REPO / "bench" / "results" / f"serving-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


# AR step ------------------------------------------------------------------------------------------------

def full_size_model(tmp: Path, device, dtype: str):
    import torch

    from vallex.checkpoint import load_model, save_checkpoint
    from vallex.config import VallexConfig
    from vallex.model import VallexModel
    from vallex.precision import apply_precision

    path = tmp / "full.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        save_checkpoint(VallexModel(VallexConfig.public()), path)
    model = load_model(path, device=device)
    model = apply_precision(model, dtype, device, tune_malloc=True)
    return model


def measure_ar_steps(tmp: Path, device, dtype: str, batches: list[int], steps: int) -> dict:
    """Median seconds of one ARBatch step with B utterances of the benchmark's shape, for each B."""
    import torch

    from vallex.batching import ARBatch, ARRequest
    from vallex.decoding import language_ids

    model = full_size_model(tmp, device, dtype)
    rng = torch.Generator().manual_seed(0)
    text = torch.randint(0, 70, (1, TEXT_TOKENS), generator=rng)
    langs = language_ids(TEXT_TOKENS, ENROLL_TOKENS, "en", "en")[None]
    prompt0 = torch.randint(0, 1024, (1, PROMPT_FRAMES), generator=rng)
    rows = []
    for batch_size in batches:
        batch = ARBatch(model)
        for i in range(batch_size):
            batch.add(i, ARRequest(text, langs, prompt0, min_frames=10_000, max_frames=10_000,
                                   generator=torch.Generator().manual_seed(i)))
        for _ in range(3):  # warm-up
            batch.step()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            batch.step()
            times.append(time.perf_counter() - start)
        rows.append({"batch": batch_size, "step_ms": round(1000 * statistics.median(times), 2),
                     "min_step_ms": round(1000 * min(times), 2)})
        print(f"AR step at batch {batch_size}: {rows[-1]['step_ms']} ms (load {os.getloadavg()[0]:.2f})", flush=True)
    base = rows[0]["step_ms"]
    for row in rows:
        row["vs_batch_1"] = round(row["step_ms"] / base, 2)
        row["frames_per_s"] = round(1000 * row["batch"] / row["step_ms"], 1)
    return {"rows": rows, "text_tokens": TEXT_TOKENS, "prompt_frames": PROMPT_FRAMES, "steps": steps}


# Clients over HTTP -----------------------------------------------------------------------------------------

def measure_clients(tmp: Path, device, dtype: str, clients: list[int], per_client: int, max_batch: int) -> dict:
    raise NotImplementedError("the HTTP part needs vallex.serving.http")


def run_soak(tmp: Path, requests: int) -> dict:
    raise NotImplementedError("the soak needs vallex.serving.http")


# Report ---------------------------------------------------------------------------------------------------

def format_report(report: dict) -> str:
    lines = [f"{report['machine']['cpu']} · {report['machine']['threads']} threads · {report['device']} "
             f"{report['dtype']}"]
    if "ar_step" in report:
        lines += ["", "| AR batch | step (ms) | vs batch 1 | frames/s |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['batch']} | {r['step_ms']} | {r['vs_batch_1']}× | {r['frames_per_s']} |"
                  for r in report["ar_step"]["rows"]]
    if "clients" in report:
        lines += ["", "| clients | engine | throughput (audio s / s) | vs serial | first audio p50 (s) | p95 (s) | "
                  "RTF per request p50 |", "|---:|---|---:|---:|---:|---:|---:|"]
        for row in report["clients"]["rows"]:
            lines.append(f"| {row['clients']} | {row['engine']} | {row['throughput']} | {row.get('vs_serial', '')} | "
                         f"{row['ttfa_p50_s']} | {row['ttfa_p95_s']} | {row['rtf_p50']} |")
    if "soak" in report:
        soak = report["soak"]
        lines += ["", f"soak: {soak['requests']} requests, {soak['ok']} complete and correct, "
                      f"{soak['cancelled']} cancelled, {soak['rejected']} bad requests rejected, "
                      f"{soak['wrong']} wrong or lost"]
    return "\n".join(lines)


def _machine(threads: int) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "threads": threads, "torch": torch.__version__, "python": platform.python_version(),
            "cores": os.cpu_count()}


def _wait_for_idle(limit_s: float, threshold: float = 0.5) -> None:
    deadline = time.monotonic() + limit_s
    while limit_s and os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        time.sleep(5)
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
