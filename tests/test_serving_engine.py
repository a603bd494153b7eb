"""The continuous-batching speech engine (vallex.serving): every request gets the audio it gets alone with the
same seed, whatever else runs; the queue limit, cancellation, bad requests and closing behave."""
from __future__ import annotations

import functools
import random
import threading

import numpy as np
import pytest
from conftest import with_voices

from vallex.serving import ServerBusy, SpeechEngine, SpeechRequest

TEXTS = ["Hi there.", "你好。", "はい。", "Yes. No.", "Good."]


def _alone(tts, request: SpeechRequest) -> np.ndarray:
    options = {k: getattr(request, k) for k in ("language", "accent", "seed", "long_text", "chunk_seconds",
                                                "sampling")}
    return np.concatenate(list(tts.synthesize_stream(request.text, request.prompt, **options)))


@pytest.fixture()
def engine(tiny_tts):
    engine = SpeechEngine(tiny_tts, max_batch=4, max_queue=16, exact_chunks=True)
    yield engine
    engine.close()


def test_concurrent_requests_get_their_own_audio(tiny_tts, engine):
    requests = [SpeechRequest(TEXTS[0], seed=1), SpeechRequest(TEXTS[1], seed=2, top_k=30),
                SpeechRequest(TEXTS[2], seed=3, accent="en"),
                SpeechRequest(TEXTS[3], seed=4, long_text="sliding-window"),
                SpeechRequest(TEXTS[4], seed=5, chunk_seconds=None), SpeechRequest(TEXTS[0], seed=6, best_of=2)]
    results: dict[int, np.ndarray] = {}

    def client(i: int) -> None:  # several threads submit at once
        results[i] = np.concatenate(list(engine.submit(requests[i])))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for i, request in enumerate(requests):
        want = _alone(tiny_tts, request)
        assert results[i].shape == want.shape, i
        assert np.abs(results[i] - want).max() < 1e-4, i
    assert engine.stats.completed == len(requests) and engine.stats.failed == 0


def test_a_stream_arrives_in_chunks_and_times_its_first_audio(engine):
    stream = engine.submit(SpeechRequest("Hello there, this is a longer test sentence.", seed=0))
    chunks = list(stream)
    assert len(chunks) >= 2 and all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    assert stream.first_audio_s is not None and stream.first_audio_s > 0


def test_bad_requests_fail_alone(tiny_tts, engine):
    bad = [engine.submit(SpeechRequest("Hello.", language="xx")),
           engine.submit(SpeechRequest("Hello.", seed=-1)),
           engine.submit(SpeechRequest("Hello.", prompt="no-such-voice"))]
    with pytest.raises(ValueError, match="temperature must be a number"):  # its Sampling refuses it at once
        SpeechRequest("Hello.", temperature=0)
    good = engine.submit(SpeechRequest(TEXTS[0], seed=9))
    for stream in bad:
        with pytest.raises(ValueError):
            list(stream)
    assert np.abs(np.concatenate(list(good)) - _alone(tiny_tts, good.request)).max() < 1e-4
    with pytest.raises(ValueError, match="empty"):
        engine.submit(SpeechRequest("   "))
    assert engine.stats.failed == 3


def _held_engine(tiny_tts, **limits):
    """An engine whose worker waits on ``release`` while resolving the voice named "held"."""
    release = threading.Event()

    def resolver(name: str):
        release.wait(60)
        return None

    return SpeechEngine(with_voices(tiny_tts, resolver), **limits), release


def _wait_until_taken(engine) -> None:
    """Until the worker has taken every waiting request (it is then held by the resolver)."""
    while engine.stats.waiting:
        threading.Event().wait(0.01)


def test_a_full_queue_refuses_with_server_busy(tiny_tts):
    engine, release = _held_engine(tiny_tts, max_batch=1, max_queue=2)
    try:
        first = engine.submit(SpeechRequest("Hi.", prompt="held"))
        _wait_until_taken(engine)
        waiting = [engine.submit(SpeechRequest("Hi.", seed=i)) for i in range(2)]
        with pytest.raises(ServerBusy, match="busy"):
            engine.submit(SpeechRequest("Hi."))
        assert engine.stats.refused == 1
        release.set()
        for stream in [first] + waiting:
            assert len(np.concatenate(list(stream))) > 0
    finally:
        release.set()
        engine.close()


