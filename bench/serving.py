"""Serving many clients: batched AR steps, and a closed loop of concurrent HTTP clients, against the serial engine.

    .venv/bin/python bench/serving.py                          # everything below, int8 on CPU (float16 on CUDA)
    .venv/bin/python bench/serving.py --part ar-step           # only the AR step at each batch size
    .venv/bin/python bench/serving.py --part soak --soak 200   # only the soak (tiny model, checks every answer)
    .venv/bin/python bench/serving.py --part streaming         # what streaming costs one client

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
* ``streaming``: what streaming costs a client: one client in a closed loop on the engine itself (the same
  model, voice, text and 300 frames as ``clients``), ``--stream-requests`` requests streamed with the default
  chunks and as many in whole sentences (``chunk_seconds=None``, what a non-streamed answer needs),
  alternating so both see the same machine: throughput of each, their ratio, time to first audio.
* ``paragraph``: a paragraph is a batch. C concurrent clients in a closed loop over HTTP (as ``clients``), each
  request a six-sentence text in ``fixed-prompt`` mode (every sentence held to 300 frames: 24 s of speech), with
  its sentences decoded together (the default, ``VallEX.paragraph``) and one after another (``paragraph=1``) on
  the same batching engine; for each C in ``--paragraph-clients``: throughput, time to first audio, the ratio.
* ``fairness``: one request cannot hold everyone. On the engine, a normal request (``CLIENT_TEXT``, 300 frames)
  alone, then the same submitted while a costly one runs (the same text with ``best_of`` 16, ``verify="asr"``,
  8 rounds: the real recogniser, Whisper tiny.en, hears random weights' noise, so every round fails and the
  costly request would take many minutes); the normal request's time both ways and their ratio. The costly one is
  cancelled once the normal one is done.
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
    parser.add_argument("--part", choices=("all", "ar-step", "clients", "streaming", "paragraph", "fairness", "soak"),
                        default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="default: int8 on CPU, what auto picks on a GPU")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a .safetensors model for every part but the soak (default: full-size, random; a "
                        "tiny one keeps bench/gpu_smoke.py --quick and tests/test_bench_serving.py fast)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="1,2,4,8,16", help="AR batch sizes (ar-step)")
    parser.add_argument("--steps", type=int, default=40, help="timed AR steps per batch size (ar-step)")
    parser.add_argument("--clients", default="1,2,4,8,16", help="concurrent clients (clients)")
    parser.add_argument("--requests-per-client", type=int, default=1)
    parser.add_argument("--paragraph-clients", default="1,4", help="concurrent clients (paragraph)")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--soak", type=int, default=200, help="requests in the soak")
    parser.add_argument("--stream-requests", type=int, default=3,
                        help="requests of each kind, streamed and whole sentences (streaming)")
    parser.add_argument("--wait-idle", type=float, default=0.0, help="wait up to this many seconds for load < 0.5")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.dtype is None:
        from vallex.inference.precision import resolve_precision

        args.dtype = "int8" if device.type == "cpu" else resolve_precision("auto", device)
    dtype = args.dtype
    report: dict = {"machine": _machine(args.threads), "device": str(device), "dtype": dtype}
    with tempfile.TemporaryDirectory(prefix="vallex-bench-serving-") as tmp:
        if args.part in ("all", "ar-step"):
            _wait_for_idle(args.wait_idle)
            report["ar_step"] = measure_ar_steps(Path(tmp), device, dtype, [int(b) for b in args.batches.split(",")],
                                                 args.steps, args.checkpoint)
        if args.part in ("all", "clients"):
            _wait_for_idle(args.wait_idle)
            report["clients"] = measure_clients(Path(tmp), device, dtype, [int(c) for c in args.clients.split(",")],
                                                args.requests_per_client, args.max_batch, args.checkpoint)
        if args.part in ("all", "streaming"):
            _wait_for_idle(args.wait_idle)
            report["streaming"] = measure_streaming(Path(tmp), device, dtype, args.stream_requests, args.checkpoint)
        if args.part in ("all", "paragraph"):
            _wait_for_idle(args.wait_idle)
            report["paragraph"] = measure_paragraph(Path(tmp), device, dtype,
                                                    [int(c) for c in args.paragraph_clients.split(",")],
                                                    args.max_batch, args.checkpoint)
        if args.part in ("all", "fairness"):
            _wait_for_idle(args.wait_idle)
            report["fairness"] = measure_fairness(Path(tmp), device, dtype, args.checkpoint)
        if args.part in ("all", "soak"):
            report["soak"] = run_soak(Path(tmp), args.soak)
    print(format_report(report))
    out = args.json or REPO / "bench" / "results" / f"serving-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


# AR step ------------------------------------------------------------------------------------------------

def full_size_model(tmp: Path, device, dtype: str, checkpoint: Path | None = None):
    """The benchmark's model on ``device`` in ``dtype``: ``checkpoint``, else full-size random weights (seed 0)."""
    import torch

    from vallex.config import VallexConfig
    from vallex.inference.precision import apply_precision
    from vallex.model import VallexModel
    from vallex.weights.checkpoint import load_model, save_checkpoint

    path = checkpoint or tmp / "full.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        save_checkpoint(VallexModel(VallexConfig.public()), path)
    model = load_model(path, device=device)
    model = apply_precision(model, dtype, device, tune_malloc=True)
    return model


