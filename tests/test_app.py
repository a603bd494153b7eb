"""The running app: `python app.py` on 127.0.0.1 with random tiny weights, driven by gradio_client and Chromium.

One server per module (started once, ~10 s); the tiny model makes each request take about a second.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

ASSETS = REPO_ROOT / "assets"
EN_VOICE = ASSETS / "en_ada.ogg"
# The first words of the clip's transcript: with random weights the model stops only at its frame budget,
# 16 frames per text token of prompt + text, so a short transcript keeps each request fast.
EN_TRANSCRIPT = "Hello, my name is Ada."
CHROMIUM = "/usr/bin/chromium"
MAX_UPLOAD_MB = 5
# clone inputs after the prompt/transcript/text: language, accent, seed, temperature, top_k, top_p, best_of
SAMPLING = ("auto", "none", 7, 1.0, 0, 1.0, 1)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(root: Path, weights: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """``python app.py`` on a free port of 127.0.0.1 with ``weights``; returns (process, URL) once it listens."""
    port = _free_port()
    env = {
        **os.environ,
        "VALLEX_WEIGHTS_DIR": str(weights), "VALLEX_PRESETS_DIR": str(root / "presets"),
        "VALLEX_THREADS": "1", "VALLEX_PRELOAD": "1", "VALLEX_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
        "VALLEX_MAX_QUEUE": "16", "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
        "GRADIO_TEMP_DIR": str(root / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1", "TMPDIR": str(root), **env,
    }
    with open(root / "server.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, f"http://127.0.0.1:{port}/"
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"The app did not start:\n{(root / 'server.log').read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)


def stop_app(process: subprocess.Popen, root: Path) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    # SIGTERM shuts the app down cleanly: it removes its own scratch folder.
    assert not list(root.glob("vallex-app-*")), "the app left its scratch folder behind"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vallex.weights.random_weights import make_random_weights

    folder = tmp_path_factory.mktemp("weights")
    make_random_weights(folder, size="tiny")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> tuple[str, Path]:
    """URL of a running app with random tiny weights (no streaming audio), and its folder."""
    root = tmp_path_factory.mktemp("app")
    # Two queue workers: two requests at a time reach the speech engine, which decodes them together.
    # float32: a request's audio then does not depend on what else shares its batch (int8 quantises the
    # activations per call, over the whole batch), so "same seed, same audio" holds across concurrent requests.
    # An empty Hugging Face cache: no Whisper or translation model, whatever this machine has cached.
    process, url = start_app(root, weights, VALLEX_STREAM_AUDIO="0", VALLEX_CONCURRENCY="2", VALLEX_DTYPE="float32",
                             HF_HUB_CACHE=str(root / "hf-cache"))
    yield url, root
    stop_app(process, root)


@pytest.fixture(scope="module")
def client(server: tuple[str, Path]) -> Client:
    return Client(server[0], verbose=False)


def check_audio(path: str, min_seconds: float = 0.1) -> np.ndarray:
    """The WAV at ``path``: 24 kHz, mono, longer than ``min_seconds``, finite, not all zeros."""
    samples, rate = sf.read(path, dtype="float32")
    assert rate == 24000
    assert samples.ndim == 1
    assert len(samples) / rate > min_seconds
    assert np.isfinite(samples).all()
    assert np.abs(samples).max() > 0
    return samples


def error_of(client: Client, *args: object, api_name: str) -> str:
    with pytest.raises(AppError) as caught:
        client.predict(*args, api_name=api_name)
    message = str(caught.value)
    assert "Traceback" not in message and 'File "' not in message
    return message


# (1) every endpoint ------------------------------------------------------------------------------------

def test_named_endpoints_are_listed(client: Client) -> None:
    endpoints = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/clone", "/preset", "/make_prompt", "/long_text", "/voices", "/translate"} <= endpoints


def test_voices_endpoint_lists_the_builtin_voices(client: Client) -> None:
    import json

    names = client.predict(api_name="/voices")
    manifest = json.loads((ASSETS / "voices.json").read_text(encoding="utf-8"))
    assert names == [entry["name"] for entry in manifest]


def test_clone_endpoint(client: Client) -> None:
    audio, summary, details, picture = client.predict(
        handle_file(str(EN_VOICE)), EN_TRANSCRIPT, "Good morning to you.", *SAMPLING, api_name="/clone")
    samples = check_audio(audio)
    assert details["sample_rate"] == 24000 and details["seed"] == 7
    assert details["language"] == "en"
    assert details["duration_s"] == pytest.approx(len(samples) / 24000, abs=1e-3)
    assert details["sentences"][0]["phonemes"]  # the IPA of the text
    assert details["prompt"]["language"] == "en" and 4 < details["prompt"]["seconds"] < 6
    assert "Detected language:** English" in summary and "Seed:** 7" in summary
    assert Path(picture).stat().st_size > 1000
    model = details["model"]  # which checkpoint made it
    assert (model["file"], model["languages"], model["random"]) == ("vallex-checkpoint.pt", ["en", "zh", "ja"], True)


def test_make_prompt_then_preset_with_the_file(client: Client, tmp_path: Path) -> None:
    from vallex.prompts import VoicePrompt

    npz, message = client.predict(handle_file(str(ASSETS / "ja_yuki.ogg")), "こんにちは、わたしはゆきです。", "auto",
                                  "yuki-2", api_name="/make_prompt")
    assert Path(npz).name == "yuki-2.npz" and "yuki-2.npz" in message
    prompt = VoicePrompt.load_npz(npz)
    seconds = sf.info(str(ASSETS / "ja_yuki.ogg")).duration
    assert prompt.language == "ja" and abs(prompt.num_frames - seconds * 75) <= 2
    # An uploaded prompt file wins over the voice list.
    audio, _, details, _ = client.predict("Hello there.", "en_ben", handle_file(npz), "en", "ja", *SAMPLING[2:],
                                          api_name="/preset")
    check_audio(audio)
    assert details["prompt"]["language"] == "ja" and details["language"] == "en"


def test_preset_endpoint_with_builtin_voice(client: Client) -> None:
    audio, summary, details, _ = client.predict("你好，世界。", "zh_mei", None, "auto", "none", *SAMPLING[2:],
                                                api_name="/preset")
    check_audio(audio)
    assert details["language"] == "zh" and details["prompt"]["name"] == "zh_mei"
    assert details["sampling"]["ras"] is False and details["sampling"]["length_guards"] is False  # the library's


def test_sampling_by_position_and_by_name(client: Client) -> None:
    """The README's call: the sampling controls in order (RAS, length guards, check), or by their names."""
    _, _, details, _ = client.predict("Hi.", "en_ben", None, "en", "none", 7, 1.0, 0, 1.0, 1, True, True, False,
                                      api_name="/preset")
    assert details["sampling"]["ras"] is True and details["sampling"]["length_guards"] is True
    _, _, details, _ = client.predict(text="Hi.", voice="en_ben", prompt_file=None, language="en", accent="none",
                                      seed=7, top_k=5, verify_rounds=2, api_name="/preset")
    assert details["sampling"]["top_k"] == 5 and details["sampling"]["verify_rounds"] == 2


