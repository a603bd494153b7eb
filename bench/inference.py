"""Inference speed and memory of the full-size VALL-E X model, per precision, side by side.

    .venv/bin/python bench/inference.py                                  # float32 only
    .venv/bin/python bench/inference.py --dtype all --stream --json bench/results.json  # + reference (make bench)

Workload: the public checkpoint's shape (1024 dims, 12+12 layers) with random weights (speed does
not depend on the values), 80 text tokens (30 of the prompt transcript + 50 of the target), a 225-frame
(3 s) prompt, and exactly 300 generated frames (4 s of audio at 75 Hz): EOS is masked until frame 300 and
decoding stops there (``min_frames``/``max_frames`` of :func:`vallex.inference.ar.ar_decode`; the model is not
changed). Sampling is the reference's default (temperature 1, no top-k/top-p).

Each precision runs in its own fresh Python process, so its peak RSS is its own. In that process:
``load_s`` = ``load_model`` of a ``.safetensors`` file written by ``save_checkpoint`` (memory-mapped; the
file is in the page cache, i.e. a warm load) plus ``apply_precision``; then one short warm-up generation
(``warmup_s``: pages the weights in, allocator warm-up); then ``--runs`` timed generations, each AR then
NAR, whose medians are reported. ``ar_ms_per_step`` = time of the 300 one-frame AR steps (sampling
included) / 300; ``ar_s`` adds the prefill of text + prompt; ``nar_s`` = the 7 NAR stages; ``total_s`` =
``ar_s + nar_s`` (codes only; the vocoder is not included); ``rtf`` = ``total_s`` / 4 s of audio.
``peak_rss_mb`` = the process's high-water resident set (VmHWM: anonymous + file-mapped pages, Python
and torch included), read at the end.

``--baseline reference`` (the default with ``--dtype all``) adds a row "reference (fp32)": the reference
implementation's inference algorithm (bench/reference_baseline.py: the whole prefix re-embedded and the
whole mask rebuilt every AR step, a KV cache grown by ``torch.cat``, hand-written attention, no trimming)
on the same float32 weights, workload, threads and sampling, in its own process like every row. Every row
then also gets ``speedup_vs_reference`` (and its AR-step and NAR parts): how our code compares with the
reference's on this machine, which the reference's numbers from another machine cannot tell.

``--stream`` adds time to first audio of :meth:`vallex.api.VallEX.synthesize_stream` on a two-sentence
text (long-text mode) with a 3 s prompt, a random-weight codec, in int8 (or the first --dtype given): the
time from the call until the first waveform chunk is yielded (text front end, AR, NAR, Vocos), with the
default chunking (``ttfa_s``: a 0.4 s first chunk, made once the AR is 16 frames past it, see
:mod:`vallex.api`) and with one chunk per sentence (``ttfa_per_sentence_s``, ``chunk_seconds=None``: the
whole first sentence), and the time to the end of the whole text (``total_s``, ``total_per_sentence_s``); medians
of ``--runs`` streams of each, run to the end, chunked and per sentence alternating, with the median of the
pairs' ratios (``streamed_vs_per_sentence``: what streaming costs). A random model never says EOS, so each
sentence's AR is held to 6 frames per
target phoneme (the ratio of the main workload, ~4 s for 50 phonemes) by a ``VallEX`` whose
``frame_limits`` force that length.

Every row also records the CPU it ran on and the kernels it used: the CPU class and the flags that decide
it (:mod:`vallex.inference.cpu_features`), the kernel plan
:func:`vallex.inference.precision.apply_precision` followed and the
kernels read back from the converted model (``cpu``, ``kernel_plan``, ``kernels`` in the JSON; printed under
the table). ``--cpu-class`` runs another class's plan (e.g. the ``x86-amx`` plan on a machine without AMX,
to check it, or the measured AMD plan on an AMX machine, to compare) and ``--kernel FIELD=KERNEL`` swaps
single choices (``ar_linear``, ``nar_linear``, ``nar_attention``; names in
:data:`vallex.inference.precision.LINEAR_KERNELS` /
:data:`~vallex.inference.precision.ATTENTION_KERNELS`). ``--dtype auto``
runs the precision ``auto`` picks here.

Every row also gets its floors, measured in its own process right after its timed runs (the same
conditions): ``read_gbps``, the memory read bandwidth at the row's threads (the best of several sums of a
512 MiB float32 tensor), and the peak rates of the row's NAR kernels (``peak_gops``: its Linear kernel and
its attention's matmul dtype on large products, the best of several shapes and, for the Linears, of every
kernel of the row's number format, e.g. fbgemm's and oneDNN's int8). ``ar_floor_ms`` = the bytes one AR
step must read (the AR decoder's Linear weights in the row's precision, its output layer, and the KV cache
at the mean length of the run) / ``read_gbps``; ``nar_floor_s`` = the 7 NAR stages' operations (Linears,
attention products, output layers; 2 per multiply-add) each over its kernel's peak. ``ar_vs_floor`` and
``nar_vs_floor`` are the measured figures over them: how far each part is from what the machine allows.

The machine must be idle for the numbers to mean anything: the 1-minute load average before and after
each configuration is recorded, ``--wait-idle`` waits for a quiet machine before each, and the JSON also
holds every run and the minimum of each quantity (``min_*``), the least disturbed estimate.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

from vallex.audio.codec_format import CODEBOOK_SIZE, FRAME_RATE, NUM_CODEBOOKS, SAMPLE_RATE  # noqa: E402 (torch-free)
from vallex.files import write_text_atomic  # noqa: E402

DTYPES = ("float32", "bfloat16", "int8")
TEXT_TOKENS = 80
ENROLL_TOKENS = 30
PROMPT_FRAMES = 225
GENERATED_FRAMES = 300
STREAM_TEXT = ("The quick brown fox jumps over the lazy dog. "
               "Speech synthesis has improved a great deal over the last ten years.")
STREAM_FRAMES_PER_TOKEN = 6
#: --paragraph: six sentences of about 50 phonemes, ~4 s each at STREAM_FRAMES_PER_TOKEN: ~24 s of speech.
PARAGRAPH_TEXT = ("The old lighthouse keeper climbed the stairs every evening at dusk. "
                  "He carried a small lamp and a notebook full of careful drawings. "
                  "From the top he could see the fishing boats coming home slowly. "
                  "Some nights the wind was so strong that the windows rattled loudly. "
                  "He wrote down the weather and the names of the ships he saw. "
                  "In the morning he walked back to the village for fresh bread.")
SUMMARY_KEYS = ("load_s", "peak_rss_mb", "ar_ms_per_step", "nar_s", "total_s", "rtf")
REFERENCE = "reference"  # the row of bench/reference_baseline.py
REFERENCE_LABEL = "reference (fp32)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", nargs="+", default=["float32"],
                        help="float32, bfloat16, int8, float16 (several, comma-separated, or 'all'); "
                             "float32 first is the baseline of the ratios")
    parser.add_argument("--baseline", choices=("auto", REFERENCE, "float32"), default="auto",
                        help="'reference': also run the reference implementation's algorithm on the same "
                             "float32 weights (first row) and give every row's speed-up against it; 'float32': "
                             "ratios against our float32 only; 'auto' (default): 'reference' with --dtype all")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--runs", type=int, default=3, help="timed generations per configuration (median)")
    parser.add_argument("--frames", type=int, default=GENERATED_FRAMES, help="generated frames per run")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a full-size .safetensors to load (default: random weights, written once to "
                             "a temporary folder)")
    parser.add_argument("--stream", action="store_true", help="also measure time to first audio when streaming")
    parser.add_argument("--paragraph", action="store_true",
                        help="also measure a six-sentence paragraph (fixed prompt): decoded as a batch and one "
                             "sentence after another, streamed and whole")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to this long for the 1-minute load average to fall below 0.5")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--cpu-class", default=None,
                        help="use this CPU class's kernel plan (vallex.inference.cpu_features.CPU_CLASSES; "
                             "default: this machine's class)")
    parser.add_argument("--kernel", action="append", default=[], metavar="FIELD=KERNEL",
                        help="override one choice of the kernel plan, e.g. ar_linear=onednn-int8 (repeatable)")
    parser.add_argument("--worker", choices=("generate", "stream", "paragraph", REFERENCE), help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        dtypes = _parse_dtypes(args.dtype, args.device, args.cpu_class)
        if not args.worker:  # a bad --cpu-class or --kernel fails here, before any worker starts
            import torch

            for dtype in dtypes:
                bench_plan(dtype, torch.device(args.device), args.cpu_class, args.kernel)
    except ValueError as error:
        parser.error(str(error))

    if args.worker:
        _set_threads(args.threads)
        workers = {"stream": measure_stream, "paragraph": measure_paragraph}
        result = workers.get(args.worker, measure)(args)
        write_text_atomic(args.result_file, json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory(prefix="vallex-bench-") as tmp:
        checkpoint = args.checkpoint or write_random_checkpoint(Path(tmp) / "vallex-random.safetensors")
        with_reference = args.baseline == REFERENCE or (
            args.baseline == "auto" and any(part.strip() == "all" for v in args.dtype for part in v.split(",")))
        runs = ([(REFERENCE, "float32")] if with_reference else []) + [("generate", dtype) for dtype in dtypes]
        results = []
        for kind, dtype in runs:
            if args.wait_idle > 0:
                wait_for_idle(args.wait_idle)
            results.append(run_worker(kind, dtype, checkpoint, args, Path(tmp)))
            _print_result(results[-1])
        def extra(kind: str) -> dict:
            """The stream or paragraph workload, in int8 when it is measured (else the first --dtype)."""
            if args.wait_idle > 0:
                wait_for_idle(args.wait_idle)
            return run_worker(kind, "int8" if "int8" in dtypes else dtypes[0], checkpoint, args, Path(tmp))

        stream = extra("stream") if args.stream else None
        if stream is not None:
            print(f"time to first audio ({stream['dtype']}, streaming, first sentence of "
                  f"{stream['first_sentence_tokens']} phonemes): {stream['ttfa_s']:.2f} s (first chunk "
                  f"{stream['first_chunk_s']:.2f} s of audio); {stream['ttfa_per_sentence_s']:.2f} s with one chunk "
                  "per sentence", flush=True)
        paragraph = extra("paragraph") if args.paragraph else None
        if paragraph is not None:
            print(format_paragraph(paragraph), flush=True)

    report = build_report(results, stream, args)
    report["paragraph"] = paragraph
    print()
    print(format_table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.json, json.dumps(report, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0


# Parent: orchestration ------------------------------------------------------------------------------
def _parse_dtypes(values: list[str], device: str, cpu_class: str | None = None) -> list[str]:
    """Canonical precision names; 'all' = float32, bfloat16, int8 on CPU and float32, float16, bfloat16 on GPUs;
    'auto' = what ``auto`` picks on this device (and CPU class)."""
    from vallex.inference.precision import kernel_plan, normalize_precision

    names: list[str] = []
    for value in values:
        for part in value.split(","):
            if part.strip() == "all":
                names.extend(DTYPES if device == "cpu" else ("float32", "float16", "bfloat16"))
            elif part.strip() == "auto":
                names.append(kernel_plan("auto", device, cpu_class if device == "cpu" else None).precision)
                print(f"--dtype auto -> {names[-1]}", flush=True)
            elif part.strip():
                names.append(normalize_precision(part.strip()))
    return list(dict.fromkeys(names))


def _kernel_overrides(values: list[str]) -> dict[str, str]:
    """``["ar_linear=onednn-int8", ...]`` -> {"ar_linear": "onednn-int8", ...}; ValueError if malformed."""
    overrides = {}
    for value in values:
        field, sep, kernel = value.partition("=")
        if not sep or not field.strip() or not kernel.strip():
            raise ValueError(f"--kernel {value!r}: expected FIELD=KERNEL, e.g. ar_linear=onednn-int8.")
        overrides[field.strip()] = kernel.strip()
    return overrides


def bench_plan(dtype: str, device, cpu_class: str | None, kernels: list[str]):
    """The kernel plan a row runs: ``cpu_class``'s (default this machine's) with the ``--kernel`` overrides."""
    from vallex.inference.precision import kernel_plan

    plan = kernel_plan(dtype, device, cpu_class if device.type == "cpu" else None)
    overrides = _kernel_overrides(kernels)
    return plan.with_kernels(**overrides) if overrides else plan


def write_random_checkpoint(path: Path) -> Path:
    """The full-size model with its default random init (seed 0), saved as safetensors."""
    import torch

    from vallex.config import VallexConfig
    from vallex.model import VallexModel
    from vallex.weights.checkpoint import save_checkpoint

    start = time.perf_counter()
    torch.manual_seed(0)
    save_checkpoint(VallexModel(VallexConfig.public()), path)
    print(f"wrote random full-size weights to {path} ({path.stat().st_size / 1e9:.2f} GB) in "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    return path


def wait_for_idle(limit_s: float, threshold: float = 0.5) -> None:
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        time.sleep(5)
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)


def run_worker(kind: str, dtype: str, checkpoint: Path, args: argparse.Namespace, tmp: Path) -> dict:
    result_file = tmp / f"{kind}-{dtype}.json"  # kind: generate, reference or stream
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--dtype", dtype,
               "--device", args.device, "--threads", str(args.threads), "--runs", str(args.runs),
               "--frames", str(args.frames), "--checkpoint", str(checkpoint), "--result-file", str(result_file)]
    if args.cpu_class:
        command += ["--cpu-class", args.cpu_class]
    for kernel in args.kernel:
        command += ["--kernel", kernel]
    load_before = os.getloadavg()[0]
    subprocess.run(command, check=True, cwd=REPO)
    result = json.loads(result_file.read_text(encoding="utf-8"))
    result["loadavg_1min_before"] = round(load_before, 2)
    result["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    return result


def build_report(results: list[dict], stream: dict | None, args: argparse.Namespace) -> dict:
    import torch

    from vallex.inference.cpu_features import cpu_features

    ours = [r for r in results if r["config"] != REFERENCE_LABEL]
    reference = next((r for r in results if r["config"] == REFERENCE_LABEL), None)
    baseline = next((r for r in ours if r["dtype"] == "float32"), ours[0])
    for result in results:
        result["speedup_vs_baseline"] = round(baseline["total_s"] / result["total_s"], 2)
        if reference is not None:  # > 1: faster than the reference's algorithm on the same weights
            result["speedup_vs_reference"] = round(reference["total_s"] / result["total_s"], 2)
            result["ar_step_speedup_vs_reference"] = round(
                reference["ar_ms_per_step"] / result["ar_ms_per_step"], 2)
            result["nar_speedup_vs_reference"] = round(reference["nar_s"] / result["nar_s"], 2)
    report = {key: baseline[key] for key in SUMMARY_KEYS}  # the summary's keys, for the baseline
    report.update({
        "baseline": baseline["dtype"],
        "reference": None if reference is None else {key: reference[key] for key in SUMMARY_KEYS},
        "results": results,
        "time_to_first_audio": stream,
        "workload": {"text_tokens": TEXT_TOKENS, "prompt_text_tokens": ENROLL_TOKENS,
                     "prompt_frames": PROMPT_FRAMES, "generated_frames": args.frames,
                     "audio_s": args.frames / FRAME_RATE, "runs": args.runs},
        "machine": {"device": args.device, "threads": args.threads, "cpu_count": os.cpu_count(),
                    "processor": _cpu_name(), "torch": torch.__version__, "python": platform.python_version(),
                    "cpu": cpu_features().as_dict(), "cpu_description": cpu_features().describe(),
                    "plan_cpu_class": args.cpu_class or cpu_features().cpu_class,
                    "kernel_overrides": list(args.kernel)},
    })
    return report


def format_table(report: dict) -> str:
    columns = [("config", "{}"), ("load_s", "{:.2f}"), ("warmup_s", "{:.2f}"), ("peak_rss_mb", "{:.0f}"),
               ("ar_ms_per_step", "{:.1f}"), ("ar_floor_ms", "{:.1f}"), ("ar_vs_floor", "{:.2f}x"), ("ar_s", "{:.2f}"),
               ("nar_s", "{:.2f}"), ("nar_floor_s", "{:.2f}"), ("nar_vs_floor", "{:.2f}x"), ("total_s", "{:.2f}"),
               ("rtf", "{:.2f}"), ("speedup_vs_baseline", "{:.2f}x")]
    if report.get("reference"):
        columns += [("ar_step_speedup_vs_reference", "{:.2f}x"), ("nar_speedup_vs_reference", "{:.2f}x"),
                    ("speedup_vs_reference", "{:.2f}x")]
    columns.append(("loadavg_1min_before", "{:.2f}"))
    short = {"speedup_vs_baseline": f"vs_{report['baseline']}", "ar_step_speedup_vs_reference": "ar_vs_ref",
             "ar_floor_ms": "ar_floor", "ar_vs_floor": "ar/floor", "nar_floor_s": "nar_floor",
             "nar_vs_floor": "nar/floor",
             "nar_speedup_vs_reference": "nar_vs_ref", "speedup_vs_reference": "vs_ref",
             "loadavg_1min_before": "loadavg"}
    header = [short.get(name, name) for name, _ in columns]
    rows = [[fmt.format(result[name]) for name, fmt in columns] for result in report["results"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    machine = report["machine"]
    lines.append(f"{machine['device']}, {machine['threads']} threads, torch {machine['torch']}, "
                 f"{report['workload']['generated_frames']} frames = {report['workload']['audio_s']:.1f} s of "
                 f"audio, medians of {report['workload']['runs']}; vs_X = X's time / this time")
    if report.get("reference"):
        lines.append(f"{REFERENCE_LABEL}: the reference implementation's inference algorithm "
                     "(bench/reference_baseline.py) on the same float32 weights and workload")
    lines.append(f"CPU {machine.get('cpu_description', machine['processor'])}")
    lines.extend(format_kernels(report["results"]))
    lines.extend(format_floors(report["results"]))
    if report["time_to_first_audio"]:
        stream = report["time_to_first_audio"]
        lines.append(f"time to first audio (synthesize_stream, {stream['dtype']}, 2 sentences): "
                     f"{stream['ttfa_s']:.2f} s (first chunk {stream['first_chunk_s']:.2f} s of audio), whole text "
                     f"{stream['total_s']:.2f} s; one chunk per sentence: {stream['ttfa_per_sentence_s']:.2f} s, "
                     f"whole text {stream['total_per_sentence_s']:.2f} s; streamed / per sentence "
                     f"{stream['streamed_vs_per_sentence']:.2f}x")
    if report.get("paragraph"):
        lines.append(format_paragraph(report["paragraph"]))
    return "\n".join(lines)


def format_paragraph(result: dict) -> str:
    """The --paragraph workload's line: batched against one by one, streamed and whole."""
    batched, alone = result["batched"], result["one_by_one"]
    return (f"paragraph ({result['dtype']}, {result['sentences']} sentences, {result['audio_s']:.1f} s of speech): "
            f"as a batch RTF {batched['rtf']:.2f} (whole {batched['whole_s']:.1f} s, streamed "
            f"{batched['streamed_s']:.1f} s = {batched['streamed_vs_whole']:.2f}x, first audio "
            f"{batched['ttfa_s']:.2f} s); one by one RTF {alone['rtf']:.2f} (whole {alone['whole_s']:.1f} s, first "
            f"audio {alone['ttfa_s']:.2f} s); batch speed-up {result['speedup']:.2f}x; a one-sentence text's first "
            f"audio {result['single_ttfa_s']:.2f} s")


