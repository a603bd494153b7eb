"""Streaming: the incremental AR, chunked vocoding, synthesize_stream's chunk schedule and the NAR's window passes
(tiny random model)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from vallex.api import VallEX
from vallex.audio import HOP, SAMPLE_RATE
from vallex.config import VallexConfig
from vallex.inference.ar import ar_decode, iter_ar_decode
from vallex.inference.nar import NARInput, NARPrefix, nar_decode
from vallex.model import VallexModel
from vallex.synthesis.results import SENTENCE_PAUSE_SECONDS
from vallex.synthesis.streaming import MAX_CHUNK_SECONDS, NAR_LOOKAHEAD_FRAMES, VOCODER_LOOKAHEAD_FRAMES, SentencePieces

LOOKAHEAD = NAR_LOOKAHEAD_FRAMES + VOCODER_LOOKAHEAD_FRAMES
PAUSE = int(SENTENCE_PAUSE_SECONDS * SAMPLE_RATE)


@pytest.fixture(scope="module")
def model() -> VallexModel:
    torch.manual_seed(0)
    return VallexModel(VallexConfig.tiny()).eval()


def ar_inputs():
    text = torch.arange(6)[None] + 20
    langs = torch.zeros_like(text)
    prompt0 = torch.randint(0, 1024, (1, 5), generator=torch.Generator().manual_seed(1))
    return text, langs, prompt0


def run_incrementally(steps):
    """All values an iter_ar_decode generator yields (cloned), and its ARResult."""
    seen = []
    while True:
        try:
            seen.append(next(steps).clone())
        except StopIteration as done:
            return seen, done.value


# The incremental AR ----------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    dict(temperature=1.0),
    dict(temperature=0.8, top_k=50, top_p=0.9, max_frames=40),
    dict(top_k=1, min_frames=30, max_frames=30),
])
def test_iter_ar_decode_equals_ar_decode(model, options):
    text, langs, prompt0 = ar_inputs()
    whole = ar_decode(model, text, langs, prompt0, generator=torch.Generator().manual_seed(3), **options)
    seen, result = run_incrementally(
        iter_ar_decode(model, text, langs, prompt0, generator=torch.Generator().manual_seed(3), **options))
    assert torch.equal(result.codes, whole.codes)
    assert (result.stop_reason, result.steps) == (whole.stop_reason, whole.steps)
    # One yield per frame, each the frames so far: a growing prefix of the final codes.
    assert [frames.shape for frames in seen] == [(1, n) for n in range(1, whole.codes.shape[1] + 1)]
    assert all(torch.equal(frames, whole.codes[:, :frames.shape[1]]) for frames in seen)


def test_iter_ar_decode_stops_at_eos_like_ar_decode(model):
    text, langs, prompt0 = ar_inputs()
    eos = model.config.eos_id

    def eos_at_frame_7(step, logits):
        out = logits.clone()
        if step == 7:
            out[:, eos] = 1e4
        return out

    whole = ar_decode(model, text, langs, prompt0, generator=torch.Generator().manual_seed(0),
                      logits_processor=eos_at_frame_7)
    seen, result = run_incrementally(iter_ar_decode(model, text, langs, prompt0, logits_processor=eos_at_frame_7,
                                                    generator=torch.Generator().manual_seed(0)))
    assert whole.stop_reason == result.stop_reason == "eos"
    assert len(seen) == 7 and torch.equal(result.codes, whole.codes) and torch.equal(seen[-1], whole.codes)


def test_iter_ar_decode_yields_views_of_one_buffer(model):
    """No per-step copy of the frames: every yield is a view of the same preallocated buffer."""
    text, langs, prompt0 = ar_inputs()
    steps = iter_ar_decode(model, text, langs, prompt0, max_frames=10, generator=torch.Generator().manual_seed(0))
    pointers = {frames.untyped_storage().data_ptr() for frames in steps}
    assert len(pointers) == 1


def test_iter_ar_decode_rejects_best_of(model):
    text, langs, prompt0 = ar_inputs()
    with pytest.raises(ValueError, match="best_of must be 1"):
        iter_ar_decode(model, text, langs, prompt0, best_of=2)  # raised at the call, before any step


# Chunked vocoding ----------------------------------------------------------------------------------

def random_codes(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 1024, (1, frames, 8), generator=torch.Generator().manual_seed(seed))


def test_context_frames_is_the_vocoder_receptive_field(tiny_tts):
    """Changing one frame's codes changes the audio within context_frames of it and nowhere else."""
    codec = tiny_tts.codec
    context = codec.context_frames
    assert context == 29  # 3 (embedding conv) + 8 x 3 (ConvNeXt depthwise convs) + 2 (ISTFT window)
    codes = random_codes(120)
    changed = codes.clone()
    changed[0, 60] = (changed[0, 60] + 512) % 1024
    diff = np.abs(codec.decode_codes(codes) - codec.decode_codes(changed)).reshape(-1, HOP).max(axis=1)
    outside = np.r_[diff[:60 - context], diff[60 + context + 1:]]
    assert outside.max() < 1e-6  # float rounding only
    assert diff[60] > 1e-3


