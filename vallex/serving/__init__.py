"""Serving many clients with one model: the batching speech engine (and, on top of it, the HTTP API).

    from vallex.serving import SpeechEngine, SpeechRequest
    engine = SpeechEngine(tts, max_batch=8, max_queue=32)
    for chunk in engine.submit(SpeechRequest("Hello!", voice="my_voice", seed=1)):
        play(chunk)                                   # float32 [n] at 24 kHz, as soon as it is ready

Everything here is UI-free; the app and ``vallex serve`` build on it. The OpenAI-compatible HTTP API over an
engine is ``vallex.serving.http.create_api(engine)`` (imported separately: it needs FastAPI); replicas of it
behind one address with Ray Serve are ``vallex.serving.ray_serve`` (``pip install 'vallex[serve]'``).
"""
from __future__ import annotations

from vallex.serving.engine import (
    AudioPiece,
    ModelUnavailable,
    ServerBusy,
    SpeechEngine,
    SpeechRequest,
    SpeechStream,
)

__all__ = ["AudioPiece", "ModelUnavailable", "ServerBusy", "SpeechEngine", "SpeechRequest", "SpeechStream"]
