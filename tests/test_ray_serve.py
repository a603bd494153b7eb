"""Scale-out with Ray Serve: a local Ray instance, one replica on tiny random weights, driven through Serve's
HTTP proxy with the official ``openai`` client; plus the settings, the builder and ``replicas_needed``.

Ray must be installed (requirements-dev.txt pins ``ray[serve]``): a missing Ray fails here, never skips. The Ray
instance listens on 127.0.0.1 only, writes its session (logs, sockets) under the test's temporary folder and
uses a random cluster token from the environment (nothing is written to ~/.ray). Nothing here sleeps to measure
time: waits poll for a state, with a deadline.
"""
from __future__ import annotations

import io
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import ray
import soundfile as sf
import torch
from fastapi.testclient import TestClient
from ray import serve
from ray._private import ray_constants

from vallex.prompts import PresetLibrary, VoicePrompt
from vallex.serving.http import create_api
from vallex.serving.ray_serve import (
    Autoscaling,
    ReplicaSettings,
    app_builder,
    build_app,
    deployment,
    init_local_ray,
    replicas_needed,
    serve_http,
)
from vallex.text import tokenize

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
SR = 24000
API_KEY = "ray-test-key"
#: Several sentences: the request runs for a while after its first chunk is out.
STREAM_TEXT = " ".join(f"This is sentence number {n}, and it goes on for a while." for n in range(1, 5))

pytestmark = pytest.mark.timeout(600)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Poll ``condition`` until it holds (a synchronisation, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def settings(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> ReplicaSettings:
    """One preset ("alice", 1 s of random codes) and the tiny random weights; an API key is required."""
    library = PresetLibrary(tmp_path_factory.mktemp("ray-presets"))
    codes = torch.randint(0, 1024, (1, 75, 8), generator=torch.Generator().manual_seed(0))
    library.save("alice", VoicePrompt(codes=codes, text_ids=tokenize("Hi.", "en").ids, language="en"))
    return ReplicaSettings(weights_dir=str(tiny_weights), presets_dir=str(library.directory), default_voice="alice",
                           device="cpu", num_threads=1, max_batch=2, max_queue=4, api_key=API_KEY)


@pytest.fixture(scope="module")
def url(settings: ReplicaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve's HTTP proxy on a free port of 127.0.0.1 in front of ONE replica, on a local Ray instance."""
    session = tmp_path_factory.mktemp("ray")  # short: Ray's Unix socket paths live under it
    with pytest.MonkeyPatch.context() as patch:
        # A cluster token of its own, from the environment: Ray writes none to ~/.ray/auth_token. (Ray turns
        # token authentication on for a new local instance and sets RAY_AUTH_MODE: unset again afterwards.)
        patch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))
        patch.delenv("RAY_AUTH_MODE", raising=False)
        # Ray's workers run this checkout's vallex, whatever else is installed.
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        # init_local_ray changes these two: put them back afterwards.
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1"))
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)
        init_local_ray(num_cpus=2, temp_dir=session, log_to_driver=False)
        try:
            assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
            app = build_app(settings, num_replicas=1, num_cpus=1)
            url = serve_http(app, host="127.0.0.1", port=free_port())
            wait_until(lambda: _health(url) is not None, "Serve's proxy to answer /health")
            yield url
        finally:
            serve.shutdown()
            ray.shutdown()


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, timeout=120)


def _health(url: str) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"{url}/health", timeout=10)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


def decode(data: bytes, fmt: str) -> np.ndarray:
    """Samples of a response body; checks 24 kHz mono, > 0 s, finite."""
    if fmt == "pcm":
        samples = np.frombuffer(data, "<i2").astype(np.float32) / 32767
    else:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32")
        assert rate == SR and samples.ndim == 1
    assert len(samples) > 0 and np.isfinite(samples).all()
    return samples


# Through Serve's HTTP proxy ---------------------------------------------------------------------------------

def test_replicas_run_this_checkout(url: str) -> None:
    @ray.remote(num_cpus=0)
    def where() -> str:
        import vallex

        return vallex.__file__

    assert Path(ray.get(where.remote(), timeout=120)).resolve().is_relative_to(REPO)


def test_health_answers_through_the_proxy(url: str) -> None:
    health = _health(url)
    assert health is not None and health["status"] == "ok" and health["model_loaded"] is True
    assert health["max_batch"] == 2 and health["max_queue"] == 4 and health["auth_required"] is True


def test_wav_answer_decodes_at_24_khz(client: openai.OpenAI) -> None:
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there.", response_format="wav",
                                       extra_body={"seed": 1})
    assert audio.response.headers["x-vallex-voice"] == "alice" and audio.response.headers["x-vallex-seed"] == "1"
    assert audio.content[4:8] == b"\xff\xff\xff\xff"  # streamed: sizes unknown when the header went out
    streamed = decode(audio.content, "wav")
    whole = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there.", response_format="wav",
                                       extra_body={"seed": 1, "stream": False})
    assert int(whole.response.headers["content-length"]) == len(whole.content)
    assert np.array_equal(decode(whole.content, "wav"), streamed)  # same seed, same samples


