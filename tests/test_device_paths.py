"""The decoding paths as an accelerator sees them, checked on the CPU: random generators made on the model's
device, no tensor created on an implicit device, one host-device sync per AR step, and non-finite logits
that never reach ``torch.multinomial`` (on CUDA a device-side assert that poisons the process)."""
from __future__ import annotations

import copy
import dataclasses
import threading

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sync_counter import HostSyncCounter

import vallex.inference.sampling as sampling
from vallex.api import VallEX
from vallex.inference.ar import ARBatch, ARRequest, FrameSampler, ar_decode, iter_ar_decode
from vallex.inference.nar import NARInput, NARPrefix, nar_decode
from vallex.inference.precision import overflow_advice
from vallex.inference.sampling import NonFiniteLogits, sample_tokens, seeded_generator
from vallex.inference.sampling_settings import Sampling
from vallex.serving import ModelUnavailable, SpeechEngine, SpeechRequest
from vallex.serving.engine import is_device_failure
from vallex.serving.http import create_api
from vallex.synthesis.request import SynthesisRequest
from vallex.synthesis.scheduler import Utterance


def _inputs(seed: int, text_len: int, prompt_len: int):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(5, 70, (1, text_len), generator=g)
    return text, torch.zeros_like(text), torch.randint(0, 1024, (1, prompt_len, 8), generator=g)


# Generators ----------------------------------------------------------------------------------------------

def test_a_seeded_request_draws_on_the_models_device(tiny_tts, monkeypatch):
    # As on a Mac: the model is on "mps". Every generator made for sampling must be made there too.
    made: list[torch.device] = []
    real_generator = torch.Generator

    def recording_generator(device: str | torch.device = "cpu") -> torch.Generator:
        made.append(torch.device(device))
        return real_generator()  # a CPU one stands in: this machine has no MPS

    monkeypatch.setattr(tiny_tts, "device", torch.device("mps"))
    monkeypatch.setattr(torch, "Generator", recording_generator)
    plan = tiny_tts.plan(SynthesisRequest("Hello there.", seed=3))
    assert plan.generator is not None and made == [torch.device("mps")]


def test_the_plan_generator_is_on_the_model_device_and_seeded(tiny_tts):
    a = tiny_tts.plan(SynthesisRequest("Hello.", seed=11)).generator
    b = seeded_generator(11, next(tiny_tts.model.parameters()).device)
    assert a.device == next(tiny_tts.model.parameters()).device
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))


def test_a_generator_on_another_device_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="generator is on cpu but the model is on meta"):
        FrameSampler(Sampling(), 10, 1024, torch.device("meta"), generator=torch.Generator())
    FrameSampler(Sampling(), 10, 1024, torch.device("cpu"), generator=torch.Generator())  # the same device: fine


def test_every_decode_loop_creates_its_tensors_on_the_models_device(tiny_tts):
    # With "meta" as the default device, a tensor made without an explicit device lands on meta, and the first
    # operation mixing it with the model's CPU tensors fails: on a GPU, that tensor would be on the CPU.
    model = tiny_tts.model
    text, langs, prompt = _inputs(0, 12, 6)
    text2, langs2, prompt2 = _inputs(1, 7, 0)
    tiny_tts.codec.load()  # loaded first (a module built under a meta default has meta weights)
    with torch.device("meta"):
        greedy = ar_decode(model, text, langs, prompt[..., 0], top_k=1, max_frames=8,
                           generator=seeded_generator(0, "cpu"))
        sampled = ar_decode(model, text, langs, prompt[..., 0], top_k=20, top_p=0.9, temperature=0.7, best_of=2,
                            max_frames=8, generator=seeded_generator(0, "cpu"))
        streamed = list(iter_ar_decode(model, text, langs, prompt[..., 0], max_frames=5))
        batch = ARBatch(model)
        batch.add("a", ARRequest.of(text, langs, prompt[..., 0], top_k=30, max_frames=6))
        batch.step()
        batch.add("b", ARRequest.of(text2, langs2, prompt2[..., 0], best_of=2, max_frames=9))  # joins mid-way
        finished = {}
        while batch:
            finished.update(batch.step().finished)
        (nar,) = nar_decode(model, [NARInput(text, langs, prompt, greedy.codes)])
        nar_batch = nar_decode(model, [NARInput(text, langs, prompt, greedy.codes),
                                       NARInput(text2, langs2, prompt2, finished["b"].codes)])
        audio = tiny_tts.synthesize_detailed("Hi. Yes.", seed=1, long_text="sliding-window").waveform
        batched = tiny_tts.synthesize_batch([SynthesisRequest("Hello.", seed=2), SynthesisRequest("Yes.", seed=3)])
    for tensor in (greedy.codes, sampled.codes, streamed[-1], finished["a"].codes, nar, *nar_batch):
        assert tensor.device.type == "cpu"
    for waveform in (audio, *(b.waveform for b in batched)):
        assert np.isfinite(waveform).all() and waveform.size > 0


