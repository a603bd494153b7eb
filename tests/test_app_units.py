"""The app's parts without a server: settings, weights banner, scratch files, error messages, pictures, assets."""
from __future__ import annotations

import ast
import json
import threading
import types
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf

from demo import engine as engine_module
from demo.config import AppConfig
from demo.engine import Engine, load_voices
from demo.handlers import friendly_errors, make_handlers
from demo.plots import LABEL_HEIGHT, SPEC_HEIGHT, WAVE_HEIGHT, WIDTH, audio_picture, spectrogram_db
from demo.sampling_controls import sampling_from_controls
from demo.translate_tab import make_translate_handler
from demo.zero_gpu import zero_gpu
from vallex.inference.sampling_settings import Sampling

REPO_ROOT = Path(__file__).resolve().parents[1]

ASSETS = REPO_ROOT / "assets"


@pytest.fixture()
def no_weights(tmp_path: Path) -> AppConfig:
    (tmp_path / "weights").mkdir()
    return AppConfig(weights_dir=tmp_path / "weights", presets_dir=tmp_path / "presets")


# Settings ------------------------------------------------------------------------------------------------

def test_config_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("VALLEX_WEIGHTS_DIR", "VALLEX_CONCURRENCY", "VALLEX_PRELOAD", "SPACE_ID", "VALLEX_THREADS",
                 "VALLEX_MAX_BATCH", "VALLEX_MAX_REQUEST_WORK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    default = AppConfig.from_env()
    # Gradio runs as many tab requests at once as the speech engine batches together.
    assert (default.weights_dir, default.concurrency, default.max_queue, default.preload) == (None, 8, 32, False)
    monkeypatch.setenv("VALLEX_MAX_BATCH", "4")
    assert AppConfig.from_env().concurrency == 4
    assert default.analytics is False  # off unless asked for
    monkeypatch.setenv("VALLEX_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("VALLEX_CONCURRENCY", "3")
    monkeypatch.setenv("VALLEX_MAX_UPLOAD_MB", "7")
    monkeypatch.setenv("SPACE_ID", "someone/vallex")  # on a Space the model loads at startup
    config = AppConfig.from_env()
    assert (config.weights_dir, config.concurrency, config.max_upload_mb, config.preload) == (tmp_path, 3, 7, True)
    monkeypatch.setenv("VALLEX_PRELOAD", "off")
    assert AppConfig.from_env().preload is False
    # The speech engine's work budget per request (sentences x best_of x verify rounds); 0: no limit.
    assert default.max_request_work == 2048
    monkeypatch.setenv("VALLEX_MAX_REQUEST_WORK", "64")
    assert AppConfig.from_env().max_request_work == 64
    monkeypatch.setenv("VALLEX_MAX_REQUEST_WORK", "0")
    assert AppConfig.from_env().max_request_work is None


@pytest.mark.parametrize("name, value, words", [("VALLEX_CONCURRENCY", "two", "not an integer"),
                                                ("VALLEX_MAX_QUEUE", "0", "at least 1"),
                                                ("VALLEX_PRELOAD", "maybe", "1/0")])
def test_config_rejects_bad_values(monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=words):
        AppConfig.from_env()


# The weights banner -----------------------------------------------------------------------------------------

def test_missing_weights_give_one_banner_and_a_readable_request_error(no_weights: AppConfig) -> None:
    engine = Engine(no_weights)
    status = engine.weights_status()
    assert status.level == "error"
    for words in ("vallex-checkpoint.pt", "encodec_24khz-d7cc33bc.th", "pytorch_model.bin", "vallex download",
                  "make-random-weights"):
        assert words in status.message
    app = build(no_weights, engine)
    banners = [b for b in app.blocks.values() if getattr(b, "elem_id", None) == "weights-banner"]
    assert len(banners) == 1 and banners[0].visible and "vallex-checkpoint.pt" in banners[0].value
    with pytest.raises(ValueError, match="cannot be loaded.*4 model file"):
        engine.tts()


def test_unusable_weights_give_a_banner_with_the_whole_reason(no_weights: AppConfig) -> None:
    """A file that is there but fails its check is not "missing", and its reason, one long line, is shown whole."""
    from demo.ui import CSS, banner_markdown

    for name in ("vallex-checkpoint.pt", "encodec_24khz-d7cc33bc.th", "vocos-encodec-24khz/config.yaml",
                 "vocos-encodec-24khz/pytorch_model.bin"):
        path = no_weights.weights_dir / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"not the published file")
    status = Engine(no_weights).weights_status()
    assert status.level == "error" and status.message.startswith("Checksum mismatch for")
    assert "is not the published EnCodec 24 kHz's" in status.message and "--only encodec --force" in status.message
    banner = banner_markdown(status)
    assert "missing or cannot be used" in banner.splitlines()[0] and status.message in banner
    assert "#weights-banner pre" in CSS and "pre-wrap" in CSS  # Gradio's code blocks would cut the line off


def test_online_without_cached_weights_announces_the_download(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    import huggingface_hub.constants

    for name in ("HF_HUB_OFFLINE", "VALLEX_OFFLINE", "VALLEX_WEIGHTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr("torch.hub._hub_dir", str(tmp_path / "torch" / "hub"))
    status = Engine(AppConfig(weights_dir=None)).weights_status()  # no network call: only the caches are read
    assert status.level == "info" and "downloads them" in status.message and "vallex-checkpoint.pt" in status.message


def build(config: AppConfig, engine: Engine) -> gr.Blocks:
    from demo.ui import build_app

    return build_app(config, engine)


def test_every_model_event_has_a_name_and_shares_the_queue_group(no_weights: AppConfig) -> None:
    app = build(no_weights, Engine(no_weights))
    assert app.analytics_enabled is False
    named = {fn.api_name: fn for fn in app.fns.values() if fn.api_name and fn.api_visibility == "public"}
    assert set(named) == {"clone", "preset", "make_prompt", "long_text", "voices", "translate"}
    for name in ("clone", "preset", "make_prompt", "long_text", "translate"):
        assert named[name].concurrency_id == "model" and named[name].concurrency_limit == no_weights.concurrency


# Inputs are checked before the model is needed ------------------------------------------------------------

def test_handlers_refuse_bad_input_with_words(no_weights: AppConfig) -> None:
    handlers = make_handlers(Engine(no_weights))
    sampling = (-1, 1.0, 0, 1.0, 1)
    with pytest.raises(gr.Error, match="No voice prompt"):
        handlers["clone"](None, "", "Hello.", "auto", "none", *sampling)
    with pytest.raises(gr.Error, match="text is empty"):
        handlers["clone"](str(ASSETS / "en_ada.ogg"), "", "  ", "auto", "none", *sampling)
    with pytest.raises(gr.Error, match="Invalid prompt name"):
        handlers["preset"]("Hello.", "../../etc/passwd", None, "auto", "none", *sampling)
    with pytest.raises(gr.Error, match="Invalid prompt name"):
        handlers["make_prompt"](str(ASSETS / "en_ada.ogg"), "Hi.", "auto", "a/b")
    with pytest.raises(gr.Error, match="at most 10 are accepted"):
        make_handlers(Engine(AppConfig(weights_dir=no_weights.weights_dir, max_text_chars=10)))["clone"](
            str(ASSETS / "en_ada.ogg"), "", "x" * 11, "auto", "none", *sampling)
    with pytest.raises(gr.Error, match="Unknown long-text mode"):
        list(handlers["long_text"]("Hello.", "none", None, "paragraphs", "auto", "none", 1))


def test_translate_refuses_bad_input_before_the_model(no_weights: AppConfig) -> None:
    translate = make_translate_handler(Engine(no_weights))
    clip = str(ASSETS / "en_ada.ogg")
    with pytest.raises(gr.Error, match="No recording"):
        translate(None, "zh", "Hello.", "你好。", "auto", 1)
    with pytest.raises(gr.Error, match="Unknown target language 'fr'"):
        translate(clip, "fr", "Hello.", "Bonjour.", "auto", 1)
    with pytest.raises(gr.Error, match="translation has 5001 characters"):
        translate(clip, "zh", "Hello.", "你" * 5001, "auto", 1)
    with pytest.raises(gr.Error, match="cannot be loaded"):  # good input, no weights: the model's own message
        translate(clip, "zh", "Hello.", "你好。", "auto", 1)


def test_one_speech_translator_per_engine_around_the_shared_model(no_weights: AppConfig) -> None:
    engine = Engine(no_weights)
    engine._tts = model = types.SimpleNamespace(device="cpu")  # stands in for a loaded VallEX
    try:
        def use(s2st):  # on the speech engine's thread, holding the model
            assert s2st.tts is model and engine.speech.model_lock._is_owned()
            return s2st, threading.current_thread()

        first, thread = engine.with_translator(use)
        assert thread is engine.speech._worker and thread is not threading.current_thread()
        second, _ = engine.with_translator(use)
        assert second is first  # made once: its Whisper/translation models would load once
    finally:
        engine.close()


def test_friendly_errors_hide_tracebacks() -> None:
    @friendly_errors
    def broken() -> None:
        raise RuntimeError("internal detail /secret/path")

    @friendly_errors
    def streaming():
        yield 1
        raise ValueError("The text is empty: type something.")

    with pytest.raises(gr.Error) as caught:
        broken()
    assert "RuntimeError" in caught.value.message and "/secret/path" not in caught.value.message
    stream = streaming()
    assert next(stream) == 1
    with pytest.raises(gr.Error, match="The text is empty"):
        next(stream)


def test_sampling_from_controls() -> None:
    seed, sampling = sampling_from_controls([-1, 0.8, 0, 1.0, 2, False, False, False, 3, 0.25])
    assert 0 <= seed < 2**31 and sampling == Sampling(temperature=0.8, best_of=2)  # top-k 0, top-p 1: off
    assert sampling_from_controls([5, 1, 50, 0.9, 1, True, True, True, 2, 0.5]) == (
        5, Sampling(top_k=50, top_p=0.9, ras=True, length_guards=True, verify="asr", verify_rounds=2,
                    verify_threshold=0.5))
    assert sampling_from_controls([5, None, None, None, None, None, None, None, None, None]) == (5, Sampling())
    with pytest.raises(ValueError, match="Seed must be a whole number"):
        sampling_from_controls(["abc", 1, 0, 1, 1, False, False, False, 3, 0.25])


# Scratch files -------------------------------------------------------------------------------------------------

def test_scratch_folders_are_unique_and_only_ours_are_removed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                              no_weights: AppConfig) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    bystander = tmp_path / "someone-elses.npz"
    bystander.write_bytes(b"x")
    engine = Engine(no_weights)
    with engine.scratch_dir() as first, engine.scratch_dir() as second:
        assert first != second and first.parent == second.parent
        (first / "a.npz").write_bytes(b"1")
    with pytest.raises(RuntimeError), engine.scratch_dir() as failed:
        raise RuntimeError("request failed")
    assert not failed.exists()  # a failed request leaves nothing behind
    monkeypatch.setattr(engine_module, "SCRATCH_MAX_AGE_S", 0.0)
    with engine.scratch_dir() as third:
        assert not first.exists() and not second.exists() and third.exists()  # old ones go
    root = third.parent
    engine.close()
    assert not root.exists() and bystander.exists()


def test_one_request_at_a_time_uses_the_model_on_the_engines_thread(no_weights: AppConfig) -> None:
    engine = Engine(no_weights)
    engine._tts = model = object()  # stands in for a loaded VallEX: only the hand-over is tested here
    inside, release, order = threading.Event(), threading.Event(), []

    def hold(tts) -> None:
        assert tts is model and threading.current_thread() is engine.speech._worker
        order.append("first in")
        inside.set()
        release.wait(5)
        order.append("first out")

    def first() -> None:
        engine.with_model(hold)

    def second() -> None:
        inside.wait(5)
        engine.with_model(lambda tts: order.append("second in"))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    inside.wait(5)
    threads[1].join(0.3)
    assert order == ["first in"]  # the second request waits for the model
    release.set()
    for thread in threads:
        thread.join(5)
    assert order == ["first in", "first out", "second in"]
    engine.close()


# Pictures -------------------------------------------------------------------------------------------------------

def test_audio_picture_shows_prompt_and_output() -> None:
    t = np.arange(24000) / 24000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    panel = LABEL_HEIGHT + WAVE_HEIGHT + SPEC_HEIGHT
    assert audio_picture(tone, 24000).size == (WIDTH, panel)
    assert audio_picture(tone, 24000, tone[:12000]).size == (WIDTH, 2 * panel)
    assert audio_picture(np.zeros(10, dtype=np.float32), 24000).size == (WIDTH, panel)  # tiny/silent input
    db = spectrogram_db(tone, 24000)
    assert db.shape[0] == int(8000 / 12000 * 513)  # bins up to 8 kHz
    assert abs(int(np.argmax(db.mean(axis=1))) * 24000 / 1024 - 1000) < 24000 / 1024


# Space readiness ------------------------------------------------------------------------------------------------

def test_queue_and_upload_limits_follow_the_settings(no_weights: AppConfig) -> None:
    from dataclasses import replace

    from demo.ui import launch_options, queue_options

    config = replace(no_weights, concurrency=3, max_queue=5, max_upload_mb=7)
    app = build(config, Engine(config))
    app.queue(**queue_options(config))
    assert (app._queue.max_size, app._queue.default_concurrency_limit) == (5, 3)
    options = launch_options(config)
    assert options["max_file_size"] == "7mb" and "server_name" not in options and "server_port" not in options


def test_app_file_is_small_and_ui_files_stay_readable() -> None:
    assert len((REPO_ROOT / "app.py").read_text().splitlines()) <= 10
    for path in (REPO_ROOT / "demo").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path


def test_demo_uses_only_public_vallex_names() -> None:
    for path in (REPO_ROOT / "demo").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vallex"):
                assert not any(part.startswith("_") for part in node.module.split(".")), (path, node.module)
                assert not any(alias.name.startswith("_") for alias in node.names), (path, node.module)


# Assets ------------------------------------------------------------------------------------------------------------

def test_example_voices_are_small_valid_prompts() -> None:
    manifest = json.loads((ASSETS / "voices.json").read_text(encoding="utf-8"))
    voices = load_voices(ASSETS)
    assert [v.name for v in voices] == [entry["name"] for entry in manifest]
    assert {v.language for v in voices} == {"en", "zh", "ja"}
    for voice in voices:
        info = sf.info(str(voice.audio_path))
        assert info.samplerate == 24000 and info.channels == 1
        assert 3.0 <= info.duration <= 10.0, voice.name
        assert voice.audio_path.stat().st_size < 100_000 and voice.transcript.strip()
        assert "espeak-ng" in next(e["made_with"] for e in manifest if e["name"] == voice.name)


def test_examples_use_the_assets(no_weights: AppConfig) -> None:
    from demo import examples

    engine = Engine(no_weights)
    for row in examples.clone_examples(engine) + examples.prompt_examples(engine):
        assert Path(row[0]).parent == ASSETS and Path(row[0]).is_file()
    assert {row[1] for row in examples.preset_examples(engine)} <= set(engine.voices)
    assert len(examples.clone_examples(engine)) == 6 and len(examples.long_examples(engine)) == 3
    rows = examples.translate_examples(engine)
    assert len(rows) == 4 and {row[1] for row in rows} == {"en", "zh", "ja"}
    for audio, target, transcript, _, source in rows:
        voice = next(v for v in engine.voices.values() if str(v.audio_path) == audio)
        assert (transcript, source) == (voice.transcript, voice.language) and target != source


# The HTTP API next to the UI ------------------------------------------------------------------------------------

def test_http_api_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VALLEX_MAX_BATCH", "VALLEX_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    default = AppConfig.from_env()
    assert (default.max_batch, default.api_key) == (8, "")
    monkeypatch.setenv("VALLEX_MAX_BATCH", "3")
    monkeypatch.setenv("VALLEX_API_KEY", "top-secret")
    config = AppConfig.from_env()
    assert (config.max_batch, config.api_key) == (3, "top-secret") and "top-secret" not in repr(config)
    monkeypatch.setenv("VALLEX_MAX_BATCH", "0")
    with pytest.raises(ValueError, match="VALLEX_MAX_BATCH must be at least 1"):
        AppConfig.from_env()


def test_http_api_routes_use_the_app_settings(no_weights: AppConfig) -> None:
    from dataclasses import replace

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from demo.http_api import api_router, app_voices

    config = replace(no_weights, api_key="k-1", max_batch=2, max_queue=3, max_text_chars=20)
    engine = Engine(config)
    speech = engine.speech
    try:
        app = FastAPI()
        app.include_router(api_router(engine, speech))
        client = TestClient(app)
        assert client.get("/v1/voices").status_code == 401
        voices = client.get("/v1/voices", headers={"Authorization": "Bearer k-1"}).json()
        assert [v["name"] for v in voices["data"]] == engine.voice_names() == [v.name for v in app_voices(engine)]
        assert voices["default"] == "en_ada" and voices["data"][0]["kind"] == "built-in"
        health = client.get("/health").json()  # no key needed
        assert (health["model_loaded"], health["max_batch"], health["max_queue"]) == (False, 2, 3)
        key = {"Authorization": "Bearer k-1"}
        too_long = client.post("/v1/audio/speech", headers=key, json={"input": "x" * 21}).json()["error"]
        assert too_long["param"] == "input" and "at most 20" in too_long["message"]
        # No weights: the model cannot load, which is the server's problem (503), not the request's.
        missing = client.post("/v1/audio/speech", headers=key, json={"input": "Hello.", "voice": "en_ada"})
        assert missing.status_code == 503 and missing.json()["error"]["code"] == "model_unavailable"
        assert "4 model file(s) not found" in missing.json()["error"]["message"]
    finally:
        speech.close()


def test_tabs_and_api_share_one_speech_engine_and_its_thread(no_weights: AppConfig,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """One continuous-batching engine serves every synthesis; other model work runs on its thread, holding its lock,
    except on ZeroGPU, where only the handler's own thread may use the GPU."""
    engine = Engine(no_weights)
    try:
        speech = engine.speech
        assert engine.speech is speech and speech.max_batch == no_weights.max_batch
        engine._tts = object()  # as if loaded: with_model must not try to load the missing weights

        def where(tts) -> tuple[threading.Thread, bool]:
            return threading.current_thread(), speech.model_lock._is_owned()  # noqa: SLF001

        monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)  # not on a ZeroGPU Space
        assert engine.with_model(where) == (speech._worker, True)
        monkeypatch.setattr(engine_module, "on_zero_gpu", lambda: True)  # a ZeroGPU Space, inside a GPU call

        def here(tts) -> tuple[threading.Thread, bool]:
            return threading.current_thread(), engine._model_lock._is_owned()  # noqa: SLF001

        assert zero_gpu(1)(lambda: engine.with_model(here))() == (threading.current_thread(), True)
        assert not speech.model_lock._is_owned()
    finally:
        engine.close()


@pytest.mark.parametrize("server_name, key, share, limited", [
    (None, "", None, True), ("localhost", "", None, True), ("::1", "", "false", True),
    ("0.0.0.0", "", None, False),  # a Space: HF's proxy brings the Space's own name
    ("127.0.0.1", "k-1", None, False), (None, "", "True", False)])
def test_the_app_answers_only_loopback_names_where_the_api_does(monkeypatch: pytest.MonkeyPatch,
                                                                no_weights: AppConfig, server_name: str | None,
                                                                key: str, share: str | None, limited: bool) -> None:
    from dataclasses import replace

    from demo.http_api import allowed_hosts, host_guard
    from vallex.serving.http import LOOPBACK_HOSTS

    for name, value in (("GRADIO_SERVER_NAME", server_name), ("GRADIO_SHARE", share)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    config = replace(no_weights, api_key=key)
    assert allowed_hosts(config) == (LOOPBACK_HOSTS if limited else None)
    assert len(host_guard(config)) == (1 if limited else 0)


@pytest.mark.parametrize("server_name", ["127.0.0.1", "0.0.0.0"])
def test_the_host_guard_covers_gradios_own_routes(monkeypatch: pytest.MonkeyPatch, no_weights: AppConfig,
                                                  server_name: str) -> None:
    """A real Gradio app, given the middleware as ``demo.ui.main`` gives it: on loopback every route refuses a
    rebinding page's name; as on a Space (GRADIO_SERVER_NAME=0.0.0.0) nothing changes."""
    import httpx

    from demo.http_api import host_guard

    monkeypatch.setenv("GRADIO_SERVER_NAME", server_name)
    monkeypatch.delenv("GRADIO_SHARE", raising=False)
    with gr.Blocks() as blocks:
        text = gr.Textbox()
        gr.Button().click(lambda value: value, text, text, api_name="echo")
    blocks.queue()
    # Where it listens is the launch's own business (loopback here): the guard follows the setting.
    _, url, _ = blocks.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True,
                              app_kwargs={"middleware": host_guard(no_weights)})
    try:
        port = url.rstrip("/").rsplit(":", 1)[1]
        requests = [("GET", "", {}), ("GET", "config", {}),
                    ("POST", "gradio_api/call/echo", {"json": {"data": ["hi"]}}),
                    ("POST", "gradio_api/upload", {"files": {"files": ("a.txt", b"hello")}}),
                    ("POST", "gradio_api/queue/join", {"json": {"data": ["hi"], "fn_index": 0, "session_hash": "s"}})]
        for method, path, body in requests:
            response = httpx.request(method, url + path, headers={"host": "evil.example"}, **body)
            if server_name == "0.0.0.0":
                assert response.status_code == 200, (path, response.text)
                continue
            assert response.status_code == 403, (path, response.text)
            error = response.json()["error"]
            assert error["code"] == "host_not_allowed" and "\n" not in error["message"], path
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
            assert httpx.get(url, headers={"host": host}).status_code == 200, host
            assert httpx.post(url + "gradio_api/call/echo", headers={"host": host},
                              json={"data": ["hi"]}).status_code == 200, host
    finally:
        blocks.close()


def test_banner_and_title_name_the_checkpoint() -> None:
    from demo.engine import WeightsStatus
    from demo.ui import banner_markdown, intro_markdown
    from vallex.languages import Languages
    from vallex.weights import ModelIdentity

    identity = ModelIdentity("checkpoint-00002000.pt", "0123456789ab", ("en", "zh", "ja", "de"), False)
    assert banner_markdown(WeightsStatus("ok", ""), identity) == (
        "**Model:** checkpoint-00002000.pt (SHA-256 0123456789ab; languages en, zh, ja, de)")
    assert banner_markdown(WeightsStatus("ok", "")) == ""  # nothing known, nothing wrong: no banner
    warning = banner_markdown(WeightsStatus("warning", "Random!"), identity)
    assert warning.startswith("⚠️ **Random weights") and warning.endswith("languages en, zh, ja, de)")
    assert intro_markdown(Languages.public()).startswith("# VALL-E X: speak in anyone's voice, in English, 中文 and "
                                                         "日本語\n")
    assert intro_markdown(Languages(("de",))).startswith("# VALL-E X: speak in anyone's voice, in German\n")