@pytest.mark.parametrize("bounds", [[0, 30, 90, 210, 240], [0, 1, 2, 200, 239, 240]])
def test_decode_codes_window_pieces_join_without_seams(tiny_tts, bounds):
    codec = tiny_tts.codec
    codes = random_codes(240, seed=2)
    whole = codec.decode_codes(codes)
    pieces = [codec.decode_codes_window(codes, a, b) for a, b in zip(bounds, bounds[1:])]
    assert [len(p) for p in pieces] == [HOP * (b - a) for a, b in zip(bounds, bounds[1:])]
    np.testing.assert_allclose(np.concatenate(pieces), whole, rtol=0, atol=1e-6)
    # Without context each piece is decoded as if nothing surrounded it: the joins are wrong.
    bare = np.concatenate([codec.decode_codes_window(codes, a, b, context=0) for a, b in zip(bounds, bounds[1:])])
    assert np.abs(bare - whole).max() > 1e-3


def test_decode_codes_window_validates(tiny_tts):
    codec = tiny_tts.codec
    codes = random_codes(10)
    assert len(codec.decode_codes_window(codes[0], 4, 4)) == 0  # [T, 8] works; an empty range is empty
    for start, end in [(-1, 3), (5, 4), (0, 11)]:
        with pytest.raises(ValueError, match="start <= end"):
            codec.decode_codes_window(codes, start, end)
    with pytest.raises(ValueError, match="context"):
        codec.decode_codes_window(codes, 0, 5, context=-1)
    with pytest.raises(ValueError, match="one clip"):
        codec.decode_codes_window(torch.cat([codes, codes]), 0, 5)


# synthesize_stream ---------------------------------------------------------------------------------

class FixedLength(VallEX):
    """The tiny random model with every sentence held to ``frames`` frames (it rarely says EOS itself)."""

    frames = 150

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, frame_limits=lambda text_tokens, prompt_frames: (self.frames, self.frames), **kwargs)


@pytest.fixture(scope="module")
def fixed(tiny_tts) -> FixedLength:
    return FixedLength(tiny_tts.model, tiny_tts.codec, device=tiny_tts.device)


def expected_pieces(frames: int, first: int) -> list[int]:
    """Piece lengths in frames: each piece goes out once LOOKAHEAD frames exist after it; the last flushes."""
    pieces, done, size = [], 0, first
    while done + size + LOOKAHEAD <= frames:
        pieces.append(size)
        done += size
        size = min(2 * size, round(MAX_CHUNK_SECONDS * 75))
    return pieces + [frames - done]