def format_kernels(results: list[dict]) -> list[str]:
    """One line per row: the CPU class of its plan, the kernels its model ran and the plan's basis."""
    lines = []
    for result in results:
        kernels = result.get("kernels")
        if not kernels:
            continue
        plan = result.get("kernel_plan") or {}
        where = plan.get("cpu_class") or plan.get("device_type") or "?"
        lines.append(f"  {result['config']} kernels ({where} plan, {plan.get('basis', '?')}): AR Linears "
                     f"{kernels['ar_linear']}, NAR Linears {kernels['nar_linear']}, AR attention "
                     f"{kernels['ar_attention']}, NAR attention {kernels['nar_attention']}")
    return lines


def format_floors(results: list[dict]) -> list[str]:
    """One line per row: what its floors rest on (bandwidth, peaks, bytes, operations), measured in its process."""
    lines = []
    for result in results:
        if "read_gbps" not in result:
            continue
        peaks, kernels, reads, ops = (result["peak_gops"], result["peak_kernels"], result["ar_step_read_mb"],
                                      result["nar_gop"])
        lines.append(f"  {result['config']} floors: read {result['read_gbps']:.1f} GB/s; AR step reads "
                     f"{reads['weights']:.0f} MB of weights + {reads['output']:.1f} MB output layer + "
                     f"{reads['cache']:.0f} MB KV cache; NAR {ops['linear']:.0f} GOP of Linears at "
                     f"{peaks['nar_linear']:.0f} GOPS ({kernels['nar_linear']}), {ops['attention']:.0f} GOP of "
                     f"attention at {peaks['nar_attention']:.0f} ({kernels['nar_attention']}), "
                     f"{ops['output']:.1f} GOP of output layers at {peaks['fp32']:.0f} (fp32)")
    return lines


