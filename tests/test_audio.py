"""Audio loading: every supported format, the same samples from file/Gradio/numpy, and each bad input."""
from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import soundfile as sf

from vallex import audio
from vallex.audio import SAMPLE_RATE, load_audio, load_prompt_audio


def voice_like(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A float32 [N, C] test signal: a gliding tone with vibrato and a little noise, peak ~0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.4 * np.sin(2 * np.pi * (150 * t + 30 * t**2 + 2 * np.sin(2 * np.pi * 5 * t)))
    data = np.stack([tone * (1.0 - 0.2 * c) for c in range(channels)], axis=1)
    return (data + 0.02 * rng.standard_normal(data.shape)).astype(np.float32)


def write_with_pyav(path, data: np.ndarray, rate: int, container_format: str, codec: str) -> None:
    import av

    layout = "stereo" if data.shape[1] == 2 else "mono"
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.T), format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


FORMATS = [  # (suffix, soundfile format, subtype, sample rate)
    ("wav", "WAV", "PCM_16", 44_100),
    ("flac", "FLAC", "PCM_24", 16_000),
    ("ogg", "OGG", "VORBIS", 22_050),
    ("opus", "OGG", "OPUS", 48_000),
    ("mp3", "MP3", "MPEG_LAYER_III", 44_100),
]


@pytest.mark.parametrize("suffix,fmt,subtype,rate", FORMATS)
def test_every_soundfile_format_loads_as_mono_24k(tmp_path, suffix, fmt, subtype, rate):
    data = voice_like(2.0, rate, channels=2)
    path = tmp_path / f"clip.{suffix}"
    sf.write(str(path), data, rate, format=fmt, subtype=subtype)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    # Lossy codecs add encoder delay/padding (tens of ms); the duration must still be ~2 s at 24 kHz.
    assert abs(len(wav) - 2 * SAMPLE_RATE) < 0.1 * SAMPLE_RATE
    assert 0.2 < np.abs(wav).max() <= 1.0
    # The content survives: the channel mean of the source, resampled, correlates with the result.
    reference = audio.resample(data.mean(axis=1), rate, SAMPLE_RATE)
    n = min(len(reference), len(wav))
    if suffix in ("wav", "flac"):  # lossless and delay-free: (almost) identical samples
        np.testing.assert_allclose(wav[:n], reference[:n], atol=2e-4)


@pytest.mark.parametrize("suffix,container_format,codec,rate", [("m4a", "mp4", "aac", 44_100),
                                                                ("webm", "webm", "libopus", 48_000)])
def test_m4a_and_webm_load_through_pyav(tmp_path, suffix, container_format, codec, rate):
    data = voice_like(1.5, rate, channels=2)
    path = tmp_path / f"clip.{suffix}"
    write_with_pyav(path, data, rate, container_format, codec)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - 1.5 * SAMPLE_RATE) < 0.1 * SAMPLE_RATE
    assert np.abs(wav).max() > 0.2


def test_m4a_without_pyav_asks_for_it(tmp_path, monkeypatch):
    path = tmp_path / "clip.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(ValueError, match="pip install av"):
        load_audio(path)


def test_file_gradio_tuple_and_numpy_give_identical_samples(tmp_path):
    rate = 44_100
    pcm = (voice_like(1.5, rate, channels=2) * 32767).astype(np.int16)  # what a microphone gives
    path = tmp_path / "clip.wav"
    sf.write(str(path), pcm, rate, subtype="PCM_16")
    from_file = load_audio(path)
    from_gradio = load_audio((rate, pcm))
    from_numpy = load_audio(pcm, sample_rate=rate)
    from_channels_first = load_audio(pcm.T.copy(), sample_rate=rate)
    assert np.array_equal(from_file, from_gradio)
    assert np.array_equal(from_file, from_numpy)
    assert np.array_equal(from_file, from_channels_first)


def test_int16_is_scaled_by_full_range_not_peak_normalised():
    pcm = np.full(SAMPLE_RATE, 3277, dtype=np.int16)  # ~0.1 of full scale, already at 24 kHz
    pcm[::2] = -3277
    wav = load_audio((SAMPLE_RATE, pcm))
    assert np.allclose(np.abs(wav), 3277 / 32768)


def test_stereo_is_averaged_not_first_channel():
    left = voice_like(1.2, SAMPLE_RATE)[:, 0]
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    wav = load_audio((SAMPLE_RATE, stereo))
    np.testing.assert_allclose(wav, left / 2, atol=1e-7)


def test_float_beyond_full_scale_is_scaled_into_range_and_normalize_peak():
    data = voice_like(1.2, SAMPLE_RATE)[:, 0] * 5  # peak ~2.5
    wav = load_audio(data, sample_rate=SAMPLE_RATE)
    assert np.isclose(np.abs(wav).max(), 1.0)
    np.testing.assert_allclose(wav, data / np.abs(data).max(), rtol=1e-6)
    quiet = voice_like(1.2, SAMPLE_RATE)[:, 0] * 0.1
    assert np.isclose(np.abs(load_audio(quiet, sample_rate=SAMPLE_RATE)).max(), np.abs(quiet).max())
    assert np.isclose(np.abs(load_audio(quiet, sample_rate=SAMPLE_RATE, normalize_peak=0.9)).max(), 0.9)


def test_the_callers_array_is_never_modified_or_returned():
    data = voice_like(1.2, SAMPLE_RATE)[:, 0] * 3  # beyond full scale: gets scaled
    original = data.copy()
    for kwargs in ({}, {"normalize_peak": 0.5}, {"trim_silence": True}):
        wav = load_audio(data, sample_rate=SAMPLE_RATE, **kwargs)
        wav[:] = 0
        assert np.array_equal(data, original)
    quiet = voice_like(1.2, SAMPLE_RATE)[:, 0]
    assert not np.shares_memory(load_audio(quiet, sample_rate=SAMPLE_RATE), quiet)


