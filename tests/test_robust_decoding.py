"""Repetition-aware sampling and length guards on the decoding path: the AR loop, the scheduler, CLI and HTTP."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from vallex.audio import to_pcm16
from vallex.cli import main as cli_main
from vallex.inference.ar import ar_decode
from vallex.inference.generation import language_ids
from vallex.inference.length_guards import frame_bounds_of_tokens
from vallex.inference.sampling_settings import Sampling
from vallex.serving import SpeechEngine
from vallex.serving.http import create_api

torch.set_num_threads(1)
STICKY = 0.85  # the toy distribution's peak: above top_p 0.8, so the nucleus is the peak alone
SEGMENT = 60  # frames for which the peak stays on one token


def sticky(eos: int):
    """A logits processor: for SEGMENT frames at a time one token has probability STICKY (never EOS), as a
    model stuck on one sound would give."""

    def processor(step: int, logits: torch.Tensor) -> torch.Tensor:
        rows, vocab = logits.shape
        probs = torch.full((rows, vocab), (1 - STICKY) / (vocab - 2))
        probs[:, 1 + (step // SEGMENT) % 1000] = STICKY
        probs[:, eos] = 0.0
        return probs.log()

    return processor


def longest_run(codes: torch.Tensor) -> int:
    values, best, current = codes.reshape(-1).tolist(), 1, 1
    for a, b in zip(values, values[1:]):
        current = current + 1 if a == b else 1
        best = max(best, current)
    return best


def _inputs(model):
    g = torch.Generator().manual_seed(0)
    text = torch.randint(5, 70, (1, 12), generator=g)
    return text, language_ids(12, 0, "en", "en")[None], torch.zeros(1, 0, dtype=torch.long)


def test_ras_breaks_the_loop_plain_sampling_locks_into(tiny_tts):
    model = tiny_tts.model
    text, langs, prompt0 = _inputs(model)
    eos = model.config.eos_id
    options = dict(top_p=0.8, min_frames=200, max_frames=200)
    plain = ar_decode(model, text, langs, prompt0, logits_processor=sticky(eos),
                      generator=torch.Generator().manual_seed(1), **options)
    assert longest_run(plain.codes) == SEGMENT and plain.ras_fired == 0  # the nucleus is the peak alone: locked
    guarded = [ar_decode(model, text, langs, prompt0, logits_processor=sticky(eos), ras=True,
                         generator=torch.Generator().manual_seed(1), **options) for _ in range(2)]
    # RAS fires from the 15th repeat in a second on; each fired draw leaves the peak with probability 0.15
    assert longest_run(guarded[0].codes) < SEGMENT and guarded[0].ras_fired > 20
    assert torch.equal(guarded[0].codes, guarded[1].codes)  # same seed, same codes


def test_length_guards_bound_each_sentence_and_report_the_limit(tiny_tts):
    text = "Hello there, how are you today? I hope the weather is fine where you are, and that your day goes well."
    for seed in (3, 4, 5):
        guarded = tiny_tts.synthesize_detailed(text, language="en", seed=seed, length_guards=True, ras=True)
        sentence = guarded.sentences[0]
        bounds = frame_bounds_of_tokens(sentence.tokens.langs)
        assert bounds.min_frames <= sentence.codes.shape[1] <= bounds.max_frames
        assert (sentence.stop_reason == "maxlen") == (sentence.codes.shape[1] == bounds.max_frames)
        assert bool(guarded.warnings) == (sentence.stop_reason == "maxlen") and isinstance(sentence.ras_fired, int)
    stopped = dataclasses.replace(guarded.sentences[0], stop_reason="maxlen")
    assert "length limit" in stopped.warning
    with pytest.raises(ValueError, match="ras must be True or False"):
        tiny_tts.synthesize("Hi.", language="en", ras="yes")


def test_cli_flags_reach_the_decoder(tiny_weights, tmp_path, synthesis_calls):
    out = tmp_path / "out.wav"
    code = cli_main(["synthesize", "--text", "Hello there.", "--language", "en", "--weights-dir", str(tiny_weights),
                     "--seed", "3", "--ras", "--length-guards", "--quiet", "-o", str(out)])
    [seen] = synthesis_calls
    assert code == 0 and out.is_file() and seen["ras"] is True and seen["length_guards"] is True


def test_http_extension_fields(tiny_tts):
    engine = SpeechEngine(tiny_tts, max_batch=1)
    try:
        with TestClient(create_api(engine, api_key="", voices=lambda: [], voice_names=lambda: [],
                                   default_voice=None, model_loaded=lambda: True)) as api:
            body = {"input": "Hello there.", "voice": "none", "response_format": "pcm", "seed": 2}
            good = api.post("/v1/audio/speech", json={**body, "ras": True, "length_guards": True})
            assert good.status_code == 200 and len(good.content) > 0
            bad = api.post("/v1/audio/speech", json={**body, "ras": "yes"})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "ras"
    finally:
        engine.close()
    assert np.frombuffer(good.content, "<i2").size > 0


def test_the_app_samples_as_the_library_does_unless_told(tiny_weights, tmp_path):
    from demo.config import AppConfig
    from demo.engine import Engine
    from demo.handlers import make_handlers

    engine = Engine(AppConfig(weights_dir=tiny_weights, presets_dir=tmp_path / "presets", device="cpu",
                              dtype="float32"))
    try:
        handlers = make_handlers(engine)
        # The controls' defaults are the library's: the same seed gives the API's audio.
        (_, audio), _, details, _ = handlers["preset"]("Yes.", "en_ben", None, "en", "none", 1, 1.0, 0, 1.0, 1)
        assert details["sampling"] == Sampling().as_dict()
        wav, _ = engine.with_model(lambda tts: tts.synthesize("Yes.", "en_ben", language="en", seed=1))
        assert np.array_equal(audio, to_pcm16(wav))
        _, _, details, _ = handlers["preset"]("Yes.", "en_ben", None, "en", "none", 1, 1.0, 0, 1.0, 1, True, True)
        assert details["sampling"] == Sampling(ras=True, length_guards=True).as_dict()
        assert all(isinstance(s["ras_redraws"], int) for s in details["sentences"])
    finally:
        engine.close()
