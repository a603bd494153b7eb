"""The OpenAI-compatible HTTP API (``/v1/audio/speech``, ``/v1/voices``, ``/health``) next to the Gradio UI.

The app's one :class:`vallex.serving.SpeechEngine` (:attr:`demo.engine.Engine.speech`) serves the API's
requests together with the tabs' (continuous batching): its voices are the app's (built-in examples, then
presets), its limits the app's settings (``VALLEX_MAX_BATCH``, ``VALLEX_MAX_QUEUE``,
``VALLEX_MAX_TEXT_CHARS``), its key ``VALLEX_API_KEY``.
"""
from __future__ import annotations

import os

from fastapi import APIRouter

from demo.engine import Engine
from vallex.serving import SpeechEngine
from vallex.serving.http import LOOPBACK_HOSTS, VoiceInfo, create_router, is_loopback, preset_voices


def app_voices(engine: Engine) -> list[VoiceInfo]:
    """Built-in example voices, then the presets of the preset folder."""
    builtin = [VoiceInfo(v.name, v.language, "built-in") for v in engine.voices.values()]
    return builtin + [v for v in preset_voices(engine.presets) if v.name not in engine.voices]


def api_router(engine: Engine, speech: SpeechEngine) -> APIRouter:
    """The API's routes for the app (the first built-in voice is the default voice).

    Without a key, on Gradio's loopback default (``GRADIO_SERVER_NAME`` unset or a loopback name), the API
    answers only requests addressed to loopback names, as ``vallex serve`` does (DNS rebinding).
    """
    local = is_loopback(os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1")
    return create_router(speech, voices=lambda: app_voices(engine), voice_names=engine.voice_names,
                         default_voice=next(iter(engine.voices), None), api_key=engine.config.api_key,
                         max_input_chars=engine.config.max_text_chars, model_loaded=lambda: engine.loaded,
                         languages=engine.languages,
                         allowed_hosts=LOOPBACK_HOSTS if local and not engine.config.api_key else None)
