"""The OpenAI-compatible HTTP API (``/v1/audio/speech``, ``/v1/voices``, ``/health``) next to the Gradio UI, and the
``Host`` guard of the whole app.

The app's one :class:`vallex.serving.SpeechEngine` (:attr:`demo.engine.Engine.speech`) serves the API's
requests together with the tabs' (continuous batching): its voices are the app's (built-in examples, then
presets), its limits the app's settings (``VALLEX_MAX_BATCH``, ``VALLEX_MAX_QUEUE``,
``VALLEX_MAX_TEXT_CHARS``), its key ``VALLEX_API_KEY``.
"""
from __future__ import annotations

import os

from fastapi import APIRouter
from starlette.middleware import Middleware

from demo.config import AppConfig
from demo.engine import Engine
from vallex.serving import SpeechEngine
from vallex.serving.http import HostGuard, VoiceInfo, create_router, loopback_only_hosts, preset_voices


def app_voices(engine: Engine) -> list[VoiceInfo]:
    """Built-in example voices, then the presets of the preset folder."""
    builtin = [VoiceInfo(v.name, v.language, "built-in") for v in engine.voices.values()]
    return builtin + [v for v in preset_voices(engine.presets) if v.name not in engine.voices]


def allowed_hosts(config: AppConfig) -> tuple[str, ...] | None:
    """The ``Host`` names the app answers: only loopback names when it listens on loopback (Gradio's default,
    ``GRADIO_SERVER_NAME`` unset or a loopback name) without ``VALLEX_API_KEY``, as ``vallex serve`` does (DNS
    rebinding); None (any) otherwise, e.g. on a Space (``0.0.0.0`` behind its proxy) or with a Gradio share
    link (``GRADIO_SHARE``), whose tunnel brings the link's own name."""
    if os.environ.get("GRADIO_SHARE", "").strip().lower() == "true":
        return None
    return loopback_only_hosts(os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1", config.api_key)


def host_guard(config: AppConfig) -> list[Middleware]:
    """The middleware (for the FastAPI app Gradio makes) that refuses requests addressed to other names than
    :func:`allowed_hosts` on every route, Gradio's own included; none when any name is allowed."""
    hosts = allowed_hosts(config)
    return [Middleware(HostGuard, allowed_hosts=hosts)] if hosts else []


def api_router(engine: Engine, speech: SpeechEngine) -> APIRouter:
    """The API's routes for the app (the first built-in voice is the default voice; requests addressed to other
    names than :func:`allowed_hosts` are refused, by these routes as by the app's :func:`host_guard`)."""
    return create_router(speech, voices=lambda: app_voices(engine), voice_names=engine.voice_names,
                         default_voice=next(iter(engine.voices), None), api_key=engine.config.api_key,
                         max_input_chars=engine.config.max_text_chars, model_loaded=lambda: engine.loaded,
                         languages=engine.languages, identity=engine.model_identity,
                         allowed_hosts=allowed_hosts(engine.config))
