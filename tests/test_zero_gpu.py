"""The app on a ZeroGPU Space, with a stand-in ``spaces`` package: model work runs only inside the decorated
handlers (where ZeroGPU attaches a GPU), each call reserves GPU time sized by its input, everything loads at
start-up, and the HTTP API (which would run in the speech engine's thread) is not mounted."""
from __future__ import annotations

import functools
import inspect
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from demo.config import AppConfig
from demo.engine import Engine
from demo.handlers import make_handlers
from demo.ui import http_routes
from demo.zero_gpu import (
    GPU_SECONDS_TRANSLATION,
    prompt_gpu_seconds,
    synthesis_gpu_seconds,
    translation_gpu_seconds,
)

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@dataclass
class FakeZeroGPU:
    """What a ``spaces`` stand-in saw: the seconds each call reserved, and each model call, inside or not."""

    depth: int = 0  # > 0 while a decorated function runs
    reserved: list[tuple[str, int]] = field(default_factory=list)
    model_calls: list[tuple[str, bool]] = field(default_factory=list)

    def module(self) -> types.ModuleType:
        fake = types.ModuleType("spaces")

        def gpu(duration):
            def decorate(function):
                def seconds(args, kwargs) -> int:
                    return duration(*args, **kwargs) if callable(duration) else duration

                if inspect.isgeneratorfunction(function):
                    @functools.wraps(function)
                    def generator(*args, **kwargs):
                        self.reserved.append((function.__name__, seconds(args, kwargs)))
                        self.depth += 1
                        try:
                            yield from function(*args, **kwargs)
                        finally:
                            self.depth -= 1
                    return generator

                @functools.wraps(function)
                def call(*args, **kwargs):
                    self.reserved.append((function.__name__, seconds(args, kwargs)))
                    self.depth += 1
                    try:
                        return function(*args, **kwargs)
                    finally:
                        self.depth -= 1
                return call
            return decorate

        fake.GPU = gpu
        return fake

    def record(self, module: torch.nn.Module, args: tuple) -> None:
        self.model_calls.append((type(module).__name__, self.depth > 0))


@pytest.fixture()
def zero_gpu(monkeypatch: pytest.MonkeyPatch):
    state = FakeZeroGPU()
    monkeypatch.setitem(sys.modules, "spaces", state.module())
    handle = torch.nn.modules.module.register_module_forward_pre_hook(state.record)  # every module call
    yield state
    handle.remove()


@pytest.fixture()
def engine(tiny_weights: Path, tmp_path: Path):
    engine = Engine(AppConfig(weights_dir=tiny_weights, presets_dir=tmp_path / "presets", device="cpu",
                              dtype="float32"))
    yield engine
    engine.close()


def test_model_work_runs_only_inside_the_decorated_handlers(zero_gpu: FakeZeroGPU, engine: Engine) -> None:
    engine.warm_up(translation_models=True)  # at start-up, outside any GPU call (voices encoded on the CPU there)
    tts = engine.tts()
    assert tts.codec._encodec is not None and tts.codec._vocos is not None  # noqa: SLF001 - loaded, not lazy
    assert set(engine._voice_cache) == set(engine.voices)  # noqa: SLF001 - every built-in voice is ready
    zero_gpu.model_calls.clear()

    handlers = make_handlers(engine)
    sampling = (1, 1.0, 0, 1.0, 1)
    clip = str(ASSETS / "en_ada.ogg")
    handlers["clone"](clip, "Hello there.", "Hi.", "en", "none", *sampling)
    handlers["preset"]("Yes.", "en_ben", None, "en", "none", *sampling)
    handlers["make_prompt"](clip, "Hello there.", "en", "mine")
    updates = list(handlers["long_text"]("One. Two.", "zh_lin", None, "sliding-window", "en", "none", 2))
    assert updates and zero_gpu.model_calls
    outside = {name for name, inside in zero_gpu.model_calls if not inside}
    assert not outside, f"model calls outside the GPU handlers: {outside}"
    seen = {name for name, _ in zero_gpu.model_calls}
    assert {"Decoder", "SEANetEncoder", "VocosBackbone"} <= seen, seen  # VALL-E X, EnCodec, Vocos all ran
    # Each call reserved what its input needs.
    assert zero_gpu.reserved == [("clone", synthesis_gpu_seconds("Hi.", prompt_upload=True)),
                                 ("preset", synthesis_gpu_seconds("Yes.")),
                                 ("encode_prompt", prompt_gpu_seconds("Hello there.")),
                                 ("long_text", synthesis_gpu_seconds("One. Two."))]


def test_gpu_time_follows_the_input() -> None:
    short, long = synthesis_gpu_seconds("Hi."), synthesis_gpu_seconds("x" * 1000)
    assert 0 < short < 30 < long  # no fixed 120 s: a short text reserves little, a long one enough
    assert synthesis_gpu_seconds("Hi.", prompt_upload=True) > short
    assert synthesis_gpu_seconds("Hi.", prompt_upload=True, transcribe=True) > synthesis_gpu_seconds(
        "Hi.", prompt_upload=True)
    assert prompt_gpu_seconds("A transcript.") < prompt_gpu_seconds("  ") == prompt_gpu_seconds(None)
    assert translation_gpu_seconds("", "") == GPU_SECONDS_TRANSLATION
    assert translation_gpu_seconds("Hi.", "x" * 1000) > translation_gpu_seconds("Hi.", "Bonjour.")
    assert synthesis_gpu_seconds(None) == synthesis_gpu_seconds("")  # a missing text is refused later, in words


def test_the_http_api_is_not_mounted_on_zero_gpu(monkeypatch: pytest.MonkeyPatch, engine: Engine) -> None:
    monkeypatch.setitem(sys.modules, "spaces", FakeZeroGPU().module())
    assert http_routes(engine) == []
    monkeypatch.setitem(sys.modules, "spaces", None)  # not a Space: the API is there
    paths = {route.path for route in http_routes(engine)}
    assert {"/v1/audio/speech", "/health"} <= paths


def test_warm_up_loads_the_prompt_transcriber_it_finds(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = []

    class Recognizer:
        def load(self) -> None:
            loaded.append(True)

    class Transcriber:
        recognizer = Recognizer()

    monkeypatch.setattr("vallex.prompts.find_transcriber", lambda: Transcriber())
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