def measure_ar_steps(tmp: Path, device, dtype: str, batches: list[int], steps: int,
                     checkpoint: Path | None = None) -> dict:
    """Median seconds of one ARBatch step with B utterances of the benchmark's shape, for each B (the model:
    ``checkpoint``, default full-size random weights)."""
    import torch

    from vallex.inference.ar import ARBatch, ARRequest
    from vallex.inference.generation import language_ids
    from vallex.inference.sampling import seeded_generator

    model = full_size_model(tmp, device, dtype, checkpoint)
    rng = torch.Generator().manual_seed(0)  # the inputs, made on the CPU
    text = torch.randint(0, 70, (1, TEXT_TOKENS), generator=rng)
    langs = language_ids(TEXT_TOKENS, ENROLL_TOKENS, "en", "en")[None]
    prompt0 = torch.randint(0, 1024, (1, PROMPT_FRAMES), generator=rng)
    rows = []
    for batch_size in batches:
        batch = ARBatch(model)
        for i in range(batch_size):
            batch.add(i, ARRequest(text, langs, prompt0, min_frames=10_000, max_frames=10_000,
                                   generator=seeded_generator(i, device)))
        for _ in range(3):  # warm-up
            batch.step()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            batch.step()
            if device.type == "cuda":  # a step reads back one value at its start: wait for this one's work
                torch.cuda.synchronize(device)
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

#: ~50 phonemes of target text (with the 30-token transcript: 80 text tokens, as the AR-step workload).
CLIENT_TEXT = "The quick brown fox jumps over the lazy dog near the bank of the river."


class LiveServer:
    """uvicorn serving ``app`` on a free loopback port in a background thread (a context manager)."""

    def __init__(self, app) -> None:
        import socket
        import threading

        import uvicorn

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark's HTTP server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(15)
        self._socket.close()


def serving_tts(tmp: Path, device, dtype: str, frames: int | None, checkpoint: Path | None = None):
    """A VallEX on the full-size random model (or ``checkpoint``) and a random codec, with one 3 s voice ("voice")
    in a preset folder.

    ``frames``: every utterance is held to exactly this many frames (a random model never says EOS).
    """
    import torch

    from vallex.api import VallEX
    from vallex.audio.codec_format import CODEBOOK_SIZE, NUM_CODEBOOKS
    from vallex.inference.threads import in_passing_thread
    from vallex.prompts import PresetLibrary, VoicePrompt
    from vallex.weights.random_weights import random_codec

    # Built in a thread that ends, as VallEX.from_pretrained loads: the engine's thread is then the only one that
    # computes (vallex.inference.threads).
    model, codec = in_passing_thread(lambda: (full_size_model(tmp, device, dtype, checkpoint), random_codec(0, device)))
    library = PresetLibrary(tmp / "presets")
    rng = torch.Generator().manual_seed(0)
    codes = torch.randint(0, CODEBOOK_SIZE, (1, PROMPT_FRAMES, NUM_CODEBOOKS), generator=rng)
    library.save("voice", VoicePrompt(codes=codes, text_ids=list(range(5, 5 + ENROLL_TOKENS)), language="en"))
    limits = (lambda text_tokens, prompt_frames: (frames, frames)) if frames else None
    tts = VallEX(model, codec, library, device, frame_limits=limits, precision=dtype)
    return tts, library


