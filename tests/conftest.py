"""Test-wide settings: no network, one torch thread, and the golden fixture folder."""
from __future__ import annotations

import os
from pathlib import Path

# Set before anything imports gradio / huggingface_hub: no analytics, no hub traffic.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# A busy second core makes 2-thread torch hundreds of times slower on small ops.
torch.set_num_threads(1)

from golden_fixtures import REPO_ROOT, golden_dir, golden_error, golden_problems  # noqa: E402,F401


def pytest_configure(config) -> None:
    """Stop with one message, before collection, when the golden folder is missing or malformed.

    Several test modules read the fixtures while they are collected (to parametrize over the cases), so a
    bad folder would otherwise surface as a collection traceback per module.
    """
    path = golden_dir()
    problems = golden_problems(path)
    if problems:
        raise pytest.UsageError(golden_error(path, problems))


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Each test leaves torch's thread count as it found it (e.g. ``VallEX.from_pretrained(num_threads=2)``
    sets it for the whole process), so that no test's numbers depend on the tests that ran before it."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def golden() -> Path:
    """The golden fixture folder (checked complete by :func:`pytest_configure`)."""
    return golden_dir()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A weights folder with random tiny VALL-E X + real-architecture EnCodec/Vocos (outputs are noise)."""
    from vallex.weights.random_weights import make_random_weights

    directory = tmp_path_factory.mktemp("tiny-weights")
    make_random_weights(directory, "tiny")
    return directory


@pytest.fixture(scope="session")
def tiny_tts(tiny_weights):
    """One ``VallEX`` on the tiny random weights, shared by the tests that only synthesise."""
    from vallex.api import VallEX

    return VallEX.from_pretrained(tiny_weights, device="cpu")


def with_voices(tts, load, names=lambda: []):
    """The same loaded model with another voice library: voice names resolve through ``load(name)``."""
    from types import SimpleNamespace

    from vallex.api import VallEX

    return VallEX(tts.model, tts.codec, SimpleNamespace(load=load, names=names), tts.device,
                  frame_limits=tts.frame_limits, precision=tts.precision)


@pytest.fixture
def synthesis_calls(monkeypatch) -> list[dict]:
    """The options of every ``VallEX.synthesize_detailed`` call made during the test (which still runs them), a
    ``sampling=`` as its fields."""
    from vallex.api import VallEX

    calls: list[dict] = []
    real = VallEX.synthesize_detailed

    def recording(self, text, prompt=None, **options):
        sampling = options.get("sampling")
        calls.append({**{k: v for k, v in options.items() if k != "sampling"},
                      **(sampling.as_dict() if sampling is not None else {})})
        return real(self, text, prompt, **options)

    monkeypatch.setattr(VallEX, "synthesize_detailed", recording)
    return calls