LONG_TEXT = "The first sentence is here. The second one follows! Is this the third?"


def test_long_text_grows_sentence_by_sentence(client: Client) -> None:
    job = client.submit(LONG_TEXT, "en_ada", None, "sliding-window", "auto", "none", 3, api_name="/long_text")
    _, final_audio, final_status = job.result(timeout=120)
    updates = job.outputs()
    assert len(updates) == 4  # one update per sentence, then the final one
    lengths = [len(check_audio(audio)) for _, audio, _ in updates]
    assert lengths[:3] == sorted(lengths[:3]) and lengths[0] < lengths[2] == lengths[3]
    assert [status.split("**")[1] for _, _, status in updates[:3]] == [f"Sentence {i} of 3" for i in (1, 2, 3)]
    assert final_audio == updates[-1][1] and "Done:** 3 sentences" in final_status and "seed 3" in final_status


@pytest.mark.parametrize("voice, transcript, target, translation, languages", [
    ("en_ada.ogg", EN_TRANSCRIPT, "zh", "你好，很高兴认识你。", "English → Chinese"),
    ("ja_yuki.ogg", "こんにちは、わたしはゆきです。", "en", "Hello, I am Yuki.", "Japanese → English"),
])
def test_translate_endpoint_with_given_texts(client: Client, voice: str, transcript: str, target: str,
                                             translation: str, languages: str) -> None:
    """Transcript and translation typed in: no Whisper or translation model is needed (none is cached here)."""
    audio, heard, spoken, summary = client.predict(handle_file(str(ASSETS / voice)), target, transcript,
                                                   translation, "auto", 5, api_name="/translate")
    samples = check_audio(audio)
    assert (heard, spoken) == (transcript, translation)
    assert languages in summary and "Seed:** 5" in summary and "Translation:** typed in" in summary
    assert f"Audio:** {len(samples) / 24000:.2f} s" in summary