def test_streamed_answer_arrives_in_pieces_while_it_is_made(client: openai.OpenAI, url: str) -> None:
    completed = _health(url)["engine"]["completed"]
    with client.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", voice="alice", input=STREAM_TEXT, response_format="pcm",
            extra_body={"seed": 2, "long_text": "fixed-prompt"}) as response:
        assert response.headers["transfer-encoding"] == "chunked" and "content-length" not in response.headers
        assert response.headers["content-type"] == "audio/pcm"
        pieces = response.iter_bytes()
        first = next(piece for piece in pieces if piece)
        during = _health(url)["engine"]
        rest = [piece for piece in pieces if piece]
    # The first bytes came through the proxy while the replica was still making the rest of the request.
    assert during["completed"] == completed and during["running"] == 1
    assert rest and _health(url)["engine"]["completed"] == completed + 1
    decode(first + b"".join(rest), "pcm")


BAD_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("speed out of range", {"json": {"model": "tts-1", "input": "Hi.", "speed": 9}}),
    ("unknown field", {"json": {"model": "tts-1", "input": "Hi.", "colour": "blue"}}),
    ("unknown voice", {"json": {"model": "tts-1", "input": "Hi.", "voice": "nobody"}}),
    ("missing input", {"json": {"model": "tts-1"}}),
    ("not JSON", {"content": b"not json", "headers": {"content-type": "application/json"}}),
    ("no key", {"json": {"model": "tts-1", "input": "Hi."}, "key": None}),
    ("wrong key", {"json": {"model": "tts-1", "input": "Hi."}, "key": "nope"}),
]


@pytest.mark.parametrize("case", [case for _, case in BAD_REQUESTS], ids=[name for name, _ in BAD_REQUESTS])
def test_errors_are_those_of_vallex_serve(url: str, settings: ReplicaSettings, case: dict[str, Any]) -> None:
    """Each bad request gets the status, JSON body and headers that ``vallex serve``'s app gives it."""
    case = dict(case)
    key = case.pop("key", API_KEY)
    headers = {**case.pop("headers", {}), **({"authorization": f"Bearer {key}"} if key else {})}
    served = httpx.post(f"{url}/v1/audio/speech", headers=headers, timeout=60, **case)
    reference = TestClient(create_api(None, **settings.api_options(settings.library())))
    expected = reference.post("/v1/audio/speech", headers=headers, **case)
    assert served.status_code == expected.status_code and served.status_code in (400, 401)
    assert served.json() == expected.json() and served.json()["error"]["type"] == "invalid_request_error"
    for header in ("content-type", "www-authenticate"):
        assert served.headers.get(header) == expected.headers.get(header), header


def test_unknown_route_is_an_openai_shaped_404(url: str) -> None:
    response = httpx.get(f"{url}/v2/nothing", timeout=30)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


# Settings, builder, sizing (no Ray instance needed) ---------------------------------------------------------

def test_the_deployment_sizes_its_replicas_from_the_engine() -> None:
    settings = ReplicaSettings(weights_dir=Path("/models"), max_batch=8, max_queue=24, num_threads=4)
    fixed = deployment(settings, num_replicas=3)
    assert fixed.num_replicas == 3 and fixed.ray_actor_options == {"num_cpus": 4.0}
    assert fixed.max_ongoing_requests == 32 and fixed.max_queued_requests == 24
    assert settings.weights_dir == "/models"  # plain strings travel to the replicas
    scaled = deployment(settings, autoscaling=Autoscaling(max_replicas=6), num_gpus=0.5, max_queued_requests=-1)
    assert scaled.ray_actor_options == {"num_cpus": 4.0, "num_gpus": 0.5} and scaled.max_queued_requests == -1
    with pytest.raises(ValueError, match="not both"):
        deployment(settings, num_replicas=2, autoscaling=Autoscaling())


def test_a_replica_on_cuda_must_reserve_a_gpu() -> None:
    # Ray shows no GPU to a replica that reserved none: refused here, not in every replica after Ray started.
    for device in ("cuda", "CUDA:0", "cuda:1"):
        with pytest.raises(ValueError, match="device cuda needs num_gpus .*Set num_gpus"):
            deployment(ReplicaSettings(device=device))
        with pytest.raises(ValueError, match="device cuda needs num_gpus"):  # serve run ...:app_builder device=cuda
            app_builder({"weights_dir": "/models", "device": device})
    assert deployment(ReplicaSettings(device="cuda"), num_gpus=1).ray_actor_options["num_gpus"] == 1
    assert deployment(ReplicaSettings(device="cuda:0"), num_gpus=0.5).ray_actor_options["num_gpus"] == 0.5
    assert deployment(ReplicaSettings(device="cuda:1"), num_gpus=2).ray_actor_options["num_gpus"] == 2
    assert deployment(ReplicaSettings(), num_gpus=1).ray_actor_options["num_gpus"] == 1  # the device follows
    with pytest.raises(ValueError, match="sees only the GPUs it reserved, numbered from 0"):
        deployment(ReplicaSettings(device="cuda:1"), num_gpus=1)
    for device in ("cpu", "mps"):  # and the reverse: GPUs reserved for nothing
        with pytest.raises(ValueError, match="reserve GPUs they never use"):
            deployment(ReplicaSettings(device=device), num_gpus=1)