def measure_clients(tmp: Path, device, dtype: str, clients: list[int], per_client: int, max_batch: int,
                    checkpoint: Path | None = None) -> dict:
    """Closed-loop HTTP clients against the batching engine and the serial one (max_batch=1), same model."""
    tts, library = serving_tts(tmp, device, dtype, GENERATED_FRAMES, checkpoint)
    rows = []
    for count in clients:
        for engine_name, batch in (("batched", max_batch), ("serial", 1)):
            row = _closed_loop(tts, library, count, per_client, batch)
            row.update(clients=count, engine=engine_name, max_batch=batch)
            rows.append(row)
            print(f"{count:2d} clients, {engine_name:7s}: {row['throughput']:.2f} audio s/s, first audio p50 "
                  f"{row['ttfa_p50_s']:.2f} s p95 {row['ttfa_p95_s']:.2f} s, RTF p50 {row['rtf_p50']:.2f} "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
    serial = {row["clients"]: row["throughput"] for row in rows if row["engine"] == "serial"}
    for row in rows:
        row["vs_serial"] = round(row["throughput"] / serial[row["clients"]], 2)
    return {"rows": rows, "requests_per_client": per_client, "frames_per_request": GENERATED_FRAMES,
            "audio_s_per_request": GENERATED_FRAMES / 75, "prompt_frames": PROMPT_FRAMES, "text": CLIENT_TEXT}


def _closed_loop(tts, library, clients: int, per_client: int, max_batch: int, text: str | None = None) -> dict:
    """``clients`` threads, each sending ``per_client`` requests one after another; timings of every request."""
    import threading

    import httpx

    from vallex.serving import SpeechEngine
    from vallex.serving.http import create_api, preset_voices

    engine = SpeechEngine(tts, max_batch=max_batch, max_queue=256)  # voices resolve through tts's library
    app = create_api(engine, voices=lambda: preset_voices(library), voice_names=library.names,
                     default_voice="voice", api_key="", model_loaded=lambda: True)
    records: list[dict] = []
    lock = threading.Lock()
    try:
        with LiveServer(app) as url:
            _one_request(httpx, url, seed=10_000, text=text)  # warm-up: kernels, allocator, the text front end

            def client(index: int) -> None:
                for number in range(per_client):
                    record = _one_request(httpx, url, seed=1000 * index + number, text=text)
                    with lock:
                        records.append(record)

            started = time.perf_counter()
            threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started
    finally:
        engine.close()
    audio = sum(r["audio_s"] for r in records)
    ttfa = sorted(r["ttfa_s"] for r in records)
    rtf = sorted(r["total_s"] / r["audio_s"] for r in records)
    return {"requests": len(records), "wall_s": round(wall, 2), "audio_s": round(audio, 2),
            "throughput": round(audio / wall, 3), "ttfa_p50_s": round(_percentile(ttfa, 50), 3),
            "ttfa_p95_s": round(_percentile(ttfa, 95), 3), "rtf_p50": round(_percentile(rtf, 50), 3),
            "rtf_max": round(rtf[-1], 3)}


def _one_request(httpx, url: str, seed: int, text: str | None = None) -> dict:
    """One streamed PCM request (``CLIENT_TEXT``, or ``text`` in fixed-prompt mode): seconds to the first audio
    bytes and to the end, seconds of audio."""
    body = {"model": "tts-1", "input": text or CLIENT_TEXT, "voice": "voice", "response_format": "pcm", "seed": seed}
    if text is not None:
        body["long_text"] = "fixed-prompt"
    start = time.perf_counter()
    first = None
    received = 0
    with httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=600) as response:
        if response.status_code != 200:
            raise RuntimeError(f"the server answered {response.status_code}: {response.read()[:300]!r}")
        for chunk in response.iter_bytes():
            if chunk and first is None:
                first = time.perf_counter() - start
            received += len(chunk)
    total = time.perf_counter() - start
    return {"ttfa_s": first if first is not None else total, "total_s": total, "audio_s": received / 2 / 24000}