def test_matches_encodec_convert_audio_the_reference_preprocessing():
    """Channel mean then torchaudio's Resample, as ``encodec.utils.convert_audio`` (the reference's preprocessing)
    does."""
    import torch

    from vallex.audio._torchaudio_guard import ensure_torchaudio

    ensure_torchaudio()
    from encodec.utils import convert_audio

    for rate in (16_000, 44_100, 48_000):
        data = voice_like(1.1, rate, channels=2)
        expected = convert_audio(torch.from_numpy(data.T.copy()), rate, SAMPLE_RATE, 1)[0].numpy()
        np.testing.assert_array_equal(load_audio((rate, data)), expected)


def test_resampling_gives_24k_length():
    for rate in (8_000, 16_000, 22_050, 44_100, 48_000):
        wav = load_audio(voice_like(1.0, rate), sample_rate=rate)
        assert abs(len(wav) - SAMPLE_RATE) <= 1


def test_trim_silence_removes_edges_only():
    voice = voice_like(1.5, SAMPLE_RATE)[:, 0]
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    padded = np.concatenate([silence, voice, silence])
    wav = load_audio(padded, sample_rate=SAMPLE_RATE, trim_silence=True)
    assert 1.5 * SAMPLE_RATE <= len(wav) <= 1.5 * SAMPLE_RATE + 0.15 * SAMPLE_RATE
    untrimmed = load_audio(padded, sample_rate=SAMPLE_RATE)
    assert len(untrimmed) == len(padded)


def test_prompt_duration_warning_above_10s(caplog):
    with caplog.at_level(logging.WARNING, logger="vallex.audio"):
        wav = load_prompt_audio(voice_like(11.0, SAMPLE_RATE)[:, 0], SAMPLE_RATE)
    assert len(wav) == 11 * SAMPLE_RATE
    assert any("11.0 s" in record.message for record in caplog.records)


def test_save_audio_round_trip(tmp_path):
    wav = load_audio(voice_like(1.0, SAMPLE_RATE), sample_rate=SAMPLE_RATE)
    for suffix in ("wav", "flac"):
        path = audio.save_audio(tmp_path / f"out.{suffix}", wav)
        back = load_audio(path)
        np.testing.assert_allclose(back, wav, atol=1 / 32768 + 1e-6)
    with pytest.raises(ValueError, match=r"\.wav"):
        audio.save_audio(tmp_path / "out.xyz", wav)
    assert audio.to_pcm16(np.array([2.0, -2.0, 0.5])).tolist() == [32767, -32767, 16384]


# Bad inputs: each gives a clear ValueError ------------------------------------------------------------

def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_audio(path)


def test_corrupt_header(tmp_path):
    path = tmp_path / "broken.wav"
    sf.write(str(path), voice_like(1.0, 16_000), 16_000)
    data = bytearray(path.read_bytes())
    data[:12] = b"GARBAGEHEAD!"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        load_audio(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "truncated.flac"
    sf.write(str(path), voice_like(1.0, 16_000), 16_000, format="FLAC")
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match="Could not decode"):
        load_audio(path)


def test_zero_length_audio(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(str(path), np.zeros((0, 1), dtype=np.float32), 16_000)
    with pytest.raises(ValueError, match="no samples"):
        load_audio(path)
    with pytest.raises(ValueError, match="no samples"):
        load_audio((16_000, np.zeros(0, dtype=np.int16)))


def test_silence_only(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(str(path), np.zeros(32_000, dtype=np.float32), 16_000)
    with pytest.raises(ValueError, match="silent"):
        load_audio(path)


def test_prompt_longer_than_15s(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(str(path), voice_like(16.0, 16_000), 16_000)
    with pytest.raises(ValueError, match="at most 15 s"):
        load_prompt_audio(path)
    with pytest.raises(ValueError, match="at most 15 s"):
        load_prompt_audio((16_000, voice_like(16.0, 16_000)))


def test_prompt_shorter_than_1s():
    with pytest.raises(ValueError, match="at least 1 s"):
        load_prompt_audio(voice_like(0.5, 16_000), 16_000)


def test_nan_and_inf_samples(tmp_path):
    data = voice_like(1.0, 16_000)
    data[100, 0] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(str(path), data, 16_000, subtype="FLOAT")
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_audio(path)
    data[100, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_audio(data, sample_rate=16_000)


def test_eight_channel_file(tmp_path):
    path = tmp_path / "surround.wav"
    sf.write(str(path), voice_like(1.0, 16_000, channels=8), 16_000)
    with pytest.raises(ValueError, match="8 channels"):
        load_audio(path)


def test_corrupt_m4a(tmp_path):
    path = tmp_path / "broken.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="corrupt"):
        load_audio(path)


def test_unsupported_container(tmp_path):
    path = tmp_path / "clip.mkv"
    path.write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00" * 100)
    with pytest.raises(ValueError, match="Unsupported audio container"):
        load_audio(path)
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    with pytest.raises(ValueError, match="Unsupported audio container"):
        load_audio(text)


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(ValueError, match="sample rate"):
        load_audio(np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError, match="Sample rate"):
        load_audio((0, np.zeros(100, dtype=np.int16)))
    with pytest.raises(ValueError, match="Unsupported audio input"):
        load_audio(12345)
    with pytest.raises(ValueError, match="sample type"):
        load_audio(np.zeros(100, dtype=np.complex64), sample_rate=16_000)
