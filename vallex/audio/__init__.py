"""Audio in and out: any recording → mono float32 samples at 24 kHz, and back to files.

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
WebM when PyAV (``pip install av``, it bundles FFmpeg) is installed. Other containers are refused by extension.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from vallex.audio.codec_format import FRAME_RATE, HOP, SAMPLE_RATE  # noqa: F401 - also imported from here
from vallex.files import atomic_path

_LOG = logging.getLogger(__name__)

#: Voice prompts: shorter clips carry too little voice, longer ones the model was not trained on
#: (the reference rejects prompts over 15 s; training utterances were under 22 s with the output).
PROMPT_MIN_SECONDS = 1.0
PROMPT_MAX_SECONDS = 15.0
#: Above this, prompts still work but leave little room for the generated speech (prompt + output < 22 s).
PROMPT_WARN_SECONDS = 10.0

#: Mono or stereo only: a mean over many channels (surround, mic arrays) is rarely one clean voice.
MAX_CHANNELS = 2
#: A clip whose peak is below this (-60 dBFS) holds no usable voice.
SILENCE_PEAK = 1e-3
#: Hard limits on anything we decode, whatever the caller's duration limits (uploads are untrusted).
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_DECODE_SECONDS = 600.0

#: File extensions by decoder. Anything else is refused before decoding.
SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")
PYAV_EXTENSIONS = (".m4a", ".mp4", ".aac", ".webm")  # browser recordings are often WebM/Opus

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
            _check_file_duration(path, max_seconds)
        data, rate = read_audio_file(path)
        origin = f"{path.name}"
    elif isinstance(source, tuple):
        rate, data = _from_gradio(source)
        origin = "the recording"
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        if sample_rate is None:
            raise ValueError("An audio array needs its sample rate: load_audio(array, sample_rate=16000).")
        rate, data = _check_rate(sample_rate), _as_channels_last(_to_numpy(source))
        origin = "the audio array"
    else:
        raise ValueError(
            f"Unsupported audio input of type {type(source).__name__}: expected a file path, a "
            "(sample_rate, array) tuple or a numpy array with sample_rate."
        )

    wav = _to_mono_24k(_to_float(data), rate, origin)
    wav = _fit_loudness(wav, normalize_peak)
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


def trim_silence_edges(wav: np.ndarray, *, top_db: float = 40.0, frame: int = 480, margin: int = 1200) -> np.ndarray:
    """Drop leading/trailing samples quieter than ``top_db`` below the loudest 20 ms frame.

    ``wav``: float32 ``[N]`` at 24 kHz; ``frame``: window in samples (20 ms); ``margin``: samples kept around
    the voiced part (50 ms) so onsets and releases are not clipped.
    """
    if len(wav) <= frame:
        return wav
    hop = frame // 2
    starts = np.arange(0, len(wav) - frame + 1, hop)
    frames = np.lib.stride_tricks.sliding_window_view(wav, frame)[::hop]
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-20)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -top_db)
    begin = max(int(starts[loud[0]]) - margin, 0)
    end = min(int(starts[loud[-1]]) + frame + margin, len(wav))
    return wav[begin:end]


def read_audio_file(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode a file to (float32 or integer array ``[N, C]``, sample rate in Hz), checking container and header."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Audio file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path.name} is empty (0 bytes): upload the audio again.")
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path.name} is {size / 2**20:.0f} MiB; audio files up to {MAX_FILE_BYTES // 2**20} MiB "
                         "are accepted.")
    suffix = path.suffix.lower()
    if suffix in PYAV_EXTENSIONS:
        return _read_with_pyav(path)
    if suffix not in SOUNDFILE_EXTENSIONS and suffix != "":
        raise ValueError(_unsupported_message(path))
    try:
        info = sf.info(str(path))
        if info.frames / max(info.samplerate, 1) > MAX_DECODE_SECONDS:
            raise ValueError(f"{path.name} is {info.duration:.0f} s long; at most {MAX_DECODE_SECONDS:.0f} s of "
                             "audio is decoded.")
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except sf.LibsndfileError as error:
        raise ValueError(
            f"Could not decode {path.name}: the file is corrupt or not really {suffix[1:].upper() or 'audio'} "
            f"({error.error_string}). Re-export it as WAV or FLAC."
        ) from None
    except (RuntimeError, TypeError) as error:  # soundfile raises these for some malformed headers
        raise ValueError(f"Could not decode {path.name}: corrupt header ({error}).") from None
    return data, int(rate)


def save_audio(path: str | os.PathLike, wav: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write ``wav`` (float ``[N]`` in [-1, 1], clipped) as WAV (16-bit PCM), FLAC or OGG, chosen by suffix."""
    path = Path(path)
    samples = np.clip(_to_numpy(wav).astype(np.float32).reshape(-1), -1.0, 1.0)
    suffix = path.suffix.lower()
    formats = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}
    if suffix not in formats:
        raise ValueError(f"Cannot write {path.name}: choose a .wav, .flac or .ogg file name.")
    fmt, subtype = formats[suffix]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:  # a failure never leaves a partial file under the final name
        sf.write(partial, samples, sample_rate, format=fmt, subtype=subtype)
    return path


