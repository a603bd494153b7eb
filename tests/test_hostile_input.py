"""Hostile and careless input: the HTTP API's body parser and guards, the listener's timeouts, the CLI's option
checks, the library's messages. Servers bind to 127.0.0.1 only; no model is loaded except where a test says so.

The property-based tests (hypothesis) feed arbitrary JSON values, arbitrary bytes and arbitrary option values:
whatever comes in, the answer is a 4xx JSON error naming what was wrong (HTTP) or one line with exit code 2
(CLI), never a 500 or a traceback.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from conftest import with_voices
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from demo.sampling_controls import sampling_from_controls
from vallex.api import MAX_SEED, Sampling, select_device
from vallex.cli import main
from vallex.config import SIZE_BOUNDS, VallexConfig
from vallex.files import MAX_SMALL_FILE_BYTES
from vallex.languages import Languages
from vallex.prompts import PresetLibrary, VoicePrompt, make_prompt
from vallex.serving.engine import ServerBusy
from vallex.serving.http import LOOPBACK_HOSTS, HostGuard, SpeechBody, create_api
from vallex.serving.listen import bind_socket, make_server
from vallex.synthesis.request import SynthesisRequest, plan_request
from vallex.text import MAX_INPUT_CHARS, tokenize
from vallex.training.trainer import TrainConfig

BOUNDED = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
GOOD = {"model": "tts-1", "input": "Hello.", "voice": "alloy"}


class BusyEngine:
    """An engine that is always full: a request that passes every check gets a 503, never synthesis."""

    stats = None
    languages = Languages.public()  # what its (absent) model would speak

    def submit(self, request: Any, **options: Any) -> Any:
        raise ServerBusy("busy")


def client(**options: Any) -> TestClient:
    """The API in-process (no socket) over :class:`BusyEngine`."""
    return TestClient(create_api(BusyEngine(), api_key=options.pop("api_key", ""), **options))


def post(api: TestClient, content: bytes, content_type: str = "application/json", **headers: str) -> httpx.Response:
    return api.post("/v1/audio/speech", content=content, headers={"content-type": content_type, **headers})


def assert_error(response: httpx.Response, status: int, code: str, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


# The body parser -------------------------------------------------------------------------------------------

def test_deeply_nested_json_is_invalid_json_and_the_connection_lives_on() -> None:
    """~1000 levels in 2 KB used to escape as a RecursionError (500, keep-alive connection reset)."""
    nested = ('{"input": ' + "[" * 1000 + "]" * 1000 + "}").encode()
    api = client()
    assert_error(post(api, nested), 400, "invalid_json")
    assert_error(post(api, b'{"a": ' * 1000 + b"1" + b"}" * 1000), 400, "invalid_json")
    assert_error(post(api, json.dumps(GOOD).encode()), 503, "server_busy")  # the next request is served


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    assert_error(post(client(), f'{{"input": "Hi.", "speed": {constant}}}'.encode()), 400, "invalid_json")


@pytest.mark.parametrize("change, param", [
    ({"seed": True}, "seed"),
    ({"seed": 2.0}, "seed"),
    ({"speed": "2"}, "speed"),
    ({"speed": True}, "speed"),
    ({"temperature": "1"}, "temperature"),
    ({"top_k": "5"}, "top_k"),
    ({"top_p": "0.5"}, "top_p"),
    ({"stream": "true"}, "stream"),
    ({"stream": 1}, "stream"),
])
def test_numbers_and_flags_of_the_wrong_json_type_are_refused(change: dict, param: str) -> None:
    error = assert_error(post(client(), json.dumps({**GOOD, **change}).encode()), 400, "invalid_value", param)
    assert param in error["message"]


def test_integers_are_still_numbers() -> None:
    body = SpeechBody.model_validate({"input": "Hi.", "speed": 2, "temperature": 1, "top_p": 1, "seed": 7})
    assert (body.speed, body.temperature, body.top_p, body.seed) == (2.0, 1.0, 1.0, 7)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
FIELDS = st.sampled_from(sorted(SpeechBody.model_fields) + ["colour"])


@BOUNDED
@given(body=st.dictionaries(FIELDS, JSON_VALUES, max_size=6))
def test_any_json_object_gets_a_4xx_naming_a_field_or_reaches_the_engine(body: dict) -> None:
    response = post(client(), json.dumps({"input": "Hello.", **body}).encode())
    assert response.status_code in (400, 503), response.text
    error = response.json()["error"]
    if response.status_code == 400:
        assert error["message"] and (error["param"] in body or error["param"] == "input"), error


@BOUNDED
@given(data=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_any_bytes_get_a_json_answer_never_a_500(data: bytes) -> None:
    response = post(client(), data)
    assert response.status_code in (400, 503), response.text
    assert response.json()["error"]["code"]


# Cross-site requests, DNS rebinding, /docs ---------------------------------------------------------------------

def test_a_keyless_server_reads_only_json_bodies() -> None:
    body = json.dumps(GOOD).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        assert_error(post(client(), body, content_type), 415, "unsupported_media_type")
    assert_error(post(client(), body, "Application/JSON; charset=utf-8"), 503, "server_busy")
    # With a key the browser must ask first anyway (the Authorization header): any content type is read.
    keyed = client(api_key="k3y")
    assert_error(post(keyed, body, "text/plain", authorization="Bearer k3y"), 503, "server_busy")
    assert_error(post(keyed, body, "text/plain"), 401, "invalid_api_key")


def test_only_loopback_names_reach_a_server_limited_to_them() -> None:
    api = client(allowed_hosts=LOOPBACK_HOSTS)
    for host in ("evil.example", "evil.example:8000", "192.168.1.5", "localhost.evil.example"):
        error = assert_error(api.get("/v1/voices", headers={"host": host}), 403, "host_not_allowed")
        assert "localhost" in error["message"]
    for host in ("localhost", "localhost:8000", "127.0.0.1:80", "[::1]:8000", "LOCALHOST"):
        assert api.get("/v1/voices", headers={"host": host}).status_code == 200, host
    assert client().get("/v1/voices", headers={"host": "any.example"}).status_code == 200  # not limited


def test_the_host_guard_closes_a_websocket_from_another_name() -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    app = HostGuard(Starlette(routes=[WebSocketRoute("/ws", echo)]), allowed_hosts=LOOPBACK_HOSTS)
    with pytest.raises(WebSocketDisconnect) as refused:
        with TestClient(app).websocket_connect("ws://evil.example/ws"):
            pass
    assert refused.value.code == 1008
    with TestClient(app).websocket_connect("ws://localhost:7860/ws") as websocket:
        assert websocket.receive_text() == "hello"


def test_docs_are_closed_when_a_key_is_set() -> None:
    assert client().get("/docs").status_code == 200 and client().get("/openapi.json").status_code == 200
    keyed = client(api_key="k3y")
    assert keyed.get("/docs").status_code == 404 and keyed.get("/openapi.json").status_code == 404


# Stalled connections ------------------------------------------------------------------------------------------

class Listener:
    """:func:`make_server` with short timeouts on a bound 127.0.0.1 socket, in a thread (a context manager)."""

    def __init__(self, **options: Any) -> None:
        self.sock = bind_socket("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.server = make_server(create_api(BusyEngine(), api_key="", **options), log_level="warning",
                                  head_timeout_s=0.5)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Listener:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


def read_until_closed(conn: socket.socket, limit_s: float = 10.0) -> bytes:
    conn.settimeout(limit_s)
    data = b""
    while chunk := conn.recv(4096):
        data += chunk
    return data


def test_a_request_head_that_never_ends_is_cut_off() -> None:
    with Listener() as listener:
        silent = socket.create_connection(("127.0.0.1", listener.port))
        trickle = socket.create_connection(("127.0.0.1", listener.port))
        trickle.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")  # never the blank line
        for conn in (silent, trickle):
            with conn:
                assert read_until_closed(conn).startswith(b"HTTP/1.1 408")
        with httpx.Client() as http:  # a prompt client is served as before
            assert http.get(f"http://127.0.0.1:{listener.port}/health").status_code == 200


def test_a_request_body_that_never_ends_is_a_408() -> None:
    with Listener(body_timeout_s=0.5) as listener, socket.create_connection(("127.0.0.1", listener.port)) as conn:
        conn.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\n"
                     b"content-length: 100\r\n\r\n{\"input\": ")
        answer = read_until_closed(conn)
        assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer


# vallex serve: checks before the model loads --------------------------------------------------------------

def test_a_client_that_closes_mid_body_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """Driven through ASGI directly: the client sends part of its body, then disconnects."""
    events = [{"type": "http.request", "body": b'{"model": "tts-1", "inp', "more_body": True}]
    sent: list[dict] = []

    async def receive() -> dict:
        return events.pop(0) if events else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/audio/speech", "raw_path": b"/v1/audio/speech", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"content-length", b"100")], "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 8000)}
    with caplog.at_level(logging.DEBUG):
        asyncio.run(create_api(BusyEngine(), api_key="")(scope, receive, send))  # raises nothing
    assert sent[0]["status"] == 400
    records = [record for record in caplog.records if "closed the connection" in record.getMessage()]
    assert len(records) == 1 and records[0].exc_info is None and "127.0.0.1:5" in records[0].getMessage()


def test_serve_reports_a_busy_port_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--weights-dir", str(tmp_path / "empty"), "--presets-dir", str(tmp_path),
                     "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and f"Port {port} on 127.0.0.1 is already in use" in err and "--port" in err
    assert "model file" not in err and len(err.strip().splitlines()) == 1


def test_serve_refuses_a_presets_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "presets").write_text("not a folder")
    code = main(["serve", "--weights-dir", str(tmp_path / "empty"), "--presets-dir", str(tmp_path / "presets"),
                 "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "is a file, not a folder" in err and "model file" not in err


# The CLI's option checks ----------------------------------------------------------------------------------

def synthesize(tmp_path: Path, *extra: str) -> list[str]:
    return ["synthesize", "--weights-dir", str(tmp_path / "no-weights"), "--quiet", *extra]


@pytest.mark.parametrize("extra, message", [
    (["--device", "tpu"], "Unknown device 'tpu'"),
    (["--device", "cuda:banana"], "Unknown device"),
    (["--seed=18446744073709551616"], "--seed must be a whole number from 0"),
    (["--seed=-1"], "--seed must be a whole number from 0"),
    (["--temperature=nan"], "--temperature must be a number in [0.01, 10]"),
    (["--temperature=1e-40"], "--temperature must be a number in [0.01, 10]"),
    (["--top-p=nan"], "--top-p must be a number in (0, 1]"),
    (["--top-k=0"], "--top-k must be a positive whole number"),
    (["--best-of=17"], "--best-of must be a whole number from 1 to 16"),
    (["--threads=0"], "--threads must be a whole number from 1 to 1024"),
    (["--threads=100000"], "--threads must be a whole number from 1 to 1024"),
])
def test_synthesize_options_are_checked_before_the_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                              extra: list[str], message: str) -> None:
    code = main(synthesize(tmp_path, "--text", "Hi.", "-o", str(tmp_path / "o.wav"), *extra))
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert "model file" not in err and "Traceback" not in err


def test_cuda_without_cuda_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for device in ("cuda", "cuda:1", "mps"):
        code = main(synthesize(tmp_path, "--text", "Hi.", "-o", str(tmp_path / "o.wav"), "--device", device))
        err = capsys.readouterr().err
        assert code == 2 and f"Device {device!r} is not available" in err and "model file" not in err


def test_select_device_refuses_what_is_not_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert select_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="there are 1 CUDA GPU"):
        select_device("cuda:3")
    with pytest.raises(ValueError, match="Unsupported device 'meta'"):
        select_device("meta")


def test_text_file_that_is_a_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(synthesize(tmp_path, "--text-file", str(tmp_path), "-o", str(tmp_path / "o.wav")))
    err = capsys.readouterr().err
    assert code == 2 and "--text-file" in err and "is a folder" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["/dev/zero", "/dev/urandom", "fifo", "too large"])
def test_text_and_config_files_are_regular_files_of_bounded_size(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 kind: str) -> None:
    """Devices and pipes would be read until memory runs out, or never return: each is refused before a read."""
    path = Path(kind)
    if kind == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    elif kind == "too large":
        path = tmp_path / "big.txt"
        path.write_bytes(b"a" * (MAX_SMALL_FILE_BYTES + 1))
    code = main(synthesize(tmp_path, "--text-file", str(path), "-o", str(tmp_path / "o.wav")))
    err = capsys.readouterr().err
    assert code == 2 and f"--text-file {path}" in err and len(err.strip().splitlines()) == 1
    assert main(["convert-checkpoint", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--config", str(path)]) == 2
    assert str(path) in capsys.readouterr().err
    with pytest.raises(ValueError, match="regular file|larger than"):
        TrainConfig.from_yaml(path)


def test_synthesize_will_not_overwrite_its_own_prompt(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    recording = tmp_path / "voice.wav"
    recording.write_bytes(b"RIFF-the user's only recording")
    (tmp_path / "sub").mkdir()
    code = main(synthesize(tmp_path, "--text", "Hi.", "--prompt-audio", str(recording), "--prompt-text", "Hi.",
                           "-o", str(tmp_path / "sub" / ".." / "voice.wav")))
    err = capsys.readouterr().err
    assert code == 2 and "is the --prompt-audio file" in err
    assert recording.read_bytes() == b"RIFF-the user's only recording"


def test_translate_will_not_overwrite_its_own_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    recording = tmp_path / "P.wav"
    recording.write_bytes(b"RIFF-the user's only recording")
    code = main(["translate", str(recording), "--to", "en", "--weights-dir", str(tmp_path / "none"),
                 "-o", str(recording)])
    err = capsys.readouterr().err
    assert code == 2 and "is the AUDIO file" in err and len(err.strip().splitlines()) == 1
    assert recording.read_bytes() == b"RIFF-the user's only recording"


def test_make_random_weights_will_not_replace_real_weights_without_force(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    real = tmp_path / "vallex-checkpoint.pt"
    real.write_bytes(b"the real weights")
    assert main(["make-random-weights", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "vallex-checkpoint.pt" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert real.read_bytes() == b"the real weights"
    noise = tmp_path / "noise"
    assert main(["make-random-weights", str(noise)]) == 0
    assert main(["make-random-weights", str(noise), "--seed", "1"]) == 0  # our own random folder: rewritten freely
    assert main(["make-random-weights", str(tmp_path), "--force"]) == 0
    assert real.read_bytes() != b"the real weights"


def test_make_prompt_output_is_checked_before_encoding(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "file").write_text("x")
    code = main(["make-prompt", str(tmp_path / "voice.wav"), "--transcript", "Hi.", "--weights-dir",
                 str(tmp_path / "no-weights"), "-o", str(tmp_path / "file" / "voice.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "is a file, not a folder" in err


def test_a_prompt_saved_into_a_missing_folder_creates_it(tmp_path: Path) -> None:
    prompt = VoicePrompt(codes=torch.zeros(1, 75, 8, dtype=torch.long), text_ids=[1, 2, 3], language="en")
    target = tmp_path / "new" / "deeper" / "voice.npz"
    assert prompt.save_npz(target) == target
    assert VoicePrompt.load_npz(target) == prompt


CLI_FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1.0, 10.0, 1e-9])
CLI_INTS = st.integers(min_value=-(2**70), max_value=2**70) | st.integers(min_value=-2, max_value=20)


def valid(temperature: float, top_k: int | None, top_p: float | None, best_of: int, seed: int | None) -> bool:
    """What the checks should accept (written out independently of them)."""
    return (0.01 <= temperature <= 10 and (top_k is None or top_k >= 1) and (top_p is None or 0 < top_p <= 1)
            and 1 <= best_of <= 16 and (seed is None or 0 <= seed <= MAX_SEED))


@BOUNDED
@given(temperature=CLI_FLOATS, top_k=st.none() | CLI_INTS, top_p=st.none() | CLI_FLOATS, best_of=CLI_INTS,
       seed=st.none() | CLI_INTS, device=st.sampled_from(["cpu", "tpu", "cuda:x", "", "CPU", "gpu"]))
def test_any_option_values_give_one_line_before_the_model_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture, temperature: float, top_k: int | None, top_p: float | None,
        best_of: int, seed: int | None, device: str) -> None:
    options = [f"--temperature={temperature!r}", f"--best-of={best_of}", f"--device={device}"]
    options += [f"--top-k={top_k}"] * (top_k is not None) + [f"--top-p={top_p!r}"] * (top_p is not None)
    options += [f"--seed={seed}"] * (seed is not None)
    code = main(synthesize(tmp_path, "--text", "Hi.", "-o", str(tmp_path / "o.wav"), *options))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vallex synthesize: error: ") and "Traceback" not in err
    reached_the_weights = "model file" in err  # (that message lists the missing files, one per line)
    assert reached_the_weights == (valid(temperature, top_k, top_p, best_of, seed) and device == "cpu"), err
    if not reached_the_weights:
        assert len(err.strip().splitlines()) == 1


# Library and app messages ---------------------------------------------------------------------------------

def test_a_tiny_temperature_is_a_400_naming_it_never_a_500() -> None:
    for temperature in (1e-40, 5e-324, 0.0099):
        response = post(client(), json.dumps({**GOOD, "temperature": temperature}).encode())
        assert_error(response, 400, "invalid_value", "temperature")


def test_non_finite_logits_name_the_dtype_they_were_computed_in() -> None:
    from vallex.inference.sampling import NonFiniteLogits

    message = str(NonFiniteLogits.on("cpu", "the AR", dtype=torch.float32))  # an int8 model's logits
    assert "float32" in message and "float16" not in message
    assert "float16" in str(NonFiniteLogits.on("cpu", "the AR", dtype=torch.float16))


def test_sampling_refuses_nan_and_booleans() -> None:
    for bad in ({"top_p": math.nan}, {"temperature": math.nan}, {"top_k": True}, {"best_of": 2.0},
                {"top_p": "0.5"}, {"ras": 1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Sampling(**bad)
    for seed in (True, 2**63, -1, 1.0):
        with pytest.raises(ValueError, match="seed must be a whole number from 0"):  # the first check of a plan
            plan_request(None, SynthesisRequest("Hi.", seed=seed))  # type: ignore[arg-type]
    sampling = Sampling(temperature=np.float32(0.7), top_k=np.int64(5), top_p=0.9, best_of=2, ras=np.bool_(True))
    assert type(sampling.top_k) is int and type(sampling.ras) is bool  # numpy scalars become Python values


def test_the_app_refuses_top_p_nan_instead_of_turning_it_off() -> None:
    def controls(top_k, top_p):
        return sampling_from_controls([1, 1.0, top_k, top_p, 1, False, False, False, 3, 0.25])

    with pytest.raises(ValueError, match="Top-p must be a number"):
        controls(0, math.nan)
    with pytest.raises(ValueError, match="Top-p must be a number"):
        controls(0, 1.5)
    with pytest.raises(ValueError, match="Top-k must be a whole number"):
        controls(math.inf, 1.0)
    assert controls(0, 1.0)[1].top_p is None


RUN_ON = ("word " * 260).strip()  # 1299 characters, no sentence end


def test_long_unpunctuated_text_asks_the_user_for_punctuation(tiny_tts) -> None:
    with pytest.raises(ValueError) as caught:
        tiny_tts.synthesize(RUN_ON, long_text="fixed-prompt")
    message = str(caught.value)
    assert "without a sentence end" in message and "Add sentence punctuation" in message
    assert "split_sentences" not in message and "vallex." not in message
    with pytest.raises(ValueError, match="Use long-text mode"):
        tiny_tts.synthesize(RUN_ON)


def test_long_unpunctuated_input_over_http_is_a_400_naming_input(tiny_tts) -> None:
    from vallex.serving import SpeechEngine

    engine = SpeechEngine(tiny_tts, max_batch=1, max_queue=1)
    try:
        with TestClient(create_api(engine, api_key="")) as api:
            error = assert_error(post(api, json.dumps({**GOOD, "input": RUN_ON, "voice": "none"}).encode()),
                                 400, "invalid_value", "input")
    finally:
        engine.close()
    assert "Add sentence punctuation" in error["message"] and "split_sentences" not in error["message"]


def test_a_huge_prompt_transcript_has_its_own_message() -> None:
    with pytest.raises(ValueError, match="prompt's transcript is 1299 characters") as caught:
        make_prompt(io.BytesIO(b"never read"), RUN_ON, codec=None)
    assert "recording" in str(caught.value) and len(RUN_ON) > MAX_INPUT_CHARS


def write_prompt(path: Path, frames: int, text_ids: list[int]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, audio_tokens=np.zeros((1, frames, 8), np.int64), text_tokens=np.array([text_ids], np.int64),
             lang_code=np.array(2))
    path.write_bytes(buffer.getvalue())


def test_damaged_and_empty_presets_are_named(tmp_path: Path) -> None:
    library = PresetLibrary(tmp_path)
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really")
    (tmp_path / "nothing.npz").write_bytes(b"")
    write_prompt(tmp_path / "silent.npz", 0, [1, 2])
    write_prompt(tmp_path / "wordless.npz", 75, [])
    write_prompt(tmp_path / "fine.npz", 75, tokenize("Hi.", "en").ids)
    for name, why in (("broken", "not an .npz"), ("nothing", "empty (0 bytes)"), ("silent", "empty prompt"),
                      ("wordless", "empty prompt")):
        with pytest.raises(ValueError, match=f"voice preset '{name}' is damaged") as caught:
            library.load(name)
        assert why in str(caught.value) and "make-prompt" in str(caught.value)
    assert library.load("fine").num_frames == 75


def test_a_damaged_preset_is_blamed_on_the_voice_over_http(tiny_tts, tmp_path: Path) -> None:
    from vallex.serving import SpeechEngine
    from vallex.serving.http import preset_voices

    library = PresetLibrary(tmp_path)
    (tmp_path / "broken.npz").write_bytes(b"garbage")
    engine = SpeechEngine(with_voices(tiny_tts, library.load, library.names), max_batch=1, max_queue=1)
    try:
        with TestClient(create_api(engine, api_key="", voices=lambda: preset_voices(library),
                                   voice_names=library.names)) as api:
            error = assert_error(post(api, json.dumps({**GOOD, "voice": "broken"}).encode()), 400,
                                 "invalid_value", "voice")
    finally:
        engine.close()
    assert "'broken' is damaged" in error["message"]


@pytest.mark.parametrize("server_name, key, limited", [
    (None, "", True), ("127.0.0.1", "", True), ("0.0.0.0", "", False), (None, "k3y", False)])
def test_the_apps_api_limits_hosts_only_when_keyless_on_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 server_name: str | None, key: str,
                                                                 limited: bool) -> None:
    from fastapi import FastAPI

    from demo.config import AppConfig
    from demo.engine import Engine
    from demo.http_api import api_router

    if server_name is None:
        monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    else:
        monkeypatch.setenv("GRADIO_SERVER_NAME", server_name)
    (tmp_path / "weights").mkdir()
    engine = Engine(AppConfig(weights_dir=tmp_path / "weights", presets_dir=tmp_path / "presets", api_key=key))
    app = FastAPI()
    app.include_router(api_router(engine, BusyEngine()))
    headers = {"host": "rebound.example"} | ({"authorization": f"Bearer {key}"} if key else {})
    status = TestClient(app).get("/v1/models", headers=headers).status_code
    assert status == (403 if limited else 200)


# A model configuration is untrusted input: it comes with downloaded files ----------------------------------------

_SIZES = sorted(SIZE_BOUNDS)
_NOT_A_SIZE = (st.booleans() | st.floats(allow_nan=True) | st.text(max_size=20) | st.none()
               | st.lists(st.integers(), max_size=3) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
               | st.integers(max_value=0) | st.integers(min_value=(1 << 16) + 1))


@BOUNDED
@given(name=st.sampled_from(_SIZES), value=_NOT_A_SIZE)
def test_a_size_of_the_wrong_type_or_beyond_its_bound_is_one_line_naming_it(name: str, value: Any) -> None:
    """``true`` is an int to Python and was taken for 1; floats, strings, lists and sizes beyond every real model
    (which would build without end) are refused by name, in one short line."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= SIZE_BOUNDS[name]:
        return
    with pytest.raises(ValueError, match=f"VallexConfig.{name} must be a whole number from 1 to") as caught:
        VallexConfig.from_dict({**VallexConfig.tiny().to_dict(), name: value})
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


