"""Audio in and out: any recording → mono float32 samples at 24 kHz, and back to files; and the codec.

    wav = load_audio("me.m4a")                 # float32 [N] at 24 kHz, whatever the file or array
    save_audio("out.wav", wav)

The modules, by idea: :mod:`~vallex.audio.loading` (:func:`load_audio`, the one door every recording goes
through, and the voice-prompt limits), :mod:`~vallex.audio.files` (decoding and writing files, with hard limits),
:mod:`~vallex.audio.samples` (arrays and Gradio tuples to float32, and to 16-bit PCM),
:mod:`~vallex.audio.processing` (resampling, loudness, silence trimming), :mod:`~vallex.audio.codec_format`
(24 kHz, 75 frames/s, 8 codebooks × 1024) and :mod:`~vallex.audio.codec` (EnCodec and Vocos: audio ↔ codes;
:func:`vallex.weights.pretrained_codec` builds one from the published weights). Nothing here imports
:mod:`vallex.weights`.
"""
from __future__ import annotations

from vallex.audio.codec_format import FRAME_RATE, HOP, SAMPLE_RATE
from vallex.audio.files import (
    MAX_DECODE_SECONDS,
    MAX_FILE_BYTES,
    PYAV_EXTENSIONS,
    SOUNDFILE_EXTENSIONS,
    read_audio_file,
    save_audio,
)
from vallex.audio.loading import (
    MAX_CHANNELS,
    PROMPT_MAX_SECONDS,
    PROMPT_MIN_SECONDS,
    PROMPT_WARN_SECONDS,
    AudioSource,
    check_duration,
    load_audio,
    load_prompt_audio,
)
from vallex.audio.processing import SILENCE_PEAK, resample, trim_silence_edges
from vallex.audio.samples import to_pcm16

__all__ = [
    "FRAME_RATE", "HOP", "MAX_CHANNELS", "MAX_DECODE_SECONDS", "MAX_FILE_BYTES", "PROMPT_MAX_SECONDS",
    "PROMPT_MIN_SECONDS", "PROMPT_WARN_SECONDS", "PYAV_EXTENSIONS", "SAMPLE_RATE", "SILENCE_PEAK",
    "SOUNDFILE_EXTENSIONS", "AudioSource", "check_duration", "load_audio", "load_prompt_audio", "read_audio_file",
    "resample", "save_audio", "to_pcm16", "trim_silence_edges",
]
