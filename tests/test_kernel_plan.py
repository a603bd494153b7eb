"""Kernel plans per CPU class, ``dtype="auto"``, and the CLI/app defaults (vallex.inference.precision)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_cpu_features import AMD_EPYC, BROADWELL, CASCADE_LAKE, GRAVITON3, SAPPHIRE_RAPIDS, SKYLAKE_SP
from torch import nn

from vallex.config import VallexConfig
from vallex.inference.cpu_features import CPU_CLASSES, TorchCPUView, cpu_features, features_from_cpuinfo
from vallex.inference.fastpath import install
from vallex.inference.generation import generate, language_ids
from vallex.inference.kernels import (
    OneDNNBf16Linear,
    onednn_bf16_linear_available,
    onednn_int8_available,
    use_onednn_float32_linears,
)
from vallex.inference.precision import (
    CPU_KERNEL_TABLE,
    GUESSED_PRECISION,
    MEASURED_PLANS,
    MEASURED_SPEED,
    KernelPlan,
    _quantize_decoder_linears,
    apply_precision,
    auto_precision_for_cpu,
    check_precision_option,
    cpu_plan_table,
    cuda_auto_precision,
    kernel_plan,
    kernels_in_use,
    normalize_precision,
    resolve_precision,
    runnable_kernel,
)
from vallex.model import VallexModel

torch.set_num_threads(1)

F32 = ("onednn-fp32", "onednn-fp32", "sdpa-fp32", "sdpa-fp32")
BF16 = ("aten-bf16", "aten-bf16", "sdpa-fp32", "matmul-bf16")
PLAIN = {"float32": ("aten-fp32", "aten-fp32", "sdpa-fp32", "sdpa-fp32"), "bfloat16": BF16,
         "int8": ("fbgemm-int8", "fbgemm-int8", "sdpa-fp32", "sdpa-fp32")}

#: The whole table, written out: what each CPU class runs (AR Linears, NAR Linears, AR attention, NAR attention).
EXPECTED_TABLE = {
    "x86-avx512-bf16-vnni": {"float32": F32, "bfloat16": BF16,
                             "int8": ("fbgemm-int8", "onednn-int8", "sdpa-fp32", "matmul-bf16")},
    "x86-amx": {"float32": PLAIN["float32"],
                "bfloat16": ("onednn-bf16-packed", "onednn-bf16-packed", "sdpa-bf16", "sdpa-bf16"),
                "int8": ("fbgemm-int8", "onednn-int8", "sdpa-bf16", "sdpa-bf16")},
    "x86-avx512-vnni": {"float32": F32, "bfloat16": BF16,
                        "int8": ("fbgemm-int8", "onednn-int8", "sdpa-fp32", "sdpa-fp32")},
    "x86-avx512": {"float32": F32, "bfloat16": BF16, "int8": ("fbgemm-int8", "fbgemm-int8", "sdpa-fp32", "sdpa-fp32")},
    "x86-avx2": {"float32": F32, "bfloat16": BF16, "int8": ("fbgemm-int8", "fbgemm-int8", "sdpa-fp32", "sdpa-fp32")},
    "arm64": PLAIN,
    "other": PLAIN,
}


def small_model(seed: int = 0) -> VallexModel:
    torch.manual_seed(seed)
    return VallexModel(VallexConfig(d_model=32, nhead=4, num_layers=2)).eval()


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, 70, (1, 12), generator=g)
    prompt = torch.randint(0, 1024, (1, 9, 8), generator=g)
    return text, prompt


def codes_of(model: VallexModel) -> torch.Tensor:
    text, prompt = inputs()
    return generate(model, text, 5, prompt, "en", "zh", min_frames=6, max_frames=6,
                    generator=torch.Generator().manual_seed(0)).codes


# The table ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cpu_class", list(CPU_CLASSES))
def test_every_class_has_its_plan_and_auto_choice(cpu_class):
    for precision in ("float32", "bfloat16", "int8"):
        assert cpu_plan_table(cpu_class, precision) == EXPECTED_TABLE[cpu_class][precision]
    assert cpu_plan_table(cpu_class, "fp16") == ("aten-fp16", "aten-fp16", "sdpa-fp32", "matmul-fp16")
    choice = auto_precision_for_cpu(cpu_class)
    assert choice.measured == (cpu_class in MEASURED_SPEED)
    assert choice.measured or choice.reason.startswith("best guess, unmeasured")


def test_the_amd_and_amx_classes_are_measured_and_auto_picks_their_fastest():
    assert set(MEASURED_SPEED) == {"x86-avx512-bf16-vnni", "x86-amx"}
    assert not set(MEASURED_SPEED) & set(GUESSED_PRECISION)
    assert set(MEASURED_SPEED) | set(GUESSED_PRECISION) == set(CPU_CLASSES) == set(CPU_KERNEL_TABLE)
    amd, amx = MEASURED_SPEED["x86-avx512-bf16-vnni"], MEASURED_SPEED["x86-amx"]
    assert amd.rtf == {"float32": 3.92, "bfloat16": 3.38, "int8": 1.45}  # README "Speed and precision"
    assert amx.rtf == {"float32": 3.19, "bfloat16": 1.61, "int8": 1.02}
    assert "bench/results/inference-cpu-2threads.json" in amd.source
    assert "bench/results/inference-x86-amx-2threads.json" in amx.source
    for cpu_class in MEASURED_SPEED:
        assert auto_precision_for_cpu(cpu_class).precision == "int8"
        assert auto_precision_for_cpu(cpu_class).measured
        assert kernel_plan("int8", "cpu", cpu_class).basis == "measured"
    assert kernel_plan("int8", "cpu", "x86-avx512-vnni").basis == "expected"


@pytest.mark.parametrize("text, precision", [(SAPPHIRE_RAPIDS, "int8"), (AMD_EPYC, "int8"), (CASCADE_LAKE, "int8"),
                                             (SKYLAKE_SP, "int8"), (BROADWELL, "int8"), (GRAVITON3, "float32")])
def test_auto_on_cpu_follows_the_class(text, precision):
    features = features_from_cpuinfo(text, torch_view=TorchCPUView(mkldnn=True, mkldnn_bf16=True))
    assert resolve_precision("auto", "cpu", features) == precision
    assert resolve_precision(" AUTO ", "cpu", features) == precision
    assert kernel_plan("auto", "cpu", features.cpu_class).precision == precision


def test_auto_on_other_devices_and_the_unset_default():
    assert cuda_auto_precision((8, 0), bf16_supported=True) == "bfloat16"  # A100: float32's exponent range
    assert cuda_auto_precision((9, 0), bf16_supported=True) == "bfloat16"
    assert cuda_auto_precision((8, 0), bf16_supported=False) == "float16"
    assert cuda_auto_precision((7, 5), bf16_supported=False) == "float16"  # T4
    assert cuda_auto_precision((5, 2), bf16_supported=True) == "bfloat16"  # no native half arithmetic
    assert cuda_auto_precision((5, 0), bf16_supported=False) == "float32"
    assert resolve_precision("auto", "mps") == "float32"
    assert resolve_precision("auto", "meta") == "float32"
    assert resolve_precision(None, "cpu") == "float32"  # the Python API's default: exact
    assert resolve_precision(None, "cuda") == "float32"
    assert resolve_precision(torch.bfloat16, "cpu") == "bfloat16"
    assert resolve_precision("fp16", "cuda") == "float16"
    assert resolve_precision("auto", "cpu") == auto_precision_for_cpu(cpu_features().cpu_class).precision


@pytest.mark.parametrize("capability, bf16, expected", [((7, 5), False, "float16"), ((7, 0), False, "float16"),
                                                       ((8, 0), True, "bfloat16"), ((8, 9), True, "bfloat16"),
                                                       ((9, 0), True, "bfloat16")])
def test_auto_on_cuda_reads_the_gpu_it_runs_on(monkeypatch, capability, bf16, expected):
    # What resolve_precision asks torch about the GPU, answered as a T4 / A100 / L4 / H100 would.
    asked = []

    def get_device_capability(index):
        asked.append(index)
        return capability

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", get_device_capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    assert resolve_precision("auto", "cuda") == expected
    assert resolve_precision("auto", "cuda:1") == expected
    assert asked == [0, 1]


@pytest.mark.parametrize("bad", ["int4", "float64", "", "autoo"])
def test_an_unknown_dtype_is_a_clear_value_error(bad):
    with pytest.raises(ValueError, match="Unknown precision .*expected one of auto, float32, bfloat16"):
        resolve_precision(bad, "cpu")
    with pytest.raises(ValueError, match="Unknown precision"):
        check_precision_option(bad)
    with pytest.raises(ValueError, match="Unknown precision"):
        apply_precision(small_model(), bad)


def test_auto_is_not_a_precision_by_itself():
    with pytest.raises(ValueError, match="resolve_precision"):
        normalize_precision("auto")
    assert check_precision_option("Auto") == "auto" and check_precision_option("bf16") == "bfloat16"
    assert check_precision_option(None) is None
    with pytest.raises(ValueError, match="Unknown CPU class"):
        kernel_plan("int8", "cpu", "x86-sse")


# This machine -------------------------------------------------------------------------------------------
def test_this_machine_runs_its_class_plan():
    """Whatever CPU runs the tests: the default plan is its class's row of the table (on x86 builds with
    oneDNN exactly as written, elsewhere with the documented fallbacks), and ``auto`` converts to it."""
    features = cpu_features()
    for precision in ("float32", "bfloat16", "int8"):
        plan = kernel_plan(precision)
        table = cpu_plan_table(features.cpu_class, precision)
        assert plan.cpu_class == features.cpu_class
        assert tuple(plan.kernels().values()) == tuple(runnable_kernel(k) for k in table)
        assert plan.basis == ("measured" if features.cpu_class in MEASURED_PLANS else "expected")
        if features.is_x86 and torch.backends.mkldnn.is_available():
            assert tuple(plan.kernels().values()) == table  # nothing falls back here
    if features.cpu_class in MEASURED_PLANS:  # the measured classes have what their plans rely on
        assert onednn_int8_available() and features.native_bfloat16
    auto = kernel_plan("auto")
    assert auto.precision == auto_precision_for_cpu(features.cpu_class).precision
    assert kernels_in_use(apply_precision(small_model(), "auto", "cpu")) == auto.kernels()


def test_fallbacks_replace_only_kernels_this_build_lacks():
    assert runnable_kernel("fbgemm-int8") == "fbgemm-int8" and runnable_kernel("sdpa-bf16") == "sdpa-bf16"
    assert runnable_kernel("onednn-int8") == ("onednn-int8" if onednn_int8_available() else "fbgemm-int8")
    assert runnable_kernel("onednn-bf16-packed") == (
        "onednn-bf16-packed" if onednn_bf16_linear_available() else "aten-bf16")


def test_the_measured_plan_converts_exactly_as_before():
    """apply_precision with the AMD plan = the conversion this project shipped before plans existed."""
    before = small_model()
    _quantize_decoder_linears(before)  # its defaults: fbgemm AR, oneDNN NAR
    install(before, nar_attention_dtype=torch.bfloat16 if cpu_features().native_bfloat16 else None)
    use_onednn_float32_linears(before)  # the float32 heads and stage projections on oneDNN, as before
    plan = kernel_plan("int8", "cpu", "x86-avx512-bf16-vnni")
    if not cpu_features().native_bfloat16:
        plan = plan.with_kernels(nar_attention="sdpa-fp32")
    now = apply_precision(small_model(), "int8", "cpu", plan=plan)
    assert kernels_in_use(now) == kernels_in_use(before)
    with torch.inference_mode():
        assert torch.equal(codes_of(now), codes_of(before))


def test_float32_stays_exact_whatever_the_class():
    reference = codes_of(small_model())
    for cpu_class in CPU_CLASSES:
        model = apply_precision(small_model(), "float32", "cpu", plan=kernel_plan("float32", "cpu", cpu_class))
        assert torch.equal(codes_of(model), reference), cpu_class


@pytest.mark.parametrize("cpu_class", list(CPU_CLASSES))
@pytest.mark.parametrize("precision", ["float32", "bfloat16", "int8"])
def test_the_converted_model_runs_the_planned_kernels(cpu_class, precision):
    plan = kernel_plan(precision, "cpu", cpu_class)
    model = apply_precision(small_model(), precision, "cpu", plan=plan)
    assert kernels_in_use(model) == plan.kernels()
    assert plan.describe().startswith(f"{precision} on {cpu_class}: AR Linears {plan.ar_linear}")


# The AMX plan's bf16 Linears, checked on whatever CPU runs the tests -------------------------------------
def test_prepacked_bf16_linear_matches_f_linear():
    if not onednn_bf16_linear_available():  # a build without oneDNN: the AMX plan falls back to F.linear
        assert kernel_plan("bfloat16", "cpu", "x86-amx").ar_linear == "aten-bf16"
        return
    torch.manual_seed(0)
    linear = nn.Linear(64, 96).to(torch.bfloat16)
    packed = OneDNNBf16Linear(linear, rows_hint=512)
    for x in (torch.randn(1, 64), torch.randn(2, 7, 64), torch.randn(3, 9, 64)[:, -1], torch.randn(300, 64)):
        x = x.to(torch.bfloat16)
        with torch.inference_mode():
            got, expected = packed(x), nn.functional.linear(x, linear.weight, linear.bias)
        assert got.shape == expected.shape and got.dtype == torch.bfloat16
        assert torch.allclose(got.float(), expected.float(), rtol=1e-2, atol=1e-2)
        assert torch.equal(packed.inference_function()(x), got)


def test_the_amx_bf16_plan_generates_close_to_the_default_bf16_and_one_frame_step_agrees():
    from vallex.inference.fastpath import KVCache, OneFrameStep, model_cache_dtype
    from vallex.model import ar_attention_mask

    amx = apply_precision(small_model(), "bfloat16", "cpu", plan=kernel_plan("bfloat16", "cpu", "x86-amx"))
    default = apply_precision(small_model(), "bfloat16", "cpu",
                              plan=kernel_plan("bfloat16", "cpu", "x86-avx512-bf16-vnni"))
    packed = onednn_bf16_linear_available()  # else the plan falls back to F.linear (still checked below)
    assert isinstance(amx.ar_decoder.layers[0].linear1, OneDNNBf16Linear) == packed
    assert type(amx.nar_decoder.layers[0].norm1.project_layer) is not OneDNNBf16Linear  # kept as it was
    text, prompt = inputs()
    with torch.inference_mode():
        text_emb = amx.embed_text("nar", text, language_ids(12, 5, "en", "zh")[None])
        audio = amx.nar_audio_embeddings[0](prompt[..., 0])
        got = amx.nar_forward(text_emb, audio, 2)
        expected = default.nar_forward(text_emb, audio, 2)
        assert (got.float() - expected.float()).norm() <= 0.02 * expected.float().norm()
        # The AR loop's hoisted step runs the packed Linears exactly as the modules do.
        cache_dtype = model_cache_dtype(amx, torch.bfloat16, torch.device("cpu"))
        assert cache_dtype == torch.bfloat16  # the AMX plan's bf16 KV cache
        caches = [KVCache.allocate(amx.config, 1, 12, "cpu", cache_dtype) for _ in range(2)]
        prefix = torch.randn(1, 6, 32).to(torch.bfloat16)
        for cache in caches:
            amx.ar_decoder(prefix, ar_attention_mask(2, 4), cache=cache, start=0)
        step = OneFrameStep(amx.ar_decoder, caches[1])
        x = torch.randn(1, 1, 32).to(torch.bfloat16)
        assert torch.equal(step(x, 6), amx.ar_decoder(x, None, cache=caches[0], start=6))
        assert codes_of(amx).shape == (1, 6, 8)
    assert apply_precision(amx, "bf16", "cpu", plan=kernel_plan("bfloat16", "cpu", "x86-amx")) is amx
    if packed:  # prepacked weights cannot be converted again
        with pytest.raises(ValueError, match="already bfloat16"):
            apply_precision(amx, "int8", "cpu")


@pytest.mark.parametrize("precision", ["int8", "bfloat16"])
def test_fused_bf16_nar_attention_is_read_back_and_close_to_the_matmul_one(precision):
    """nar_attention="sdpa-bf16": the NAR attends through torch's fused kernel in bfloat16 (masks too)."""
    from vallex.model import AttentionKernel, matmul_attention

    base = kernel_plan(precision, "cpu", "x86-avx512-bf16-vnni")
    matmul = apply_precision(small_model(), precision, "cpu", plan=base.with_kernels(nar_attention="matmul-bf16"))
    fused = apply_precision(small_model(), precision, "cpu", plan=base.with_kernels(nar_attention="sdpa-bf16"))
    assert kernels_in_use(fused)["nar_attention"] == "sdpa-bf16"
    assert kernels_in_use(matmul)["nar_attention"] == "matmul-bf16"
    attend = fused.nar_decoder.layers[0].self_attn.attend
    assert attend == AttentionKernel(torch.bfloat16, fused=True) == fused.inference_options.nar_attention
    assert not fused.ar_decoder.layers[0].self_attn.attend.fused  # the AR keeps its kernel
    text, prompt = inputs()
    with torch.inference_mode():
        text_emb = fused.embed_text("nar", text, language_ids(12, 5, "en", "zh")[None])
        got = fused.nar_forward(text_emb, fused.nar_audio_embeddings[0](prompt[..., 0]), 2)
        expected = matmul.nar_forward(text_emb, matmul.nar_audio_embeddings[0](prompt[..., 0]), 2)
        assert (got.float() - expected.float()).norm() <= 0.02 * expected.float().norm()
        # A padding mask (batched NAR) is honoured: masked keys get no weight.
        q, k, v = (torch.randn(2, 4, 9, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
        mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
        mask[1, ..., 6:] = False
        out = attend(q, k, v, mask)
        assert out.dtype == torch.bfloat16
        expected = matmul_attention(q, k, v, mask)
        assert torch.allclose(out.float(), expected, atol=2e-2)
        assert torch.equal(attend(q, k[..., :6, :], v[..., :6, :])[1], out[1])


@pytest.mark.parametrize("precision", ["int8", "bfloat16"])
def test_a_bf16_kv_cache_is_used_by_prefill_steps_and_batches(precision):
    """ar_attention="sdpa-bf16": the AR's cache is bfloat16, attended by the fused kernel, in every AR path."""
    from vallex.inference.ar import ARBatch, ARRequest, ar_decode, prefill
    from vallex.inference.fastpath import OneFrameStep, model_cache_dtype

    base = kernel_plan(precision, "cpu", "x86-avx512-bf16-vnni").with_kernels(ar_attention="sdpa-fp32")
    fp32_cache = apply_precision(small_model(), precision, "cpu", plan=base)
    bf16_cache = apply_precision(small_model(), precision, "cpu", plan=base.with_kernels(ar_attention="sdpa-bf16"))
    assert kernels_in_use(bf16_cache)["ar_attention"] == "sdpa-bf16"
    assert kernels_in_use(fp32_cache)["ar_attention"] == "sdpa-fp32"
    assert model_cache_dtype(bf16_cache, torch.float32, torch.device("cpu")) == torch.bfloat16
    assert bf16_cache.ar_decoder.layers[0].self_attn.attend.fused
    text, prompt = inputs()
    langs = language_ids(12, 5, "en", "zh")[None]
    with torch.inference_mode():
        cache, logits = prefill(bf16_cache, text, langs, prompt[..., 0], 1, 40)
        assert cache.layers[0].kv.dtype == torch.bfloat16
        _, reference_logits = prefill(fp32_cache, text, langs, prompt[..., 0], 1, 40)
        assert (logits.float() - reference_logits.float()).norm() <= 0.03 * reference_logits.float().norm()
        # The hoisted step equals the module path over the same bf16 cache, bit for bit.
        twin, _ = prefill(bf16_cache, text, langs, prompt[..., 0], 1, 40)
        x = torch.randn(1, 1, 32, generator=torch.Generator().manual_seed(3)).to(logits.dtype)
        start = text.shape[1] + 1 + prompt.shape[1]
        assert torch.equal(OneFrameStep(bf16_cache.ar_decoder, cache)(x, start),
                           bf16_cache.ar_decoder(x, None, cache=twin, start=start))
        # A batch of one decodes what ar_decode decodes alone (same kernels, same cache dtype).
        alone = ar_decode(bf16_cache, text, langs, prompt[..., 0], min_frames=6, max_frames=6,
                          generator=torch.Generator().manual_seed(0)).codes
    batch = ARBatch(bf16_cache)
    batch.add(0, ARRequest(text, langs, prompt[..., 0], min_frames=6, max_frames=6,
                           generator=torch.Generator().manual_seed(0)))
    finished = {}
    while batch:
        finished.update(batch.step().finished)
    assert torch.equal(finished[0].codes, alone)


# Plans that cannot run ------------------------------------------------------------------------------------
def test_overrides_are_checked():
    plan = kernel_plan("int8", "cpu", "x86-avx512-bf16-vnni")
    if onednn_int8_available():
        swapped = plan.with_kernels(ar_linear="onednn-int8")
        assert swapped.ar_linear == "onednn-int8" and swapped.basis == "override"
        model = apply_precision(small_model(), "int8", "cpu", plan=swapped)
        assert kernels_in_use(model)["ar_linear"] == "onednn-int8"
    with pytest.raises(ValueError, match="not a kernel for int8"):
        plan.with_kernels(ar_linear="aten-bf16")
    with pytest.raises(ValueError, match="ar_attention='matmul-bf16' is not a kernel for int8"):
        plan.with_kernels(ar_attention="matmul-bf16")
    with pytest.raises(ValueError, match="ar_attention='sdpa-bf16' is not a kernel for float32"):
        kernel_plan("float32", "cpu", "x86-amx").with_kernels(ar_attention="sdpa-bf16")
    with pytest.raises(ValueError, match="Cannot override ar_cache"):
        plan.with_kernels(ar_cache="bf16")
    with pytest.raises(ValueError, match="is for int8 on cpu, not bfloat16"):
        apply_precision(small_model(), "bfloat16", "cpu", plan=plan)
    with pytest.raises(ValueError, match="CPU only"):
        kernel_plan("int8", "cuda")
    with pytest.raises(ValueError, match="CPU only"):
        apply_precision(small_model(), "int8", "cuda")
    cuda = kernel_plan("float16", "cuda")
    assert (cuda.cpu_class, cuda.basis, cuda.ar_attention) == (None, "fixed", "sdpa-fp16")
    assert isinstance(cuda, KernelPlan) and cuda.as_dict()["precision"] == "float16"


# The CLI, the app and the Python API --------------------------------------------------------------------
def test_cli_defaults_to_auto_and_rejects_unknown_dtypes(capsys):
    from vallex.cli import build_parser, main

    args = build_parser().parse_args(["synthesize", "--text", "Hi.", "-o", "x.wav"])
    assert args.dtype == "auto"
    with pytest.raises(SystemExit) as exit_info:
        main(["synthesize", "--text", "Hi.", "--dtype", "int4", "-o", "x.wav"])
    assert exit_info.value.code == 2 and "int4" in capsys.readouterr().err


def test_app_defaults_to_auto_and_checks_vallex_dtype(monkeypatch):
    from demo.config import AppConfig

    monkeypatch.delenv("VALLEX_DTYPE", raising=False)
    assert AppConfig.from_env().dtype == "auto" and AppConfig().dtype == "auto"
    monkeypatch.setenv("VALLEX_DTYPE", "BF16")
    assert AppConfig.from_env().dtype == "bfloat16"
    monkeypatch.setenv("VALLEX_DTYPE", "float32")
    assert AppConfig.from_env().dtype == "float32"
    monkeypatch.setenv("VALLEX_DTYPE", "int4")
    with pytest.raises(ValueError, match="VALLEX_DTYPE='int4': use auto, float32"):
        AppConfig.from_env()


def test_the_app_engine_passes_auto_to_from_pretrained(monkeypatch, tmp_path):
    from demo.config import AppConfig
    from demo.engine import Engine
    from vallex.api import VallEX

    seen = {}

    def fake_from_pretrained(*args, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(VallEX, "from_pretrained", staticmethod(fake_from_pretrained))
    with pytest.raises(ValueError, match="stop here"):
        Engine(AppConfig(weights_dir=tmp_path, presets_dir=tmp_path / "presets")).tts()
    assert seen["dtype"] == "auto"


def test_from_pretrained_resolves_auto_and_rejects_unknown_dtypes_before_loading(tiny_weights, tmp_path: Path):
    from vallex.api import VallEX

    with pytest.raises(ValueError, match="Unknown precision 'int4'"):
        VallEX.from_pretrained(tmp_path / "no-weights-here", device="cpu", dtype="int4", download=False)
    tts = VallEX.from_pretrained(tiny_weights, device="cpu", dtype="auto")
    assert kernels_in_use(tts.model) == kernel_plan("auto", "cpu").kernels()
    assert tts.precision == resolve_precision("auto", "cpu") != "auto"  # what auto chose, for display
    exact = VallEX.from_pretrained(tiny_weights, device="cpu")  # the API's default: float32
    assert kernels_in_use(exact.model) == kernel_plan("float32", "cpu").kernels()
