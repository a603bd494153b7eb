"""VALL-E X: zero-shot, cross-lingual text-to-speech (English, Mandarin, Japanese).

    from vallex import VallEX
    tts = VallEX.from_pretrained()
    wav, sample_rate = tts.synthesize("Hello!", prompt=("me.wav", "What I said in me.wav."))

Importing the package does no work: the names below are imported on first access, and models load
lazily on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> module that defines it (resolved lazily so ``import vallex`` stays cheap).
_EXPORTS = {
    "VallEX": "vallex.api",
    "Synthesis": "vallex.synthesis.results",
    "SynthesisRequest": "vallex.synthesis.request",
    "SentenceResult": "vallex.synthesis.results",
    "VoicePrompt": "vallex.prompts",
    "PresetLibrary": "vallex.prompts",
    "VallexConfig": "vallex.config",
    "VallexModel": "vallex.model",
    "load_model": "vallex.weights.checkpoint",
    "tokenize": "vallex.text",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vallex' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
