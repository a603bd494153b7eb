"""Audio files in and out: decoding with ``soundfile`` (libsndfile) or, for M4A/AAC/MP4/WebM, PyAV, within hard
limits on size and duration (uploads are untrusted); writing WAV, FLAC or OGG."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from vallex.audio.codec_format import SAMPLE_RATE
from vallex.audio.samples import to_numpy
from vallex.files import atomic_path, make_folder

#: Hard limits on anything we decode, whatever the caller's duration limits (uploads are untrusted).
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_DECODE_SECONDS = 600.0

#: File extensions by decoder. Anything else is refused before decoding.
SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")
PYAV_EXTENSIONS = (".m4a", ".mp4", ".aac", ".webm")  # browser recordings are often WebM/Opus


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
    samples = np.clip(to_numpy(wav).astype(np.float32).reshape(-1), -1.0, 1.0)
    suffix = path.suffix.lower()
    formats = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}
    if suffix not in formats:
        raise ValueError(f"Cannot write {path.name}: choose a .wav, .flac or .ogg file name.")
    fmt, subtype = formats[suffix]
    make_folder(path.parent)
    with atomic_path(path) as partial:  # a failure never leaves a partial file under the final name
        sf.write(partial, samples, sample_rate, format=fmt, subtype=subtype)
    return path


def check_file_duration(path: Path, max_seconds: float) -> None:
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