def test_translate_without_models_says_what_to_type(client: Client) -> None:
    source = handle_file(str(EN_VOICE))
    message = error_of(client, source, "zh", EN_TRANSCRIPT, "", "en", 1, api_name="/translate")
    assert "Translation model" in message and "could not be loaded" in message
    assert "type what is said in the recording (transcript) and the text to speak (translation)" in message
    message = error_of(client, source, "ja", "", "こんにちは。", "auto", 1, api_name="/translate")
    assert "Whisper model" in message and "type what is said" in message
    assert "No recording" in error_of(client, None, "en", "Hi.", "Hello.", "auto", 1, api_name="/translate")
    assert "no Chinese/Japanese characters" in error_of(client, source, "zh", EN_TRANSCRIPT, "Hello.", "auto", 1,
                                                        api_name="/translate")


def _ffmpeg_dir(tmp_path: Path) -> Path | None:
    """A folder with ``ffmpeg`` and ``ffprobe`` (the system's, or imageio-ffmpeg's binary), or None.

    imageio-ffmpeg ships no ffprobe. Gradio runs ffprobe only to check that example files play in a browser
    and treats a failed probe as "playable" (our OGG/Vorbis examples are), so a stand-in that always fails
    is enough there; streaming itself runs the real ffmpeg.
    """
    import shutil

    if shutil.which("ffmpeg") and shutil.which("ffprobe"):
        return Path(shutil.which("ffmpeg")).parent
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    (tmp_path / "bin" / "ffprobe").write_text("#!/bin/sh\necho 'ffprobe stand-in: cannot probe' >&2\nexit 1\n")
    (tmp_path / "bin" / "ffprobe").chmod(0o755)
    return tmp_path / "bin"


def test_long_text_streams_live_audio_when_ffmpeg_is_there(tmp_path: Path, weights: Path) -> None:
    """As on a Space (which has ffmpeg): audio goes out live in chunks (several per sentence) as it is made."""
    ffmpeg = _ffmpeg_dir(tmp_path)
    if ffmpeg is None:
        pytest.fail("no ffmpeg: make test installs imageio-ffmpeg (requirements-dev.txt)")
    root = tmp_path / "app"
    root.mkdir()
    process, url = start_app(root, weights, PATH=f"{ffmpeg}{os.pathsep}{os.environ['PATH']}")
    try:
        job = Client(url, verbose=False).submit(LONG_TEXT, "none", None, "fixed-prompt", "en", "none", 4,
                                                api_name="/long_text")
        _, whole, status = job.result(timeout=120)
        updates = job.outputs()
    finally:
        stop_app(process, root)
    assert len(updates) > 4  # more chunks than sentences (the audio went out in pieces), then the final update
    for live, _, _ in updates[:-1]:  # an HLS playlist per update, ready to play while the next chunk is made
        assert live.endswith(".m3u8") and Path(live).read_text().startswith("#EXTM3U")
    assert isinstance(updates[-1][0], dict)  # the final update only brings the whole audio
    sentences = [int(status.split("**")[1].split()[1]) for _, _, status in updates[:-1]]
    assert sentences == sorted(sentences) and sentences[0] == 1 and sentences[-1] == 3
    assert all("of 3** playing" in status for _, _, status in updates[:-1])
    seconds = len(check_audio(whole)) / 24000
    assert seconds > 0.5 and "Done:** 3 sentences" in status
    # The live playlist covers the whole audio: the small chunks were all encoded, none dropped.
    playlist = Path(updates[-2][0]).read_text()
    live_seconds = sum(float(line.split(":")[1].rstrip(",")) for line in playlist.splitlines()
                       if line.startswith("#EXTINF:"))
    assert abs(live_seconds - seconds) < 0.5, (live_seconds, seconds)


