"""The OpenAI-compatible HTTP API (``/v1/audio/speech``, ``/v1/voices``, ``/health``) next to the Gradio UI.

One :class:`vallex.serving.SpeechEngine` serves the API's requests with the app's own model
(:class:`demo.engine.Engine`): its voices are the app's (built-in examples, then presets), its limits the
app's settings (``VALLEX_MAX_BATCH``, ``VALLEX_MAX_QUEUE``, ``VALLEX_MAX_TEXT_CHARS``), its key
``VALLEX_API_KEY``. Until the tabs use the speech engine too, each API synthesis holds the model lock the
tabs take (:meth:`Engine.using_model`), so the two never use the model at the same time.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
from fastapi import APIRouter

from demo.engine import Engine
from vallex.prompts import VoicePrompt
from vallex.serving import SpeechEngine
from vallex.serving.http import ModelUnavailable, VoiceInfo, create_router, preset_voices


class SharedModel:
    """The app's model as the speech engine sees it: each synthesis runs under the app's model lock."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._tts = load_model(engine)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tts, name)

    def synthesize_stream(self, text: str, prompt: Any = None, **options: Any) -> Iterator[np.ndarray]:
        with self._engine.using_model() as tts:
            yield from tts.synthesize_stream(text, prompt, **options)


def load_model(engine: Engine) -> Any:
    """The app's model; weights that cannot be loaded make the API answer 503 (not 400) with the reason."""
    try:
        return engine.tts()
    except ValueError as error:
        raise ModelUnavailable(str(error)) from None


def make_speech_engine(engine: Engine) -> SpeechEngine:
    """The app's speech engine: the shared model (loaded on the first API request), the app's voices."""
    def resolve(name: str) -> VoicePrompt:
        load_model(engine)
        with engine.using_model():
            return engine.voice(name)

    return SpeechEngine(lambda: SharedModel(engine), max_batch=engine.config.max_batch,
                        max_queue=engine.config.max_queue, voice_resolver=resolve)


def app_voices(engine: Engine) -> list[VoiceInfo]:
    """Built-in example voices, then the presets of the preset folder."""
    builtin = [VoiceInfo(v.name, v.language, "built-in") for v in engine.voices.values()]
    return builtin + [v for v in preset_voices(engine.presets) if v.name not in engine.voices]


def api_router(engine: Engine, speech: SpeechEngine) -> APIRouter:
    """The API's routes for the app (the first built-in voice is the default voice)."""
    return create_router(speech, voices=lambda: app_voices(engine), voice_names=engine.voice_names,
                         default_voice=next(iter(engine.voices), None), api_key=engine.config.api_key,
                         max_input_chars=engine.config.max_text_chars, model_loaded=lambda: engine.loaded)
