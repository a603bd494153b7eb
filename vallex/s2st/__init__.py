"""Speech-to-speech translation in the speaker's own voice: Whisper → translation → VALL-E X.

    from vallex.s2st import SpeechTranslator
    s2st = SpeechTranslator.from_pretrained()
    result = s2st.translate("speech.wav", target="en")   # .transcript, .translation, .waveform (24 kHz)

See :mod:`vallex.s2st.pipeline` for the steps and ``vallex/s2st/README.md`` for models and offline use.
The speech-recognition (:mod:`vallex.asr`) and translation models are optional (``pip install 'vallex[s2st]'``).
"""
from vallex.asr import (
                        ASR_SAMPLE_RATE,
                        FasterWhisperRecognizer,
                        Recognition,
                        SpeechRecognizer,
                        TransformersWhisperRecognizer,
                        load_recognizer,
)
from vallex.optional_models import ModelUnavailableError
from vallex.s2st.pipeline import SpeechTranslation, SpeechTranslator, TranslatedChunk, translate_speech
from vallex.s2st.segment import split_speech
from vallex.s2st.translation import TextTranslator, TransformersTranslator, as_translator, load_translator

__all__ = [
    "ASR_SAMPLE_RATE", "FasterWhisperRecognizer", "ModelUnavailableError", "Recognition", "SpeechRecognizer",
    "SpeechTranslation", "SpeechTranslator", "TextTranslator", "TransformersTranslator",
    "TransformersWhisperRecognizer", "TranslatedChunk", "as_translator", "load_recognizer", "load_translator",
    "split_speech", "translate_speech",
]
