"""CPU basic (2 vCPU, 16 GB) in the browser: from pressing Generate to the first audible chunk and to the whole result.

    .venv/bin/python bench/cpu_basic.py --runs 3          # full-size random weights, the app as a CPU Space runs it
    .venv/bin/python bench/cpu_basic.py --quick --json /tmp/q.json   # tiny random weights: checks the script works

Starts ``python app.py`` (this interpreter, this checkout) on a free loopback port, as a CPU Space would run it:
``VALLEX_PRELOAD=1``, ``VALLEX_STREAM_AUDIO=1`` (ffmpeg from the PATH, else imageio-ffmpeg's), the default
precision (``auto``; the app's log says what it picked), torch's default threads; the weights are full-size random
ones (``make_random_weights(dir, "full")``: the public checkpoint's architecture and compute per frame, random
values), made once into ``--weights`` and reused. Then headless Chromium (Debian's, through Playwright, with
tests/test_app.py's flags) presses Generate, each time on a freshly loaded page:

* ``presets-en``: the Presets tab, voice ``en_ben``, one English sentence of 10 words; ``whole_s`` = click -> the
  Speech player has its audio (``#preset-audio audio[src]``).
* ``long-text-en``: the Long text tab, the same voice and sentence, live streaming on; ``first_chunk_s`` = click ->
  the live player has its first chunk (``#long-live audio[src]``), ``first_audio_s`` = click -> it is playing
  (the first ``timeupdate`` past 0 s: audible), ``whole_s`` = click -> the whole text's player has its audio.
* ``presets-zh`` (not with ``--no-mandarin``): the Presets tab, voice ``zh_mei``, one Mandarin sentence.

Times are taken in the page (``performance.now()`` from the click's own event), so Playwright's round trips are
not in them. Seeds are fixed (``--seed`` + round), so two machines make the same requests. The first round is reported
apart as ``cold`` (the app's first requests after start-up); then ``--runs`` rounds, the scenarios interleaved so
that each sees the same machine, summarised as min / median / max. Every run records the seconds of audio it made
and the 1-minute load average before and after it; the app's peak resident memory (``VmHWM``) is read at the end.

A random model stops only by chance (its end-of-speech token is one of 1025 random logits), so a sentence often
runs to its limit: in the Presets tab the length guard's (on by default there: twice the text's median speaking
rate plus 1 s), in the Long text tab, which has no length guards, the reference's 16 frames per text token
(``length_bounds`` in the JSON). Real weights usually end a sentence sooner, so these times are upper bounds for
the text; the audio's length varies with the seed, so every run records its seconds of audio. The browser runs
on the same two cores as the app (as on a laptop; on a Space it runs on the visitor's machine).

Results: ``--json`` (default bench/results/cpu-basic-<cpu class>.json; ``--quick`` writes none unless asked) and
a table on stdout. ``--budget-s`` bounds the whole run (default 15 minutes): rounds that would not fit are skipped
and listed. ``--wait-idle`` first waits for a quiet machine.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

CHROMIUM = "/usr/bin/chromium"
#: tests/test_app.py's flags, and autoplay without a gesture (Playwright's click is one already; this keeps the
#: measurement from depending on the browser's autoplay heuristics).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--autoplay-policy=no-user-gesture-required"]
EN_TEXT = "Please call me back when you get home this evening."  # 10 words
ZH_TEXT = "今天天气很好，我们一起去公园散步吧。"  # "The weather is nice today, let's take a walk in the park."
SEED_BASE = 1000

#: name -> (tab, voice, text, live streaming); the element ids are demo/ui.py's.
SCENARIOS: dict[str, tuple[str, str, str, bool]] = {
    "presets-en": ("Presets", "en_ben", EN_TEXT, False),
    "long-text-en": ("Long text", "en_ben", EN_TEXT, True),
    "presets-zh": ("Presets", "zh_mei", ZH_TEXT, False),
}

#: In the page, before the click: when (ms after the click) each player gets its audio (``src``), can play it
#: (``canplay``) and plays it (``audible``: past 0 s). The whole-result player keeps its <audio> in a shadow root
#: (WaveSurfer), so the players are searched through shadow roots, on every DOM change and every 20 ms.
WATCH_JS = """(button, ids) => {
  const state = window.__bench = {t0: null, marks: {}, error: null};
  const mark = (key) => {
    if (state.t0 !== null && !(key in state.marks)) state.marks[key] = performance.now() - state.t0; };
  const players = (root) => {
    const found = [];
    const walk = (node) => { for (const el of node.querySelectorAll('*')) {
      if (el.tagName === 'AUDIO') found.push(el);
      if (el.shadowRoot) walk(el.shadowRoot); } };
    walk(root);
    return found;
  };
  const hooked = new WeakSet();
  const scan = () => {
    if (state.t0 === null) return;
    for (const id of ids) {
      const box = document.getElementById(id);
      if (!box) continue;
      for (const audio of players(box)) {
        if (!hooked.has(audio)) {
          hooked.add(audio);
          audio.addEventListener('canplay', () => mark(id + ':canplay'));
          audio.addEventListener('timeupdate', () => { if (audio.currentTime > 0) mark(id + ':audible'); });
        }
        if (audio.getAttribute('src')) mark(id + ':src');
        if (audio.getAttribute('src') && audio.readyState >= 3) mark(id + ':canplay');
        if (audio.currentTime > 0) mark(id + ':audible');
      }
    }
    const error = document.querySelector('.toast-body.error');
    if (error && state.error === null) state.error = error.innerText;
  };
  new MutationObserver(scan).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                     attributeFilter: ['src', 'class']});
  setInterval(scan, 20);
  button.addEventListener('click', () => { state.t0 = performance.now(); }, {capture: true, once: true});
}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="warm rounds after the cold one (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny random weights, one warm round, one torch thread: checks that the script works")
    parser.add_argument("--no-mandarin", action="store_true", help="leave out the Mandarin sentence")
    parser.add_argument("--weights", type=Path, default=None,
                        help="folder of full-size random weights, made there if missing "
                             "(default: <tmp>/vallex-bench-random-full)")
    parser.add_argument("--seed", type=int, default=SEED_BASE,
                        help=f"round r uses seed SEED + r (default {SEED_BASE}): the same requests on every machine")
    parser.add_argument("--dtype", default=None, help="VALLEX_DTYPE for the app (default: unset, i.e. auto)")
    parser.add_argument("--threads", type=int, default=None, help="VALLEX_THREADS (default: unset, torch's default)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="wall-clock bound of the whole run (default 900 s; --quick 150 s)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for the 1-minute load average to fall below --idle-below")
    parser.add_argument("--idle-below", type=float, default=0.5, help="what --wait-idle calls idle (default 0.5)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.threads = args.threads or 1
        if "--runs" not in (argv if argv is not None else sys.argv[1:]):
            args.runs = 1
    budget = args.budget_s or (150.0 if args.quick else 900.0)
    if args.wait_idle > 0:
        wait_for_idle(args.wait_idle, args.idle_below)
    began = time.monotonic()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps).")
    scenarios = [name for name in SCENARIOS if not (args.no_mandarin and name.endswith("-zh"))]

    with tempfile.TemporaryDirectory(prefix="vallex-cpu-basic-") as scratch:
        root = Path(scratch)
        weights = weights_folder(root, args.quick, args.weights)
        app = App(root, weights, args.dtype, args.threads)
        report: dict[str, Any] = {
            "benchmark": "bench/cpu_basic.py", "argv": argv if argv is not None else sys.argv[1:],
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "quick": args.quick, "weights": f"random {'tiny' if args.quick else 'full-size'} ({weights})",
            "load_avg_1min": {"start": os.getloadavg()[0]},
        }
        try:
            if args.quick:  # the app starts while this process prepares (its start-up time then means less)
                app.launch()
            report["machine"] = machine()
            report["texts"] = {name: SCENARIOS[name][2] for name in scenarios}
            report["length_bounds"] = {name: length_bounds(name) for name in scenarios}
            if not args.quick:
                app.launch()
            report["app"] = app.ready()
            report["app"]["torch_threads"] = args.threads or report["machine"]["torch_default_threads"]
            print(f"app: precision {report['app']['precision']}, model loaded in {report['app']['model_load_s']} s, "
                  f"listening after {report['app']['startup_s']:.1f} s, RSS {report['app']['rss_after_load_mb']} MB",
                  flush=True)
            runs, skipped = drive_browser(app.url, scenarios, args.runs, args.seed, began + budget, report)
            report["app"]["peak_rss_mb"] = app.peak_rss_mb()
        finally:
            app.stop()
        if any(run.get("error") for run in runs):
            print(f"the app's log ends with:\n{app.log_tail()}", flush=True)
    report["load_avg_1min"]["end"] = os.getloadavg()[0]
    report["skipped"] = skipped
    report["scenarios"] = {name: summarise([run for run in runs if run["scenario"] == name]) for name in scenarios}
    report["wall_s"] = round(time.monotonic() - began, 1)
    print_table(report)
    path = args.json or (None if args.quick else
                         REPO / "bench" / "results" / f"cpu-basic-{report['machine']['cpu_class']}.json")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    failed = [run for run in runs if run.get("error")]
    return 1 if failed or not runs else 0


# Set-up -------------------------------------------------------------------------------------------------

def wait_for_idle(limit_s: float, threshold: float = 0.5) -> None:
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        time.sleep(5)
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)