def _percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


# A paragraph is a batch ----------------------------------------------------------------------------------

def measure_paragraph(tmp: Path, device, dtype: str, clients: list[int], max_batch: int,
                      checkpoint: Path | None = None) -> dict:
    """Closed-loop HTTP clients sending six-sentence paragraphs, their sentences decoded together and one by one."""
    from bench.inference import PARAGRAPH_TEXT
    from vallex.synthesis.scheduler import PARAGRAPH_SENTENCES

    tts, library = serving_tts(tmp, device, dtype, GENERATED_FRAMES, checkpoint)
    rows = []
    for count in clients:
        for name, paragraph in (("together", PARAGRAPH_SENTENCES), ("one_by_one", 1)):
            tts.paragraph = paragraph
            row = _closed_loop(tts, library, count, 1, max_batch, text=PARAGRAPH_TEXT)
            row.update(clients=count, sentences=name, paragraph=paragraph)
            rows.append(row)
            print(f"{count:2d} paragraph clients, sentences {name:10s}: {row['throughput']:.2f} audio s/s, first "
                  f"audio p50 {row['ttfa_p50_s']:.2f} s, RTF p50 {row['rtf_p50']:.2f} (load {os.getloadavg()[0]:.2f})",
                  flush=True)
    alone = {row["clients"]: row["throughput"] for row in rows if row["paragraph"] == 1}
    for row in rows:
        row["vs_one_by_one"] = round(row["throughput"] / alone[row["clients"]], 2)
    return {"rows": rows, "text": PARAGRAPH_TEXT, "frames_per_sentence": GENERATED_FRAMES, "max_batch": max_batch}


# One request cannot hold everyone ---------------------------------------------------------------------------

def measure_fairness(tmp: Path, device, dtype: str, checkpoint: Path | None = None) -> dict:
    """A normal request's time alone and beside a costly verified one (which is then cancelled)."""
    from vallex.serving import SpeechEngine, SpeechRequest

    tts, _ = serving_tts(tmp, device, dtype, GENERATED_FRAMES, checkpoint)
    checkable = tts.load_verifier()
    engine = SpeechEngine(tts, max_batch=16, max_queue=16)

    def normal(seed: int) -> float:
        start = time.perf_counter()
        engine.submit(SpeechRequest(CLIENT_TEXT, prompt="voice", language="en", seed=seed)).result(timeout=600)
        return time.perf_counter() - start

    try:
        normal(10_000)  # warm-up: kernels, allocator, the text front end
        alone = normal(1)
        costly = engine.submit(SpeechRequest(CLIENT_TEXT, prompt="voice", language="en", seed=2, best_of=16,
                                             verify="asr", verify_rounds=8))
        time.sleep(1.0)  # the costly request is sampling its 16 rows
        beside = normal(1)
        costly.cancel()
    finally:
        engine.close()
    row = {"alone_s": round(alone, 3), "beside_costly_s": round(beside, 3), "ratio": round(beside / alone, 2),
           "costly": {"best_of": 16, "verify": "asr", "verify_rounds": 8}, "recogniser_hears_en": checkable.get("en"),
           "frames": GENERATED_FRAMES, "text": CLIENT_TEXT}
    print(f"fairness: a normal request {alone:.2f} s alone, {beside:.2f} s beside a best_of 16 x 8 rounds verified "
          f"request ({row['ratio']}x)", flush=True)
    return row


# Streaming against whole sentences ---------------------------------------------------------------------------

