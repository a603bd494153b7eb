"""ZeroGPU (Hugging Face Spaces' shared GPUs): whether the app runs there, and the GPU time each call reserves."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from vallex.inference.verification import DEFAULT_VERIFY_ROUNDS


def on_zero_gpu() -> bool:
    """Whether this is a ZeroGPU Space (the ``spaces`` package is importable)."""
    try:
        import spaces  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


#: ZeroGPU time asked for per call (seconds): a fixed part (moving the models onto the GPU, the vocoder, an
#: uploaded prompt's encoding), plus, per character of text, about 0.25 s of speech at the slowest (Chinese
#: and Japanese, ~4 characters a second) times a real-time factor of ~1.2 for AR steps on a shared GPU. An
#: estimate, not measured on ZeroGPU: a call that runs past it is stopped; asking for more uses up the
#: visitor's daily GPU quota faster.
GPU_SECONDS_FIXED = 15
GPU_SECONDS_PER_CHARACTER = 0.3
#: Encoding a 3-15 s prompt takes about a second; Whisper, when it must transcribe it, a few more.
GPU_SECONDS_PROMPT = 10
GPU_SECONDS_PROMPT_WHISPER = 30
#: Speech translation without a typed translation: Whisper and the translation model run first, and the
#: spoken text is not known yet (at most 15 s of speech in, so about as much out).
GPU_SECONDS_TRANSLATION = 60


def synthesis_gpu_seconds(text: Any, *, prompt_upload: bool = False, transcribe: bool = False,
                          verify: bool = False) -> int:
    """ZeroGPU seconds to reserve for speaking ``text`` (a string; anything else counts as empty).

    ``prompt_upload``: an uploaded recording is encoded first; ``transcribe``: Whisper transcribes it first;
    ``verify``: each sentence is checked by speech recognition, with new rounds when it fails (the most rounds
    reserved, and Whisper's loading).
    """
    characters = len(text) if isinstance(text, str) else 0
    seconds = GPU_SECONDS_FIXED + GPU_SECONDS_PER_CHARACTER * characters
    if verify:
        seconds = seconds * DEFAULT_VERIFY_ROUNDS + GPU_SECONDS_PROMPT_WHISPER
    if prompt_upload:
        seconds += GPU_SECONDS_PROMPT_WHISPER if transcribe else GPU_SECONDS_PROMPT
    return int(math.ceil(seconds))


def prompt_gpu_seconds(transcript: Any) -> int:
    """ZeroGPU seconds to reserve for encoding a prompt (Whisper too when ``transcript`` is empty)."""
    return GPU_SECONDS_PROMPT if isinstance(transcript, str) and transcript.strip() else GPU_SECONDS_PROMPT_WHISPER


def translation_gpu_seconds(transcript: Any, translation: Any) -> int:
    """ZeroGPU seconds to reserve for the Speech translation tab: sized by the typed translation when there is
    one (plus Whisper when the transcript is empty), else :data:`GPU_SECONDS_TRANSLATION`."""
    if not (isinstance(translation, str) and translation.strip()):
        return GPU_SECONDS_TRANSLATION
    typed = isinstance(transcript, str) and bool(transcript.strip())
    return synthesis_gpu_seconds(translation, prompt_upload=True, transcribe=not typed)


def zero_gpu(duration: int | Callable[..., int]) -> Callable[[Callable], Callable]:
    """``spaces.GPU(duration=...)`` on a ZeroGPU Space (the ``spaces`` package is importable), else a no-op.

    ``duration``: seconds, or a function of the handler's own arguments returning them (ZeroGPU calls it
    before each call, so each call reserves what its input needs).
    """
    if not on_zero_gpu():
        return lambda function: function
    import spaces  # type: ignore[import-not-found]

    return spaces.GPU(duration=duration)
