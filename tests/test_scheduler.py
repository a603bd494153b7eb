"""The one path from text to audio (vallex.synthesis.scheduler): planning once, and every caller on it."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import with_voices
from fastapi.testclient import TestClient

import vallex.synthesis.text_plan as text_plan_module
from vallex.prompts import PresetLibrary, VoicePrompt
from vallex.serving import SpeechEngine, SpeechRequest
from vallex.serving.http import create_api, preset_voices
from vallex.synthesis.request import SynthesisRequest
from vallex.synthesis.scheduler import Scheduler
from vallex.synthesis.text_plan import MAX_SINGLE_UTTERANCE_TOKENS, plan_text
from vallex.text import tokenize

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
TWO = "The first sentence is here. And this is the second one."


@pytest.fixture
def counted_front_end(monkeypatch):
    """Every call of the text front end the scheduler makes, by text."""
    calls: list[str] = []
    real = text_plan_module.tokenize

    def counting(text, *args, **kwargs):
        calls.append(text)
        return real(text, *args, **kwargs)

    monkeypatch.setattr(text_plan_module, "tokenize", counting)
    return calls


def test_auto_long_text_is_one_utterance_when_it_fits_else_sentences(counted_front_end):
    short = plan_text("Hello there. How are you?", "en", "auto")
    assert short.long_text is None and len(short.sentences) == 1 and counted_front_end == ["Hello there. How are you?"]
    long_text = " ".join([TWO] * 12)
    assert len(tokenize(long_text, "en", max_tokens=None)) > MAX_SINGLE_UTTERANCE_TOKENS
    planned = plan_text(long_text, "en", "auto")
    assert planned.long_text == "fixed-prompt" and len(planned.sentences) == 24
    with pytest.raises(ValueError, match="Unknown long-text mode"):
        plan_text("Hi.", "en", "sometimes")


def test_a_text_plan_is_not_planned_again(tiny_tts, counted_front_end):
    text = plan_text(TWO, "en", "fixed-prompt")
    calls = len(counted_front_end)
    result = tiny_tts.synthesize_request(SynthesisRequest(text, seed=1))
    assert len(counted_front_end) == calls  # the sentences' tokens came with the plan
    alone = tiny_tts.synthesize_detailed(TWO, language="en", long_text="fixed-prompt", seed=1)
    assert np.array_equal(result.waveform, alone.waveform)


def test_an_http_request_goes_through_the_front_end_once(tiny_tts, tmp_path, counted_front_end):
    library = PresetLibrary(tmp_path)
    codes = torch.randint(0, 1024, (1, 75, 8), generator=torch.Generator().manual_seed(0))
    library.save("alice", VoicePrompt(codes=codes, text_ids=tokenize("Hi.", "en").ids, language="en"))
    engine = SpeechEngine(with_voices(tiny_tts, library.load, library.names), max_batch=2)
    try:
        with TestClient(create_api(engine, voices=lambda: preset_voices(library), voice_names=library.names,
                                   default_voice="alice", api_key="", model_loaded=lambda: True)) as api:
            answer = api.post("/v1/audio/speech", json={"input": TWO, "voice": "alice", "long_text": "fixed-prompt",
                                                        "response_format": "pcm", "seed": 3})
            assert answer.status_code == 200 and answer.headers["X-Vallex-Long-Text"] == "fixed-prompt"
    finally:
        engine.close()
    assert counted_front_end == ["The first sentence is here.", "And this is the second one."]


def test_the_engine_and_the_api_make_the_same_audio_through_the_same_scheduler(tiny_tts):
    request = SpeechRequest(TWO, language="en", long_text="sliding-window", seed=7, chunk_seconds=0.2)
    engine = SpeechEngine(tiny_tts, max_batch=2)
    try:
        served = np.concatenate(list(engine.submit(request)))
    finally:
        engine.close()
    direct = np.concatenate(list(tiny_tts.synthesize_stream(TWO, language="en", long_text="sliding-window", seed=7,
                                                            chunk_seconds=0.2)))
    assert np.array_equal(served, direct)


class Sink:
    cancelled = False

    def __init__(self):
        self.pieces, self.sentences, self.closed = [], [], []

    def report(self, stage, done, total):
        pass

    def put(self, piece):
        self.pieces.append(piece)

    def sentence_done(self, result):
        self.sentences.append(result)

    def close(self, error=None):
        self.closed.append(error)


def test_a_bad_request_ends_alone_and_the_scheduler_goes_on(tiny_tts):
    scheduler = Scheduler(tiny_tts)
    bad, good = Sink(), Sink()
    scheduler.admit(SynthesisRequest("   "), bad)
    scheduler.admit(SynthesisRequest("Hello.", language="en", seed=2), good)
    assert isinstance(bad.closed[0], ValueError) and scheduler.active == 1
    scheduler.run()
    assert good.closed == [None] and len(good.sentences) == 1 and good.pieces[-1].last


def test_nothing_outside_the_scheduler_module_reaches_into_it():
    """No other module calls the scheduler's private parts (names starting with an underscore)."""
    private = {node.name for node in ast.walk(ast.parse((ROOT / "vallex/synthesis/scheduler.py").read_text()))
               if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name.startswith("_")
               and not node.name.startswith("__")}
    offenders = []
    for path in [*ROOT.joinpath("vallex").rglob("*.py"), *ROOT.joinpath("demo").rglob("*.py")]:
        if path.name == "scheduler.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                  and (node.module or "").endswith("scheduler") for alias in node.names}
        offenders += [f"{path.relative_to(ROOT)}: {name}" for name in sorted(names & private)]
    assert offenders == []


PARAGRAPH = "One two three. Four five six seven. Eight nine. Ten eleven twelve. Thirteen."