@BOUNDED
@given(d_model=st.sampled_from([8, 16, 24, 32]), nhead=st.sampled_from([1, 2, 4, 8]),
       num_layers=st.integers(1, 3), num_quantizers=st.integers(2, 9), text_vocab_size=st.integers(1, 90),
       audio_vocab_size=st.integers(1, 40), num_languages=st.integers(1, 5), ff_multiplier=st.integers(1, 5))
def test_the_weight_count_is_the_models_matrices_known_before_building(**sizes: int) -> None:
    from vallex.model import VallexModel

    config = VallexConfig(**sizes)
    with torch.device("meta"):
        model = VallexModel(config)
    assert config.weight_count == sum(p.numel() for p in model.parameters() if p.dim() == 2)


def test_the_size_bounds_admit_every_real_model_and_refuse_a_runaway_one() -> None:
    assert VallexConfig.public().weight_count == 370_164_736  # of its 370.5 M parameters, the rest are biases
    VallexConfig(d_model=2048, nhead=32, num_layers=24)  # twice the public width and depth: 2.9 billion weights
    with pytest.raises(ValueError, match="billion weights, more than the 4 billion allowed"):
        VallexConfig(d_model=16384, nhead=16, num_layers=256)  # each size within its bound, together 10^12
    with pytest.raises(ValueError, match="Unsupported model option norm_first=1"):
        VallexConfig.from_dict({"norm_first": 1})  # 1 == True, but not the choice the checkpoint records


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe{}", "is not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'["d_model", 64]', "must be a JSON object"),
    (b'{"d_model": 1e3}', "d_model must be a whole number"),
    (b'{"languages": "en"}', "languages must be a list"),
    (b'{"num_languages": 1, "languages": [["en"]]}', "languages"),
])
def test_a_config_file_error_names_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "vallex-config.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as caught:
        VallexConfig.from_json(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


#: Runs CLI commands in a process whose heap is capped at 1 GiB (they need about 260 MiB; RLIMIT_DATA, not
#: RLIMIT_AS, so that torch's large shared libraries do not count): a configuration that builds without end fails
#: the cap (a MemoryError traceback) or the timeout, one refused before building prints its line. Prints
#: [exit code, stderr] for each command.
_CAPPED_CLI = """
import contextlib, io, json, resource, sys
resource.setrlimit(resource.RLIMIT_DATA, (1 << 30, 1 << 30))
from vallex.cli import main
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    print(json.dumps([code, err.getvalue()]), flush=True)
"""


def test_a_runaway_configuration_is_refused_before_memory_is_spent(tmp_path: Path, tiny_weights: Path) -> None:
    """``"num_layers": 2000000`` in a safetensors file's metadata, a ``vallex-config.json`` beside a checkpoint or
    ``--config`` grew memory at 40 MB/s without end; now every command refuses it in one line naming the file."""
    import subprocess
    import sys

    from vallex.model import VallexModel
    from vallex.weights.checkpoint import save_checkpoint

    runaway = {**VallexConfig.tiny().to_dict(), "num_layers": 2_000_000}
    model = VallexModel(VallexConfig.tiny())
    stored = save_checkpoint(model, tmp_path / "stored" / "model.safetensors")
    _rewrite_metadata(stored, {"vallex_config": json.dumps(runaway)})
    beside = save_checkpoint(model, tmp_path / "beside" / "model.pt")
    (tmp_path / "beside" / "vallex-config.json").write_text(json.dumps(runaway))
    config = tmp_path / "runaway.json"
    config.write_text(json.dumps(runaway))
    plain = save_checkpoint(model, tmp_path / "plain" / "model.pt")
    out = tmp_path / "out.wav"
    cases = [
        (["convert-checkpoint", str(stored), str(tmp_path / "a.pt")], stored),
        (["convert-checkpoint", str(beside), str(tmp_path / "b.safetensors")], beside.with_name("vallex-config.json")),
        (["convert-checkpoint", str(plain), str(tmp_path / "c.safetensors"), "--config", str(config)], config),
        (["synthesize", "--checkpoint", str(stored), "--text", "Hi.", "-o", str(out), "--quiet"], stored),
        (["synthesize", "--checkpoint", str(beside), "--text", "Hi.", "-o", str(out), "--quiet"],
         beside.with_name("vallex-config.json")),
    ]
    serve = ["serve", "--weights-dir", str(tiny_weights), "--port", "0", "--log-level", "error", "--checkpoint"]
    cases += [([*serve, str(stored)], stored), ([*serve, str(beside)], beside.with_name("vallex-config.json"))]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "VALLEX_WEIGHTS_DIR": str(tmp_path)}
    command = [sys.executable, "-W", "ignore", "-c", _CAPPED_CLI, json.dumps([argv for argv, _ in cases])]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(cases), done.stderr[-2000:]
    for (argv, named), (code, err) in zip(cases, results):
        assert code == 2 and err.count("\n") == 1, (argv, err)
        assert str(named) in err and "num_layers must be a whole number from 1 to 256" in err, (argv, err)


def _rewrite_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace a safetensors file's ``__metadata__``, keeping its tensors' bytes."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    header["__metadata__"] = metadata
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data[8 + length:])
