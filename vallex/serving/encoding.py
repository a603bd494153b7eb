"""Audio bytes for the HTTP API: mono float32 at 24 kHz -> wav / mp3 / opus / flac / pcm, whole or streamed.

Streaming (what arrives while the rest is still being made):

- ``pcm``: raw 16-bit little-endian samples, as they come.
- ``wav``: a 44-byte header whose RIFF and data sizes are 0xFFFFFFFF ("unknown", as OpenAI's API sends
  it), then 16-bit samples; soundfile/libsndfile, ffmpeg and Python's ``wave`` read it to the end.
- ``mp3``: libsndfile's LAME encoder, constant bit rate (64 kb/s at 24 kHz), frames as they are encoded.
  At close LAME rewrites its first frame (the "Info" tag with the length and the encoder delay); that frame
  has already gone out, so it stays the silent placeholder LAME wrote first. Decoders play it, and LAME's
  encoder delay that only the tag would trim, as 72 ms of silence before the speech. Constant bit rate
  keeps the length that decoders estimate from the file size right.
- ``opus``: Ogg Opus from libsndfile, one Ogg page every 100 ms (libsndfile's default is 1 s); nothing is
  rewritten at close, so the stream is exactly the file.
- ``flac``: **not streamed**. libsndfile writes the sample count and MD5 into the header at close; the
  header sent first would say "length unknown", which the FLAC format allows but libsndfile's own reader
  (soundfile) refuses. So FLAC is sent whole, with its real header, when synthesis ends.

:func:`encode` makes a whole file with exact headers (for non-streamed responses).
"""
from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
import soundfile as sf

#: The formats of OpenAI's ``response_format`` that we make (OpenAI's ``aac`` is not one: libsndfile has no AAC).
FORMATS: tuple[str, ...] = ("mp3", "opus", "flac", "wav", "pcm")
#: The formats that go out while they are being made (see the module docstring for flac).
STREAMED_FORMATS: frozenset[str] = frozenset({"mp3", "opus", "wav", "pcm"})
MEDIA_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg", "opus": "audio/ogg; codecs=opus", "flac": "audio/flac", "wav": "audio/wav",
    "pcm": "audio/pcm",
}
#: libsndfile's compression level for MP3 at constant bit rate: 0.6 gives 64 kb/s at 24 kHz.
MP3_COMPRESSION_LEVEL = 0.6
#: Target Ogg page duration for streamed Opus (libsndfile: SFC_SET_OGG_PAGE_LATENCY_MS).
OPUS_PAGE_MS = 100.0
_SFC_SET_OGG_PAGE_LATENCY_MS = 0x1302
_UNKNOWN_SIZE = 0xFFFFFFFF
_SOUNDFILE_FORMATS: dict[str, dict[str, Any]] = {
    "wav": dict(format="WAV", subtype="PCM_16"),
    "flac": dict(format="FLAC", subtype="PCM_16"),
    "mp3": dict(format="MP3", subtype="MPEG_LAYER_III", bitrate_mode="CONSTANT",
                compression_level=MP3_COMPRESSION_LEVEL),
    "opus": dict(format="OGG", subtype="OPUS"),
}


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of :data:`FORMATS`, else a ValueError listing them."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown audio format {fmt!r}: expected one of {', '.join(FORMATS)}.")
    return fmt


def _clip(samples: np.ndarray) -> np.ndarray:
    """Mono float32 in [-1, 1] (libsndfile wraps around instead of clipping)."""
    return np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)


def pcm16(samples: np.ndarray) -> bytes:
    """16-bit little-endian PCM bytes of float samples (clipped to [-1, 1])."""
    return np.round(_clip(samples) * 32767.0).astype("<i2").tobytes()


def wav_header(sample_rate: int, num_samples: int | None = None) -> bytes:
    """A 44-byte header of a mono 16-bit PCM WAV; ``num_samples=None``: sizes 0xFFFFFFFF (unknown, streaming)."""
    if num_samples is None:
        riff_size = data_size = _UNKNOWN_SIZE
    else:
        data_size = 2 * num_samples
        riff_size = 36 + data_size
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, 2 * sample_rate, 2, 16)
            + b"data" + struct.pack("<I", data_size))


