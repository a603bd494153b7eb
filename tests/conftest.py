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

REPO_ROOT = Path(__file__).resolve().parents[1]


def golden_dir() -> Path:
    """The golden fixture folder: ``$VALLEX_GOLDEN_DIR`` or ``../shared/golden/public``."""
    default = REPO_ROOT.parent / "shared" / "golden" / "public"
    return Path(os.environ.get("VALLEX_GOLDEN_DIR", default)).resolve()


@pytest.fixture(scope="session")
def golden() -> Path:
    path = golden_dir()
    if not path.is_dir():
        pytest.fail(f"Golden fixtures not found at {path}; set VALLEX_GOLDEN_DIR.")
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A weights folder with random tiny VALL-E X + real-architecture EnCodec/Vocos (outputs are noise)."""
    from vallex.weights import make_random_weights

    directory = tmp_path_factory.mktemp("tiny-weights")
    make_random_weights(directory, "tiny")
    return directory


@pytest.fixture(scope="session")
def tiny_tts(tiny_weights):
    """One ``VallEX`` on the tiny random weights, shared by the tests that only synthesise."""
    from vallex.api import VallEX

    return VallEX.from_pretrained(tiny_weights, device="cpu")