def test_cancelled_requests_stop_and_leave(tiny_tts):
    engine, release = _held_engine(tiny_tts, max_batch=2, max_queue=4)
    try:
        held = engine.submit(SpeechRequest("Hi.", prompt="held"))
        queued = engine.submit(SpeechRequest("Hi."))
        queued.cancel()  # before it was ever admitted
        release.set()
        long = engine.submit(SpeechRequest("This sentence is long enough to stream several chunks of audio.", seed=1))
        with long:
            next(iter(long))  # the first chunk, then the client goes away (leaving the with block)
        assert list(queued) == []
        list(held)
        list(long)  # the cancelled stream ends (chunks already made may still come) instead of hanging
        engine.close()
        assert engine.stats.cancelled == 2
        assert engine.stats.running == 0
    finally:
        release.set()
        engine.close()


def test_close_fails_what_is_still_waiting(tiny_tts):
    engine, release = _held_engine(tiny_tts, max_batch=1, max_queue=4)
    held = engine.submit(SpeechRequest("Hi.", prompt="held"))
    _wait_until_taken(engine)
    waiting = engine.submit(SpeechRequest("Hi."))
    closer = threading.Thread(target=engine.close)
    closer.start()
    release.set()
    closer.join(60)
    with pytest.raises(RuntimeError, match="closed"):
        list(waiting)
    list(held)
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(SpeechRequest("Hi."))


