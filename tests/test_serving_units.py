"""The HTTP API's parts without a model: time-stretching, audio encoding (whole and streamed), request checks."""
from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest
import soundfile as sf

from vallex.serving.encoding import FORMATS, STREAMED_FORMATS, StreamEncoder, encode, pcm16, wav_header
from vallex.serving.stretch import TimeStretcher, stretch

SR = 24000


def tone(seconds: float, hz: float = 200.0, start: float = 0.0, stop: float | None = None) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    gate = (t >= start) & (t < (stop if stop is not None else seconds))
    return (0.5 * np.sin(2 * np.pi * hz * t) * gate).astype(np.float32)


def peak_hz(samples: np.ndarray) -> float:
    return float(np.fft.rfftfreq(len(samples), 1 / SR)[np.argmax(np.abs(np.fft.rfft(samples)))])


# Time-stretching ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("speed", [0.25, 0.5, 1.5, 2.0, 4.0])
def test_stretch_changes_length_not_pitch(speed: float) -> None:
    x = tone(1.0)
    y = stretch(x, speed)
    assert len(y) == round(len(x) / speed) and y.dtype == np.float32
    assert abs(peak_hz(y) - 200.0) < 3.0
    middle = y[len(y) // 4: 3 * len(y) // 4]  # periods line up: no loss of level from cancelling frames
    assert np.sqrt(np.mean(middle ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


@pytest.mark.parametrize("speed", [0.5, 3.0])
def test_stretch_keeps_time_in_proportion(speed: float) -> None:
    y = stretch(tone(2.0, 300.0, start=0.5, stop=1.0), speed)
    loud = np.nonzero(np.abs(y) > 0.05)[0] / SR
    # within one 30 ms frame of where the tone starts and stops, scaled
    assert loud[0] == pytest.approx(0.5 / speed, abs=0.03) and loud[-1] == pytest.approx(1.0 / speed, abs=0.04)


@pytest.mark.parametrize("speed", [0.3, 1.7])
def test_stretch_in_any_chunking_gives_the_same_samples(speed: float) -> None:
    x = (0.3 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)
    whole = stretch(x, speed)
    stretcher, pieces, i = TimeStretcher(speed, SR), [], 0
    for n in np.random.default_rng(1).integers(1, 4000, size=1000):
        if i >= len(x):
            break
        pieces.append(stretcher.process(x[i:i + n]))
        i += n
    pieces.append(stretcher.flush())
    assert np.array_equal(np.concatenate(pieces), whole)


def test_stretch_edge_cases() -> None:
    assert np.array_equal(stretch(tone(0.1), 1.0), tone(0.1))  # 1.0: untouched
    assert len(stretch(np.zeros(0, np.float32), 2.0)) == 0
    assert len(stretch(np.ones(10, np.float32), 2.0)) == 5  # shorter than one frame
    for bad in (0.2, 4.5, "2", True, float("nan")):
        with pytest.raises(ValueError, match="speed"):
            TimeStretcher(bad)
    stretcher = TimeStretcher(2.0)
    stretcher.flush()
    with pytest.raises(ValueError, match="after flush"):
        stretcher.process(np.zeros(10, np.float32))


# Encoding -------------------------------------------------------------------------------------------------

NOISE = (0.3 * np.random.default_rng(2).standard_normal(3 * SR)).astype(np.float32)


@pytest.mark.parametrize("fmt", FORMATS)
def test_whole_files_decode_exactly(fmt: str) -> None:
    data = encode(NOISE, fmt, SR)
    if fmt == "pcm":
        decoded = np.frombuffer(data, "<i2").astype(np.float32) / 32767
        assert np.abs(decoded - np.clip(NOISE, -1, 1)).max() < 1e-4
        return
    decoded, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == SR and len(decoded) == len(NOISE)  # exact length: lossy formats carry it in their header
    if fmt in ("wav", "flac"):
        assert np.abs(decoded - np.clip(NOISE, -1, 1)).max() < 1e-4


@pytest.mark.parametrize("fmt", sorted(STREAMED_FORMATS))
def test_streamed_files_grow_chunk_by_chunk_and_decode(fmt: str) -> None:
    encoder = StreamEncoder(fmt, SR)
    pieces = [encoder.header()]
    for start in range(0, len(NOISE), SR // 5):  # 0.2 s chunks
        pieces.append(encoder.write(NOISE[start:start + SR // 5]))
    pieces.append(encoder.close())
    data = b"".join(pieces)
    assert sum(1 for piece in pieces[1:-1] if piece) >= 10  # bytes came out during the stream, not at the end
    if fmt == "pcm":
        assert len(data) == 2 * len(NOISE)
        return
    decoded, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == SR and np.isfinite(decoded).all()
    # mp3: the silent Info-tag placeholder frame and LAME's delay (72 ms) come first; the rest is all there
    assert len(NOISE) <= len(decoded) <= len(NOISE) + 0.08 * SR


def test_streamed_wav_has_unknown_sizes_and_reads_everywhere() -> None:
    encoder = StreamEncoder("wav", SR)
    data = encoder.header() + encoder.write(NOISE) + encoder.close()
    assert data[:4] == b"RIFF" and struct.unpack("<I", data[4:8])[0] == 0xFFFFFFFF
    assert struct.unpack("<I", data[40:44])[0] == 0xFFFFFFFF
    assert len(sf.read(io.BytesIO(data))[0]) == len(NOISE)
    with wave.open(io.BytesIO(data)) as reader:
        assert reader.getframerate() == SR and len(reader.readframes(10 ** 9)) == 2 * len(NOISE)


def test_mp3_header_rewrite_is_dropped_not_applied() -> None:
    encoder = StreamEncoder("mp3", SR)
    first = encoder.header() + encoder.write(NOISE[:SR])
    encoder.close()
    assert first[:2] == b"\xff\xf3"  # an MPEG-2 layer III frame header
    assert encoder._sink.rewrites == 1  # LAME's Info tag, written over bytes already sent


def test_encoding_checks_and_clipping() -> None:
    with pytest.raises(ValueError, match="cannot be streamed"):
        StreamEncoder("flac")
    with pytest.raises(ValueError, match="Unknown audio format 'aac'"):
        encode(NOISE, "aac")
    loud = np.array([2.0, -3.0, 0.5], np.float32)
    assert np.frombuffer(pcm16(loud), "<i2").tolist() == [32767, -32767, 16384]  # clipped, never wrapped
    assert wav_header(SR, 10)[4:8] == struct.pack("<I", 56) and len(wav_header(SR)) == 44
    encoder = StreamEncoder("pcm")
    encoder.close()
    with pytest.raises(ValueError, match="after close"):
        encoder.write(loud)


# Request checks of the HTTP API -----------------------------------------------------------------------------

class _IdleEngine:
    """An engine that is never asked for speech (the checks below stop before submitting)."""

    stats = None
    max_batch = max_queue = 1

    def submit(self, request, **options):
        raise AssertionError("nothing should reach the engine")


def test_fastapi_errors_get_openai_shape() -> None:
    from fastapi.testclient import TestClient

    from vallex.serving.http import create_api

    app = create_api(_IdleEngine(), api_key="")

    @app.get("/typed")
    def typed(count: int) -> dict:
        return {"count": count}

    client = TestClient(app)
    response = client.get("/typed", params={"count": "many"})  # FastAPI's own 422, as OpenAI's 400
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "count" and response.json()["error"]["type"] == "invalid_request_error"
    assert client.get("/typed").json()["error"]["code"] == "missing_required_parameter"
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_long_text_mode_follows_the_length_of_the_text() -> None:
    """The HTTP API's default long_text "auto", decided by the library's planner while it runs the front end."""
    from vallex.synthesis.text_plan import plan_text

    def mode(text: str, language: str, requested: str) -> str | None:
        return plan_text(text, language, requested).long_text

    assert mode("Hello there.", "auto", "auto") is None  # one utterance
    sentences = " ".join(f"Sentence {n} is a short one, but there are many." for n in range(12))
    assert len(sentences) < 1000 and mode(sentences, "auto", "auto") == "fixed-prompt"  # > 300 phonemes
    assert mode("Hi. " * 300, "en", "auto") == "fixed-prompt"  # > 1000 characters
    assert mode("Hello.", "en", "sliding-window") == "sliding-window"
    with pytest.raises(ValueError, match="pronounce"):
        mode("!!! ???", "auto", "auto")


def test_voice_names_are_checked_before_any_lookup() -> None:
    from vallex.serving.http import APIError, SpeechAPI

    looked_up = []
    api = SpeechAPI(_IdleEngine(), voice_names=lambda: looked_up.append(1) or ["me"], default_voice="me",
                    api_key="")
    assert api.resolve_voice("me") == "me" and api.resolve_voice("ALLOY") == "me" and api.resolve_voice(None) == "me"
    assert api.resolve_voice("none") is None
    looked_up.clear()
    for bad in ("../me", "me/../../x", "a b", "x" * 65, ""):
        with pytest.raises(APIError) as caught:
            api.resolve_voice(bad)
        assert caught.value.param == "voice" and caught.value.status == 400
    assert looked_up == []  # a bad name never reaches the voice list (nor the file system)
    with pytest.raises(ValueError, match="default voice"):
        SpeechAPI(_IdleEngine(), default_voice="../x", api_key="")


@pytest.mark.parametrize(("error", "status", "code", "param"), [
    ("ModelUnavailable", 503, "model_unavailable", None),
    ("ServerBusy", 503, "server_busy", None),
    ("ValueError", 400, "invalid_value", "input"),
    ("RuntimeError", 503, "unavailable", None),  # the engine is shutting down
])
def test_engine_refusals_map_to_statuses(error: str, status: int, code: str, param: str | None) -> None:
    """SpeechEngine.submit's refusals as answers: the client's mistake 400, the server's state 503 + Retry-After."""
    from vallex.serving import ModelUnavailable, ServerBusy
    from vallex.serving.openai_schema import submit_error

    kind = {"ModelUnavailable": ModelUnavailable, "ServerBusy": ServerBusy, "ValueError": ValueError,
            "RuntimeError": RuntimeError}[error]
    answer = submit_error(kind("no"), retry_after_s=7)
    assert (answer.status, answer.code, answer.param) == (status, code, param)
    assert answer.headers == ({"Retry-After": "7"} if status == 503 else {})
    assert answer.kind == ("server_error" if status == 503 else "invalid_request_error")


def test_the_transport_still_exports_the_schemas_names() -> None:
    """vallex.serving.http is where users import the API from: the schema's public names resolve there too."""
    import vallex.serving.http as http
    import vallex.serving.openai_schema as schema

    assert all(hasattr(http, name) for name in http.__all__)
    for name in ("APIError", "SpeechBody", "VoiceInfo", "preset_voices", "error_response", "MODELS"):
        assert getattr(http, name) is getattr(schema, name)
