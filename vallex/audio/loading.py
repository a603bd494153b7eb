"""Loading a recording: any file, Gradio tuple or array → mono float32 samples at 24 kHz.

Everything that reaches EnCodec goes through :func:`load_audio`, so a clip gives the same codes whether it
comes from a file, from Gradio's ``(sample_rate, int16 array)`` tuple or from a numpy array:

1. decode to float32 ``[N, C]``: integer PCM is scaled by its full range (int16 / 32768, never
   peak-normalised, so quiet recordings stay quiet); float data is taken as is;
2. reject NaN/inf, more than :data:`MAX_CHANNELS` channels, empty audio;
3. average the channels, then resample to 24 kHz with ``torchaudio.transforms.Resample`` (default
   windowed sinc): exactly ``encodec.utils.convert_audio``, the reference's preprocessing;
4. loudness: samples beyond ±1 (float input only) are scaled down by the peak so the waveform fits
   [-1, 1]; otherwise levels are kept. ``normalize_peak=0.95`` rescales any clip to that peak instead;
5. optionally trim leading/trailing silence, then check the duration limits.

Supported files: WAV, FLAC, OGG/Vorbis, Opus and MP3 through ``soundfile`` (libsndfile); M4A/AAC/MP4 and
WebM when PyAV (``pip install av``, it bundles FFmpeg) is installed. Other containers are refused by extension
(:mod:`vallex.audio.files`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from vallex.audio.codec_format import SAMPLE_RATE
from vallex.audio.files import MAX_DECODE_SECONDS, check_file_duration, read_audio_file
from vallex.audio.processing import SILENCE_PEAK, fit_loudness, resample, trim_silence_edges
from vallex.audio.samples import as_channels_last, check_rate, from_gradio, to_float, to_numpy

_LOG = logging.getLogger(__name__)

#: Voice prompts: shorter clips carry too little voice, longer ones the model was not trained on
#: (the reference rejects prompts over 15 s; training utterances were under 22 s with the output).
PROMPT_MIN_SECONDS = 1.0
PROMPT_MAX_SECONDS = 15.0
#: Above this, prompts still work but leave little room for the generated speech (prompt + output < 22 s).
PROMPT_WARN_SECONDS = 10.0

#: Mono or stereo only: a mean over many channels (surround, mic arrays) is rarely one clean voice.
MAX_CHANNELS = 2

#: What :func:`load_audio` accepts.
AudioSource = str | os.PathLike | np.ndarray | torch.Tensor | tuple


def load_audio(
    source: AudioSource,
    sample_rate: int | None = None,
    *,
    max_seconds: float | None = None,
    min_seconds: float | None = None,
    trim_silence: bool = False,
    normalize_peak: float | None = None,
) -> np.ndarray:
    """Load a recording as mono float32 samples at 24 kHz.

    Args:
        source: a file path; a Gradio tuple ``(sample_rate, array)`` with ``array`` int16/int32/uint8/float
            shaped ``[N]`` or ``[N, C]``; or a numpy array / torch tensor (then ``sample_rate`` is required),
            shaped ``[N]``, ``[N, C]`` or ``[C, N]`` (the shorter axis is taken as channels).
        sample_rate: sample rate of an array ``source`` in Hz (ignored for files and tuples).
        max_seconds, min_seconds: duration limits checked on the result (after trimming).
        trim_silence: drop leading/trailing audio more than 40 dB below the loudest 20 ms.
        normalize_peak: rescale so that max |x| equals this value (e.g. 0.95); default keeps levels.

    Returns:
        float32 array ``[N]``, samples at 24 kHz in [-1, 1].

    Raises:
        ValueError: empty/corrupt/unsupported file, no samples, NaN/inf, more than 2 channels,
            silence only, or a duration outside the limits.
        FileNotFoundError: the path does not exist.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if max_seconds is not None and not trim_silence:
            check_file_duration(path, max_seconds)
        data, rate = read_audio_file(path)
        origin = f"{path.name}"
    elif isinstance(source, tuple):
        rate, data = from_gradio(source)
        origin = "the recording"
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        if sample_rate is None:
            raise ValueError("An audio array needs its sample rate: load_audio(array, sample_rate=16000).")
        rate, data = check_rate(sample_rate), as_channels_last(to_numpy(source))
        origin = "the audio array"
    else:
        raise ValueError(
            f"Unsupported audio input of type {type(source).__name__}: expected a file path, a "
            "(sample_rate, array) tuple or a numpy array with sample_rate."
        )

    wav = _to_mono_24k(to_float(data), rate, origin)
    wav = fit_loudness(wav, normalize_peak)
    if float(np.max(np.abs(wav))) < SILENCE_PEAK:
        raise ValueError(f"{origin} is silent (peak below -60 dBFS): record or upload audio with a voice in it.")
    if trim_silence:
        wav = trim_silence_edges(wav)
    check_duration(wav, min_seconds=min_seconds, max_seconds=max_seconds, what=origin)
    # Always a fresh array: the caller's buffer is never returned or modified (the reference normalised in place).
    return np.array(wav, dtype=np.float32, copy=True, order="C")


