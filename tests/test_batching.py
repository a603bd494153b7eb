"""Batched decoding (vallex.inference.ar.ARBatch and nar_decode, VallEX.synthesize_batch): every utterance of a
batch gets the codes it gets alone with the same seed, whatever else is in the batch, joins or leaves it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vallex.inference.ar import ARBatch, ARRequest, ar_decode
from vallex.inference.nar import NARInput, nar_decode
from vallex.synthesis.request import SynthesisRequest

# (text tokens, prompt frames, best_of, language id): different lengths, languages and row counts.
SHAPES = [(20, 10, 1, 0), (35, 0, 1, 1), (12, 30, 2, 2), (50, 5, 1, 0), (8, 18, 1, 2)]


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for text_len, prompt_len, best_of, lang in SHAPES:
        text = torch.randint(5, 70, (1, text_len), generator=g)
        prompt = torch.randint(0, 1024, (1, prompt_len, 8), generator=g)
        out.append((text, torch.full((1, text_len), lang), prompt, best_of))
    return out


def _request(inputs, i, **options) -> ARRequest:
    text, langs, prompt, best_of = inputs[i]
    return ARRequest.of(text, langs, prompt[..., 0], best_of=best_of, top_k=40, max_frames=24 + 4 * i,
                        generator=torch.Generator().manual_seed(100 + i), **options)


@pytest.fixture(scope="module")
def model(tiny_tts):
    return tiny_tts.model


def _alone(model, inputs, i, **options):
    r = _request(inputs, i, **options)
    return ar_decode(model, r.text, r.text_langs, r.prompt_codes0, best_of=r.sampling.best_of,
                     top_k=r.sampling.top_k, max_frames=r.max_frames, generator=r.generator,
                     logits_processor=r.logits_processor)


def _keep_first_logits(into: dict, key):
    """A logits processor that keeps the utterance's first-step logits [rows, 1025] as ``into[key]``."""
    def processor(step, logits):
        if step == 0:
            into[key] = logits.clone()
        return logits
    return processor


def test_ar_batch_gives_each_utterance_its_codes_alone(model):
    inputs = _inputs()
    first_alone, first_batched = {}, {}
    expected = [_alone(model, inputs, i, logits_processor=_keep_first_logits(first_alone, i))
                for i in range(len(SHAPES))]
    batch = ARBatch(model)
    for i in range(2):
        batch.add(i, _request(inputs, i, logits_processor=_keep_first_logits(first_batched, i)))
    finished, steps, rows = {}, 0, []
    while batch:
        out = batch.step()
        finished.update(out.finished)
        steps += 1
        rows.append(batch.rows)
        if steps == 5:  # three more join a running batch, at a step boundary
            for i in range(2, len(SHAPES)):
                batch.add(i, _request(inputs, i, logits_processor=_keep_first_logits(first_batched, i)))
    for i, want in enumerate(expected):
        got = finished[i]
        assert torch.equal(got.codes, want.codes), i
        assert (got.stop_reason, got.steps) == (want.stop_reason, want.steps), i
        torch.testing.assert_close(first_batched[i], first_alone[i], rtol=0, atol=0)
    # Finished utterances leave at once: the rows in use only ever shrink after the last join.
    after_join = rows[5:]
    assert after_join == sorted(after_join, reverse=True) and after_join[-1] == 0
    assert max(rows) == sum(shape[2] for shape in SHAPES)


def test_ar_batch_streams_frames_and_can_drop_an_utterance(model):
    inputs = _inputs(1)
    batch = ARBatch(model)
    for i in range(3):
        batch.add(i, _request(inputs, i))
    with pytest.raises(ValueError, match="already in the batch"):
        batch.add(1, _request(inputs, 1))
    seen = {i: 0 for i in range(3)}
    for _ in range(6):
        out = batch.step()
        for key, frames in out.frames.items():
            assert frames.shape[1] == seen[key] + 1  # one new frame per step, earlier ones kept
            seen[key] = frames.shape[1]
    batch.remove(1)
    batch.remove("not there")
    assert sorted(batch.keys) == [0, 2] and batch.rows == 1 + SHAPES[2][2]
    finished = {}
    while batch:
        finished.update(batch.step().finished)
    assert set(finished) == {0, 2}
    assert torch.equal(finished[0].codes, _alone(model, inputs, 0).codes)