def test_http_api_next_to_the_ui(server: tuple[str, Path]) -> None:
    """The OpenAI-compatible API is served on the app's own port, beside the Gradio page."""
    import io

    import httpx

    url = server[0]
    health = httpx.get(url + "health").json()
    assert health["status"] == "ok" and health["model_loaded"] is True  # VALLEX_PRELOAD=1
    checkpoint = health["checkpoint"]  # which model answers: random tiny weights
    assert (checkpoint["file"], checkpoint["languages"], checkpoint["random"]) == ("vallex-checkpoint.pt",
                                                                                  ["en", "zh", "ja"], True)
    models = httpx.get(url + "v1/models").json()["data"]
    assert models[0]["id"] == "vallex" and all(model["checkpoint"] == checkpoint for model in models)
    assert (health["max_queue"], health["auth_required"]) == (16, False)
    voices = httpx.get(url + "v1/voices").json()
    assert [v["name"] for v in voices["data"]][:2] == ["en_ada", "en_ben"] and voices["default"] == "en_ada"
    completed = health["engine"]["completed"]  # the tabs' requests go through the same speech engine
    response = httpx.post(url + "v1/audio/speech", timeout=120, json={
        "model": "tts-1", "input": "Good morning.", "voice": "en_ben", "response_format": "wav", "seed": 3})
    assert response.status_code == 200, response.text
    assert response.headers["x-vallex-voice"] == "en_ben" and response.headers["content-type"] == "audio/wav"
    samples, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert rate == 24000 and len(samples) > 0 and np.isfinite(samples).all()
    error = httpx.post(url + "v1/audio/speech", json={"input": "Hi.", "voice": "../../etc/passwd"}).json()
    assert error["error"]["param"] == "voice"
    assert httpx.get(url + "health").json()["engine"]["completed"] == completed + 1
    page = httpx.get(url)
    assert page.status_code == 200 and "gradio" in page.text.lower()  # the UI is still there


def test_only_loopback_names_reach_the_app(server: tuple[str, Path]) -> None:
    """Keyless on 127.0.0.1: a DNS-rebinding page (its own name in Host) reaches no route, Gradio's included."""
    import httpx

    url = server[0]
    port = url.rstrip("/").rsplit(":", 1)[1]
    requests = [("GET", "", {}), ("GET", "config", {}), ("GET", "health", {}), ("GET", "v1/voices", {}),
                ("POST", "gradio_api/upload", {"files": {"files": ("a.txt", b"hello")}}),
                ("POST", "gradio_api/call/clone", {"json": {"data": []}}),
                ("POST", "gradio_api/queue/join", {"json": {"data": [], "fn_index": 0, "session_hash": "s"}}),
                ("GET", f"gradio_api/file={EN_VOICE}", {})]
    for method, path, body in requests:
        response = httpx.request(method, url + path, headers={"host": "evil.example"}, **body)
        assert response.status_code == 403, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "host_not_allowed" and "\n" not in error["message"], path
        assert "'evil.example'" in error["message"] and "127.0.0.1" in error["message"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert httpx.get(url, headers={"host": host}).status_code == 200, host
    # The page names the checkpoint in its banner (Gradio's config carries the components' values).
    config = httpx.get(url + "config").text
    assert "**Model:** vallex-checkpoint.pt (SHA-256 " in config and "languages en, zh, ja; RANDOM weights" in config


# (2) the page in Chromium ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium with a fake microphone (it plays beeps)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: run make system-deps")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"])
        yield browser
        browser.close()


def test_browser_clone_flow(server: tuple[str, Path], browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(server[0], wait_until="domcontentloaded")
    expect(page.locator("#weights-banner")).to_contain_text("Random weights", timeout=30_000)
    page.locator("#clone-prompt input[type=file]").set_input_files(str(EN_VOICE))
    expect(page.locator("#clone-prompt audio, #clone-prompt .waveform-container").first).to_be_attached(
        timeout=20_000)
    page.get_by_label("Transcript of the prompt").fill(EN_TRANSCRIPT)
    page.locator("#clone-text textarea").fill("Nice to meet you.")
    page.locator("#clone-generate").click()
    expect(page.locator("#clone-summary")).to_contain_text("Detected language", timeout=60_000)
    expect(page.locator("#clone-audio audio").first).to_be_attached(timeout=20_000)
    screenshot = tmp_path / "clone.png"
    page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    assert screenshot.stat().st_size > 10_000


def test_browser_record_then_download_prompt(server: tuple[str, Path], browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from vallex.prompts import VoicePrompt

    context = browser.new_context(viewport={"width": 1400, "height": 1100}, permissions=["microphone"])
    page = context.new_page()
    page.goto(server[0], wait_until="domcontentloaded")
    page.get_by_role("tab", name="Make a prompt").click()
    tab = page.locator("[role=tabpanel]:visible")
    tab.get_by_label("Record audio").click()
    tab.get_by_role("button", name="Record", exact=True).click()
    page.wait_for_timeout(3000)  # 3 s of the fake microphone's beeps
    tab.get_by_role("button", name="Stop").first.click()
    tab.get_by_label("Transcript").fill("Beep, beep, beep.")
    tab.get_by_label("Prompt name (letters, digits, _ and -)").fill("beeps")
    tab.get_by_role("button", name="Make prompt").click()
    expect(tab).to_contain_text("beeps.npz is ready", timeout=60_000)
    with page.expect_download() as download:
        page.locator("#prompt-file a").first.click()
    path = tmp_path / "beeps.npz"
    download.value.save_as(path)
    page.screenshot(path=str(tmp_path / "make_prompt.png"), full_page=True)
    context.close()
    prompt = VoicePrompt.load_npz(path)
    assert prompt.language == "en" and 2.0 < prompt.seconds < 5.0


# (3) concurrency --------------------------------------------------------------------------------------------

def test_eight_concurrent_requests(client: Client, tmp_path: Path) -> None:
    prompt, _ = client.predict(handle_file(str(EN_VOICE)), "Hello.", "en", "hello", api_name="/make_prompt")
    seeds = [101, 102, 103, 104] * 2
    jobs = [client.submit("One two three.", "en_ada", handle_file(prompt), "en", "none", seed, 1.0, 0, 1.0, 1,
                          api_name="/preset") for seed in seeds]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda job: job.result(timeout=180), jobs))
    assert len(results) == 8
    audio = [check_audio(result[0]) for result in results]
    assert [result[2]["seed"] for result in results] == seeds  # each answer belongs to its request
    for i in range(4):  # same seed and input: the same audio; another seed: other audio
        np.testing.assert_array_equal(audio[i], audio[i + 4])
        assert not np.array_equal(audio[i], audio[(i + 1) % 4])


# (4) bad input ----------------------------------------------------------------------------------------------

def test_no_prompt_audio(client: Client) -> None:
    assert "No voice prompt" in error_of(client, None, "", "Hello.", *SAMPLING, api_name="/clone")
    assert "No audio" in error_of(client, None, "", "auto", "x", api_name="/make_prompt")


def test_sixty_second_prompt(client: Client, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    long_clip = tmp_path / "long.wav"
    sf.write(long_clip, (0.1 * rng.standard_normal(60 * 16000)).astype(np.float32), 16000)
    message = error_of(client, handle_file(str(long_clip)), "Some words.", "Hello.", *SAMPLING, api_name="/clone")
    assert "60.0 s" in message and "15 s" in message


def test_empty_text(client: Client) -> None:
    message = error_of(client, handle_file(str(EN_VOICE)), EN_TRANSCRIPT, "   ", *SAMPLING, api_name="/clone")
    assert "text is empty" in message.lower()
    assert "text is empty" in error_of(client, "", "en_ada", None, *SAMPLING[:2], *SAMPLING[2:],
                                       api_name="/preset").lower()


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "a b", "x" * 65])
def test_bad_preset_name(client: Client, name: str) -> None:
    message = error_of(client, "Hello.", name, None, *SAMPLING, api_name="/preset")
    assert "Invalid prompt name" in message
    assert "Invalid prompt name" in error_of(client, "Hello.", name, None, "fixed-prompt", "auto", "none", 1,
                                             api_name="/long_text")