def _decode(tts, requests, **scheduler_options):
    """Run ``requests`` on one scheduler; (their sinks, AR rows after each step, step of each sink's first piece)."""
    scheduler = Scheduler(tts, **scheduler_options)
    sinks = [Sink() for _ in requests]
    for request, sink in zip(requests, sinks):
        scheduler.admit(request, sink)
    rows, first_piece = [], [None] * len(sinks)
    while scheduler.active:
        scheduler.step()
        rows.append(scheduler.rows)
        for i, sink in enumerate(sinks):
            if sink.pieces and first_piece[i] is None:
                first_piece[i] = len(rows)
    return sinks, rows, first_piece


@pytest.mark.parametrize("chunk_seconds", [None, 0.2])
def test_a_paragraph_is_a_batch_with_the_codes_of_its_sentences_one_by_one(tiny_tts, chunk_seconds):
    """Whole sentences, or a stream's chunks at the frames a stream alone has them (``exact_chunks``, as when the
    engine is asked for it): the very codes and audio of the sentences decoded one after another."""
    request = SynthesisRequest(PARAGRAPH, language="en", long_text="fixed-prompt", seed=11, chunk_seconds=chunk_seconds)
    (batched,), batched_rows, (batched_first,) = _decode(tiny_tts, [request], paragraph=8, exact_chunks=True)
    (alone,), alone_rows, (alone_first,) = _decode(tiny_tts, [request], paragraph=1, exact_chunks=True)
    assert len(batched.sentences) == len(alone.sentences) == 5 and batched.closed == alone.closed == [None]
    for together, one_by_one in zip(batched.sentences, alone.sentences, strict=True):
        assert together.text == one_by_one.text and torch.equal(together.codes, one_by_one.codes)
    # played in order, the same audio, sentence after sentence
    assert [piece.sentence for piece in batched.pieces] == sorted(piece.sentence for piece in batched.pieces)
    assert np.array_equal(np.concatenate([p.audio for p in batched.pieces]),
                          np.concatenate([p.audio for p in alone.pieces]))
    assert max(alone_rows) == 1 and max(batched_rows) > 1  # decoded together: fewer, wider AR steps
    assert len(batched_rows) < len(alone_rows)
    assert batched_first <= alone_first  # the first audio is no later for being a paragraph


def test_a_streamed_paragraph_starts_its_other_sentences_after_its_first_audio(tiny_tts):
    request = SynthesisRequest(PARAGRAPH, language="en", long_text="fixed-prompt", seed=3, chunk_seconds=0.2)
    (sink,), rows, (first,) = _decode(tiny_tts, [request], paragraph=8)
    assert set(rows[:first - 1]) == {1}  # one row until the first piece is out, then the rest join
    assert max(rows[first - 1:]) > 1
    # A late chunk may be a longer one (the NAR serves the sentence being played first): codebook 0, which the AR
    # samples with each sentence's own generator, is still the one-by-one decoding's.
    (alone,), _, _ = _decode(tiny_tts, [request], paragraph=1)
    for together, one_by_one in zip(sink.sentences, alone.sentences, strict=True):
        assert torch.equal(together.codes[..., 0], one_by_one.codes[..., 0])


def test_sliding_window_and_one_utterance_are_never_batched_within_a_request(tiny_tts):
    sliding = SynthesisRequest(PARAGRAPH, language="en", long_text="sliding-window", seed=3)
    _, rows, _ = _decode(tiny_tts, [sliding], paragraph=8)
    assert max(rows) == 1


def test_paragraph_sentences_stay_within_the_row_limit_and_every_request_keeps_its_row(tiny_tts):
    requests = [SynthesisRequest(PARAGRAPH, language="en", long_text="fixed-prompt", seed=seed, chunk_seconds=0.2)
                for seed in (1, 2)]
    sinks, rows, first = _decode(tiny_tts, requests, paragraph=8, max_rows=3)
    assert max(rows) == 3 and all(sink.closed == [None] and len(sink.sentences) == 5 for sink in sinks)
    # No extra sentence joined before both had their first audio: each request's first piece came from one row.
    assert set(rows[:max(first) - 1]) == {2}


def test_a_paragraph_waits_for_other_requests_first_audio_before_widening(tiny_tts):
    scheduler = Scheduler(tiny_tts, paragraph=8)
    paragraph, other = Sink(), Sink()
    scheduler.admit(SynthesisRequest(PARAGRAPH, language="en", long_text="fixed-prompt", seed=5), paragraph)
    scheduler.admit(SynthesisRequest("Hello there.", language="en", seed=5), other)
    while not other.pieces:
        scheduler.step()
        assert scheduler.rows <= 2  # the paragraph's first sentence and the other request's
    scheduler.step()
    assert scheduler.rows > 2  # once it has its audio, the paragraph's other sentences join
    scheduler.run()
    assert paragraph.closed == other.closed == [None] and len(paragraph.sentences) == 5


def test_a_cancelled_paragraph_leaves_the_batch_at_once(tiny_tts):
    scheduler = Scheduler(tiny_tts, paragraph=8)
    sink, other = Sink(), Sink()
    scheduler.admit(SynthesisRequest(PARAGRAPH, language="en", long_text="fixed-prompt", seed=4), sink)
    for _ in range(2):
        scheduler.step()
    assert scheduler.rows == 5  # the paragraph's five sentences together
    scheduler.admit(SynthesisRequest("Hello there.", language="en", seed=4), other)
    scheduler.step()
    assert scheduler.rows == 6  # and the other request's one
    sink.cancelled = True
    scheduler.step()
    assert sink.closed == [None] and scheduler.active == 1 and scheduler.rows <= 1
    scheduler.run()
    assert other.closed == [None] and len(other.sentences) == 1