def _print_result(result: dict) -> None:
    print(f"{result['config']}: load {result['load_s']:.2f} s, peak RSS {result['peak_rss_mb']:.0f} MB, "
          f"AR {result['ar_ms_per_step']:.1f} ms/step, NAR {result['nar_s']:.2f} s, "
          f"total {result['total_s']:.2f} s, RTF {result['rtf']:.2f}; floors AR {result['ar_floor_ms']:.1f} ms "
          f"({result['ar_vs_floor']:.2f}x), NAR {result['nar_floor_s']:.2f} s ({result['nar_vs_floor']:.2f}x) "
          f"(load average {result['loadavg_1min_before']:.2f} -> {result['loadavg_1min_after']:.2f})", flush=True)
    cpu = result.get("cpu") or {}
    flags = " ".join(cpu.get("flags", []))
    print(f"  CPU class {cpu.get('cpu_class', '?')} ({cpu.get('model_name', '')}; {flags})", flush=True)
    for line in format_kernels([result]) + format_floors([result]):
        print(line, flush=True)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# Worker: one configuration in a fresh process --------------------------------------------------------
def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mb() -> float:
    """High-water resident set of this process in MB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float | None:
    """Resident set now (VmRSS) in MB, None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def load(args: argparse.Namespace):
    """(model, device, load seconds, kernel plan or None); the plan is checked before the weights load."""
    import torch

    from vallex.inference.precision import apply_precision
    from vallex.weights.checkpoint import load_model

    device = torch.device(args.device)
    plan = None if args.worker == REFERENCE else bench_plan(args.dtype[0], device, args.cpu_class, args.kernel)
    start = time.perf_counter()
    model = load_model(args.checkpoint, device=device)
    if plan is not None:
        # Not for the reference row: the fast paths and the malloc tuning (what VallEX.from_pretrained does)
        # are ours; the reference implementation has neither.
        model = apply_precision(model, args.dtype[0], device, plan=plan, tune_malloc=True)
    _sync(device)
    return model, device, time.perf_counter() - start, plan


