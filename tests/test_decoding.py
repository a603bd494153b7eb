"""Decoding rules: sampling filters, the fixed reference bugs, best_of ranking, and input validation."""
from __future__ import annotations

import pytest
import torch

from vallex.config import VallexConfig
from vallex.inference.ar import ar_decode
from vallex.inference.generation import generate, language_ids
from vallex.inference.nar import NARInput, nar_decode
from vallex.inference.sampling import filter_logits, sample_tokens
from vallex.languages import Languages
from vallex.model import VallexModel


@pytest.fixture(scope="module")
def model() -> VallexModel:
    torch.manual_seed(0)
    return VallexModel(VallexConfig.tiny()).eval()


def inputs(n_text: int = 5, n_prompt: int = 4):
    text = torch.arange(n_text)[None] + 20
    langs = torch.zeros_like(text)
    prompt = torch.randint(0, 1024, (1, n_prompt, 8), generator=torch.Generator().manual_seed(1))
    return text, langs, prompt


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_prefix_crossing_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(filter_logits(probs.log(), top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7, 0.8 crosses: keep both
    assert torch.isfinite(filter_logits(probs.log(), top_p=0.1)).tolist() == [[True, False, False, False]]


def test_sampling_is_seeded_and_logprob_matches_distribution():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    a = sample_tokens(logits, generator=torch.Generator().manual_seed(5))
    b = sample_tokens(logits, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0])
    expected = torch.log_softmax(logits, -1).gather(1, a[0][:, None]).squeeze(1)
    assert torch.allclose(a[1], expected)
    with pytest.raises(ValueError, match="temperature"):
        sample_tokens(logits, temperature=0)


def test_immediate_eos_still_gives_audio(model):
    """The reference returned zero frames when EOS came first; we mask EOS until min_frames exist."""
    text, langs, prompt = inputs()
    eos = model.config.eos_id

    def eos_first(step, logits):
        out = torch.full_like(logits, -1e4)
        out[:, eos] = 1e4
        out[:, 7] = 0.0  # the only alternative
        return out

    result = ar_decode(model, text, langs, prompt[..., 0], top_k=1, logits_processor=eos_first)
    assert result.codes.shape == (1, 1) and result.codes.item() == 7
    assert result.stop_reason == "eos"
    longer = ar_decode(model, text, langs, prompt[..., 0], top_k=1, min_frames=3, logits_processor=eos_first)
    assert longer.codes.shape == (1, 3)


def test_max_frames_and_default_length_rule(model):
    text, langs, prompt = inputs(n_text=2)
    never_eos = lambda step, logits: logits.index_fill(1, torch.tensor([model.config.eos_id]), -1e9)  # noqa: E731
    result = ar_decode(model, text, langs, prompt[..., 0], top_k=1, logits_processor=never_eos)
    assert result.codes.shape[1] == 16 * 2 and result.stop_reason == "maxlen"
    assert result.steps == 16 * 2 + 1
    capped = ar_decode(model, text, langs, prompt[..., 0], top_k=1, max_frames=5, logits_processor=never_eos)
    assert capped.codes.shape[1] == 5


def test_best_of_ranks_by_generated_tokens_only(model):
    """Mean log-probability over *generated* tokens picks the row (the reference divided by BOS + prompt too).

    Row 0: one token from 4 equally likely ones (mean log p = -ln 4), then EOS.
    Row 1: three tokens, each from 2 equally likely ones (mean -ln 2, sum -3 ln 2), then EOS.
    Ours picks row 1; with a 40-frame prompt the reference's score (sum / (1 + 40 + n)) would pick row 0.
    """
    text, langs, prompt = inputs(n_prompt=40)
    eos = model.config.eos_id

    def script(step, logits):
        out = torch.full_like(logits, -1e4)
        out[:, eos] = 0.0 if step >= 1 else -1e4
        if step == 0:
            out[0, 20:24] = 0.0
        if step < 3:
            out[1, eos] = -1e4
            out[1, 12:14] = 0.0
        return out

    result = ar_decode(model, text, langs, prompt[..., 0], best_of=2, logits_processor=script,
                       generator=torch.Generator().manual_seed(0))
    assert result.codes.shape == (1, 3)
    assert set(result.codes[0].tolist()) <= {12, 13}


def test_language_ids_layout_and_errors():
    ids = language_ids(5, 2, "zh", ["en", "ja", "en"])
    assert ids.tolist() == [1, 1, 0, 2, 0]
    assert language_ids(3, 1, "en", "ja").tolist() == [0, 2, 2]
    with pytest.raises(ValueError, match="entries"):
        language_ids(5, 2, "zh", ["en"])
    with pytest.raises(ValueError, match="Unknown language"):
        language_ids(3, 0, "en", "fr")
    with pytest.raises(ValueError, match="text_language"):
        language_ids(3, 0, "en", ("en", "en", "en").__iter__())
    with pytest.raises(ValueError, match="enroll_len"):
        language_ids(3, 4, "en", "en")


def test_generate_validates_prompt_shape(model):
    text, _, prompt = inputs()
    with pytest.raises(ValueError, match="prompt codes"):
        generate(model, text, 0, prompt[..., :4], "en", "en")


def test_generate_reads_the_models_language_table():
    """A model trained on German too: generate gives "de" its row (3), as synthesis does, and refuses a language
    the model does not speak."""
    torch.manual_seed(0)
    model = VallexModel(VallexConfig(d_model=64, nhead=4, num_layers=2, num_languages=4,
                                     languages=("en", "zh", "ja", "de"))).eval()
    text, _, prompt = inputs()
    languages = Languages.of(model.config)
    langs = language_ids(text.shape[1], 2, "de", "zh", languages=languages)[None]
    assert langs.tolist() == [[3, 3, 1, 1, 1]]
    options = dict(top_k=1, max_frames=6)
    result = generate(model, text, 2, prompt, "de", "zh", **options)
    ar = ar_decode(model, text, langs, prompt[..., 0], **options)
    assert torch.equal(result.ar.codes, ar.codes)
    assert torch.equal(result.codes, nar_decode(model, [NARInput(text, langs, prompt, ar.codes)])[0])
    with pytest.raises(ValueError, match="Unknown language"):
        generate(model, text, 2, prompt, "fr", "zh", **options)


def test_cached_generation_is_batch_consistent(model):
    """best_of rows share one batched cache; with greedy decoding every row equals the single-row result."""
    text, langs, prompt = inputs()
    first = []

    def keep_first(step, logits):  # logits [rows, 1025]
        if step == 0:
            first.append(logits.clone())
        return logits

    single = ar_decode(model, text, langs, prompt[..., 0], top_k=1, max_frames=12, logits_processor=keep_first)
    batched = ar_decode(model, text, langs, prompt[..., 0], top_k=1, max_frames=12, best_of=3,
                        logits_processor=keep_first)
    assert torch.equal(single.codes, batched.codes)
    assert torch.allclose(first[0][0], first[1][2], atol=1e-5)


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "int8"])
def test_one_frame_step_equals_the_decoder_over_its_cache(precision):
    """The AR loop's hoisted one-frame step computes exactly what the decoder module computes."""
    from vallex.inference.fastpath import KVCache, OneFrameStep, kv_cache_dtype
    from vallex.inference.precision import apply_precision
    from vallex.model import ar_attention_mask

    torch.manual_seed(0)
    model = apply_precision(VallexModel(VallexConfig(d_model=32, nhead=4, num_layers=3)).eval(), precision)
    dtype = torch.float32 if precision == "int8" else getattr(torch, precision)
    caches = [KVCache.allocate(model.config, 2, 16, "cpu", kv_cache_dtype(dtype, torch.device("cpu")))
              for _ in range(2)]
    with torch.inference_mode():
        prefix = torch.randn(2, 6, 32).to(dtype)
        for cache in caches:
            model.ar_decoder(prefix, ar_attention_mask(2, 4), cache=cache, start=0)
        step = OneFrameStep(model.ar_decoder, caches[1])
        for position in range(6, 10):
            x = torch.randn(2, 1, 32).to(dtype)
            expected = model.ar_decoder(x, None, cache=caches[0], start=position)
            assert torch.equal(step(x, position), expected)
        for module_cache, step_cache in zip(caches[0].layers, caches[1].layers):
            assert torch.equal(module_cache.kv[:, :, :, :10], step_cache.kv[:, :, :, :10])
        with pytest.raises(RuntimeError, match="overflow"):
            step(x, 16)


def test_one_frame_step_rejects_what_it_cannot_run(model):
    from vallex.inference.fastpath import KVCache, OneFrameStep

    cache = KVCache.allocate(model.config, 1, 8, "cpu", torch.float32)
    with pytest.raises(ValueError, match="plain LayerNorms"):
        OneFrameStep(model.nar_decoder, cache)
    with pytest.raises(ValueError, match="layers"):
        OneFrameStep(model.ar_decoder, KVCache(cache.layers[:1]))


def test_inference_functions_compute_what_the_layers_compute():
    from torch.nn import Linear

    from vallex.inference.kernels import inference_function, int8_linear

    torch.manual_seed(0)
    x = torch.randn(3, 5, 24)
    cases = [(Linear(24, 40), torch.float32), (Linear(24, 40).to(torch.bfloat16), torch.bfloat16),
             (int8_linear(Linear(24, 40), "fbgemm"), torch.float32),
             (int8_linear(Linear(24, 40), "onednn"), torch.float32), (torch.nn.ReLU(), torch.float32)]
    with torch.inference_mode():
        for layer, dtype in cases:
            assert torch.equal(inference_function(layer)(x.to(dtype)), layer(x.to(dtype)))