# Host-device syncs ---------------------------------------------------------------------------------------

def test_the_ar_loop_reads_back_one_value_per_step(tiny_tts, monkeypatch):
    model = tiny_tts.model
    text, langs, prompt = _inputs(2, 10, 5)
    never_eos = lambda step, logits: logits.index_fill(1, torch.tensor([model.config.eos_id]), float("-inf"))  # noqa: E731

    def syncs(frames: int, **options) -> int:
        counter = HostSyncCounter(monkeypatch)
        with counter:
            result = ar_decode(model, text, langs, prompt[..., 0], max_frames=frames, logits_processor=never_eos,
                               generator=seeded_generator(0, "cpu"), **options)
        assert result.codes.shape[1] == frames
        monkeypatch.undo()
        return counter.count

    for options in ({}, {"top_k": 20, "top_p": 0.8, "temperature": 0.5}, {"best_of": 3}):
        assert syncs(30, **options) - syncs(10, **options) == 20, options  # one per step, whatever the settings


def test_a_batch_step_reads_back_one_value_whatever_the_batch(tiny_tts, monkeypatch):
    model = tiny_tts.model
    batch = ARBatch(model)
    for key, (text_len, prompt_len, best_of) in enumerate([(10, 5, 1), (17, 0, 2), (6, 12, 1)]):
        text, langs, prompt = _inputs(key, text_len, prompt_len)
        batch.add(key, ARRequest.of(text, langs, prompt[..., 0], best_of=best_of, top_k=40, min_frames=50,
                                    max_frames=50, generator=seeded_generator(key, "cpu")))
    batch.step()  # the first step after joining may grow the cache
    for _ in range(3):  # rows of different lengths: the masked path
        counter = HostSyncCounter(monkeypatch)
        with counter:
            out = batch.step()
        monkeypatch.undo()
        assert len(out.frames) == 3 and not out.finished
        assert counter.count == 1


# Non-finite logits ---------------------------------------------------------------------------------------

def _multinomial_that_asserts_like_cuda(monkeypatch):
    """torch.multinomial that fails on a non-finite distribution, as CUDA's device-side assert does."""
    real = torch.multinomial

    def checked(probs, *args, **kwargs):
        assert bool(torch.isfinite(probs).all()) and bool((probs.sum(-1) > 0).all()), "device-side assert"
        return real(probs, *args, **kwargs)

    monkeypatch.setattr(sampling.torch, "multinomial", checked)


def test_float16_logits_at_a_small_temperature_sample_in_float32():
    # 100 / 0.001 = 1e5 overflows float16 (max 65504): dividing before the float32 cast made inf, then NaN.
    logits = torch.tensor([[100.0, 99.0, -5.0, 3.0], [1.0, 2.0, 40.0, 0.0]], dtype=torch.float16)
    tokens, logprobs = sample_tokens(logits, temperature=1e-3, generator=torch.Generator().manual_seed(0))
    assert tokens.tolist() == [0, 2] and torch.isfinite(logprobs).all()


