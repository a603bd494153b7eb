"""The app on a ZeroGPU Space, proven against the real ``spaces`` package on a machine without a GPU.

    make zerogpu-check          # builds .venv-zerogpu (a CUDA build of torch beside .venv's packages), then runs this
    .venv-zerogpu/bin/python bench/zero_gpu_check.py [--json bench/results/zero-gpu-check.json]

What is real: ``python app.py`` as a Space starts it, with ``SPACES_ZERO_GPU=true``, the ``spaces`` package (its CUDA
emulation, start-up packing and report, its ``@spaces.GPU`` scheduling, forked GPU workers and argument pickling),
Gradio, and the tiny random-weight model. What is not: the platform's device service, which ``spaces`` calls over
HTTP (``SPACES_ZERO_DEVICE_API_URL``: ``POST /startup-report``, ``/schedule``, ``/allow``, ``/release``,
``GET /queue-size``); a stand-in here answers those and records each call, refusing a duration above the
platform's maximum (300 s) as it does. With no GPU, each GPU worker stops where it would attach one (CUDA's
initialisation in the forked worker), which is where this check ends each GPU call.

It shows, and exits 1 unless: the app starts and reports its start-up; warm-up loads the model (under the
emulation), EnCodec/Vocos and the voices; each tab's synthesis reaches its ``@spaces.GPU`` call (scheduled, its
worker started with the arguments unpickled) asking for at most :data:`demo.zero_gpu.CALL_LIMIT_S` seconds, a long
text as several such calls; a voice prompt is made without any GPU call; the OpenAI-compatible ``/v1`` API is not
mounted; and CUDA is never initialised in the app's own process.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: The longest call the platform accepts (signed-in visitors; anonymous ones get less).
PLATFORM_MAX_S = 300
#: Runs app.py as a Space does, and records at exit whether CUDA was initialised in this process.
LAUNCHER = """
import atexit, json, os, runpy, sys
def record():
    import torch
    with open(os.environ["ZEROGPU_CHECK_RECORD"], "w") as f:
        json.dump({"pid": os.getpid(), "cuda_initialized": bool(torch.cuda._initialized)}, f)