def test_nar_batch_equals_each_alone(model):
    inputs = _inputs(2)
    g = torch.Generator().manual_seed(5)
    items = [NARInput(text, langs, prompt, torch.randint(0, 1024, (1, 10 + 3 * i), generator=g))
             for i, (text, langs, prompt, _) in enumerate(inputs)]
    batched = nar_decode(model, items)
    for item, got in zip(items, batched):
        (want,) = nar_decode(model, [item])  # a batch of one: no padding
        assert got.shape == want.shape == (1, item.codes0.shape[1], 8)
        assert torch.equal(got, want)
    assert nar_decode(model, []) == []


REQUESTS = [
    dict(text="Hello there, this is a test.", seed=1, top_k=40),
    dict(text="今天天气很好。", seed=2, language="zh", temperature=0.8),
    dict(text="ありがとうございます。", seed=3, accent="en"),
    dict(text="One sentence. And a second one, a little longer.", seed=4, long_text="sliding-window"),
]


def test_synthesize_batch_equals_synthesize_alone(tiny_tts):
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, 24000 * 2).astype(np.float32)
    voice = tiny_tts.make_prompt((24000, noise), "A made-up transcript.", language="en")
    requests = [dict(r, prompt=voice if i % 2 else None) for i, r in enumerate(REQUESTS)]
    batched = tiny_tts.synthesize_batch(requests + [SynthesisRequest(**requests[0])])
    assert len(batched) == len(requests) + 1
    for request, got in zip(requests + [requests[0]], batched):
        want = tiny_tts.synthesize_detailed(**request)
        assert [s.text for s in got.sentences] == [s.text for s in want.sentences]
        for a, b in zip(got.sentences, want.sentences):
            assert torch.equal(a.codes, b.codes)
        assert got.waveform.shape == want.waveform.shape
        assert abs(got.waveform - want.waveform).max() < 1e-4


def test_synthesize_batch_rejects_what_it_cannot_do(tiny_tts):
    with pytest.raises(ValueError, match="chunk_seconds"):
        tiny_tts.synthesize_batch([dict(text="Hello.", chunk_seconds=0.4)])
    with pytest.raises(ValueError, match="Unknown request fields: colour"):
        tiny_tts.synthesize_batch([dict(text="Hello.", colour="blue")])
    with pytest.raises(ValueError, match="empty"):
        tiny_tts.synthesize_batch([dict(text="Hello."), dict(text="  ")])
    assert tiny_tts.synthesize_batch([]) == []


def test_the_cache_is_preallocated_alone_and_sized_by_use_in_a_batch(model):
    """Alone: room for every frame from the start (no growth by copies); together: what the rows use, doubled
    as they grow, however many frames each might take."""
    inputs = _inputs(3)
    batch = ARBatch(model)
    batch.add(0, _request(inputs, 0, min_frames=40))
    text, _, prompt, _ = inputs[0]
    alone = batch._kv[0].shape[3]
    assert alone == text.shape[1] + 1 + prompt.shape[1] + 24  # prefix + max_frames
    kv = batch._kv[0]
    for _ in range(10):
        batch.step()
    assert batch._kv[0] is kv  # never reallocated
    for i in (1, 2, 3):
        batch.add(i, ARRequest.of(*inputs[i][:2], inputs[i][2][..., 0], best_of=inputs[i][3], min_frames=300,
                                  max_frames=10_000, generator=torch.Generator().manual_seed(i)))
    assert batch._kv[0].shape[3] < 200  # not 4 rows x 10,000 frames
    for _ in range(150):
        batch.step()
    assert 150 < batch._kv[0].shape[3] <= 512 and batch.rows == sum(s[2] for s in SHAPES[1:4])