def load_prompt_audio(source: AudioSource, sample_rate: int | None = None, *, trim_silence: bool = True,
                      normalize_peak: float | None = None) -> np.ndarray:
    """:func:`load_audio` with the voice-prompt limits (1–15 s, a warning above 10 s); float32 ``[N]`` at 24 kHz."""
    wav = load_audio(source, sample_rate, min_seconds=PROMPT_MIN_SECONDS, max_seconds=PROMPT_MAX_SECONDS,
                     trim_silence=trim_silence, normalize_peak=normalize_peak)
    seconds = len(wav) / SAMPLE_RATE
    if seconds > PROMPT_WARN_SECONDS:
        _LOG.warning("The voice prompt is %.1f s long; 3-10 s works best (prompt and output share a ~22 s budget).",
                     seconds)
    return wav


def check_duration(wav: np.ndarray, *, min_seconds: float | None = None, max_seconds: float | None = None,
                   what: str = "the audio") -> float:
    """Return the duration of 24 kHz samples ``wav`` in seconds; ValueError outside [min_seconds, max_seconds]."""
    seconds = len(wav) / SAMPLE_RATE
    if max_seconds is not None and seconds > max_seconds:
        raise ValueError(
            f"{what} is {seconds:.1f} s long; at most {max_seconds:g} s is accepted. Cut it to a shorter clip."
        )
    if min_seconds is not None and seconds < min_seconds:
        raise ValueError(
            f"{what} is {seconds:.2f} s long; at least {min_seconds:g} s is needed. Use a longer recording."
        )
    return seconds


def _to_mono_24k(data: np.ndarray, rate: int, origin: str) -> np.ndarray:
    """float32 ``[N, C]`` at ``rate`` → float32 ``[N']`` at 24 kHz: checks, channel mean, resample."""
    frames, channels = data.shape
    if frames == 0:
        raise ValueError(f"{origin} contains no samples (0 s of audio).")
    if frames / rate > MAX_DECODE_SECONDS:
        raise ValueError(f"{origin} is {frames / rate:.0f} s long; at most {MAX_DECODE_SECONDS:.0f} s is accepted.")
    if channels > MAX_CHANNELS:
        raise ValueError(
            f"{origin} has {channels} channels; voice prompts must be mono or stereo. Export a mono mix of the "
            "channel with the voice."
        )
    if not np.isfinite(data).all():
        raise ValueError(f"{origin} contains NaN or infinite samples: the recording is corrupt.")
    mono = data.mean(axis=1, dtype=np.float32) if channels > 1 else data[:, 0]
    return resample(np.ascontiguousarray(mono), rate, SAMPLE_RATE)