def test_autoscaling_targets_a_full_batch_per_replica() -> None:
    config = Autoscaling(min_replicas=1, max_replicas=4, upscale_delay_s=10).config(max_batch=8)
    assert config == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8.0,
                      "upscale_delay_s": 10, "downscale_delay_s": 600.0, "look_back_period_s": 30.0}
    assert Autoscaling(target_ongoing_requests=3, initial_replicas=2).config(8)["target_ongoing_requests"] == 3
    for bad in ({"min_replicas": 5, "max_replicas": 2}, {"max_replicas": 0}, {"target_ongoing_requests": 0},
                {"initial_replicas": 9}, {"downscale_delay_s": -1}):
        with pytest.raises(ValueError):
            Autoscaling(**bad)


def test_app_builder_reads_serve_run_arguments() -> None:
    app = app_builder({"weights_dir": "/models", "max_batch": "4", "max_queue": "8", "num_cpus": "2",
                       "min_replicas": "1", "max_replicas": "3"})
    assert type(app).__name__ == "Application"
    # What `serve run vallex.serving.ray_serve:app_builder key=value ...` and `serve deploy` do with it:
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    built = call_user_app_builder_with_args_if_necessary(app_builder, {"max_batch": "2", "num_replicas": "1"})
    assert type(built).__name__ == "Application"
    with pytest.raises(ValueError, match="Unknown setting"):
        app_builder({"weigths_dir": "/models"})
    with pytest.raises(ValueError, match="max_batch must be an integer"):
        app_builder({"max_batch": "many"})


def test_settings_are_checked_before_loading(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        ReplicaSettings(max_batch=0)
    with pytest.raises(ValueError, match="not a preset"):
        ReplicaSettings(presets_dir=str(tmp_path), default_voice="nobody").check()
    with pytest.raises(ValueError, match="printable ASCII"):
        ReplicaSettings(presets_dir=str(tmp_path), api_key="two words").check()
    with pytest.raises(ValueError, match="port"):
        serve_http(build_app(ReplicaSettings()), port=0)
    with pytest.raises(ValueError, match="max_request_work must be >= 1"):
        ReplicaSettings(max_request_work=0)
    with pytest.raises(ValueError, match="stream_timeout_s must be > 0"):
        ReplicaSettings.from_mapping({"stream_timeout_s": "0"})
    given = ReplicaSettings.from_mapping({"max_request_work": "64", "stream_timeout_s": "5"})  # Serve's key=value
    assert (given.max_request_work, given.stream_timeout_s) == (64, 5.0)
    assert given.api_options(PresetLibrary(tmp_path))["write_timeout_s"] == 5.0


def test_replicas_needed() -> None:
    # 2 requests/s of 5 s = 10 s of audio per second; 6 s/s per replica at 75 % load = 4.5 s/s -> 3 replicas.
    assert replicas_needed(2, 6, 5) == 3
    assert replicas_needed(2, 6, 5, headroom=0) == 2  # 10 / 6 = 1.67
    assert replicas_needed(1.2, 4, 5, headroom=0.25) == 2  # exactly 6 / 3 = 2: no spurious extra replica
    assert replicas_needed(0, 6, 5) == 1 and replicas_needed(0, 6, 5, min_replicas=0) == 0
    for bad in ((-1, 6, 5), (1, 0, 5), (1, 6, 0)):
        with pytest.raises(ValueError):
            replicas_needed(*bad)
    with pytest.raises(ValueError, match="headroom"):
        replicas_needed(1, 6, 5, headroom=1)


def test_a_failed_deployment_says_why() -> None:
    """Serve's own exception says only "failed"; the replica's error, the end of its traceback, is the message."""
    from types import SimpleNamespace

    from vallex.serving.ray_serve import _replica_error

    traceback = ('Traceback (most recent call last):\n  File "ray_serve.py", line 149, in __init__\n'
                 '    tts = VallEX.from_pretrained(...)\nvallex.weights.WeightsNotFoundError: 4 model file(s) not '
                 'found in the weights folder /models:\n  - VALL-E X checkpoint (1.48 GB): vallex-checkpoint.pt')
    status = SimpleNamespace(applications={"vallex": SimpleNamespace(
        message="Failed to update the deployments ['VallexSpeech'].",
        deployments={"VallexSpeech": SimpleNamespace(message=traceback)})})
    serve = SimpleNamespace(status=lambda: status)
    assert _replica_error(serve, "vallex") == ("vallex.weights.WeightsNotFoundError: 4 model file(s) not found in "
                                               "the weights folder /models:\n  - VALL-E X checkpoint (1.48 GB): "
                                               "vallex-checkpoint.pt")
    assert _replica_error(serve, "other") is None
