"""Precision options (vallex.inference.precision), the memory-mapped safetensors reader, and the trimmed last layer."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from vallex.config import VallexConfig
from vallex.inference.ar import ar_decode
from vallex.inference.generation import generate, language_ids
from vallex.inference.kernels import (
    OneDNNFloat32Linear,
    OneDNNInt8Linear,
    fbgemm_int8_linear_class,
    int8_linear,
    onednn_float32_linear_available,
    onednn_int8_available,
)
from vallex.inference.nar import NARInput, nar_decode
from vallex.inference.precision import (
    apply_precision,
    cpu_has_native_bfloat16,
    is_quantized,
    kernel_plan,
    kernels_in_use,
    normalize_precision,
)
from vallex.model import AttentionKernel, VallexModel
from vallex.weights.checkpoint import load_model, read_safetensors_mapped, save_checkpoint


@pytest.fixture()
def tiny_path(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(VallexModel(VallexConfig.tiny()).eval(), tmp_path / "tiny.safetensors")


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, 70, (1, 12), generator=g)
    langs = language_ids(12, 5, "en", "zh")[None]
    prompt = torch.randint(0, 1024, (1, 9, 8), generator=g)
    return text, langs, prompt


def test_safetensors_reader_maps_each_tensor_and_round_trips(tiny_path):
    model = load_model(tiny_path)
    state, metadata = read_safetensors_mapped(tiny_path)
    assert "vallex_config" in metadata
    reference = model.state_dict()
    for key, value in state.items():
        assert torch.equal(value, reference[key]), key
    # Copy-on-write: writing a loaded tensor leaves the file unchanged.
    state["ar_text_position.alpha"].fill_(123.0)
    assert read_safetensors_mapped(tiny_path)[0]["ar_text_position.alpha"].item() != 123.0


def test_safetensors_reader_rejects_a_truncated_file(tiny_path, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(tiny_path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="outside the file"):
        load_model(broken)


def test_precision_names():
    assert normalize_precision("bf16") == "bfloat16"
    assert normalize_precision(torch.float16) == "float16"
    with pytest.raises(ValueError, match="Unknown precision"):
        normalize_precision("int4")


def test_int8_on_cuda_is_refused(tiny_path):
    with pytest.raises(ValueError, match="CPU only"):
        apply_precision(load_model(tiny_path), "int8", "cuda")


def test_int8_replaces_decoder_linears_and_keeps_heads_and_norms_float(tiny_path):
    model = apply_precision(load_model(tiny_path), "int8")
    assert is_quantized(model)
    float_linears = (nn.Linear, OneDNNFloat32Linear)
    for decoder in (model.ar_decoder, model.nar_decoder):
        for name, module in decoder.named_modules():
            assert (type(module) in float_linears) == name.endswith("project_layer"), name
    assert type(model.nar_decoder.layers[0].linear1) not in float_linears
    assert model.ar_predict_layer.weight.dtype == torch.float32
    # The NAR predictors stay tied to the embeddings.
    assert model.nar_predict_layers[0].weight is model.nar_audio_embeddings[2].word_embeddings.weight
    with pytest.raises(ValueError, match="already int8"):
        apply_precision(model, "bfloat16")


@pytest.mark.parametrize("kernel", ["fbgemm", "onednn"])
def test_int8_linear_is_close_to_float(kernel):
    torch.manual_seed(0)
    linear = nn.Linear(64, 96)
    x = torch.randn(3, 5, 64)
    with torch.no_grad():
        expected = linear(x)
        got = int8_linear(linear, kernel)(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 0.05 * expected.abs().max().item()


def test_int8_kernels_agree_and_onednn_uses_all_eight_activation_bits():
    """Same int8 weights; oneDNN's 8-bit activations land closer to float32 than fbgemm's 7-bit ones."""
    if not onednn_int8_available():
        pytest.fail("oneDNN's int8 Linear is missing from this x86 torch build")
    torch.manual_seed(0)
    linear = nn.Linear(256, 128)
    x = torch.randn(40, 256)
    with torch.no_grad():
        expected = linear(x)
        onednn = int8_linear(linear, "onednn")
        assert isinstance(onednn, OneDNNInt8Linear)
        err_onednn = (onednn(x) - expected).abs().mean().item()
        err_fbgemm = (int8_linear(linear, "fbgemm")(x) - expected).abs().mean().item()
    assert err_onednn < err_fbgemm
    assert err_onednn < 0.02 * expected.abs().mean().item()
    with pytest.raises(ValueError, match="Unknown int8 kernel"):
        int8_linear(linear, "cublas")


def test_int8_uses_fbgemm_for_ar_steps_and_onednn_for_nar_stages(tiny_path):
    model = apply_precision(load_model(tiny_path), "int8")
    assert type(model.ar_decoder.layers[0].linear1) is fbgemm_int8_linear_class()
    assert issubclass(fbgemm_int8_linear_class(), torch.ao.nn.quantized.dynamic.Linear)
    expected = OneDNNInt8Linear if onednn_int8_available() else fbgemm_int8_linear_class()
    assert type(model.nar_decoder.layers[0].self_attn.in_proj) is expected
    bf16 = torch.bfloat16 if cpu_has_native_bfloat16() else None
    options = model.inference_options
    assert options.nar_attention == AttentionKernel(bf16, fused=False) and options.ar_cache_dtype is None
    assert options.ar_attention == AttentionKernel(None, fused=False)
    # What the options say is what the attentions run.
    assert all(layer.self_attn.attend is options.nar_attention for layer in model.nar_decoder.layers)
    assert all(layer.self_attn.attend is options.ar_attention for layer in model.ar_decoder.layers)


def test_bfloat16_nar_attention_stays_close_to_float32(tiny_path):
    model = apply_precision(load_model(tiny_path), "int8")
    text, langs, prompt = inputs()
    codes0 = torch.randint(0, 1024, (1, 6), generator=torch.Generator().manual_seed(1))
    outputs = {}
    with torch.inference_mode():
        text_emb = model.embed_text("nar", text, langs)
        audio = model.nar_audio_embeddings[0](torch.cat([prompt[..., 0], codes0], dim=1))
        for dtype in (None, torch.bfloat16):
            kernel = AttentionKernel(dtype, fused=False)
            model.set_inference_options(dataclasses.replace(model.inference_options, nar_attention=kernel))
            outputs[dtype] = model.nar_forward(text_emb, audio, 2, output_start=prompt.shape[1])
    assert outputs[torch.bfloat16].dtype == torch.float32
    relative = (outputs[torch.bfloat16] - outputs[None]).norm() / outputs[None].norm()
    assert 0 < relative.item() < 0.02


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_reduced_precision_generates_the_requested_frames(tiny_path, precision):
    model = apply_precision(load_model(tiny_path), precision)
    text, _, prompt = inputs()
    result = generate(model, text, 5, prompt, "en", "zh", min_frames=7, max_frames=7,
                      generator=torch.Generator().manual_seed(0))
    assert result.codes.shape == (1, 7, 8)
    assert result.codes.dtype == torch.long
    assert 0 <= int(result.codes.min()) and int(result.codes.max()) < 1024


def generate_codes(model, text, langs, prompt) -> torch.Tensor:
    result = generate(model, text, 5, prompt, "en", "zh", min_frames=7, max_frames=7,
                      generator=torch.Generator().manual_seed(0))
    return result.codes


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "int8"])
def test_apply_precision_replaces_modules_and_changes_only_declared_options(tiny_path, precision):
    """The model you read is the model that runs: apply_precision puts new modules in place of old ones, never
    changes a module's class or adds attributes to it, and its attention choices are the model's declared
    InferenceOptions, the same objects the attentions call."""
    model = load_model(tiny_path)
    modules = list(model.modules())  # kept alive, so no id is reused by a new module
    before = {id(module): (type(module), set(vars(module))) for module in modules}
    apply_precision(model, precision)
    survivors = [module for module in model.modules() if id(module) in before]
    assert survivors and len(survivors) < len(modules)  # some modules were replaced (the norms at least)
    for module in survivors:
        assert (type(module), set(vars(module))) == before[id(module)], type(module)
    options = model.inference_options
    for decoder, kernel in ((model.ar_decoder, options.ar_attention), (model.nar_decoder, options.nar_attention)):
        assert all(layer.self_attn.attend is kernel for layer in decoder.layers)


def test_float32_precision_changes_no_weight_and_keeps_the_outputs(tiny_path):
    """float32 only puts the fast paths on (vallex.inference.fastpath): same state dict, same codes as the
    plain model."""
    plain = load_model(tiny_path)
    model = load_model(tiny_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_precision(model, "float32")
    assert list(model.state_dict()) == list(before)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    if onednn_float32_linear_available() and kernel_plan("float32").ar_linear == "onednn-fp32":
        assert type(model.ar_decoder.layers[0].linear1) is OneDNNFloat32Linear
    assert kernels_in_use(model) == kernel_plan("float32").kernels()  # MKL's F.linear on AMX, oneDNN elsewhere
    text, langs, prompt = inputs()
    want = generate_codes(plain, text, langs, prompt)
    assert torch.equal(generate_codes(model, text, langs, prompt), want)


def test_trimmed_last_layer_equals_full_computation(tiny_path):
    """NAR output_start and the AR prefill's last-row-only pass give the untrimmed values."""
    model = load_model(tiny_path)
    text, langs, prompt = inputs()
    codes0 = torch.randint(0, 1024, (1, 6))
    with torch.no_grad():
        text_emb = model.embed_text("nar", text, langs)
        audio = model.nar_audio_embeddings[0](torch.cat([prompt[..., 0], codes0], dim=1))
        full = model.nar_forward(text_emb, audio, 3)  # [1, P + T, D]
        trimmed = model.nar_forward(text_emb, audio, 3, output_start=prompt.shape[1])
        assert trimmed.shape == (1, 6, model.config.d_model)
        assert torch.allclose(trimmed, full[:, prompt.shape[1]:], atol=1e-5)
        x = torch.randn(1, 10, model.config.d_model)
        assert torch.allclose(model.ar_decoder(x, output_start=9), model.ar_decoder(x)[:, 9:], atol=1e-5)
    ar = ar_decode(model, text, langs, prompt[..., 0], top_k=1, min_frames=4, max_frames=4)
    assert nar_decode(model, [NARInput(text, langs, prompt, ar.codes)])[0].shape == (1, 4, 8)