def encode(samples: np.ndarray, fmt: str, sample_rate: int = 24000) -> bytes:
    """A whole file (exact headers) of mono float ``samples``."""
    check_format(fmt)
    samples = _clip(samples)
    if fmt == "pcm":
        return pcm16(samples)
    if fmt == "wav":
        return wav_header(sample_rate, len(samples)) + pcm16(samples)
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", sample_rate, 1, **_SOUNDFILE_FORMATS[fmt]) as out:
        out.write(samples)
    return buffer.getvalue()


class StreamEncoder:
    """Turns chunks of float samples into the bytes of one growing file: ``header``, ``write()``, ``close()``."""

    def __init__(self, fmt: str, sample_rate: int = 24000) -> None:
        check_format(fmt)
        if fmt not in STREAMED_FORMATS:
            raise ValueError(f"{fmt} cannot be streamed (its header is written last): encode it whole.")
        self.format, self.sample_rate = fmt, sample_rate
        self._sink: _AppendOnlySink | None = None
        self._file: sf.SoundFile | None = None
        if fmt in _SOUNDFILE_FORMATS and fmt != "wav":
            self._sink = _AppendOnlySink()
            self._file = sf.SoundFile(self._sink, "w", sample_rate, 1, **_SOUNDFILE_FORMATS[fmt])
            if fmt == "opus":
                _set_ogg_page_latency(self._file, OPUS_PAGE_MS)
        self._closed = False

    def header(self) -> bytes:
        """Bytes that start the file (before any audio)."""
        if self.format == "wav":
            return wav_header(self.sample_rate)
        return self._sink.take() if self._sink is not None else b""

    def write(self, samples: np.ndarray) -> bytes:
        """Encode ``samples``; returns the bytes ready now (possibly none: encoders keep whole frames/pages)."""
        if self._closed:
            raise ValueError("StreamEncoder.write() after close().")
        if self._file is None:
            return pcm16(samples)
        samples = _clip(samples)
        if len(samples):
            self._file.write(samples)
        return self._sink.take()

    def close(self) -> bytes:
        """Finish the file; returns its last bytes."""
        if self._closed:
            return b""
        self._closed = True
        if self._file is None:
            return b""
        self._file.close()
        return self._sink.take()


class _AppendOnlySink:
    """A write-only file for libsndfile whose bytes are handed out as soon as they are written.

    Bytes that were already taken cannot change: writes over them (header updates at close) are dropped
    and counted in ``rewrites``.
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        self._taken = 0  # bytes handed out; the file's first len(pending) bytes after them are pending
        self._position = 0
        self.rewrites = 0

    def take(self) -> bytes:
        data = bytes(self._pending)
        self._taken += len(data)
        self._pending.clear()
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._position = offset
        elif whence == io.SEEK_CUR:
            self._position += offset
        else:
            self._position = self._taken + len(self._pending) + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        return b""  # encoders never need to read back what they wrote

    def write(self, data: bytes) -> int:
        data = bytes(data)
        written = len(data)
        start = self._position
        self._position += written
        if start < self._taken:  # over bytes already handed out: keep only what lies after them
            self.rewrites += 1
            data = data[self._taken - start:]
            start = self._taken
        if data:
            offset = start - self._taken
            if offset > len(self._pending):
                self._pending.extend(bytes(offset - len(self._pending)))
            self._pending[offset:offset + len(data)] = data
        return written

    def flush(self) -> None:
        pass


def _set_ogg_page_latency(file: sf.SoundFile, milliseconds: float) -> None:
    """Shorter Ogg pages (libsndfile's SFC_SET_OGG_PAGE_LATENCY_MS, which soundfile does not wrap)."""
    try:
        value = sf._ffi.new("double*", milliseconds)
        sf._snd.sf_command(file._file, _SFC_SET_OGG_PAGE_LATENCY_MS, value, sf._ffi.sizeof("double"))
    except AttributeError:  # another soundfile: keep libsndfile's default (1 s pages)
        pass