def weights_folder(root: Path, quick: bool, given: Path | None) -> Path:
    """Tiny random weights in ``root`` (quick), or full-size ones in ``given`` / the temp folder, made once."""
    from vallex.weights.random_weights import make_random_weights

    if quick:
        folder = root / "tiny-weights"
        make_random_weights(folder, "tiny")
        return folder
    folder = given or Path(tempfile.gettempdir()) / "vallex-bench-random-full"
    marker = folder / "vallex-weights.json"
    with contextlib.suppress(OSError, ValueError):
        made = json.loads(marker.read_text(encoding="utf-8"))
        if made.get("random") and made.get("size") == "full" and all((folder / name).is_file()
                                                                      for name in made.get("sha256", {})):
            return folder
    print(f"making full-size random weights in {folder} (~1.5 GB, about half a minute)", flush=True)
    make_random_weights(folder, "full")
    return folder


def machine() -> dict[str, Any]:
    import torch

    from vallex.inference.cpu_features import cpu_features

    features = cpu_features().as_dict()
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
    return {"cpu_model": model, "cpu_class": features["cpu_class"], "cores": len(os.sched_getaffinity(0)),
            "memory_gb": round(memory_kb / 2**20, 1), "torch_default_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "cpu": features}


def length_bounds(name: str) -> dict[str, Any]:
    """The most seconds of speech a scenario's sentence may get with the app's default settings.

    Length guards are off by default (the library's defaults, which every interface shares), so the limit is the
    reference's, 16 frames per text token of the prompt's transcript and the text, within 22 s with the prompt
    (computed here from the voice's recorded transcript and length: approximate to a few frames).
    """
    from vallex.audio.codec_format import FRAME_RATE
    from vallex.config import MAX_UTTERANCE_SECONDS
    from vallex.inference.ar import MAX_FRAMES_PER_TEXT_TOKEN
    from vallex.synthesis.text_plan import plan_text

    _, voice, text, _ = SCENARIOS[name]
    sentences = [tokens for _, tokens in plan_text(text).sentences]
    entry = next(v for v in json.loads((REPO / "assets" / "voices.json").read_text(encoding="utf-8"))
                 if v["name"] == voice)
    prompt_tokens = sum(len(tokens.ids) for _, tokens in plan_text(entry["transcript"], entry["language"]).sentences)
    prompt_frames = round(entry["seconds"] * FRAME_RATE)
    frames = [min(MAX_FRAMES_PER_TEXT_TOKEN * (prompt_tokens + len(tokens.ids)),
                  int(MAX_UTTERANCE_SECONDS * FRAME_RATE) - prompt_frames) for tokens in sentences]
    return {"length_guards": False, "max_s": round(sum(frames) / FRAME_RATE, 2), "approximate": True}


def ffmpeg_dir(root: Path) -> Path:
    """A folder with ``ffmpeg`` and ``ffprobe``: the system's, or imageio-ffmpeg's binary and a stand-in ffprobe
    (as tests/test_app.py does: Gradio only probes example files with it, and a failed probe means "playable")."""
    if shutil.which("ffmpeg") and shutil.which("ffprobe"):
        return Path(shutil.which("ffmpeg")).parent
    try:
        import imageio_ffmpeg
    except ImportError:
        raise SystemExit("no ffmpeg on the PATH and no imageio-ffmpeg (requirements-dev.txt): live streaming "
                         "needs one") from None
    folder = root / "bin"
    folder.mkdir()
    (folder / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    (folder / "ffprobe").write_text("#!/bin/sh\necho 'ffprobe stand-in: cannot probe' >&2\nexit 1\n")
    (folder / "ffprobe").chmod(0o755)
    return folder


def app_origin() -> str:
    """Where the app's ``vallex`` package comes from: this checkout, as it must (``app.py``'s folder comes first on
    its ``sys.path``, and this script's first on ours)."""
    import vallex

    origin = vallex.__file__
    if not Path(origin).resolve().is_relative_to(REPO):
        raise SystemExit(f"vallex comes from {origin}, not from this checkout ({REPO}).")
    return origin


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class App:
    """``python app.py`` of this checkout on a free loopback port."""

    def __init__(self, root: Path, weights: Path, dtype: str | None, threads: int | None) -> None:
        self.root, self.weights, self.dtype, self.threads = root, weights, dtype, threads
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = root / "server.log"
        self.process: subprocess.Popen | None = None
        self.started, self.origin = 0.0, ""

    def launch(self) -> None:
        """Start ``python app.py``; :meth:`ready` waits for it."""
        self.origin = app_origin()
        env = {
            **{k: v for k, v in os.environ.items() if k != "SPACES_ZERO_GPU"},  # CPU basic is no ZeroGPU Space
            "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "PATH": f"{ffmpeg_dir(self.root)}{os.pathsep}{os.environ.get('PATH', '')}",
            "VALLEX_WEIGHTS_DIR": str(self.weights), "VALLEX_PRELOAD": "1", "VALLEX_STREAM_AUDIO": "1",
            "VALLEX_PRESETS_DIR": str(self.root / "presets"), "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_SERVER_PORT": str(self.port), "GRADIO_TEMP_DIR": str(self.root / "gradio"),
            "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_CACHE": str(self.root / "hf-cache"), "TMPDIR": str(self.root),
        }
        for name, value in (("VALLEX_DTYPE", self.dtype), ("VALLEX_THREADS", self.threads)):
            env.pop(name, None)
            if value is not None:
                env[name] = str(value)
        self.started = time.monotonic()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log,
                                            stderr=subprocess.STDOUT)

    def ready(self) -> dict[str, Any]:
        """Wait until the app serves its page; what it said about itself on the way."""
        while True:  # with VALLEX_PRELOAD=1 the app listens only once the model and the voices are loaded
            try:
                with urllib.request.urlopen(self.url, timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() - self.started > 600:
                raise SystemExit(f"The app did not start:\n{self.log_tail()}")
            time.sleep(0.5)
        startup_s = time.monotonic() - self.started
        log = self.log.read_text(errors="replace")
        picked = re.search(r"dtype auto -> (\S+) on (\S+)", log)
        loaded = re.search(r"Model loaded in ([\d.]+) s", log)
        return {
            "precision": picked.group(1) if picked else (self.dtype or "unknown"),
            "precision_cpu_class": picked.group(2) if picked else None,
            "dtype_setting": self.dtype or "auto",
            "model_load_s": float(loaded.group(1)) if loaded else None,
            "startup_s": round(startup_s, 1), "rss_after_load_mb": self._status_mb("VmRSS"),
            "vallex_from": str(Path(self.origin).resolve().relative_to(REPO)),
        }

    def _status_mb(self, key: str) -> float | None:
        with contextlib.suppress(OSError, StopIteration, AttributeError):
            lines = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
            return round(int(next(line for line in lines if line.startswith(key + ":")).split()[1]) / 1024, 1)
        return None

    def peak_rss_mb(self) -> float | None:
        """The app process's high-water resident set (``VmHWM``), start-up included."""
        return self._status_mb("VmHWM")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # SIGTERM: the app shuts down like Ctrl-C and removes its scratch files
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# The browser --------------------------------------------------------------------------------------------

def drive_browser(url: str, scenarios: list[str], rounds: int, seed: int, deadline: float,
                  report: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The cold round, then ``rounds`` warm ones, each scenario once per round; runs that would pass the deadline
    are skipped (their names returned)."""
    from playwright.sync_api import sync_playwright

    runs: list[dict[str, Any]] = []
    skipped: list[str] = []
    longest: dict[str, float] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        report["machine"]["chromium"] = browser.version
        try:
            for index in range(rounds + 1):
                for name in scenarios:
                    label = f"{name} #{index}" + (" (cold)" if index == 0 else "")
                    left = deadline - time.monotonic()
                    if index > 0 and left < 1.5 * longest.get(name, 0.0) + 10:
                        skipped.append(label)
                        continue
                    started = time.monotonic()
                    run = one_run(browser, url, name, seed + index, timeout_s=max(60.0, min(600.0, left)))
                    longest[name] = max(longest.get(name, 0.0), time.monotonic() - started)
                    run.update({"round": index, "cold": index == 0})
                    runs.append(run)
                    print(f"{label}: " + ", ".join(f"{key} {run[key]}" for key in (
                        "first_chunk_s", "first_audio_s", "whole_s", "audio_s", "server_s", "load1", "error")
                        if run.get(key) is not None), flush=True)
                    if run.get("error") and index == 0:
                        return runs, skipped  # the app is broken: no point in more rounds
        finally:
            browser.close()
    return runs, skipped


def one_run(browser: Any, url: str, name: str, seed: int, timeout_s: float) -> dict[str, Any]:
    """One press of Generate on a fresh page; times in seconds after the click."""
    tab_name, voice, text, live = SCENARIOS[name]
    prefix = "long" if live else "preset"
    ids = [f"{prefix}-live", f"{prefix}-audio"] if live else [f"{prefix}-audio"]
    done = f"{prefix}-audio:src"
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    run: dict[str, Any] = {"scenario": name, "seed": seed}
    try:
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_role("tab", name=tab_name).click()
        tab = page.locator("[role=tabpanel]:visible")
        if not live:
            tab.get_by_text("Advanced sampling").click()
        seed_field = tab.get_by_label("Seed (-1: random)")
        text_field = tab.get_by_label("Text" if live else "Text to speak", exact=True)
        voice_field = tab.get_by_role("combobox", name="Voice")
        for _ in range(5):  # a page still starting up may put back its defaults: set them until they stay
            seed_field.fill(str(seed))
            text_field.fill(text)
            voice_field.click()
            page.get_by_role("option", name=f"{voice} ").first.click()
            page.wait_for_timeout(300)
            if (seed_field.input_value(), text_field.input_value()) == (str(seed), text) and \
                    voice_field.input_value().startswith(f"{voice} "):
                break
        else:
            raise RuntimeError("the page did not keep the seed, text and voice that were entered")
        button = tab.get_by_role("button", name="Generate")
        button.evaluate(WATCH_JS, ids)
        run["load1"] = round(os.getloadavg()[0], 2)
        button.click()
        page.wait_for_function(f"() => window.__bench.marks[{done!r}] !== undefined || window.__bench.error",
                               timeout=timeout_s * 1000, polling=100)
        state = page.evaluate("() => window.__bench")
        if state["error"]:
            run["error"] = state["error"]
            return run
        marks = {key: round(value / 1000, 2) for key, value in state["marks"].items()}
        run["marks"] = marks
        run["whole_s"] = marks[done]
        if live:
            run["first_chunk_s"] = marks.get(f"{prefix}-live:src")
            run["first_audio_s"] = marks.get(f"{prefix}-live:audible")
            page.wait_for_function("() => document.querySelector('#long-status').innerText.includes('Done')",
                                   timeout=30_000)
            status = page.locator("#long-status").inner_text()
            server = re.search(r"of audio in ([\d.]+) s", status)
            run["server_s"] = float(server.group(1)) if server else None
            used = re.search(r"seed (\d+)", status)
        else:
            summary = page.locator("#preset-summary").inner_text()
            server = re.search(r"Synthesis:\s*([\d.]+) s", summary)
            run["server_s"] = float(server.group(1)) if server else None
            run["hit_length_limit"] = "length limit" in summary
            used = re.search(r"Seed:\s*(\d+)", summary)
        if used is None or int(used.group(1)) != seed:
            raise RuntimeError(f"the page did not take seed {seed}: {used.group(0) if used else 'no seed shown'}")
        duration = page.locator(f"#{prefix}-audio audio[src]").first.evaluate(  # Playwright's CSS pierces shadow roots
            "(audio) => new Promise((done) => { const read = () => isFinite(audio.duration) && audio.duration > 0;"
            " if (read()) done(audio.duration);"
            " else audio.addEventListener('loadedmetadata', () => done(audio.duration));"
            " setTimeout(() => done(null), 30000); })")
        if duration is None:
            raise RuntimeError("the whole result's player never knew its duration")
        run["audio_s"] = round(float(duration), 2)
        run["whole_per_audio_s"] = round(run["whole_s"] / run["audio_s"], 2)
    except Exception as error:  # noqa: BLE001 - a failed run is recorded, and the run goes on
        run["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        with contextlib.suppress(Exception):  # what it reached before (a timed-out run's first audio)
            state = page.evaluate("() => window.__bench")
            run.setdefault("marks", {key: round(value / 1000, 2) for key, value in state["marks"].items()})
            if live:
                run.setdefault("first_chunk_s", run["marks"].get(f"{prefix}-live:src"))
                run.setdefault("first_audio_s", run["marks"].get(f"{prefix}-live:audible"))
    finally:
        run["load1_after"] = round(os.getloadavg()[0], 2)
        page.close()
    return run


# Results ------------------------------------------------------------------------------------------------

METRICS = ("first_chunk_s", "first_audio_s", "whole_s", "audio_s", "whole_per_audio_s", "server_s", "load1",
           "load1_after")


def spread(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": min(values), "median": round(statistics.median(values), 2), "max": max(values), "n": len(values)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    cold = next((run for run in runs if run["cold"]), None)
    warm = [run for run in runs if not run["cold"] and not run.get("error")]
    return {
        "cold": None if cold is None else {key: cold.get(key) for key in (*METRICS, "error") if key in cold},
        "warm": {key: spread([run.get(key) for run in warm]) for key in METRICS
                 if any(run.get(key) is not None for run in warm)},
        "runs": runs,
    }


def print_table(report: dict[str, Any]) -> None:
    app, machine = report["app"], report["machine"]
    print(f"\n{machine['cpu_model']} ({machine['cpu_class']}), {machine['cores']} cores, "
          f"{machine['memory_gb']} GB; app: {app.get('precision')}, {app.get('torch_threads')} torch threads, "
          f"peak RSS {app.get('peak_rss_mb')} MB; load average (1 min) {report['load_avg_1min']['start']:.2f} at "
          f"the start, {report['load_avg_1min']['end']:.2f} at the end\n")
    print("| scenario | run | first audio s | whole s | audio s | whole / audio | server s (median) | "
          "load before / after (median) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")

    def median(value: Any) -> Any:
        return value["median"] if isinstance(value, dict) else value

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, dict):
            return f"{value['min']:.1f} / {value['median']:.1f} / {value['max']:.1f}"
        return f"{value:.1f}"

    for name, result in report["scenarios"].items():
        warm = result["warm"]
        for label, row in (("cold", result["cold"]),
                           (f"warm min/med/max (n={warm['whole_s']['n'] if warm else 0})", warm)):
            if row:
                print(f"| {name} | {label} | {cell(row.get('first_audio_s'))} | {cell(row.get('whole_s'))} | "
                      f"{cell(row.get('audio_s'))} | {cell(row.get('whole_per_audio_s'))} | "
                      f"{cell(median(row.get('server_s')))} | {cell(median(row.get('load1')))} / "
                      f"{cell(median(row.get('load1_after')))} |")
    if report["skipped"]:
        print(f"\nskipped (over --budget-s): {', '.join(report['skipped'])}")


if __name__ == "__main__":
    sys.exit(main())
