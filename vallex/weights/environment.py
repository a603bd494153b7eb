"""What the environment says about weights: the variables read, whether to stay offline, the weights folder or
checkpoint to use, and where torch hub keeps its files.

Reads the environment when called, never at import (no torch import either).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

#: Environment variables (documented in :mod:`vallex.weights`).
WEIGHTS_DIR_ENV = "VALLEX_WEIGHTS_DIR"
CHECKPOINT_ENV = "VALLEX_CHECKPOINT"
OFFLINE_ENV = "VALLEX_OFFLINE"
HF_MIRROR_ENV = "VALLEX_HF_MIRROR"
CHECKPOINT_REPO_ENV = "VALLEX_CHECKPOINT_REPO"
VOCOS_REPO_ENV = "VALLEX_VOCOS_REPO"
ENCODEC_URL_ENV = "VALLEX_ENCODEC_URL"


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``VALLEX_OFFLINE`` is set to a true value."""
    return any(os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for name in ("HF_HUB_OFFLINE", OFFLINE_ENV))


def default_weights_dir() -> Path | None:
    """``$VALLEX_WEIGHTS_DIR``: a weights folder used instead of the caches (None when unset)."""
    value = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def default_checkpoint() -> Path | None:
    """``$VALLEX_CHECKPOINT``: a VALL-E X checkpoint used instead of the weights folder's (None when unset)."""
    value = os.environ.get(CHECKPOINT_ENV, "").strip()
    return Path(value).expanduser() if value else None


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``, computed as torch does when torch is not imported yet (fast)."""
    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir()) / "checkpoints"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("TORCH_HOME", cache / "torch")).expanduser() / "hub" / "checkpoints"
