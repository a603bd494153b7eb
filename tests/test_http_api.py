"""The OpenAI-compatible HTTP API: a real uvicorn server on 127.0.0.1 over a SpeechEngine on tiny random weights,
driven by the official ``openai`` client (and raw httpx where the client hides what is checked).

The audio is noise (random weights); what is checked is the API: formats, streaming, seeds, auth, errors,
the queue limit and cancellation. Nothing here sleeps to measure time: waits poll for a state, with a deadline.
"""
from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
import torch
import uvicorn
from conftest import with_voices

from vallex.languages import Languages
from vallex.prompts import PresetLibrary, VoicePrompt
from vallex.serving import SpeechEngine, SpeechRequest, SpeechStream
from vallex.serving.engine import EngineStats
from vallex.serving.http import LOOPBACK_HOSTS, MODELS, ModelUnavailable, create_api, preset_voices
from vallex.text import tokenize

torch.set_num_threads(1)
SR = 24000
LONG_TEXT = " ".join(f"This is sentence number {n}, and it goes on for a while." for n in range(1, 13))


class LiveServer:
    """uvicorn serving ``app`` on a free port of 127.0.0.1 in a background thread (a context manager)."""

    def __init__(self, app: Any) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        wait_until(lambda: self._server.started, what="the server to start")
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(15)
        self._socket.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds (a synchronisation, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


class RecordingEngine(SpeechEngine):
    """A SpeechEngine that keeps the streams it hands out (to see that the API cancelled one)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streams: list[SpeechStream] = []

    def submit(self, request: SpeechRequest, **options: Any) -> SpeechStream:
        stream = super().submit(request, **options)
        self.streams.append(stream)
        return stream


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> PresetLibrary:
    """Two presets with random 1 s codes and a short transcript (short prompts keep requests fast)."""
    library = PresetLibrary(tmp_path_factory.mktemp("presets"))
    generator = torch.Generator().manual_seed(0)
    for name, transcript, language in (("alice", "Hi.", "en"), ("bob", "你好。", "zh")):
        codes = torch.randint(0, 1024, (1, 75, 8), generator=generator)
        library.save(name, VoicePrompt(codes=codes, text_ids=tokenize(transcript, language).ids, language=language))
    return library


@pytest.fixture(scope="module")
def engine(tiny_tts, library: PresetLibrary) -> RecordingEngine:
    engine = RecordingEngine(with_voices(tiny_tts, library.load, library.names), max_batch=2, max_queue=8)
    yield engine
    engine.close()


def api_options(library: PresetLibrary, **overrides: Any) -> dict[str, Any]:
    return {"voices": lambda: preset_voices(library), "voice_names": library.names, "default_voice": "alice",
            "api_key": "", "model_loaded": lambda: True, **overrides}


@pytest.fixture(scope="module")
def url(engine: RecordingEngine, library: PresetLibrary) -> str:
    with LiveServer(create_api(engine, **api_options(library))) as url:
        yield url


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def decode(data: bytes, fmt: str) -> np.ndarray:
    """Samples of a response body; checks 24 kHz mono, > 0 s, finite."""
    if fmt == "pcm":
        assert len(data) % 2 == 0
        samples = np.frombuffer(data, "<i2").astype(np.float32) / 32767
    else:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32")
        assert rate == SR and samples.ndim == 1
    assert len(samples) > 0 and np.isfinite(samples).all()
    return samples


def speech(url: str, timeout: float = 120, **body: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/audio/speech", json=body, timeout=timeout)


# Formats, streaming, seeds, speed -----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["wav", "mp3", "opus", "flac", "pcm"])
def test_every_response_format(client: openai.OpenAI, fmt: str) -> None:
    audio = client.audio.speech.create(model="tts-1", voice="alice", input="Hello there.", response_format=fmt,
                                       extra_body={"seed": 1})
    decode(audio.content, fmt)
    assert audio.response.headers["x-vallex-seed"] == "1"


def test_streaming_response_arrives_in_chunks(client: openai.OpenAI) -> None:
    with client.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", voice="alice", input="Hello there, how are you doing today, my friend?",
            response_format="pcm", extra_body={"seed": 2}) as response:
        assert response.headers["transfer-encoding"] == "chunked" and "content-length" not in response.headers
        assert response.headers["content-type"] == "audio/pcm"
        pieces = [piece for piece in response.iter_bytes() if piece]
    assert len(pieces) >= 2  # the first 0.4 s went out before the rest was made
    decode(b"".join(pieces), "pcm")


def test_streamed_wav_has_an_open_ended_header(client: openai.OpenAI) -> None:
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="bob", input="你好。",
                                                            response_format="wav") as response:
        data = response.read()
    assert data[:4] == b"RIFF" and data[4:8] == b"\xff\xff\xff\xff"
    decode(data, "wav")


def test_same_seed_same_bytes(client: openai.OpenAI) -> None:
    def make(fmt: str, seed: int) -> bytes:
        return client.audio.speech.create(model="tts-1", voice="alice", input="Hi there.", response_format=fmt,
                                          extra_body={"seed": seed}).content

    for fmt in ("wav", "pcm"):
        assert make(fmt, 5) == make(fmt, 5)
    assert make("pcm", 6) != make("pcm", 5)


def test_speed_stretches_without_resampling(url: str) -> None:
    body = {"input": "Hi there.", "voice": "alice", "response_format": "pcm", "seed": 5}
    normal = speech(url, **body).content
    fast = speech(url, speed=2.0, **body).content
    assert len(fast) // 2 == round(len(normal) // 2 / 2)  # exactly half as many samples, still 24 kHz
    decode(fast, "pcm")


def test_voice_aliases_object_and_non_streamed_response(client: openai.OpenAI, url: str) -> None:
    audio = client.audio.speech.create(model="tts-1", voice="nova", input="Hi.", response_format="wav",
                                       instructions="Speak cheerfully.")
    assert audio.response.headers["x-vallex-voice"] == "alice"  # OpenAI's names: the default voice
    assert audio.response.headers["x-vallex-ignored"] == "instructions"
    audio = client.audio.speech.create(model="tts-1", voice={"id": "bob"}, input="你好。", response_format="wav")
    assert audio.response.headers["x-vallex-voice"] == "bob"
    whole = speech(url, input="Hi.", voice="none", response_format="mp3", stream=False)
    assert whole.headers["x-vallex-voice"] == "none" and int(whole.headers["content-length"]) == len(whole.content)
    decode(whole.content, "mp3")


# Voices and health -----------------------------------------------------------------------------------

def test_voices_and_health(url: str, engine: RecordingEngine) -> None:
    voices = httpx.get(f"{url}/v1/voices").json()
    assert [(v["name"], v["language"], v["kind"]) for v in voices["data"]] == [("alice", "en", "preset"),
                                                                               ("bob", "zh", "preset")]
    assert voices["default"] == "alice" and "alloy" in voices["aliases"]["default voice"]
    assert "tts-1" in [model["id"] for model in httpx.get(f"{url}/v1/models").json()["data"]]
    speech(url, input="Hi.", response_format="pcm")
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["model_loaded"] is True and health["auth_required"] is False
    assert health["engine"]["completed"] >= 1 and health["engine"]["running"] == 0
    assert {"submitted", "waiting", "cancelled", "failed", "uptime_s"} <= set(health["engine"])
    assert (health["max_batch"], health["max_queue"]) == (2, 8)


def test_health_and_models_name_the_checkpoint(tiny_tts, library: PresetLibrary) -> None:
    """Which checkpoint answers (random tiny weights here), on /health and on every /v1/models entry; asking
    never loads a model that is not loaded yet."""
    expected = tiny_tts.identity().as_dict()
    assert (expected["file"], expected["languages"], expected["random"]) == ("vallex-checkpoint.pt",
                                                                              ["en", "zh", "ja"], True)
    assert len(expected["sha256"]) == 12 and int(expected["sha256"], 16) >= 0
    loaded = SpeechEngine(tiny_tts, max_batch=1)
    try:
        with LiveServer(create_api(loaded, **api_options(library))) as url:
            assert httpx.get(f"{url}/health").json()["checkpoint"] == expected
            models = httpx.get(f"{url}/v1/models").json()["data"]
            assert [model["id"] for model in models] == list(MODELS)  # the ids do not depend on the checkpoint
            assert all(model["checkpoint"] == expected and model["languages"] == ["en", "zh", "ja"]
                       for model in models)
    finally:
        loaded.close()
    lazy = SpeechEngine(lambda: tiny_tts, max_batch=1)  # loads on its first request
    try:
        with LiveServer(create_api(lazy, **api_options(library, model_loaded=None))) as url:
            assert httpx.get(f"{url}/health").json()["checkpoint"] is None
            assert not lazy.loaded
    finally:
        lazy.close()


def test_a_server_limited_to_loopback_names_refuses_others_on_every_route(engine: RecordingEngine,
                                                                          library: PresetLibrary) -> None:
    with LiveServer(create_api(engine, **api_options(library, allowed_hosts=LOOPBACK_HOSTS))) as url:
        port = url.rsplit(":", 1)[1]
        for path in ("/health", "/docs", "/openapi.json", "/v1/models", "/nowhere"):
            response = httpx.get(f"{url}{path}", headers={"host": "evil.example"})
            assert response.status_code == 403, path
            error = response.json()["error"]
            assert error["code"] == "host_not_allowed" and "\n" not in error["message"]
            assert "'evil.example'" in error["message"] and "localhost" in error["message"]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
            assert httpx.get(f"{url}/health", headers={"host": host}).status_code == 200, host


# Errors: every bad field is a 4xx naming it ---------------------------------------------------------------

GOOD = {"model": "tts-1", "input": "Hello.", "voice": "alice"}


@pytest.mark.parametrize("change, param", [
    ({"input": ""}, "input"),
    ({"input": "   "}, "input"),
    ({"input": "x" * 4097}, "input"),
    ({"input": 12}, "input"),
    ({"input": "!!! ???"}, "input"),  # nothing to pronounce: the text front end says so
    ({"input": "hello", "language": "mix"}, "input"),  # no [EN]..[EN] tags
    ({"model": "gpt-5"}, "model"),
    ({"voice": "../../etc/passwd"}, "voice"),
    ({"voice": "nobody"}, "voice"),
    ({"voice": 12}, "voice"),
    ({"voice": {"name": "alice"}}, "voice"),
    ({"response_format": "aac"}, "response_format"),
    ({"response_format": "ogg"}, "response_format"),
    ({"speed": 0.1}, "speed"),
    ({"speed": 5}, "speed"),
    ({"speed": "fast"}, "speed"),
    ({"language": "fr"}, "language"),
    ({"accent": "de"}, "accent"),
    ({"seed": -1}, "seed"),
    ({"seed": "x"}, "seed"),
    ({"stream_format": "sse"}, "stream_format"),
    ({"temperature": 0}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"long_text": "paragraphs"}, "long_text"),
    ({"stream": "maybe"}, "stream"),
    ({"instructions": "x" * 5000}, "instructions"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_fields_are_400s_naming_the_field(url: str, change: dict, param: str) -> None:
    response = speech(url, **{**GOOD, **change})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert error["code"]


def test_missing_input_and_bodies_that_are_not_json(url: str) -> None:
    error = httpx.post(f"{url}/v1/audio/speech", json={"model": "tts-1"}).json()["error"]
    assert (error["param"], error["code"]) == ("input", "missing_required_parameter")
    for content in (b"not json", b"[1, 2]"):
        response = httpx.post(f"{url}/v1/audio/speech", content=content,
                              headers={"content-type": "application/json"})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    response = httpx.post(f"{url}/v1/audio/speech", json={**GOOD, "input": "a" * 70_000})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert httpx.get(f"{url}/v1/audio/speech").json()["error"]["message"] == "Method Not Allowed"
    assert httpx.get(f"{url}/v2/nothing").status_code == 404


def test_the_openai_client_sees_the_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="../x", input="Hello.")
    assert caught.value.param == "voice" and "Invalid voice" in caught.value.message


# API key ----------------------------------------------------------------------------------------------------

def test_api_key_is_required_when_set(engine: RecordingEngine, library: PresetLibrary) -> None:
    with LiveServer(create_api(engine, **api_options(library, api_key="s3cret-Key"))) as url:
        good = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret-Key", max_retries=0, timeout=120)
        decode(good.audio.speech.create(model="tts-1", voice="alice", input="Hi.", response_format="pcm").content,
               "pcm")
        for key in ("wrong", "s3cret-key", "s3cret-Key-and-more"):
            bad = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
            with pytest.raises(openai.AuthenticationError) as caught:
                bad.audio.speech.create(model="tts-1", voice="alice", input="Hi.")
            assert caught.value.code == "invalid_api_key"
        for headers in ({}, {"authorization": "Basic s3cret-Key"}, {"authorization": "Bearer"}):
            response = httpx.get(f"{url}/v1/voices", headers=headers)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["type"] == "invalid_request_error"
        assert httpx.get(f"{url}/v1/voices", headers={"authorization": "Bearer s3cret-Key"}).status_code == 200
        health = httpx.get(f"{url}/health")  # open: load balancers probe it without a key
        assert health.status_code == 200 and health.json()["auth_required"] is True


def test_a_bad_key_setting_is_refused(engine: RecordingEngine) -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        create_api(engine, api_key="has space")


# The queue limit and cancellation ------------------------------------------------------------------------

@pytest.fixture()
def held(tiny_tts, library: PresetLibrary):
    """An engine (1 at a time, 1 waiting) whose voice "held" blocks until released, and a server over it."""
    gate, entered = threading.Event(), threading.Event()

    def resolve(name: str) -> VoicePrompt:
        if name == "held":
            entered.set()
            gate.wait(60)
        return library.load("alice")

    engine = RecordingEngine(with_voices(tiny_tts, resolve), max_batch=1, max_queue=1)
    options = api_options(library, voice_names=lambda: ["held", *library.names()])
    with LiveServer(create_api(engine, **options)) as url:
        yield url, engine, gate, entered
        gate.set()
    engine.close()


def test_a_full_queue_is_503_with_retry_after(held) -> None:
    url, engine, gate, entered = held
    results: dict[str, httpx.Response] = {}
    first = threading.Thread(target=lambda: results.setdefault("a", speech(url, input="Hi.", voice="held",
                                                                           response_format="pcm")))
    first.start()
    entered.wait(60)  # the first request runs (held back in its voice)
    second = threading.Thread(target=lambda: results.setdefault("b", speech(url, input="Hi.",
                                                                            response_format="pcm")))
    second.start()
    wait_until(lambda: engine.stats.waiting == 1, what="the second request to wait")
    refused = speech(url, input="Hi.")
    assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
    assert refused.json()["error"]["code"] == "server_busy" and refused.json()["error"]["type"] == "server_error"
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        client.audio.speech.create(model="tts-1", voice="alice", input="Hi.")
    assert caught.value.status_code == 503
    gate.set()
    first.join(120)
    second.join(120)
    assert results["a"].status_code == results["b"].status_code == 200
    assert engine.stats.refused == 2 and engine.stats.completed == 2


def test_a_client_that_leaves_before_the_audio_cancels_its_request(held) -> None:
    url, engine, gate, entered = held
    host, port = url.removeprefix("http://").split(":")
    body = b'{"input": "Hi there.", "voice": "held", "response_format": "pcm"}'
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        entered.wait(60)
    # The server notices while the request is still held back, before any audio exists ...
    wait_until(lambda: engine.streams and engine.streams[-1].cancelled, what="the stream to be cancelled")
    gate.set()
    # ... and the engine drops it.
    wait_until(lambda: engine.stats.cancelled == 1, what="the engine to drop the request")
    assert engine.stats.completed == 0


def test_a_client_that_leaves_mid_stream_cancels_its_request(url: str, engine: RecordingEngine) -> None:
    cancelled = engine.stats.cancelled
    with httpx.stream("POST", f"{url}/v1/audio/speech", timeout=120,
                      json={"input": LONG_TEXT, "voice": "alice", "response_format": "pcm"}) as response:
        assert response.status_code == 200
        assert response.headers["x-vallex-long-text"] == "fixed-prompt"  # too long for one utterance
        assert next(response.iter_raw())  # the first audio; then the client hangs up
    wait_until(lambda: engine.stats.cancelled == cancelled + 1, what="the engine to cancel the stream")
    assert engine.streams[-1].cancelled


# Errors from the engine, before and after the audio starts (a stand-in engine) -----------------------------

@dataclass
class FakeStream:
    chunks: list[np.ndarray]
    error: BaseException | None
    id: int = 1
    cancelled: bool = False

    def __iter__(self):
        yield from self.chunks
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeEngine:
    chunks: list[np.ndarray]
    error: BaseException | None
    stats: EngineStats = field(default_factory=EngineStats)
    languages: Languages = Languages.public()  # what its (absent) model would speak

    def submit(self, request: SpeechRequest, **options: Any) -> FakeStream:
        return FakeStream(self.chunks, self.error)


@pytest.mark.parametrize("error, status, param, code", [
    (ValueError("The voice prompt is too long (30.0 s)."), 400, "voice", "invalid_value"),
    (ValueError("A sentence is too long to speak in one go."), 400, "input", "invalid_value"),
    (ModelUnavailable("The model cannot be loaded: 4 model file(s) not found."), 503, None, "model_unavailable"),
    (RuntimeError("CUDA out of memory"), 500, None, "synthesis_failed"),
])
def test_errors_before_the_first_audio_are_json(error: BaseException, status: int, param: str | None,
                                                code: str) -> None:
    with LiveServer(create_api(FakeEngine([], error), api_key="")) as url:
        response = speech(url, input="Hello.", response_format="wav")
    assert response.status_code == status
    assert (response.json()["error"]["param"], response.json()["error"]["code"]) == (param, code)
    assert str(error) in response.json()["error"]["message"]


def test_an_error_mid_stream_truncates_the_response() -> None:
    chunk = np.zeros(SR // 10, np.float32)
    with LiveServer(create_api(FakeEngine([chunk, chunk], RuntimeError("boom")), api_key="")) as url:
        with httpx.stream("POST", f"{url}/v1/audio/speech", json={"input": "Hello.", "response_format": "pcm"},
                          timeout=30) as response:
            assert response.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):  # never a complete-looking, shortened file
                response.read()


# One request cannot hold everyone: the work budget, a client that stops reading ------------------------------

def test_a_request_past_the_work_budget_is_a_400_naming_its_cost(tiny_tts, library: PresetLibrary) -> None:
    from fastapi.testclient import TestClient

    engine = SpeechEngine(with_voices(tiny_tts, library.load, library.names), max_batch=1, max_request_work=4)
    try:
        with TestClient(create_api(engine, **api_options(library))) as api:
            costly = api.post("/v1/audio/speech", json={"input": "Hi.", "best_of": 5, "response_format": "pcm"})
            long = api.post("/v1/audio/speech", json={"input": "One. Two. Three. Four. Five.",
                                                      "long_text": "fixed-prompt", "response_format": "pcm"})
            fits = api.post("/v1/audio/speech", json={"input": "Hi.", "best_of": 4, "response_format": "pcm"})
    finally:
        engine.close()
    assert costly.status_code == 400 and costly.json()["error"]["code"] == "request_too_costly"
    assert costly.json()["error"]["param"] == "best_of"
    assert ("up to 5 sentence-candidates (1 sentence(s) x best_of 5), more than this server's limit of 4"
            in costly.json()["error"]["message"])
    assert long.status_code == 400 and long.json()["error"]["param"] == "input"
    assert fits.status_code == 200 and len(fits.content) > 0
    assert engine.stats.submitted == 1  # the refused ones never waited for the engine


def test_a_client_that_stops_reading_is_dropped_and_its_request_cancelled(tiny_tts, library: PresetLibrary) -> None:
    engine = RecordingEngine(with_voices(tiny_tts, library.load, library.names), max_batch=1, stream_buffer=2,
                             read_timeout_s=None)  # only the HTTP write timeout can end it
    body = b'{"input": "%s", "voice": "alice", "response_format": "pcm"}' % LONG_TEXT.encode()
    try:
        with LiveServer(create_api(engine, **api_options(library, write_timeout_s=0.5))) as url:
            host, port = url.removeprefix("http://").split(":")
            with socket.socket() as raw:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: writes back up soon
                raw.connect((host, int(port)))
                raw.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                assert raw.recv(12) == b"HTTP/1.1 200"  # the audio has started; the client reads no more
                wait_until(lambda: engine.stats.cancelled == 1, what="the server to give up on the client")
                assert engine.stats.running == 0 and engine.stats.completed == 0
                assert engine.streams[-1].buffered == 0  # what it had made and nobody took is let go
                raw.settimeout(60)
                rest = b"".join(iter(lambda: raw.recv(1 << 16), b""))  # the server closed the connection ...
                assert not rest.endswith(b"0\r\n\r\n")  # ... without the final chunk: a truncated answer
    finally:
        engine.close()