def test_other_bad_inputs(client: Client, tmp_path: Path) -> None:
    assert "Unknown voice preset 'nobody'" in error_of(client, "Hello.", "nobody", None, *SAMPLING,
                                                        api_name="/preset")
    fake = tmp_path / "fake.npz"
    fake.write_text("not a zip")
    assert "not an .npz prompt file" in error_of(client, "Hello.", "en_ada", handle_file(str(fake)), *SAMPLING,
                                                 api_name="/preset")
    assert "Invalid prompt name" in error_of(client, handle_file(str(EN_VOICE)), EN_TRANSCRIPT, "auto", "../x",
                                             api_name="/make_prompt")


def test_upload_size_cap(server: tuple[str, Path], client: Client, tmp_path: Path) -> None:
    import httpx

    big = tmp_path / "big.wav"
    sf.write(big, np.full((MAX_UPLOAD_MB + 1) * 2**20 // 2, 0.1, dtype=np.float32), 24000, subtype="PCM_16")
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # the client reads the app's limit
        client.predict(handle_file(str(big)), EN_TRANSCRIPT, "Hello.", *SAMPLING, api_name="/clone")
    with open(big, "rb") as handle:  # and the server refuses it from any other client
        response = httpx.post(server[0] + "gradio_api/upload", files={"files": ("big.wav", handle, "audio/wav")})
    assert response.status_code == 413