def measure_streaming(tmp: Path, device, dtype: str, requests: int, checkpoint: Path | None = None) -> dict:
    """One client on the engine: ``requests`` streamed (default chunks) and as many in whole sentences, alternating."""
    from vallex.serving import SpeechEngine, SpeechRequest
    from vallex.synthesis.streaming import STREAM_CHUNK_SECONDS

    tts, library = serving_tts(tmp, device, dtype, GENERATED_FRAMES, checkpoint)
    engine = SpeechEngine(tts, max_batch=16, max_queue=16)
    kinds = {"streamed": STREAM_CHUNK_SECONDS, "whole_sentences": None}
    records: dict[str, list[dict]] = {kind: [] for kind in kinds}

    def one(chunk_seconds: float | None, seed: int) -> dict:
        start = time.perf_counter()
        stream = engine.submit(SpeechRequest(CLIENT_TEXT, prompt="voice", language="en", seed=seed,
                                             chunk_seconds=chunk_seconds))
        first, samples, chunks = None, 0, 0
        for chunk in stream:
            if first is None:
                first = time.perf_counter() - start
            samples += len(chunk)
            chunks += 1
        return {"ttfa_s": first, "total_s": time.perf_counter() - start, "audio_s": samples / 24000, "chunks": chunks}

    try:
        for chunk_seconds in kinds.values():  # warm-up: kernels, allocator, the text front end
            one(chunk_seconds, seed=10_000)
        for i in range(requests):
            for kind, chunk_seconds in kinds.items():
                records[kind].append(one(chunk_seconds, seed=i))
                row = records[kind][-1]
                print(f"{kind}: {row['total_s']:.2f} s for {row['audio_s']:.2f} s of audio in {row['chunks']} chunks, "
                      f"first audio {row['ttfa_s']:.2f} s (load {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        engine.close()
    summary = {}
    for kind, rows in records.items():
        summary[kind] = {"throughput": round(sum(r["audio_s"] for r in rows) / sum(r["total_s"] for r in rows), 3),
                         "ttfa_p50_s": round(statistics.median(r["ttfa_s"] for r in rows), 3),
                         "total_p50_s": round(statistics.median(r["total_s"] for r in rows), 3),
                         "chunks": rows[0]["chunks"], "runs": rows}
    # Pair by pair: each streamed request over the whole-sentence one right after it (the machine's drift cancels).
    pairs = [w["total_s"] / s["total_s"] for s, w in zip(records["streamed"], records["whole_sentences"])]
    return {**summary, "streamed_vs_whole_throughput": round(statistics.median(pairs), 3),
            "pair_ratios": [round(r, 3) for r in pairs], "requests": requests, "frames_per_request": GENERATED_FRAMES,
            "prompt_frames": PROMPT_FRAMES, "text": CLIENT_TEXT, "chunk_seconds": STREAM_CHUNK_SECONDS}


# Soak ------------------------------------------------------------------------------------------------------

SOAK_TEXTS = ["Hi there.", "你好。", "はい。", "Yes. No.", "Good."]


def run_soak(tmp: Path, requests: int) -> dict:
    """``requests`` over HTTP with the openai client from 8 threads (tiny model, exact chunks), with random
    cancellations and bad requests; every completed answer must equal that request made alone."""
    import random
    import threading

    import httpx
    import openai

    from vallex.api import VallEX
    from vallex.serving import SpeechEngine
    from vallex.serving.http import create_api
    from vallex.weights.random_weights import make_random_weights

    weights = tmp / "tiny-weights"
    make_random_weights(weights, "tiny")
    tts = VallEX.from_pretrained(weights, device="cpu")
    pool = [(text, seed) for text in SOAK_TEXTS for seed in (1, 2)]
    bad_bodies = [{"input": "Hello.", "voice": "../x"}, {"input": "Hello.", "language": "xx"}, {"input": " "},
                  {"input": "Hello.", "response_format": "aac"}, {"input": "Hello.", "speed": 9}]

    def body(text: str, seed: int) -> dict:
        return {"model": "tts-1", "input": text, "voice": "none", "response_format": "pcm", "seed": seed}

    def openai_args(text: str, seed: int) -> dict:  # the extension fields go in the body, as the client sends them
        return {"model": "tts-1", "input": text, "voice": "none", "response_format": "pcm",
                "extra_body": {"seed": seed}}

    engine = SpeechEngine(tts, max_batch=8, max_queue=requests, exact_chunks=True)
    app = create_api(engine, voices=lambda: [], voice_names=lambda: [], default_voice=None, api_key="",
                     model_loaded=lambda: True)
    outcomes: list[str] = []
    lock = threading.Lock()
    try:
        with LiveServer(app) as url:
            reference = {key: httpx.post(f"{url}/v1/audio/speech", json=body(*key), timeout=300).content
                         for key in pool}  # each request alone, one after another
            rng = random.Random(0)
            plan = []
            for _ in range(requests):
                roll = rng.random()
                plan.append(("bad", rng.choice(bad_bodies)) if roll < 0.1 else
                            ("cancel", rng.choice(pool)) if roll < 0.25 else ("good", rng.choice(pool)))
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)

            def worker(jobs) -> None:
                for kind, job in jobs:
                    try:
                        if kind == "bad":
                            answer = httpx.post(f"{url}/v1/audio/speech", json={"model": "tts-1", **job},
                                                timeout=300)
                            ok = 400 <= answer.status_code < 500
                            outcome = "rejected" if ok else f"bad request answered {answer.status_code}"
                        elif kind == "cancel":
                            with client.audio.speech.with_streaming_response.create(**openai_args(*job)) as answer:
                                next(answer.iter_bytes(), None)  # the first bytes, then the client goes away
                            outcome = "cancelled"
                        else:
                            audio = client.audio.speech.create(**openai_args(*job)).content
                            outcome = "ok" if audio == reference[job] else "WRONG audio"
                    except Exception as error:  # noqa: BLE001 - counted as wrong, with its reason
                        outcome = f"ERROR {type(error).__name__}: {error}"
                    with lock:
                        outcomes.append(outcome)

            threads = [threading.Thread(target=worker, args=(plan[i::8],)) for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        engine.close()
    stats = engine.stats
    good = ("ok", "cancelled", "rejected")
    problems = [o for o in outcomes if o not in good] + ["LOST"] * (requests - len(outcomes))
    return {"requests": requests, "ok": outcomes.count("ok"), "cancelled": outcomes.count("cancelled"),
            "rejected": outcomes.count("rejected"), "wrong": len(problems), "problems": problems[:10],
            "engine": {"completed": stats.completed, "cancelled": stats.cancelled, "failed": stats.failed}}


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
    if "streaming" in report:
        streaming = report["streaming"]
        lines += ["", "| one client on the engine | throughput (audio s / s) | first audio p50 (s) | request p50 (s) | "
                      "chunks |", "|---|---:|---:|---:|---:|"]
        for kind in ("streamed", "whole_sentences"):
            row = streaming[kind]
            lines.append(f"| {kind.replace('_', ' ')} | {row['throughput']} | {row['ttfa_p50_s']} | "
                         f"{row['total_p50_s']} | {row['chunks']} |")
        lines.append(f"streamed / whole-sentence throughput (median of {streaming['requests']} pairs): "
                     f"{streaming['streamed_vs_whole_throughput']}")
    if "paragraph" in report:
        lines += ["", "| paragraph clients | sentences | throughput (audio s / s) | vs one by one "
                      "| first audio p50 (s) | "
                      "RTF per request p50 |", "|---:|---|---:|---:|---:|---:|"]
        for row in report["paragraph"]["rows"]:
            lines.append(f"| {row['clients']} | {row['sentences'].replace('_', ' ')} | {row['throughput']} | "
                         f"{row['vs_one_by_one']} | {row['ttfa_p50_s']} | {row['rtf_p50']} |")
    if "fairness" in report:
        fair = report["fairness"]
        lines += ["", f"fairness: a normal request {fair['alone_s']} s alone, {fair['beside_costly_s']} s beside a "
                      f"best_of 16 x 8 rounds verified request ({fair['ratio']}x)"]
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
