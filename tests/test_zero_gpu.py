"""The app on a ZeroGPU Space: how it knows it is there (as the real ``spaces`` package does), how a synthesis is cut
into GPU calls within the limit, and the in-process path of those calls (prompts on the CPU side, synthesis only
inside GPU calls, pieces numbered across calls).

The real ``spaces`` package in its ZeroGPU mode needs a torch build with CUDA bindings, so the whole app under it is
checked by ``make zerogpu-check`` (bench/zero_gpu_check.py), whose committed result is read here too.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import demo.engine
from demo.config import AppConfig
from demo.engine import Engine
from demo.handlers import make_handlers
from demo.ui import http_routes
from demo.zero_gpu import (
    CALL_LIMIT_S,
    GPU_SECONDS_TRANSLATION,
    ZeroGPUStream,
    call_seconds,
    in_gpu_call,
    max_characters,
    on_zero_gpu,
    plan_calls,
    request_seconds,
    translation_gpu_seconds,
    zero_gpu,
)
from vallex.serving import SpeechRequest
from vallex.synthesis.text_plan import TextPlan

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
LONG = " ".join(f"Sentence number {i} is here to make the text long enough." for i in range(12))


# Where the app runs ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["", "true", "True", "1", "t", "false", "0", "yes"])
def test_zero_gpu_is_detected_as_the_spaces_package_itself_decides(value: str) -> None:
    """The real package's own setting (``spaces.config.Config.zero_gpu``) and ours agree for every value."""
    # spaces/config.py read alone: importing the package on ZeroGPU starts its CUDA emulation (a CUDA build's).
    code = ("import importlib.util as u, json, pathlib; from demo.zero_gpu import on_zero_gpu; "
            "path = pathlib.Path(u.find_spec('spaces').origin).with_name('config.py'); "
            "spec = u.spec_from_file_location('spaces_config', path); config = u.module_from_spec(spec); "
            "spec.loader.exec_module(config); print(json.dumps([config.Config.zero_gpu, on_zero_gpu()]))")
    env = {"PATH": "/usr/bin:/bin", "SPACES_ZERO_GPU": value, "SPACES_ZERO_DEVICE_API_URL": "http://127.0.0.1:9",
           "HOME": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    theirs, ours = json.loads(out.stdout)
    assert ours == theirs


def test_an_importable_spaces_package_alone_is_not_zero_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import spaces  # the real package: installed here, as in many Spaces' requirements

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    engine = Engine(AppConfig(weights_dir=tmp_path / "no-weights", presets_dir=tmp_path / "presets"))
    try:
        assert spaces.__name__ == "spaces" and not on_zero_gpu()
        assert {"/v1/audio/speech", "/health"} <= {route.path for route in http_routes(engine)}  # the API stays
        monkeypatch.setenv("SPACES_ZERO_GPU", "true")
        assert on_zero_gpu() and http_routes(engine) == []
    finally:
        engine.close()


def test_the_real_spaces_decorator_off_zero_gpu_is_a_plain_call_marked_as_a_gpu_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def work(x: int) -> tuple[int, bool]:
        return x + 1, in_gpu_call()

    def steps(n: int):
        for i in range(n):
            yield i, in_gpu_call()

    assert zero_gpu(30)(work)(1) == (2, True) and not in_gpu_call()
    marked = zero_gpu(lambda n: n)(steps)(3)
    seen = [next(marked)]
    assert not in_gpu_call()  # only while a step runs
    seen += list(marked)
    assert seen == [(0, True), (1, True), (2, True)]


# GPU calls and their durations ----------------------------------------------------------------------------------

def test_call_seconds_grow_with_the_text_and_the_rounds_of_checking() -> None:
    assert call_seconds(0) < call_seconds(10) < call_seconds(100)
    assert call_seconds(20, verify_rounds=1) > call_seconds(20) and call_seconds(20, 3) > call_seconds(20, 1)
    assert call_seconds(max_characters()) <= CALL_LIMIT_S < call_seconds(max_characters() + 1)
    assert call_seconds(max_characters(3), 3) <= CALL_LIMIT_S < call_seconds(max_characters(3) + 1, 3)
    assert translation_gpu_seconds("", "") == GPU_SECONDS_TRANSLATION <= CALL_LIMIT_S
    assert translation_gpu_seconds("Hi.", "x" * 5000) == CALL_LIMIT_S  # never over the limit
    assert translation_gpu_seconds("Hi.", "Bonjour.") < CALL_LIMIT_S


def test_a_short_text_is_one_call_spoken_as_anywhere_else() -> None:
    request = SpeechRequest("Hello there.", None, language="en", seed=5)
    (call,) = plan_calls(request)
    assert isinstance(call.text, TextPlan) and [s for s, _ in call.text.sentences] == ["Hello there."]
    assert call.text.long_text is None and call.seed == 5 and request_seconds(call) <= CALL_LIMIT_S


def test_a_long_text_is_several_calls_each_within_the_limit_in_order() -> None:
    request = SpeechRequest(LONG, None, language="en", seed=7, long_text="sliding-window")
    calls = plan_calls(request)
    assert len(calls) > 1
    assert all(request_seconds(call) <= CALL_LIMIT_S for call in calls)
    spoken = [text for call in calls for text, _ in call.text.sentences]
    assert " ".join(spoken) == LONG  # every sentence, once, in order
    assert [call.seed for call in calls] == [7 + i for i in range(len(calls))]
    assert {call.text.long_text for call in calls} == {"sliding-window"}


def test_one_utterance_too_long_for_a_call_is_spoken_by_sentences() -> None:
    text = " ".join(["A short sentence to speak."] * 8)  # one utterance (no long-text mode), too long for one call
    calls = plan_calls(SpeechRequest(text, None, language="en"))
    assert len(calls) > 1 and all(call.text.long_text == "fixed-prompt" for call in calls)
    assert all(request_seconds(call) <= CALL_LIMIT_S for call in calls)


def test_checking_takes_fewer_rounds_rather_than_overrunning_and_refuses_what_cannot_fit() -> None:
    sentence = "x" * (max_characters(3) + 5) + "."  # fits a call with one round of checking, not three
    (call,) = plan_calls(SpeechRequest(sentence, None, language="en", verify="asr", long_text="fixed-prompt"))
    assert 1 <= call.sampling.verify_rounds < 3 and request_seconds(call) <= CALL_LIMIT_S
    too_long = "y" * (max_characters(1) + 10) + "."
    with pytest.raises(ValueError, match="too long for one GPU call.*turn the check off"):
        plan_calls(SpeechRequest(too_long, None, language="en", verify="asr", long_text="fixed-prompt"))


# The calls, in this process -------------------------------------------------------------------------------------

@pytest.fixture()
def zero_gpu_engine(tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An app engine that takes the ZeroGPU path (its GPU calls are plain calls here, marked as GPU calls)."""
    monkeypatch.setattr(demo.engine, "on_zero_gpu", lambda: True)
    engine = Engine(AppConfig(weights_dir=tiny_weights, presets_dir=tmp_path / "presets", device="cpu",
                              dtype="float32"))
    yield engine
    engine.close()


def test_synthesis_runs_only_in_gpu_calls_and_prompts_on_the_cpu_side(zero_gpu_engine: Engine) -> None:
    engine = zero_gpu_engine
    engine.warm_up()
    assert engine._speech is None  # noqa: SLF001 - no speech engine thread on ZeroGPU
    runs: list[tuple[str, bool]] = []
    handle = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: runs.append((type(module).__name__, in_gpu_call())))
    try:
        handlers = make_handlers(engine)
        clip = str(ASSETS / "en_ada.ogg")
        sampling = (1, 1.0, 0, 1.0, 1)
        audio, summary, details, _ = handlers["clone"](clip, "Hello there.", "Hi.", "en", "none", *sampling)
        assert audio[1].size and details["timings"]["gpu_calls"] == 1
        handlers["make_prompt"](clip, "Hello there.", "en", "mine")
    finally:
        handle.remove()
    model_runs = {inside for name, inside in runs if name == "Decoder"}  # the VALL-E X transformer
    assert model_runs == {True}
    encoder_runs = {inside for name, inside in runs if name == "SEANetEncoder"}  # EnCodec: the prompts
    assert encoder_runs == {False}


def test_a_long_text_streams_from_several_calls_numbered_as_one(zero_gpu_engine: Engine) -> None:
    engine = zero_gpu_engine
    request = SpeechRequest(LONG, None, language="en", seed=3, long_text="fixed-prompt", chunk_seconds=None)
    stream = engine.speak(request)
    assert isinstance(stream, ZeroGPUStream) and len(stream.calls) > 1
    # Resumed from other threads in turn, as Gradio may resume a generator: no lock is held across a yield.
    steps = stream.pieces()
    pieces = []
    while True:
        holder: list = []
        thread = threading.Thread(target=lambda out=holder: out.append(next(steps, None)))
        thread.start()
        thread.join()
        if holder[0] is None:
            break
        pieces.append(holder[0])
    total = sum(len(call.text.sentences) for call in stream.calls)
    assert [p.sentence for p in pieces] == list(range(total)) and {p.sentences for p in pieces} == {total}
    assert len(stream.sentences) == total
    assert all(s.codes.device.type == "cpu" for s in stream.sentences)  # pickled back to a GPU-less process
    result = engine.speak(request).result()
    assert np.array_equal(result.waveform, np.concatenate([p.audio for p in pieces]))
    assert result.timings["gpu_calls"] == len(stream.calls)


# Warm-up, on any hardware ----------------------------------------------------------------------------------------

@pytest.fixture()
def engine(tiny_weights: Path, tmp_path: Path):
    engine = Engine(AppConfig(weights_dir=tiny_weights, presets_dir=tmp_path / "presets", device="cpu",
                              dtype="float32"))
    yield engine
    engine.close()


def test_warm_up_loads_the_prompt_transcriber_it_finds(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = []

    class Recognizer:
        def load(self) -> None:
            loaded.append(True)

    class Transcriber:
        recognizer = Recognizer()

    monkeypatch.setattr("vallex.prompts.find_transcriber", lambda device: Transcriber())
    engine.warm_up(translation_models=True)  # the translation models are absent here: logged, not raised
    assert loaded == [True]


def test_warm_up_reports_missing_weights_as_the_requests_do(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    engine = Engine(AppConfig(weights_dir=tmp_path / "weights", presets_dir=tmp_path / "presets"))
    with pytest.raises(ValueError, match="The model cannot be loaded"):
        engine.warm_up()


def test_warm_up_voices_equal_the_lazily_encoded_ones(engine: Engine, tiny_weights: Path, tmp_path: Path) -> None:
    engine.warm_up()
    lazy = Engine(AppConfig(weights_dir=tiny_weights, presets_dir=tmp_path / "other", device="cpu",
                            dtype="float32"))
    try:
        for name in ("en_ada", "zh_lin"):
            assert np.array_equal(engine.voice(name).codes.numpy(), lazy.voice(name).codes.numpy())
    finally:
        lazy.close()
