"""App settings, read from environment variables (documented in demo/README.md).

Every setting has a default that works for ``make app`` on a laptop and unchanged on a Hugging Face Space.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from vallex.config import DEFAULT_MAX_REQUEST_WORK

#: The example voices made by assets/make_assets.py.
DEFAULT_ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer.") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")
    return value


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={raw!r}: use 1/0, true/false, yes/no or on/off.")


def _env_dtype(name: str) -> str:
    """The precision setting: ``auto`` (default) or one of vallex.inference.precision's names; ValueError otherwise."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return "auto"
    from vallex.inference.precision import check_precision_option  # imports torch: only when the variable is set

    try:
        return check_precision_option(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: use auto, float32, bfloat16, float16 or int8.") from None


def _env_path(name: str) -> Path | None:
    raw = os.environ.get(name, "").strip()
    return Path(raw).expanduser() if raw else None


@dataclass(frozen=True)
class AppConfig:
    """What the app needs to know before it starts (see :meth:`from_env` for the variables)."""

    weights_dir: Path | None = None  # None: the Hugging Face / torch hub caches (downloads when online)
    checkpoint: Path | None = None  # VALLEX_CHECKPOINT: a fine-tuned VALL-E X checkpoint instead of weights_dir's
    presets_dir: Path | None = None  # None: vallex's default preset folder
    assets_dir: Path = DEFAULT_ASSETS_DIR
    device: str | None = None  # None: CUDA, then MPS, then CPU
    dtype: str | None = "auto"  # VALLEX_DTYPE; "auto": the fastest measured for this device / CPU class; None: float32
    num_threads: int | None = None  # CPU torch threads; None: torch's default
    concurrency: int = 8  # requests the tabs' model events handle at once (default: max_batch)
    max_queue: int = 32  # requests waiting beyond this are refused with "queue full" (HTTP API: 503)
    max_batch: int = 8  # requests (tabs and HTTP API) the speech engine decodes together at most
    # sentence-candidates one request may decode (sentences x best_of x verify rounds); None: no limit
    max_request_work: int | None = DEFAULT_MAX_REQUEST_WORK
    api_key: str = field(default="", repr=False)  # HTTP API: required bearer key ("" = none); never printed
    max_upload_mb: int = 20  # uploads above this are refused by Gradio before they reach the app
    max_text_chars: int = 5000  # longest text accepted by any tab
    preload: bool = False  # load the model at startup instead of on the first request
    stream_audio: bool = False  # Long text plays live, in chunks, while it is made (Gradio needs ffmpeg for this)
    analytics: bool = False  # Gradio's usage statistics and version check (GRADIO_ANALYTICS_ENABLED)
    title: str = "VALL-E X"

    @classmethod
    def from_env(cls) -> AppConfig:
        """Read the ``VALLEX_*`` variables.

        ``VALLEX_WEIGHTS_DIR``, ``VALLEX_CHECKPOINT`` (a checkpoint of ``vallex train``, e.g.
        ``runs/de/checkpoint-00002000.pt``, used instead of the weights folder's: its languages fill the menus),
        ``VALLEX_PRESETS_DIR``, ``VALLEX_ASSETS_DIR``, ``VALLEX_DEVICE``, ``VALLEX_DTYPE``
        (default ``auto``: the fastest precision measured for this device and CPU class; ``float32`` for the
        reference's exact arithmetic),
        ``VALLEX_THREADS``, ``VALLEX_CONCURRENCY`` (default: ``VALLEX_MAX_BATCH``), ``VALLEX_MAX_QUEUE`` (32),
        ``VALLEX_MAX_BATCH`` (8), ``VALLEX_MAX_REQUEST_WORK`` (2048; 0: no limit), ``VALLEX_API_KEY`` (unset: the
        HTTP API needs no key),
        ``VALLEX_MAX_UPLOAD_MB`` (20), ``VALLEX_MAX_TEXT_CHARS`` (5000), ``VALLEX_PRELOAD`` (default: on when
        running on a Hugging Face Space, i.e. ``SPACE_ID`` is set), ``VALLEX_STREAM_AUDIO`` (default: on when
        an ``ffmpeg`` program is on the PATH, which Gradio's streaming audio output needs), and Gradio's
        ``GRADIO_ANALYTICS_ENABLED`` (default off here, unlike Gradio's own default).
        """
        threads = os.environ.get("VALLEX_THREADS", "").strip()
        max_batch = _env_int("VALLEX_MAX_BATCH", 8, 1)
        return cls(
            weights_dir=_env_path("VALLEX_WEIGHTS_DIR"),
            checkpoint=_env_path("VALLEX_CHECKPOINT"),
            presets_dir=_env_path("VALLEX_PRESETS_DIR"),
            assets_dir=_env_path("VALLEX_ASSETS_DIR") or DEFAULT_ASSETS_DIR,
            device=os.environ.get("VALLEX_DEVICE", "").strip() or None,
            dtype=_env_dtype("VALLEX_DTYPE"),
            num_threads=_env_int("VALLEX_THREADS", 1, 1) if threads else None,
            concurrency=_env_int("VALLEX_CONCURRENCY", max_batch, 1),
            max_queue=_env_int("VALLEX_MAX_QUEUE", 32, 1),
            api_key=os.environ.get("VALLEX_API_KEY", "").strip(),
            max_upload_mb=_env_int("VALLEX_MAX_UPLOAD_MB", 20, 1),
            max_text_chars=_env_int("VALLEX_MAX_TEXT_CHARS", 5000, 10),
            preload=_env_flag("VALLEX_PRELOAD", default=bool(os.environ.get("SPACE_ID"))),
            stream_audio=_env_flag("VALLEX_STREAM_AUDIO", default=shutil.which("ffmpeg") is not None),
            max_batch=max_batch,
            max_request_work=_env_int("VALLEX_MAX_REQUEST_WORK", DEFAULT_MAX_REQUEST_WORK, 0) or None,
            analytics=_env_flag("GRADIO_ANALYTICS_ENABLED", default=False),
        )