def test_soak_no_request_is_lost_or_mixed_up(tiny_tts):
    """200 requests from 8 threads, with random cancellations and bad requests among them: every request
    that runs to its end gets exactly its own audio (same samples as alone), every bad one its error."""
    rng = random.Random(0)
    pool = [SpeechRequest(text, seed=seed) for text in TEXTS for seed in (1, 2)]
    reference = {request: _alone(tiny_tts, request) for request in pool}
    plan = []
    for _ in range(200):
        roll = rng.random()
        plan.append(("bad", SpeechRequest("Hi.", language="xx")) if roll < 0.1 else
                    ("cancel", rng.choice(pool)) if roll < 0.25 else ("good", rng.choice(pool)))
    engine = SpeechEngine(tiny_tts, max_batch=8, max_queue=200, exact_chunks=True)
    outcomes: list[str] = []
    lock = threading.Lock()

    def client(jobs) -> None:
        for kind, request in jobs:
            stream = engine.submit(request)
            try:
                if kind == "cancel":
                    with stream:
                        next(iter(stream), None)
                    got = "cancelled"
                else:
                    audio = np.concatenate(list(stream))
                    want = reference[request]
                    got = "ok" if audio.shape == want.shape and np.abs(audio - want).max() < 1e-4 else "MIXED UP"
            except ValueError:
                got = "error" if kind == "bad" else "UNEXPECTED ERROR"
            with lock:
                outcomes.append(f"{kind}:{got}")

    threads = [threading.Thread(target=client, args=(plan[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    engine.close()
    assert len(outcomes) == 200
    assert not [o for o in outcomes if "MIXED" in o or "UNEXPECTED" in o]
    assert outcomes.count("bad:error") == sum(kind == "bad" for kind, _ in plan)
    assert engine.stats.submitted == 200
    assert engine.stats.completed + engine.stats.failed + engine.stats.cancelled == 200


def test_result_gives_the_whole_synthesis_and_progress_is_reported(tiny_tts, engine):
    events = []
    stream = engine.submit(SpeechRequest("One. Two.", seed=3, long_text="fixed-prompt", chunk_seconds=None),
                           progress=lambda stage, done, total: events.append((stage, done, total)))
    result = stream.result(timeout=120)
    want = tiny_tts.synthesize_detailed("One. Two.", seed=3, long_text="fixed-prompt")
    assert [s.text for s in result.sentences] == [s.text for s in want.sentences]
    assert all(a.codes.equal(b.codes) for a, b in zip(result.sentences, want.sentences))
    assert np.abs(result.waveform - want.waveform).max() < 1e-4
    assert result.timings["total_s"] >= result.timings["first_audio_s"] > 0
    assert [e for e in events if e[0] == "sentence"] == [("sentence", 0, 2), ("sentence", 1, 2), ("sentence", 2, 2)]
    steps = [e for e in events if e[0] == "ar_step"]
    assert steps and steps[0][1] == 1
    failed = engine.submit(SpeechRequest("Hi.", language="xx"))
    with pytest.raises(ValueError):
        failed.result(timeout=60)


@pytest.mark.parametrize("nar_batch", [1, 3])
def test_busy_server_merges_late_chunks_but_keeps_the_ar_codes(tiny_tts, nar_batch):
    """Default (exact_chunks=False): a chunk that waited for the NAR is made from every frame there is by
    then. Codebook 1 and the length stay what the request gets alone; alone on the server, all of it does."""
    engine = SpeechEngine(tiny_tts, max_batch=4, nar_batch=nar_batch)
    try:
        requests = [SpeechRequest("This one is a little longer than the others.", seed=i) for i in range(4)]
        streams = [engine.submit(r) for r in requests]
        results = [s.result(timeout=300) for s in streams]
        for request, result in zip(requests, results):
            want = tiny_tts.synthesize_detailed(request.text, seed=request.seed, chunk_seconds=request.chunk_seconds)
            assert result.waveform.shape == want.waveform.shape
            for a, b in zip(result.sentences, want.sentences):
                assert a.codes[..., 0].equal(b.codes[..., 0])
        alone = engine.submit(requests[0]).result(timeout=300)  # nothing else running now
        assert np.abs(alone.waveform - _alone(tiny_tts, requests[0])).max() < 1e-4
    finally:
        engine.close()
    with pytest.raises(ValueError, match="nar_batch"):
        SpeechEngine(tiny_tts, nar_batch=0)


def test_a_model_that_cannot_load_fails_the_request_and_is_tried_again(tiny_tts):
    from vallex.serving import ModelUnavailable

    attempts = []

    def loader():
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("4 model file(s) not found")
        return tiny_tts

    engine = SpeechEngine(loader, max_batch=2)
    try:
        assert not engine.loaded
        with pytest.raises(ModelUnavailable, match="not found"):
            list(engine.submit(SpeechRequest("Hi.")))
        assert len(np.concatenate(list(engine.submit(SpeechRequest("Hi.", seed=1))))) > 0
        assert engine.loaded and len(attempts) == 2
    finally:
        engine.close()


def test_run_does_model_work_on_the_engines_thread_between_steps(tiny_tts):
    """Loading and other model work run on the worker, the one thread that computes (vallex.inference.threads)."""
    import contextvars

    loaded_on = []

    def loader():
        loaded_on.append(threading.current_thread())
        return tiny_tts

    engine = SpeechEngine(loader, max_batch=2)
    try:
        assert engine.tts is tiny_tts and loaded_on == [engine._worker]  # asked from here, loaded there
        request = contextvars.ContextVar("request", default=None)
        request.set("caller's")

        def work():
            inner = engine.run(threading.current_thread)  # from the worker itself: at once, not queued
            return threading.current_thread(), inner, request.get(), engine.model_lock._is_owned()

        assert engine.run(work) == (engine._worker, engine._worker, "caller's", True)
        with pytest.raises(KeyError, match="raised there"):  # the work's own error, in the caller's thread
            engine.run(lambda: {}["raised there"])
        # Requests being decoded still get their audio while other work comes in between their steps.
        stream = engine.submit(SpeechRequest("Yes. No.", seed=3))
        assert [engine.run(functools.partial(int, i)) for i in range(5)] == list(range(5))
        assert len(np.concatenate(list(stream))) > 0
    finally:
        engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.run(lambda: None)


# A fair share: the work budget, verified requests taking turns, bounded streams -------------------------------

def test_a_costly_verified_request_checks_one_candidate_between_the_steps_of_others(tiny_tts):
    from test_verified_decoding import ZH_TEXT, scripted, speaker

    from vallex.synthesis.verification import Verifier

    log: list[tuple[str, int]] = []  # in the worker's order: candidate checks and the cheap request's steps
    streams = {}

    class Logged(Verifier):
        def verify(self, candidates, text, **options):
            log.append(("check", len(candidates)))
            if "cheap" not in streams:  # the costly request is checking its first round: the cheap one arrives
                streams["cheap"] = engine.submit(SpeechRequest("Hello there.", seed=2, chunk_seconds=None),
                                                 progress=lambda stage, done, total: log.append((stage, done)))
            return super().verify(candidates, text, **options)

    tts = speaker(tiny_tts, Logged(scripted("zh", "谢谢你的帮助。")))  # hears another sentence: every round fails
    engine = SpeechEngine(tts, max_batch=2)
    try:
        costly = engine.submit(SpeechRequest(ZH_TEXT, language="zh", seed=1, best_of=3, verify="asr",
                                             verify_rounds=3))
        result = costly.result(timeout=600)
        cheap = streams["cheap"].result(timeout=60)
    finally:
        engine.close()
    check = result.sentences[0].verification
    assert [c.round for c in check.candidates] == [1, 1, 1, 2, 2, 2, 3, 3, 3]  # all of them, as alone
    assert all(n == 1 for kind, n in log if kind == "check")  # one candidate at a time, never a round at once
    start = log.index(("sentence", 0))
    end = log.index(("sentence", 1), start)  # the cheap request's end
    during = log[start:end]
    steps = [i for i, (kind, _) in enumerate(during) if kind == "ar_step"]
    assert len(steps) > 1 and cheap.waveform.size > 0
    # Between two frames of the cheap request, at most one candidate of the costly one was checked.
    assert all(sum(kind == "check" for kind, _ in during[a:b]) <= 1 for a, b in zip(steps, steps[1:]))
    assert sum(kind == "check" for kind, _ in log[end:]) >= 1  # and it finished first, with checks left to do


def test_a_request_past_the_work_budget_is_refused_naming_its_cost(tiny_tts):
    from vallex.synthesis.request import RequestTooCostly, request_work
    from vallex.synthesis.text_plan import plan_text

    engine = SpeechEngine(tiny_tts, max_batch=2, max_request_work=8)
    try:
        text = "One. Two. Three."
        planned = SpeechRequest(plan_text(text, "en", "fixed-prompt"), seed=1, best_of=3)
        with pytest.raises(RequestTooCostly, match=r"up to 9 sentence-candidates \(3 sentence\(s\) x best_of 3\), "
                                                   r"more than this server's limit of 8") as refused:
            engine.submit(planned)  # a planned text is refused before it waits
        assert refused.value.param == "best_of"
        with pytest.raises(RequestTooCostly, match="x 4 verify_rounds"):  # a text planned by the worker: its stream
            list(engine.submit(SpeechRequest("Hi.", seed=1, best_of=3, verify="asr", verify_rounds=4)))
        assert request_work(3, SpeechRequest(text, best_of=2).sampling) == 6
        assert np.concatenate(list(engine.submit(SpeechRequest(text, seed=1, best_of=2, long_text="fixed-prompt",
                                                               chunk_seconds=None)))).size > 0
    finally:
        engine.close()
    with pytest.raises(ValueError, match="max_request_work must be >= 1"):
        SpeechEngine(tiny_tts, max_request_work=0)


def test_a_stream_nobody_reads_holds_its_bound_then_is_cancelled(tiny_tts):
    from vallex.serving.engine import StreamStalled

    engine = SpeechEngine(tiny_tts, max_batch=2, stream_buffer=2, read_timeout_s=0.2)
    seen: list[int] = []  # chunks waiting for the reader, after every step
    held: dict = {}
    try:
        stream = held["stream"] = engine.submit(
            SpeechRequest(TEXTS[3] * 3, seed=1, long_text="fixed-prompt", chunk_seconds=0.1), keep_audio=False,
            progress=lambda *_: seen.append(held["stream"].buffered) if held else None)
        _wait(lambda: engine.stats.cancelled == 1)  # nobody reads: the engine gives up on it
        assert engine.stats.running == 0 and engine.stats.completed == 0
        assert max(seen) == 2  # it filled its buffer, and never went past it
        assert stream.buffered == 0  # the audio nobody read is let go
        with pytest.raises(StreamStalled, match="Nobody read request 1's audio for 0.2 s"):
            list(stream)
        with pytest.raises(RuntimeError, match="keep_audio=False"):
            stream.result()
    finally:
        engine.close()


def test_a_bounded_stream_pauses_for_its_reader_and_gives_the_same_audio(tiny_tts, engine):
    request = SpeechRequest(TEXTS[3], seed=4, long_text="fixed-prompt", chunk_seconds=0.1)
    stream = engine.submit(request, keep_audio=False)
    _wait(lambda: stream.full)  # the reader is late: the request waits for it ...
    assert engine.stats.running == 1 and stream.buffered == engine.stream_buffer
    audio = np.concatenate(list(stream))  # ... and goes on as it reads
    want = _alone(tiny_tts, request)
    assert audio.shape == want.shape and np.abs(audio - want).max() < 1e-4


def _wait(condition, timeout: float = 120.0) -> None:
    """Poll ``condition`` until it holds (a deadline, not a measurement)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)