def kernel_record(model, plan) -> dict:
    """What a result stores about where it ran: the CPU's features, the plan, the kernels read back."""
    from vallex.inference.cpu_features import cpu_features
    from vallex.inference.precision import kernels_in_use

    return {"cpu": cpu_features().as_dict(), "kernel_plan": None if plan is None else plan.as_dict(),
            "kernels": None if plan is None else kernels_in_use(model)}


def workload(device, seed: int = 0):
    """text [1, 80], language ids [1, 80], prompt codes [1, 225, 8] (random, fixed by ``seed``)."""
    import torch

    from vallex.inference.generation import language_ids

    rng = torch.Generator().manual_seed(seed)
    text = torch.randint(0, 70, (1, TEXT_TOKENS), generator=rng).to(device)  # bpe_69 ids
    langs = language_ids(TEXT_TOKENS, ENROLL_TOKENS, "en", "en", device)[None]
    prompt = torch.randint(0, CODEBOOK_SIZE, (1, PROMPT_FRAMES, NUM_CODEBOOKS), generator=rng).to(device)
    return text, langs, prompt


def generate_timed(model, device, text, langs, prompt, frames: int, seed: int, reference: bool = False) -> dict:
    """One AR (exactly ``frames`` frames) + NAR generation; seconds of each part.

    ``reference``: run the reference implementation's algorithm (bench/reference_baseline.py) instead of
    :func:`vallex.inference.ar.ar_decode` / :func:`~vallex.inference.nar.nar_decode`.
    """

    from bench.reference_baseline import reference_ar, reference_nar
    from vallex.inference.ar import ar_decode
    from vallex.inference.nar import NARInput, nar_decode
    from vallex.inference.sampling import seeded_generator

    generator = seeded_generator(seed, device)
    marks: list[float] = []

    def on_step(step: int) -> None:
        if step == 0:  # called once the prefill's logits exist
            _sync(device)
            marks.append(time.perf_counter())

    _sync(device)
    start = time.perf_counter()
    if reference:
        codes0, calls = reference_ar(model, text, langs, prompt[..., 0], min_frames=frames, max_frames=frames,
                                     generator=generator, on_step=on_step)
    else:
        ar = ar_decode(model, text, langs, prompt[..., 0], min_frames=frames, max_frames=frames,
                       generator=generator, on_step=on_step)
        codes0, calls = ar.codes, ar.steps
    _sync(device)
    ar_end = time.perf_counter()
    if reference:
        codes = reference_nar(model, text, langs, prompt, codes0)
    else:
        codes = nar_decode(model, [NARInput(text, langs, prompt, codes0)])[0]
    _sync(device)
    end = time.perf_counter()
    if codes0.shape[1] != frames or codes.shape != (1, frames, model.config.num_quantizers):
        raise RuntimeError(f"expected {frames} frames, got codes of shape {tuple(codes.shape)}")
    steps = calls - 1  # one-frame decoder calls after the prefill
    return {"ar_prefill_s": marks[0] - start, "ar_s": ar_end - start,
            "ar_ms_per_step": (ar_end - marks[0]) / steps * 1e3, "nar_s": end - ar_end, "total_s": end - start}