atexit.register(record)
sys.argv = ["app.py"]
runpy.run_path("app.py", run_name="__main__")
"""
LONG_TEXT = " ".join(["This sentence is one of many that make a text too long for a single GPU call."] * 6)


class DeviceService:
    """A stand-in for the platform's ZeroGPU device service: answers ``spaces`` and records every call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> dict[str, Any]:
                url = urlparse(self.path)
                query = {key: values[0] for key, values in parse_qs(url.query).items()}
                with service.lock:
                    service.calls.append({"path": url.path, "query": query, "at": time.time()})
                return {"path": url.path, **query}

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                call = self._record()
                if call["path"] == "/schedule":
                    if int(call.get("durationSeconds", 60)) > PLATFORM_MAX_S:
                        # As the platform: 429 with a negative wait means "more than the maximum allowed".
                        self._answer(429, {"left": 0, "wait": -1})
                        return
                    token = f"token-{len(service.calls)}"
                    self._answer(200, {"idle": False, "nvidiaIndex": 0, "nvidiaUUID": "GPU-stand-in",
                                       "allowToken": token})
                elif call["path"] in ("/startup-report", "/allow", "/release"):
                    self._answer(200, {})
                else:
                    self._answer(404, {"detail": "unknown"})

            def do_GET(self) -> None:  # noqa: N802
                call = self._record()
                self._answer(200, 0) if call["path"] == "/queue-size" else self._answer(404, {"detail": "unknown"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def since(self, start: int) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.calls[start:])

    def close(self) -> None:
        self.server.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with status {process.returncode} before it served")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the app did not serve {url} within {seconds:.0f} s")


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def call_tab(client: Any, api_name: str, *args: Any) -> dict[str, Any]:
    """One request to a tab through Gradio's API: its outcome (a GPU call on this machine ends in an error)."""
    started = time.perf_counter()
    try:
        result = client.predict(*args, api_name=api_name)
        outcome = {"ok": True, "result": str(result)[:300]}
    except Exception as error:  # noqa: BLE001 - the outcome is data here
        outcome = {"ok": False, "error": f"{type(error).__name__}: {error}"[:300]}
    return {"tab": api_name, "seconds": round(time.perf_counter() - started, 2), **outcome}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from gradio_client import Client, handle_file

    from demo.zero_gpu import CALL_LIMIT_S
    from vallex.weights.random_weights import make_random_weights

    if torch.version.cuda is None:
        raise SystemExit("This check needs a torch build with CUDA bindings (no GPU): run `make zerogpu-check`.")
    work = Path(tempfile.mkdtemp(prefix="vallex-zerogpu-"))
    weights = work / "weights"
    make_random_weights(weights, "tiny")
    service = DeviceService()
    port = free_port()
    log_path, record_path = work / "app.log", work / "cuda.json"
    env = {**os.environ, "SPACES_ZERO_GPU": "true", "SPACES_ZERO_DEVICE_API_URL": service.url,
           "VALLEX_WEIGHTS_DIR": str(weights), "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1",
           "ZEROGPU_OFFLOAD_DIR": str(work / "offload"), "ZEROGPU_CHECK_RECORD": str(record_path),
           "SPACE_ID": "check/vallex", "PYTHONUNBUFFERED": "1"}
    env.pop("VALLEX_DEVICE", None)
    report: dict[str, Any] = {"torch": torch.__version__, "cuda_build": torch.version.cuda,
                              "call_limit_s": CALL_LIMIT_S, "platform_max_s": PLATFORM_MAX_S}
    started = time.perf_counter()
    with open(log_path, "w") as log:
        app = subprocess.Popen([sys.executable, "-c", LAUNCHER], cwd=REPO, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(base + "/", app, args.start_timeout)
        report["start_s"] = round(time.perf_counter() - started, 1)
        report["startup"] = service.since(0)
        report["v1_health_status"] = status_of(base + "/v1/models")
        client = Client(base, verbose=False)
        clip = handle_file(str(REPO / "assets" / "en_ada.ogg"))
        sampling = [1, 1.0, 0, 1.0, 1, True, True, False]
        tabs = [
            ("/make_prompt", clip, "Hello there.", "en", "mine"),
            ("/clone", clip, "Hello there.", "Hi there.", "en", "none", *sampling),
            ("/preset", "Yes, of course.", "en_ben", None, "en", "none", *sampling),
            ("/preset", "Checked by ear.", "en_ben", None, "en", "none", *sampling[:-1], True),
            ("/long_text", LONG_TEXT, "zh_lin", None, "fixed-prompt", "en", "none", 2),
            ("/translate", clip, "en", "Hello there.", "", "auto", 3),
        ]
        report["tabs"] = []
        for tab, *inputs in tabs:
            mark = len(service.calls)
            outcome = call_tab(client, tab, *inputs)
            outcome["device_calls"] = [{"path": c["path"], **({"duration": int(c["query"]["durationSeconds"])}
                                                              if "durationSeconds" in c["query"] else {})}
                                       for c in service.since(mark)]
            report["tabs"].append(outcome)
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            app.kill()
        service.close()
    log_text = log_path.read_text(errors="replace")
    report["app_log_tail"] = log_text[-4000:]
    report["main_process"] = json.loads(record_path.read_text()) if record_path.exists() else None
    report["checks"] = checks(report, log_text, CALL_LIMIT_S)
    report["passed"] = all(c["passed"] for c in report["checks"])
    return report


def checks(report: dict[str, Any], log: str, limit: int) -> list[dict[str, Any]]:
    """Each claim of the module docstring, with what was seen."""
    out = []

    def claim(name: str, passed: bool, seen: Any) -> None:
        out.append({"check": name, "passed": bool(passed), "seen": seen})

    startup_paths = [c["path"] for c in report.get("startup", [])]
    claim("the app starts and reports its start-up", "/startup-report" in startup_paths, startup_paths)
    claim("warm-up loads the model under the emulation", "Low-level CUDA init" not in log and "Model loaded" in log,
          [line for line in log.splitlines() if "Model loaded" in line or "CUDA init" in line][:3])
    claim("the /v1 API is not mounted", report.get("v1_health_status") == 404, report.get("v1_health_status"))
    main = report.get("main_process")
    claim("CUDA is never initialised in the app's process", main is not None and not main["cuda_initialized"], main)
    for tab in report.get("tabs", []):
        schedules = [c for c in tab["device_calls"] if c["path"] == "/schedule"]
        allows = [c for c in tab["device_calls"] if c["path"] == "/allow"]
        name = tab["tab"]
        if name == "/make_prompt":
            claim("a voice prompt is made without a GPU call", tab["ok"] and not schedules, tab)
            continue
        durations = [c["duration"] for c in schedules]
        claim(f"{name} reaches its GPU call(s), each within {limit} s",
              bool(durations) and all(0 < d <= limit for d in durations) and len(allows) == len(schedules),
              {"durations": durations, "workers_started": len(allows), "error": tab.get("error")})
    # No GPU: a call's worker fails where it would attach one, so a long text stops after its first call; its
    # planning into several calls is what tests/test_zero_gpu.py checks, in-process.
    claim("GPU workers stop only where a GPU would attach (no GPU on this machine)",
          "Found no NVIDIA driver" in log or "no CUDA GPUs" in log or "CUDA driver" in log,
          [line for line in log.splitlines() if "NVIDIA" in line or "CUDA" in line][:3])
    claim("no argument or result failed to pickle", "PicklingError" not in log and "pickle" not in log.lower(), None)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "zero-gpu-check.json")
    parser.add_argument("--start-timeout", type=float, default=300.0)
    args = parser.parse_args()
    report = run(args)
    for check in report["checks"]:
        print(f"{'PASS' if check['passed'] else 'FAIL'}  {check['check']}")
        if not check["passed"]:
            print(f"      seen: {json.dumps(check['seen'], default=str)[:600]}")
    for tab in report["tabs"]:
        durations = [c.get("duration") for c in tab["device_calls"] if c["path"] == "/schedule"]
        print(f"      {tab['tab']}: GPU calls asked for {durations} s; "
              f"{'ok' if tab['ok'] else tab['error'][:120]}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    # The log names this machine's folders: the report says "." for the repository and $HOME for the home folder.
    text = json.dumps(report, indent=2, default=str).replace(str(REPO), ".").replace(str(Path.home()), "$HOME")
    args.json.write_text(text + "\n")
    print(f"{'PASSED' if report['passed'] else 'FAILED'} (torch {report['torch']}, CUDA build {report['cuda_build']}, "
          f"app started in {report.get('start_s')} s); report: {args.json}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