def test_non_finite_logits_never_reach_multinomial_and_fail_clearly(tiny_tts, monkeypatch):
    _multinomial_that_asserts_like_cuda(monkeypatch)
    model = tiny_tts.model
    text, langs, prompt = _inputs(3, 8, 4)
    for poison in (float("nan"), float("inf")):
        def poisoned(step, logits, poison=poison):
            return logits.masked_fill(torch.ones_like(logits, dtype=torch.bool), poison) if step == 3 else logits

        with pytest.raises(NonFiniteLogits, match=r"in the AR, .*computed in float32, which does not overflow"):
            ar_decode(model, text, langs, prompt[..., 0], max_frames=10, logits_processor=poisoned)
    with pytest.raises(NonFiniteLogits):
        sample_tokens(torch.full((2, 5), float("nan")))


def test_the_advice_after_an_overflow_names_only_what_the_device_runs_natively():
    # T4 (7.5) and V100 (7.0): "auto" is float16 there and bfloat16 only emulated, so float32 is the way out.
    for capability in ((7, 5), (7, 0), (6, 1)):
        advice = overflow_advice("cuda", capability)
        assert advice.startswith("float32") and "bfloat16 or" not in advice, capability
        assert f"{capability[0]}.{capability[1]}" in advice and "emulates bfloat16" in advice
    for capability in ((8, 0), (8, 6), (8, 9), (9, 0), (10, 0)):  # A100, A10, L4, H100, B200: native bfloat16
        assert overflow_advice("cuda", capability) == "bfloat16 or float32", capability
    assert overflow_advice("cpu", cpu_native_bfloat16=True) == "bfloat16 or float32"
    assert overflow_advice("cpu", cpu_native_bfloat16=False).startswith("float32 (")
    assert overflow_advice("mps") == "float32"
    with pytest.raises(ValueError, match="compute capability"):
        overflow_advice("cuda")


@pytest.mark.parametrize("capability, advice", [((7, 5), "use dtype float32 (this GPU"),
                                                ((8, 0), "use dtype bfloat16 or float32.")])
def test_the_non_finite_error_reads_the_gpu_it_happened_on(monkeypatch, capability, advice):
    # What the error asks torch about the GPU, answered as a T4 / A100 would.
    asked = []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: asked.append(index) or capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: capability >= (8, 0))
    error = NonFiniteLogits.on(torch.device("cuda:1"), "the NAR")
    assert advice in str(error) and "in the NAR" in str(error) and asked == [1]
    assert advice in str(NonFiniteLogits.on("cuda")) and asked == [1, 0]


def _poison_nar_logits(model, stage: int, frames: int, poison: float):
    """A forward hook on NAR stage ``stage``'s output layer: its logits become ``poison`` for the utterance
    of ``frames`` frames (each utterance's logits are computed apart)."""
    def hook(module, args, output):
        return output.masked_fill(torch.ones_like(output, dtype=torch.bool), poison) if output.shape[1] == frames \
            else output

    return model.nar_predict_layers[stage].register_forward_hook(hook)


def test_non_finite_nar_logits_fail_their_utterance_and_not_the_others(tiny_tts):
    # argmax takes a NaN (or +inf) as the largest logit: without a check the NAR went on with wrong codes.
    model = tiny_tts.model
    text, langs, prompt = _inputs(5, 9, 4)
    text2, langs2, prompt2 = _inputs(6, 6, 0)
    g = torch.Generator().manual_seed(0)
    good = NARInput(text, langs, prompt, torch.randint(0, 1024, (1, 5), generator=g))
    bad = NARInput(text2, langs2, prompt2, torch.randint(0, 1024, (1, 7), generator=g))
    (alone,) = nar_decode(model, [good])
    for poison in (float("nan"), float("inf"), float("-inf")):
        handle = _poison_nar_logits(model, 3, 7, poison)
        try:
            with pytest.raises(NonFiniteLogits, match=r"in the NAR, .*computed in float32") as caught:
                nar_decode(model, [good, bad])
        finally:
            handle.remove()
        assert caught.value.inputs == (1,), poison
        assert torch.equal(caught.value.codes[0], alone)  # the other utterance's codes, as it gets them alone
    assert torch.equal(nar_decode(model, [good, bad])[0], alone)  # and with the hook gone, nothing is left over