def measure(args: argparse.Namespace) -> dict:
    import torch

    loadavg = os.getloadavg()[0]
    reference = args.worker == REFERENCE
    # The reference's generate_audio runs under no_grad; ours under inference_mode (a little less per-op work).
    with torch.no_grad() if reference else torch.inference_mode():
        model, device, load_s, plan = load(args)
        rss_after_load = current_rss_mb()
        text, langs, prompt = workload(device)
        start = time.perf_counter()
        # Warm-up: pages the weights in.
        generate_timed(model, device, text, langs, prompt, frames=8, seed=1, reference=reference)
        warmup_s = time.perf_counter() - start
        runs = [generate_timed(model, device, text, langs, prompt, args.frames, seed=2 + i, reference=reference)
                for i in range(args.runs)]
    result = {"config": REFERENCE_LABEL if reference else args.dtype[0],
              "algorithm": REFERENCE if reference else "vallex", "dtype": args.dtype[0],
              "device": str(device), "threads": torch.get_num_threads(),
              "load_s": load_s, "warmup_s": warmup_s, "peak_rss_mb": peak_rss_mb(),
              "rss_after_load_mb": rss_after_load, "rss_at_end_mb": current_rss_mb(), "runs": runs,
              "worker_loadavg_1min_at_start": loadavg, **kernel_record(model, plan)}
    for key in runs[0]:
        result[key] = statistics.median(run[key] for run in runs)
        # The least disturbed run: on a shared machine the minimum is the better estimate of the cost.
        result[f"min_{key}"] = min(run[key] for run in runs)
    result["rtf"] = result["total_s"] / (args.frames / FRAME_RATE)
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    # After the peak RSS is read: the bandwidth test's tensor would raise it.
    result.update(floors(model, plan, device, text.shape[1], prompt.shape[1], args.frames, result))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}