def test_stream_chunk_schedule(fixed):
    fixed.frames = 300
    chunks = list(fixed.synthesize_stream("One sentence only.", language="en", seed=0))  # default 0.4 s first
    assert [len(c) for c in chunks] == [HOP * n for n in expected_pieces(300, 30)]
    assert [len(c) // HOP for c in chunks] == [30, 60, 120, 90]  # 0.4 s, then doubling; the last flushes
    chunks = list(fixed.synthesize_stream("One sentence only.", language="en", seed=0, chunk_seconds=1.0))
    assert [len(c) // HOP for c in chunks] == expected_pieces(300, 75) == [75, 150, 75]


def test_stream_chunks_cap_at_max_chunk_seconds(fixed):
    fixed.frames = 1000
    chunks = list(fixed.synthesize_stream("One sentence only.", language="en", seed=0, chunk_seconds=2.0))
    assert [len(c) // HOP for c in chunks] == [150, 240, 240, 240, 130]  # 2 s, then 3.2 s at most


def test_stream_total_length_is_frames_plus_pauses(fixed):
    fixed.frames = 150
    result = fixed.synthesize_detailed("First one. Second one.", language="en", long_text="fixed-prompt", seed=1,
                                       chunk_seconds=0.4)
    chunks = list(fixed.synthesize_stream("First one. Second one.", language="en", long_text="fixed-prompt",
                                          seed=1))
    assert [len(c) for c in chunks] == [HOP * 30, HOP * 60, HOP * 60 + PAUSE, HOP * 30, HOP * 60, HOP * 60]
    assert sum(len(c) for c in chunks) == HOP * 2 * 150 + PAUSE
    assert np.array_equal(np.concatenate(chunks), result.waveform)  # synthesize_detailed reproduces the stream
    # Inside a sentence the pieces are the raw signal (no fades); the sentence edges get fades and the pause.
    first, second = result.sentences
    assert np.array_equal(np.concatenate(chunks[:2]), first.waveform[:HOP * 90])
    assert not chunks[2][HOP * 60:].any()
    assert np.array_equal(chunks[4], second.waveform[HOP * 30:HOP * 90])
    assert chunks[3][0] == 0.0 and np.array_equal(chunks[3][HOP:], second.waveform[HOP:HOP * 30])


def test_short_sentence_is_one_chunk_equal_to_synthesize(fixed):
    fixed.frames = 30 + LOOKAHEAD - 1  # one frame short of the first chunk's need
    whole, _ = fixed.synthesize("Hello there.", language="en", seed=4)
    chunks = list(fixed.synthesize_stream("Hello there.", language="en", seed=4))
    assert len(chunks) == 1 and np.array_equal(chunks[0], whole)


@pytest.mark.parametrize("mode", ["fixed-prompt", "sliding-window"])
def test_chunked_stream_keeps_codebook_1_and_joins_seamlessly(tiny_tts, mode):
    """Same seed: the AR's codebook is identical to synthesize's; the audio is the vocoded final codes."""
    text = "The sun rose over the quiet hills. The birds began to sing."
    options = dict(language="en", long_text=mode, seed=5)
    whole = tiny_tts.synthesize_detailed(text, **options)
    chunked = tiny_tts.synthesize_detailed(text, chunk_seconds=0.4, **options)
    streamed = list(tiny_tts.synthesize_stream(text, **options))
    assert np.array_equal(np.concatenate(streamed), chunked.waveform)
    assert len(streamed) > len(whole.sentences)  # the sentences are long enough for several chunks
    for plain, piecewise in zip(whole.sentences, chunked.sentences, strict=True):
        assert torch.equal(plain.codes[..., 0], piecewise.codes[..., 0])
        assert plain.stop_reason == piecewise.stop_reason
        # Seamless: the pieces are what vocoding the sentence's final codes in one go gives.
        np.testing.assert_allclose(piecewise.waveform, tiny_tts.codec.decode_codes(piecewise.codes),
                                   rtol=0, atol=1e-4)


def test_best_of_streams_whole_sentences(tiny_tts):
    text = "First one. Second one."
    options = dict(language="en", long_text="fixed-prompt", seed=2, best_of=2)
    chunks = list(tiny_tts.synthesize_stream(text, **options))
    whole, _ = tiny_tts.synthesize(text, **options)
    assert len(chunks) == 2 and np.array_equal(np.concatenate(chunks), whole)


def test_progress_is_reported_while_streaming(fixed):
    fixed.frames = 150
    seen = []
    chunks = list(fixed.synthesize_stream("First one. Second one.", language="en", long_text="fixed-prompt", seed=0,
                                          progress=lambda stage, done, total: seen.append((stage, done, total))))
    assert len(chunks) == 6
    assert [event for event in seen if event[0] == "sentence"] == [("sentence", i, 2) for i in range(3)]
    steps = [(done, total) for stage, done, total in seen if stage == "ar_step"]
    # One per frame of the sentence being played: frames so far of max_frames. The second sentence was decoded
    # beside the first once the first's audio was out (a paragraph is a batch), so its count starts part-way.
    second = next(i for i in range(1, len(steps)) if steps[i][0] < steps[i - 1][0])
    assert steps[:second] == [(n, 150) for n in range(1, 151)]
    start = steps[second][0]
    assert 1 < start < 150 and steps[second:] == [(n, 150) for n in range(start, 151)]


@pytest.mark.parametrize("chunk_seconds", [0, -1.0, 0.001, 100, "fast", True])
def test_bad_chunk_seconds_is_a_clear_value_error(tiny_tts, chunk_seconds):
    with pytest.raises(ValueError, match="chunk_seconds must be None"):
        list(tiny_tts.synthesize_stream("Hello.", language="en", chunk_seconds=chunk_seconds))


# Window passes: the NAR of a streamed sentence after its first pass -------------------------------------------

def nar_case(frames: int = 40, text_len: int = 9, prompt_len: int = 12, seed: int = 0):
    """text, langs [1, S], prompt [1, P, 8], codes0 [1, T] (random: the tiny model's flat predictions are the
    hardest case for exact agreement)."""
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(5, 70, (1, text_len), generator=g)
    return (text, torch.full_like(text, seed % 3), torch.randint(0, 1024, (1, prompt_len, 8), generator=g),
            torch.randint(0, 1024, (1, frames), generator=g))


def kept_whole(model, text, langs, prompt, codes0, keep=None):
    """A whole pass that keeps its prefix (and the first ``keep`` frames): (codes [1, T, 8], the NARPrefix)."""
    prefix = NARPrefix()
    (codes,) = nar_decode(model, [NARInput(text, langs, prompt, codes0, prefix=prefix, keep=keep)])
    return codes, prefix


def test_a_whole_pass_keeps_text_prompt_and_frames_and_its_codes(tiny_tts):
    model = tiny_tts.model
    text, langs, prompt, codes0 = nar_case()
    plain = nar_decode(model, [NARInput(text, langs, prompt, codes0)])[0]
    codes, prefix = kept_whole(model, text, langs, prompt, codes0)
    assert torch.equal(codes, plain)  # watching changes nothing
    config = model.config
    positions = text.shape[1] + prompt.shape[1]
    assert prefix.ready and prefix.positions == positions and prefix.frames == 0
    assert len(prefix.kv) == config.num_quantizers - 1 and all(len(stage) == config.num_layers for stage in prefix.kv)
    head_dim = config.d_model // config.nhead
    assert prefix.kv[3][1].shape == (1, 2, config.nhead, positions, head_dim)
    codes, with_frames = kept_whole(model, text, langs, prompt, codes0, keep=25)
    assert torch.equal(codes, plain) and with_frames.frames == 25 and with_frames.positions == positions + 25
    assert torch.equal(with_frames.kv[6][0][..., :positions, :], prefix.kv[6][0])


def test_a_window_that_sees_everything_predicts_the_whole_pass(tiny_tts):
    """A prefix kept by a whole pass over all T frames, known codes that pass's own: the window's frames see
    exactly what the whole pass's saw (the same keys, values and positions), so they get the same codes. This
    pins the window's positions, its codebooks stage by stage and the prefix's layout."""
    model = tiny_tts.model
    text, langs, prompt, codes0 = nar_case()
    for known in (1, 17, 39):
        whole, prefix = kept_whole(model, text, langs, prompt, codes0, keep=known)
        (window,) = nar_decode(model, [NARInput(text, langs, prompt, codes0, prefix=prefix, known=whole[:, :known])])
        assert window.shape == whole.shape
        assert torch.equal(window, whole), known


def test_a_window_keeps_the_known_codes_and_hands_its_frames_on(tiny_tts):
    model = tiny_tts.model
    text, langs, prompt, codes0 = nar_case(frames=50)
    whole, prefix = kept_whole(model, text, langs, prompt, codes0[:, :20], keep=12)
    known = whole[:, :12]
    positions = prefix.positions
    got = nar_decode(model, [NARInput(text, langs, prompt, codes0[:, :36], prefix=prefix, known=known, keep=30)])[0]
    assert got.shape == (1, 36, 8)
    assert torch.equal(got[:, :12], known) and torch.equal(got[..., 0], codes0[:, :36])
    assert prefix.frames == 30 and prefix.positions == positions + 18  # frames 12-29 appended, not the last 6
    # The next window sees the frames through their keys and values, not through the known codes.
    following = [NARInput(text, langs, prompt, codes0, prefix=prefix, known=known_codes)
                 for known_codes in (got[:, :30], torch.zeros(1, 30, 8, dtype=torch.long))]
    first, second = (nar_decode(model, [x])[0] for x in following)
    assert torch.equal(first[:, 30:], second[:, 30:]) and torch.equal(second[:, :30], following[1].known)
    assert prefix.frames == 30  # keep left out: nothing handed on
    # Nothing new: the known codes are the answer.
    assert torch.equal(nar_decode(model, [NARInput(text, langs, prompt, codes0[:, :30], prefix=prefix,
                                                   known=got[:, :30])])[0], got[:, :30])


def test_window_and_whole_passes_batch_like_each_alone(tiny_tts):
    """Prefixes kept in one padded batch equal those kept alone; windows of different texts, prompts and lengths
    batched (with a whole pass beside them) give each the codes and the kept frames it gets alone."""
    model = tiny_tts.model
    cases = [nar_case(frames=30 + 7 * i, text_len=6 + 5 * i, prompt_len=(12, 0, 20)[i], seed=i) for i in range(3)]
    keeps = [10, 13, 16]
    prefixes = [NARPrefix() for _ in cases]
    batched = nar_decode(model, [NARInput(*case, prefix=p, keep=k) for case, p, k in zip(cases, prefixes, keeps)])
    alone = [kept_whole(model, *case, keep=k) for case, k in zip(cases, keeps)]
    for prefix, codes, (alone_codes, alone_prefix) in zip(prefixes, batched, alone):
        assert torch.equal(codes, alone_codes) and prefix.frames == alone_prefix.frames
        for stage, stage_alone in zip(prefix.kv, alone_prefix.kv):
            for kv, kv_alone in zip(stage, stage_alone):
                torch.testing.assert_close(kv, kv_alone, rtol=0, atol=1e-5)
    windows = [NARInput(*case, prefix=p, known=codes[:, :k], keep=k + 5 + i)
               for i, (case, p, codes, k) in enumerate(zip(cases, prefixes, batched, keeps))]
    windows_alone = [NARInput(*case, prefix=p, known=codes[:, :k], keep=k + 5 + i)
                     for i, (case, (codes, p), k) in enumerate(zip(cases, alone, keeps))]
    extra = NARInput(*nar_case(frames=25, seed=9))
    first, extra_got, *rest = nar_decode(model, [windows[0], extra, windows[1], windows[2]])
    assert torch.equal(extra_got, nar_decode(model, [extra])[0])
    for item, mine, got in zip(windows, windows_alone, [first, *rest]):
        assert torch.equal(got, nar_decode(model, [mine])[0])
        assert item.prefix.frames == mine.prefix.frames == item.keep
        for stage, stage_alone in zip(item.prefix.kv, mine.prefix.kv):
            for kv, kv_alone in zip(stage, stage_alone):
                torch.testing.assert_close(kv, kv_alone, rtol=0, atol=1e-5)


def test_window_passes_refuse_what_they_cannot_run(tiny_tts):
    model = tiny_tts.model
    text, langs, prompt, codes0 = nar_case()
    known = torch.zeros(1, 5, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="needs the NARPrefix"):
        nar_decode(model, [NARInput(text, langs, prompt, codes0, prefix=NARPrefix(), known=known)])
    _, prefix = kept_whole(model, text, langs, prompt, codes0, keep=5)
    with pytest.raises(ValueError, match="holds 26 positions"):
        nar_decode(model, [NARInput(text[:, :5], langs[:, :5], prompt, codes0, prefix=prefix, known=known)])
    with pytest.raises(ValueError, match="5 frames"):
        nar_decode(model, [NARInput(text, langs, prompt, codes0, prefix=prefix, known=known[:, :3])])
    with pytest.raises(ValueError, match="F <= 3"):
        nar_decode(model, [NARInput(text, langs, prompt, codes0[:, :3], prefix=prefix, known=known)])
    with pytest.raises(ValueError, match="keep must be between"):
        nar_decode(model, [NARInput(text, langs, prompt, codes0, prefix=prefix, known=known, keep=4)])
    with pytest.raises(ValueError, match="keep needs a NARPrefix"):
        nar_decode(model, [NARInput(text, langs, prompt, codes0, keep=4)])
    with pytest.raises(ValueError, match="filled already"):
        nar_decode(model, [NARInput(text, langs, prompt, codes0, prefix=prefix, keep=4)])


def test_sentence_pieces_run_one_whole_pass_then_windows(tiny_tts):
    """The bookkeeping: one piece per sentence passes the whole input through; chunks make the first pass whole
    (unless it is also the last), every later one a window after the fixed frames; each keeps what it fixes."""
    text, langs, prompt, codes0 = nar_case(frames=200)
    whole = NARInput(text, langs, prompt, codes0)
    assert SentencePieces(tiny_tts.codec, None).nar_input(whole) is whole
    assert SentencePieces(tiny_tts.codec, 30).nar_input(whole, final=True) is whole  # never chunked: exact
    pieces = SentencePieces(tiny_tts.codec, 30)
    first = pieces.nar_input(replace(whole, codes0=codes0[:, :pieces.next_due]))
    assert first.known is None and first.prefix is not None and not first.prefix.ready
    assert first.keep == 30 + LOOKAHEAD - NAR_LOOKAHEAD_FRAMES
    pieces.chunk(nar_decode(tiny_tts.model, [first])[0])
    fixed = 30 + VOCODER_LOOKAHEAD_FRAMES  # the first chunk, the frames vocoded with it
    assert first.prefix.frames == fixed
    assert pieces.vocoded == 30 and pieces.next_due == 30 + 60 + LOOKAHEAD
    second = pieces.nar_input(replace(whole, codes0=codes0[:, :pieces.next_due]))
    assert second.prefix is first.prefix and second.known.shape == (1, fixed, 8)
    assert second.keep == 90 + VOCODER_LOOKAHEAD_FRAMES
    codes = nar_decode(tiny_tts.model, [second])[0]
    assert torch.equal(codes[:, :fixed], second.known)  # the sent frames stay as they were
    pieces.chunk(codes)
    final = pieces.nar_input(whole, final=True)
    assert final.known.shape == (1, 90 + VOCODER_LOOKAHEAD_FRAMES, 8) and final.keep is None
    all_codes, _ = pieces.finish(nar_decode(tiny_tts.model, [final])[0])
    assert all_codes.shape == (1, 200, 8) and torch.equal(all_codes[..., 0], codes0)
    assert torch.equal(all_codes[:, :fixed], second.known)
    assert len(pieces.waveform) == HOP * 200


def test_the_scheduler_streams_with_windows(fixed, monkeypatch):
    """What the scheduler hands the NAR for a streamed sentence: one whole pass, then windows over the frames not
    yet fixed; a sentence in one piece gets its whole pass only."""
    import vallex.synthesis.scheduler as scheduler

    seen: list[list[NARInput]] = []

    def recording(model, inputs, on_stage=None):
        if inputs:  # the scheduler asks every step, mostly for nothing
            seen.append(list(inputs))
        return nar_decode(model, inputs, on_stage)

    monkeypatch.setattr(scheduler, "nar_decode", recording)
    fixed.frames = 300
    list(fixed.synthesize_stream("One sentence only.", language="en", seed=0))
    passes = [inputs[0] for inputs in seen]
    assert [p.known is None for p in passes] == [True, False, False, False]
    assert [p.codes0.shape[1] for p in passes] == [30 + LOOKAHEAD, 90 + LOOKAHEAD, 210 + LOOKAHEAD, 300]
    fixed_frames = [30 + VOCODER_LOOKAHEAD_FRAMES, 90 + VOCODER_LOOKAHEAD_FRAMES, 210 + VOCODER_LOOKAHEAD_FRAMES]
    assert [p.known.shape[1] for p in passes[1:]] == fixed_frames
    assert [p.keep for p in passes] == [*fixed_frames, None]
    assert all(p.prefix is passes[0].prefix for p in passes[1:])
    seen.clear()
    fixed.synthesize("One sentence only.", language="en", seed=0)
    assert len(seen) == 1 and seen[0][0].known is None and seen[0][0].prefix is None