def test_non_finite_logits_in_a_streamed_window_pass_are_caught(tiny_tts):
    model = tiny_tts.model
    text, langs, prompt = _inputs(7, 8, 3)
    codes0 = torch.randint(0, 1024, (1, 9), generator=torch.Generator().manual_seed(1))
    prefix = NARPrefix()
    (first,) = nar_decode(model, [NARInput(text, langs, prompt, codes0[:, :4], prefix=prefix, keep=4)])
    window = NARInput(text, langs, prompt, codes0, prefix=prefix, known=first)  # frames 4..8: 5 new ones
    handle = _poison_nar_logits(model, 6, 5, float("nan"))
    try:
        with pytest.raises(NonFiniteLogits) as caught:
            nar_decode(model, [window])
    finally:
        handle.remove()
    assert caught.value.inputs == (0,)


def test_the_engine_fails_a_request_with_non_finite_nar_logits_alone(tiny_tts):
    # Damaged weights: one row of the NAR's text embedding is NaN. The AR (its own embedding) is untouched, so
    # the request whose text has that token reaches the NAR, and only there do its logits turn NaN.
    tts = VallEX(copy.deepcopy(tiny_tts.model), tiny_tts.codec, tiny_tts.presets, tiny_tts.device,
                 frame_limits=tiny_tts.frame_limits)
    poisoned = tts.plan(SynthesisRequest("Poison.", seed=1)).sentences[0][1].ids
    clean = tts.plan(SynthesisRequest("Good.", seed=2)).sentences[0][1].ids
    token = next(t for t in poisoned if t not in clean)
    with torch.no_grad():
        tts.model.nar_text_embedding.word_embeddings.weight[token] = float("nan")
    engine = SpeechEngine(tts, max_batch=4, nar_batch=2)
    try:
        bad = engine.submit(SpeechRequest("Poison.", seed=1))
        good = engine.submit(SpeechRequest("Good.", seed=2))
        with pytest.raises(NonFiniteLogits, match="in the NAR"):
            list(bad)
        assert np.isfinite(np.concatenate(list(good))).all()
        assert engine.alive and engine.unhealthy is None  # not a device failure: the engine serves on
    finally:
        engine.close()


def test_a_poisoned_utterance_leaves_the_batch_and_the_others_go_on(tiny_tts, monkeypatch):
    _multinomial_that_asserts_like_cuda(monkeypatch)
    model = tiny_tts.model
    text, langs, prompt = _inputs(4, 9, 3)
    good = ARRequest.of(text, langs, prompt[..., 0], top_k=30, max_frames=12, generator=seeded_generator(5, "cpu"))
    alone = ar_decode(model, text, langs, prompt[..., 0], top_k=30, max_frames=12,
                      generator=seeded_generator(5, "cpu"))
    batch = ARBatch(model)
    batch.add("good", good)
    batch.add("bad", dataclasses.replace(good, generator=seeded_generator(6, "cpu"),
                                         logits_processor=lambda step, logits: logits * float("nan")))
    failed, finished = {}, {}
    while batch:
        out = batch.step()
        failed.update(out.failed)
        finished.update(out.finished)
    assert set(failed) == {"bad"} and isinstance(failed["bad"], NonFiniteLogits)
    assert torch.equal(finished["good"].codes, alone.codes)