# Floors: what the machine allows ----------------------------------------------------------------------------
BANDWIDTH_MIB = 512  # far beyond any last-level cache, so a sum of it reads memory


def _timed_best(call, device, repeats: int) -> float:
    """The fastest of ``repeats`` calls, in seconds, after one warm-up call."""
    call()
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        call()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def read_bandwidth_gbps(device, repeats: int = 7) -> float:
    """Memory read bandwidth at torch's threads: the best of ``repeats`` sums of a 512 MiB float32 tensor."""
    import torch

    x = torch.ones(BANDWIDTH_MIB * 2**20 // 4, dtype=torch.float32, device=device)
    seconds = _timed_best(x.sum, device, repeats)
    return x.numel() * 4 / seconds / 1e9


def linear_peak_gops(kernel: str, device, repeats: int = 5) -> tuple[float, str]:
    """The peak Linear rate of ``kernel``'s number format here (2 operations per multiply-add): the best of every
    kernel of that format this build runs (e.g. fbgemm and oneDNN for int8) over large products, 1024 -> 4096
    (the NAR's first feed-forward Linear) at 605 and 2048 rows. Returns (GOPS, the kernel that reached it)."""
    import torch
    from torch import nn

    from bench.kernels import convert
    from vallex.inference.kernels import inference_function
    from vallex.inference.precision import LINEAR_KERNELS, runnable_kernel

    linear = nn.Linear(1024, 4096).eval()
    if device.type == "cpu":
        number_format = kernel.split("-")[-1]
        same_format = [k for k in LINEAR_KERNELS if k.split("-")[-1] == number_format and runnable_kernel(k) == k]
    else:  # a GPU's plan names torch's kernel in its dtype
        same_format = [kernel]
    best, best_kernel = 0.0, kernel
    for candidate in same_format:
        if device.type == "cpu":
            module, dtype = convert(linear, candidate, 2048)
        else:
            dtype = {"aten-fp16": torch.float16, "aten-bf16": torch.bfloat16}.get(candidate, torch.float32)
            module = nn.Linear(1024, 4096).eval().to(device=device, dtype=dtype)
        function = inference_function(module)
        with torch.inference_mode():
            for rows in (605, 2048):
                x = torch.randn(rows, 1024, device=device).to(dtype)
                rate = 2 * rows * 1024 * 4096 / _timed_best(lambda f=function, x=x: f(x), device, repeats) / 1e9
                if rate > best:
                    best, best_kernel = rate, candidate
    return best, best_kernel


def matmul_peak_gops(dtype_name: str, device, repeats: int = 5) -> float:
    """The best rate of ``torch.matmul`` in ``dtype_name`` (fp32, bf16, fp16): square products of 1024 and 2048,
    and attention's shape (16 heads of 605 x 64 by 64 x 605)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    shapes = [((1024, 1024), (1024, 1024)), ((2048, 2048), (2048, 2048)), ((16, 605, 64), (16, 64, 605))]
    best = 0.0
    with torch.inference_mode():
        for a_shape, b_shape in shapes:
            a = torch.randn(a_shape, device=device).to(dtype)
            b = torch.randn(b_shape, device=device).to(dtype)
            operations = 2 * a.numel() * b_shape[-1]
            best = max(best, operations / _timed_best(lambda a=a, b=b: torch.matmul(a, b), device, repeats) / 1e9)
    return best


def ar_step_bytes(config, dtype: str, cache_itemsize: int, output_itemsize: int, positions: float) -> dict:
    """Bytes one AR step reads at least: the decoder's Linear weights in ``dtype``, the output layer, and the KV
    cache of ``positions`` positions (keys and values of every layer)."""
    d, layers = config.d_model, config.num_layers
    per_weight = {"int8": 1, "bfloat16": 2, "float16": 2}.get(dtype, 4)
    weights = layers * (3 + 1 + 2 * config.ff_multiplier) * d * d * per_weight
    output = (config.audio_vocab_size + 1) * d * output_itemsize
    cache = layers * 2 * positions * d * cache_itemsize
    return {"weights": weights, "output": output, "cache": cache}


def nar_operations(config, text: int, prompt: int, frames: int) -> dict:
    """Operations (2 per multiply-add) of the NAR stages of one utterance, by kind.

    Every layer runs its Linears (12 d² multiply-adds per row) on all ``text + prompt + frames`` positions but
    the last, which computes keys and values there (3 d²) and the rest only on the frames; attention is q kᵀ
    and weights x v over all positions; the output layer maps the frames' rows to 1024 codes.
    """
    d, layers, stages = config.d_model, config.num_layers, config.num_quantizers - 1
    n = text + prompt + frames
    per_row = 4 + 2 * config.ff_multiplier  # in_proj 3 d², out_proj d², the feed-forward's two
    linear = 2 * d * d * ((layers - 1) * per_row * n + 3 * n + (per_row - 3) * frames)
    attention = 2 * 2 * d * n * ((layers - 1) * n + frames)
    output = 2 * d * config.audio_vocab_size * frames
    return {"linear": stages * linear, "attention": stages * attention, "output": stages * output}


def floors(model, plan, device, text: int, prompt: int, frames: int, measured: dict) -> dict:
    """The row's floors and its measured figures over them (module docstring)."""
    from vallex.inference.fastpath import model_cache_dtype

    config = model.config
    dtype = plan.precision if plan is not None else "float32"
    nar_linear = plan.nar_linear if plan is not None else "aten-fp32"
    nar_attention = (plan.nar_attention if plan is not None else "sdpa-fp32").split("-")[-1]
    bandwidth = read_bandwidth_gbps(device)
    linear_peak, linear_kernel = linear_peak_gops(nar_linear, device)
    peaks = {"nar_linear": linear_peak, "nar_attention": matmul_peak_gops(nar_attention, device),
             "fp32": matmul_peak_gops("fp32", device)}
    activation = model.ar_predict_layer.weight.dtype
    cache_dtype = model_cache_dtype(model, activation, device)
    reads = ar_step_bytes(config, dtype, cache_dtype.itemsize, activation.itemsize, text + 1 + prompt + frames / 2)
    operations = nar_operations(config, text, prompt, frames)
    ar_floor_ms = sum(reads.values()) / (bandwidth * 1e9) * 1e3
    nar_floor_s = (operations["linear"] / peaks["nar_linear"] + operations["attention"] / peaks["nar_attention"]
                   + operations["output"] / peaks["fp32"]) / 1e9
    return {"read_gbps": bandwidth, "peak_gops": {k: round(v, 1) for k, v in peaks.items()},
            "peak_kernels": {"nar_linear": linear_kernel, "nar_attention": f"matmul-{nar_attention}"},
            "ar_step_read_mb": {k: round(v / 1e6, 1) for k, v in reads.items()},
            "nar_gop": {k: round(v / 1e9, 1) for k, v in operations.items()},
            "ar_floor_ms": ar_floor_ms, "ar_vs_floor": measured["ar_ms_per_step"] / ar_floor_ms,
            "nar_floor_s": nar_floor_s, "nar_vs_floor": measured["nar_s"] / nar_floor_s}


def speaking_setup(args: argparse.Namespace, sentence_tokens: list[int] | None = None):
    """(VallEX, 3 s voice prompt, model, load seconds, kernel plan) for the stream and paragraph workers: the row's
    model, a random-weight codec, and every sentence held to STREAM_FRAMES_PER_TOKEN frames per target phoneme
    (the random model never says EOS); ``sentence_tokens`` collects each sentence's phonemes."""
    from vallex.api import VallEX
    from vallex.prompts import VoicePrompt
    from vallex.weights.random_weights import random_codec

    def forced_length(text_tokens: int, prompt_frames: int) -> tuple[int, int]:
        target_tokens = text_tokens - ENROLL_TOKENS
        if sentence_tokens is not None:
            sentence_tokens.append(target_tokens)
        frames = STREAM_FRAMES_PER_TOKEN * target_tokens
        return frames, frames

    model, device, load_s, plan = load(args)
    codec = random_codec(seed=0, device=device)
    _, _, prompt_codes = workload(device)
    voice = VoicePrompt(codes=prompt_codes.cpu(), text_ids=list(range(1, ENROLL_TOKENS + 1)), language="en")
    tts = VallEX(model, codec, presets=None, device=device, frame_limits=forced_length)
    return tts, voice, model, load_s, plan


def measure_stream(args: argparse.Namespace) -> dict:
    """Time to the first chunk of ``VallEX.synthesize_stream`` on a two-sentence text, chunked and per sentence."""
    import torch

    from vallex.synthesis.streaming import STREAM_CHUNK_SECONDS

    sentence_tokens: list[int] = []
    tts, voice, model, load_s, plan = speaking_setup(args, sentence_tokens)

    def start_stream(chunk_seconds: float | None):
        return tts.synthesize_stream(STREAM_TEXT, prompt=voice, language="en", seed=0, long_text="fixed-prompt",
                                     chunk_seconds=chunk_seconds)

    def whole(chunk_seconds: float | None) -> tuple[float, float, list]:
        """(seconds to the first chunk, seconds to the end, the chunks) of one stream."""
        start = time.perf_counter()
        stream = start_stream(chunk_seconds)
        first = next(stream)
        ttfa = time.perf_counter() - start
        chunks = [first, *stream]
        return ttfa, time.perf_counter() - start, chunks

    # Warm-up (weights paged in, text front end and codec loaded), then the measured streams: chunked and per
    # sentence alternate, so that both see the same machine (its speed drifts), and the ratio is taken pair by pair.
    for _ in tts.synthesize_stream("Warm up.", prompt=voice, language="en", seed=0, long_text="fixed-prompt"):
        pass
    sentence_tokens.clear()
    pairs = []
    for _ in range(max(args.runs, 1)):
        pairs.append((whole(STREAM_CHUNK_SECONDS), whole(None)))
    ttfa = statistics.median(chunked[0] for chunked, _ in pairs)
    total = statistics.median(chunked[1] for chunked, _ in pairs)
    ttfa_sentence = statistics.median(sentence[0] for _, sentence in pairs)
    total_sentence = statistics.median(sentence[1] for _, sentence in pairs)
    ratio = statistics.median(chunked[1] / sentence[1] for chunked, sentence in pairs)
    chunks, sentences = pairs[-1][0][2], pairs[-1][1][2]
    return {"dtype": args.dtype[0], "text": STREAM_TEXT, "ttfa_s": round(ttfa, 3), "total_s": round(total, 3),
            "streamed_vs_per_sentence": round(ratio, 3),
            "pairs_s": [[round(c[0], 3), round(c[1], 3), round(s[0], 3), round(s[1], 3)] for c, s in pairs],
            "chunk_seconds": STREAM_CHUNK_SECONDS, "chunks": len(chunks),
            "chunk_lengths_s": [round(len(c) / SAMPLE_RATE, 3) for c in chunks],
            "first_chunk_s": round(len(chunks[0]) / SAMPLE_RATE, 3),
            "ttfa_per_sentence_s": round(ttfa_sentence, 3), "total_per_sentence_s": round(total_sentence, 3),
            "first_sentence_s": round(len(sentences[0]) / SAMPLE_RATE, 3),
            "first_sentence_tokens": sentence_tokens[0], "load_s": round(load_s, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1), "threads": torch.get_num_threads(), **kernel_record(model, plan)}


def measure_paragraph(args: argparse.Namespace) -> dict:
    """A six-sentence paragraph (fixed prompt) decoded as a batch (the default) and one sentence after another
    (``VallEX.paragraph = 1``): time to first audio and to the end, streamed (default chunks) and whole
    (``synthesize``, one chunk per sentence); medians of ``--runs``, the four kinds interleaved each run."""
    import torch

    from vallex.synthesis.scheduler import PARAGRAPH_SENTENCES
    from vallex.synthesis.streaming import STREAM_CHUNK_SECONDS

    tts, voice, model, load_s, plan = speaking_setup(args)
    first_sentence = PARAGRAPH_TEXT.split(". ")[0] + "."

    def timed(text: str, paragraph: int, chunk_seconds: float | None) -> tuple[float, float, float]:
        """(seconds to the first chunk, seconds to the end, seconds of audio) of one synthesis."""
        tts.paragraph = paragraph
        start = time.perf_counter()
        chunks = tts.synthesize_stream(text, prompt=voice, language="en", seed=0, long_text="fixed-prompt",
                                       chunk_seconds=chunk_seconds)
        first = next(chunks)
        ttfa = time.perf_counter() - start
        audio = len(first) + sum(len(chunk) for chunk in chunks)
        return ttfa, time.perf_counter() - start, audio / SAMPLE_RATE

    timed("Warm up.", PARAGRAPH_SENTENCES, STREAM_CHUNK_SECONDS)
    runs: dict[str, list[tuple[float, float, float]]] = {}
    for _ in range(max(args.runs, 1)):
        for name, paragraph, chunk in (("batched_streamed", PARAGRAPH_SENTENCES, STREAM_CHUNK_SECONDS),
                                       ("batched_whole", PARAGRAPH_SENTENCES, None),
                                       ("alone_streamed", 1, STREAM_CHUNK_SECONDS), ("alone_whole", 1, None)):
            runs.setdefault(name, []).append(timed(PARAGRAPH_TEXT, paragraph, chunk))
        runs.setdefault("single", []).append(timed(first_sentence, PARAGRAPH_SENTENCES, STREAM_CHUNK_SECONDS))

    def median(name: str, index: int) -> float:
        return statistics.median(run[index] for run in runs[name])

    audio_s = runs["batched_whole"][0][2]

    def kind(prefix: str) -> dict:
        whole, streamed = median(f"{prefix}_whole", 1), median(f"{prefix}_streamed", 1)
        return {"ttfa_s": round(median(f"{prefix}_streamed", 0), 3), "streamed_s": round(streamed, 3),
                "whole_s": round(whole, 3), "rtf": round(whole / audio_s, 3),
                "streamed_rtf": round(streamed / audio_s, 3), "streamed_vs_whole": round(streamed / whole, 3)}

    batched, alone = kind("batched"), kind("alone")
    return {"dtype": args.dtype[0], "text": PARAGRAPH_TEXT, "sentences": len(PARAGRAPH_TEXT.split(". ")),
            "audio_s": round(audio_s, 2), "paragraph": PARAGRAPH_SENTENCES, "batched": batched, "one_by_one": alone,
            "speedup": round(alone["whole_s"] / batched["whole_s"], 3),
            "single_ttfa_s": round(median("single", 0), 3),
            "runs_s": {name: [[round(x, 3) for x in run] for run in values] for name, values in runs.items()},
            "load_s": round(load_s, 3), "peak_rss_mb": round(peak_rss_mb(), 1), "threads": torch.get_num_threads(),
            **kernel_record(model, plan)}


if __name__ == "__main__":
    sys.exit(main())