def to_pcm16(wav: np.ndarray | torch.Tensor) -> np.ndarray:
    """Float samples ``[N]`` in [-1, 1] → int16 ``[N]`` (clipped), e.g. for Gradio's numpy audio output."""
    samples = np.clip(_to_numpy(wav).astype(np.float32).reshape(-1), -1.0, 1.0)
    return np.round(samples * 32767.0).astype(np.int16)


# Decoding helpers ----------------------------------------------------------------------------------

def _read_with_pyav(path: Path) -> tuple[np.ndarray, int]:
    try:
        import av  # optional: bundles FFmpeg for M4A/AAC
    except ImportError:
        raise ValueError(
            f"{path.name}: M4A/AAC/WebM audio needs the optional PyAV decoder (`pip install av`). Or convert the file "
            "to WAV, FLAC, OGG, Opus or MP3."
        ) from None
    chunks: list[np.ndarray] = []
    rate = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path.name} has no audio stream.")
            stream = container.streams.audio[0]
            rate = int(stream.rate or stream.codec_context.sample_rate or 0)
            # Planar float keeps every channel apart: frames arrive as [C, n].
            resampler = av.AudioResampler(format="fltp")
            total = 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray()
                    chunks.append(chunk)
                    total += chunk.shape[1]
                    if rate and total / rate > MAX_DECODE_SECONDS:
                        raise ValueError(f"{path.name} is longer than {MAX_DECODE_SECONDS:.0f} s.")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
    except av.error.FFmpegError as error:
        raise ValueError(f"Could not decode {path.name}: the file is corrupt or not {path.suffix[1:].upper()} audio "
                         f"({error}).") from None
    if not rate:
        raise ValueError(f"Could not decode {path.name}: no sample rate in the header.")
    if not chunks:
        return np.zeros((0, 1), dtype=np.float32), rate
    return np.concatenate(chunks, axis=1).T.astype(np.float32), rate


def _unsupported_message(path: Path) -> str:
    optional = "" if _pyav_available() else " (after `pip install av`)"
    return (f"Unsupported audio container {path.suffix!r} ({path.name}): use WAV, FLAC, OGG/Vorbis, Opus, MP3, "
            f"or M4A/AAC/WebM{optional}.")


def _pyav_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def _check_file_duration(path: Path, max_seconds: float) -> None:
    """Refuse an over-long soundfile-readable upload from its header, before decoding it."""
    if path.suffix.lower() not in SOUNDFILE_EXTENSIONS or not path.is_file() or path.stat().st_size == 0:
        return  # read_audio_file reports these cases with the right message
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return
    if info.samplerate > 0 and info.frames / info.samplerate > max_seconds:
        raise ValueError(f"{path.name} is {info.frames / info.samplerate:.1f} s long; at most {max_seconds:g} s is "
                         "accepted. Cut it to a shorter clip.")