def test_the_engine_fails_a_poisoned_request_alone(tiny_tts, monkeypatch):
    real_request = Utterance.ar_request

    def ar_request(self, plan, generator):
        request = real_request(self, plan, generator)
        if self.text == "Poison.":
            request = dataclasses.replace(request, logits_processor=lambda step, logits: logits * float("nan"))
        return request

    monkeypatch.setattr(Utterance, "ar_request", ar_request)
    engine = SpeechEngine(tiny_tts, max_batch=4)
    try:
        bad = engine.submit(SpeechRequest("Poison.", seed=1))
        good = engine.submit(SpeechRequest("Good.", seed=2))
        with pytest.raises(NonFiniteLogits):
            list(bad)
        assert np.concatenate(list(good)).size > 0
        assert engine.alive and engine.unhealthy is None  # not a device failure: the engine serves on
    finally:
        engine.close()


def test_a_device_failure_marks_the_engine_unhealthy(tiny_tts, monkeypatch):
    from vallex.serving import engine as engine_module

    started = threading.Event()
    real_step = engine_module.Scheduler.step

    def failing_step(self):
        started.set()
        raise torch.AcceleratorError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(engine_module.Scheduler, "step", failing_step)
    engine = SpeechEngine(tiny_tts, max_batch=2)
    try:
        first = engine.submit(SpeechRequest("Hello.", seed=1))
        with pytest.raises(torch.AcceleratorError):
            list(first)
        engine._worker.join(10)
        assert not engine.alive and "device-side assert" in engine.unhealthy
        with pytest.raises(ModelUnavailable, match="must be restarted"):
            engine.submit(SpeechRequest("Hello again.", seed=2))
        assert engine.stats.failed == 1
        client = TestClient(create_api(engine, model_loaded=lambda: True))
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"
        refused = client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hello."})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_unavailable"
    finally:
        monkeypatch.setattr(engine_module.Scheduler, "step", real_step)
        engine.close()


def test_a_device_failure_in_run_work_marks_the_engine_unhealthy_as_a_step_does(tiny_tts):
    # Work handed to run() (a prompt's encoding, a translation) fails the device while a request is decoding.
    engine = SpeechEngine(tiny_tts, max_batch=2)
    stepping, release = threading.Event(), threading.Event()

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "ar_step" and not stepping.is_set():
            stepping.set()
            release.wait(30)  # holds the worker inside a step until the broken job is queued

    def broken() -> None:
        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")

    errors: list[BaseException] = []

    def call(work) -> None:
        try:
            engine.run(work)
        except BaseException as error:  # noqa: BLE001 - what the caller of run() gets
            errors.append(error)

    try:
        assert engine.run(lambda: 41 + 1) == 42
        with pytest.raises(ValueError, match="not a device failure"):  # an ordinary error changes nothing
            engine.run(lambda: (_ for _ in ()).throw(ValueError("not a device failure")))
        assert engine.alive
        running = engine.submit(SpeechRequest("Hello there, this is a longer sentence.", seed=1), progress=progress)
        assert stepping.wait(30)
        caller = threading.Thread(target=call, args=(broken,))
        caller.start()
        deadline = threading.Event()
        while not engine._jobs and not deadline.wait(0.01):
            pass
        release.set()
        caller.join(30)
        assert len(errors) == 1 and isinstance(errors[0], torch.AcceleratorError)
        engine._worker.join(10)
        assert not engine.alive and "illegal memory access" in engine.unhealthy
        with pytest.raises(torch.AcceleratorError):  # the request in the batch failed with it
            list(running)
        with pytest.raises(ModelUnavailable, match="must be restarted"):
            engine.submit(SpeechRequest("Hello again.", seed=2))
        with pytest.raises(ModelUnavailable, match="must be restarted"):
            engine.run(lambda: 1)
    finally:
        release.set()
        engine.close()


def test_which_errors_are_device_failures():
    assert is_device_failure(torch.AcceleratorError("CUDA error: an illegal memory access was encountered"))
    assert is_device_failure(RuntimeError("CUDA error: device-side assert triggered"))  # older torch
    assert not is_device_failure(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not is_device_failure(NonFiniteLogits(NonFiniteLogits.MESSAGE))
    assert not is_device_failure(ValueError("CUDA error in a text"))