def test_float32_linear_on_onednn_matches_f_linear_and_keeps_autograd():
    from vallex.inference.kernels import use_onednn_float32_linears

    if not onednn_float32_linear_available():
        pytest.fail("oneDNN's float32 Linear is missing from this x86 torch build")
    torch.manual_seed(0)
    for bias in (True, False):
        plain = nn.Linear(48, 80, bias=bias)
        parent = nn.Sequential(plain, nn.ReLU())
        keys = list(parent.state_dict())
        assert use_onednn_float32_linears(parent) == 1  # put in place of the plain one, in its parent
        linear = parent[0]
        assert type(linear) is OneDNNFloat32Linear and type(plain) is nn.Linear  # a new module, not a new class
        assert linear.weight is plain.weight and linear.bias is plain.bias  # the same parameters, not copies
        assert list(parent.state_dict()) == keys
        assert use_onednn_float32_linears(parent) == 0  # nothing left to replace
        for x in (torch.randn(7, 48), torch.randn(2, 5, 48), torch.randn(3, 9, 48)[:, -1]):  # last: a strided view
            with torch.inference_mode():
                got = linear(x)
            expected = torch.nn.functional.linear(x, linear.weight, linear.bias)
            assert got.shape == expected.shape
            assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    x = torch.randn(4, 48, requires_grad=True)
    linear(x).sum().backward()  # training takes F.linear: gradients flow
    assert x.grad is not None and linear.weight.grad is not None