def _from_gradio(value: tuple) -> tuple[int, np.ndarray]:
    """Gradio ``gr.Audio(type="numpy")`` value: ``(sample_rate, array [N] or [N, C])``."""
    if len(value) != 2:
        raise ValueError("Expected a (sample_rate, samples) tuple as Gradio's numpy audio gives.")
    rate, data = value
    if isinstance(rate, np.ndarray) and not isinstance(data, np.ndarray):  # (array, rate) order
        rate, data = data, rate
    return _check_rate(rate), _as_channels_last(_to_numpy(data))


def _to_numpy(data: Any) -> np.ndarray:
    if isinstance(data, torch.Tensor):
        return data.detach().cpu().numpy()
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, (list, tuple)):
        return np.asarray(data)
    raise ValueError(f"Expected audio samples as a numpy array, got {type(data).__name__}.")


def _check_rate(rate: Any) -> int:
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, np.integer, float)) or int(rate) != rate:
        raise ValueError(f"Sample rate must be a whole number of Hz, got {rate!r}.")
    if not 1000 <= int(rate) <= 384_000:
        raise ValueError(f"Sample rate {rate} Hz is outside 1000-384000 Hz.")
    return int(rate)


def _as_channels_last(data: np.ndarray) -> np.ndarray:
    """``[N]`` → ``[N, 1]``; ``[C, N]`` → ``[N, C]`` (the shorter axis is channels)."""
    if data.ndim == 1:
        return data[:, None]
    if data.ndim != 2:
        raise ValueError(f"Audio samples must be shaped [N] or [N, channels], got shape {tuple(data.shape)}.")
    if data.shape[0] < data.shape[1]:
        data = data.T
    return data


def _to_float(data: np.ndarray) -> np.ndarray:
    """Integer PCM → float32 by full-scale division (int16/32768); float → float32. Shape kept."""
    if data.dtype == np.int16:
        return data.astype(np.float32) / 32768.0
    if data.dtype == np.int32:
        return (data.astype(np.float64) / 2147483648.0).astype(np.float32)
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if data.dtype == np.int8:
        return data.astype(np.float32) / 128.0
    if np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32, copy=False)
    raise ValueError(f"Unsupported sample type {data.dtype}: expected int16, int32, uint8 or float samples.")


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


def resample(wav: np.ndarray, orig_rate: int, new_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample float32 ``[N]`` with torchaudio's default windowed sinc (as ``encodec.utils.convert_audio``)."""
    if orig_rate == new_rate:
        return wav.astype(np.float32, copy=False)
    from vallex.audio._torchaudio_guard import ensure_torchaudio

    torchaudio = ensure_torchaudio()
    # The Resample transform, not functional.resample: its precomputed kernel differs in the last bits, and
    # this is exactly what encodec.utils.convert_audio (the reference's prompt path) runs.
    with torch.no_grad():
        out = torchaudio.transforms.Resample(orig_rate, new_rate)(
            torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)))
    return out.numpy()


def _fit_loudness(wav: np.ndarray, normalize_peak: float | None) -> np.ndarray:
    peak = float(np.max(np.abs(wav))) if len(wav) else 0.0
    if normalize_peak is not None:
        if not 0.0 < normalize_peak <= 1.0:
            raise ValueError(f"normalize_peak must be in (0, 1], got {normalize_peak}.")
        return wav * np.float32(normalize_peak / peak) if peak >= SILENCE_PEAK else wav
    if peak > 1.0:
        # Float input beyond full scale: scale the whole clip (not clip it) so it fits [-1, 1].
        return wav / np.float32(peak)
    return wav