def test_adaptive_norm_folds_its_stage_affine_once_until_the_weights_change():
    from vallex.inference.fastpath import FoldedAdaptiveLayerNorm, fold_adaptive_norms
    from vallex.model import AdaptiveLayerNorm

    torch.manual_seed(0)
    plain = AdaptiveLayerNorm(16)
    parent = nn.ModuleList([plain])
    keys = list(parent.state_dict())
    assert fold_adaptive_norms(parent) == 1  # put in place of the plain one, in its parent
    norm = parent[0]
    assert type(norm) is FoldedAdaptiveLayerNorm and type(plain) is AdaptiveLayerNorm  # a new module, not a new class
    assert norm.project_layer is plain.project_layer and norm.norm is plain.norm  # the same parameters
    assert list(parent.state_dict()) == keys and fold_adaptive_norms(parent) == 0
    with torch.no_grad():  # a norm affine that is not the identity, so the folding is exercised
        norm.norm.weight.normal_(1.0, 0.5)
        norm.norm.bias.normal_(0.0, 0.5)
    stage = nn.Parameter(torch.randn(1, 16))
    x = torch.randn(2, 3, 16)

    def expected():  # the reference's two-step form
        weight, bias = torch.split(norm.project_layer(stage), 16, dim=-1)
        return weight * norm.norm(x) + bias

    with torch.no_grad():
        first = norm(x, stage)
        assert torch.allclose(first, expected(), atol=1e-5)
        assert len(norm._folded_cache) == 1
        assert torch.equal(norm(x, stage), first) and len(norm._folded_cache) == 1  # reused
        norm.project_layer.weight.mul_(2.0)  # an in-place update (an optimizer step) bumps the version
        assert torch.allclose(norm(x, stage), expected(), atol=1e-5)
        norm.norm.weight.add_(0.25)  # so does one of the norm's own parameters
        assert torch.allclose(norm(x, stage), expected(), atol=1e-5)
    with torch.inference_mode():  # a stage made in inference mode has no version counter: computed, not cached
        other = torch.randn(1, 16)
        weight, bias = torch.split(norm.project_layer(other), 16, dim=-1)
        assert torch.allclose(norm(x, other), weight * norm.norm(x) + bias, atol=1e-5)
    out = norm(x, stage)  # with gradients: the two-step form, and gradients reach the projection
    assert torch.allclose(out, expected(), atol=1e-5)
    out.sum().backward()
    assert norm.project_layer.weight.grad is not None and stage.grad is not None


def test_cpu_models_let_malloc_keep_activation_buffers(tiny_path):
    import sys

    from vallex.inference.memory import keep_freed_memory_for_reuse

    keep_freed_memory_for_reuse.cache_clear()
    apply_precision(load_model(tiny_path), "float32", "cpu")
    assert keep_freed_memory_for_reuse.cache_info().currsize == 0  # process-wide: never unasked
    apply_precision(load_model(tiny_path), "float32", "cpu", tune_malloc=True)
    info = keep_freed_memory_for_reuse.cache_info()
    assert info.currsize == 1  # asked for it
    assert keep_freed_memory_for_reuse() is sys.platform.startswith("linux")  # glibc on our Linux machines
