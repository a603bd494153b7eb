"""CPU feature detection and classes (vallex.inference.cpu_features) on realistic /proc/cpuinfo texts and
on this machine."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vallex.inference.cpu_features import (
    CPU_CLASSES,
    TorchCPUView,
    classify,
    cpu_features,
    features_from_cpuinfo,
    parse_cpuinfo,
)

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]

_X86_BASE = ("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht "
             "syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid tsc_known_freq pni "
             "pclmulqdq ssse3")


def x86_cpuinfo(vendor: str, model: str, flags: str, processors: int = 2) -> str:
    """A /proc/cpuinfo text as Linux writes it on x86: one block per logical processor."""
    block = (f"processor\t: {{i}}\nvendor_id\t: {vendor}\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: {model}\n"
             f"stepping\t: 8\ncpu MHz\t\t: 2900.000\ncache size\t: 107520 KB\nflags\t\t: {flags}\n"
             "bugs\t\t: spectre_v1 spectre_v2\nbogomips\t: 5800.00\n")
    return "\n".join(block.format(i=i) for i in range(processors))


#: Intel Xeon Platinum 8480+ (Sapphire Rapids, e.g. an AWS m7i / GCP c3 virtual machine).
SAPPHIRE_RAPIDS = x86_cpuinfo("GenuineIntel", "Intel(R) Xeon(R) Platinum 8480+", _X86_BASE + (
    " fma cx16 pdcm pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor "
    "lahf_lm abm 3dnowprefetch cpuid_fault invpcid_single ssbd ibrs ibpb stibp ibrs_enhanced fsgsbase tsc_adjust "
    "bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni "
    "avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 wbnoinvd ida arat avx512vbmi umip pku "
    "ospke waitpkg avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg tme avx512_vpopcntdq la57 rdpid "
    "cldemote movdiri movdir64b fsrm md_clear serialize tsxldtrk amx_bf16 avx512_fp16 amx_tile amx_int8 "
    "flush_l1d arch_capabilities"))
#: AMD EPYC Zen 4 (Genoa): the flags of the project's AMD machine.
AMD_EPYC = x86_cpuinfo("AuthenticAMD", "AMD EPYC 9R14 96-Core Processor", _X86_BASE + (
    " fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor "
    "lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext vmmcall fsgsbase tsc_adjust "
    "bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni "
    "avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx512_bf16 clzero xsaveerptr arat avx512vbmi umip "
    "avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid fsrm"))
#: Intel Xeon Platinum 8259CL (Cascade Lake): AVX512-VNNI, no AVX512-BF16.
CASCADE_LAKE = x86_cpuinfo("GenuineIntel", "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", _X86_BASE + (
    " fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor "
    "lahf_lm abm 3dnowprefetch invpcid_single pti fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid mpx avx512f "
    "avx512dq rdseed adx smap clflushopt clwb avx512cd avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves ida arat "
    "pku ospke avx512_vnni"))
#: Intel Xeon Platinum 8175M (Skylake-SP): AVX-512 without VNNI.
SKYLAKE_SP = x86_cpuinfo("GenuineIntel", "Intel(R) Xeon(R) Platinum 8175M CPU @ 2.50GHz", _X86_BASE + (
    " fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor "
    "lahf_lm abm 3dnowprefetch invpcid_single pti fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm mpx "
    "avx512f avx512dq rdseed adx smap clflushopt clwb avx512cd avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves "
    "ida arat pku ospke"))
#: Intel Xeon E5-2686 v4 (Broadwell, e.g. AWS m4 / i3): AVX2 and FMA only.
BROADWELL = x86_cpuinfo("GenuineIntel", "Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", _X86_BASE + (
    " fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor "
    "lahf_lm abm 3dnowprefetch cpuid_fault invpcid_single pti fsgsbase bmi1 hle avx2 smep bmi2 erms invpcid rtm "
    "rdseed adx xsaveopt"))
#: Intel Atom C2750 (Silvermont): SSE4.2, no AVX.
ATOM = x86_cpuinfo("GenuineIntel", "Intel(R) Atom(TM) CPU  C2750  @ 2.40GHz", _X86_BASE + (
    " cx16 sse4_1 sse4_2 movbe popcnt tsc_deadline_timer aes rdrand lahf_lm 3dnowprefetch"))


def arm64_cpuinfo(features: str, part: str) -> str:
    """A /proc/cpuinfo text as Linux writes it on arm64 (no model name)."""
    return "\n".join(f"processor\t: {i}\nBogoMIPS\t: 2100.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
                     f"CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: {part}\nCPU revision\t: 1\n"
                     for i in range(2))


#: AWS Graviton3 (Neoverse V1): bf16, i8mm, dot product, SVE.
GRAVITON3 = arm64_cpuinfo("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma "
                          "lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg "
                          "dcpodp svei8mm svebf16 i8mm bf16 dgh rng", "0xd40")
#: AWS Graviton2 (Neoverse N1): dot product, no bf16.
GRAVITON2 = arm64_cpuinfo("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop "
                          "asimddp ssbs", "0xd0c")


@pytest.mark.parametrize("text, expected", [
    (SAPPHIRE_RAPIDS, "x86-amx"),
    (AMD_EPYC, "x86-avx512-bf16-vnni"),
    (CASCADE_LAKE, "x86-avx512-vnni"),
    (SKYLAKE_SP, "x86-avx512"),
    (BROADWELL, "x86-avx2"),
    (ATOM, "other"),
    (GRAVITON3, "arm64"),
    (GRAVITON2, "arm64"),
])
def test_each_cpu_is_classified(text, expected):
    features = features_from_cpuinfo(text)
    assert features.cpu_class == expected
    assert features.cpu_class in CPU_CLASSES


def test_an_amx_xeon_reads_its_identity_and_flags():
    features = features_from_cpuinfo(SAPPHIRE_RAPIDS)
    assert (features.architecture, features.vendor) == ("x86_64", "GenuineIntel")
    assert features.model_name == "Intel(R) Xeon(R) Platinum 8480+"
    assert features.flags == {"amx_tile", "amx_bf16", "amx_int8", "avx512_vnni", "avx_vnni", "avx512_bf16",
                              "avx512f", "avx512bw", "avx2", "fma"}
    assert features.amx and features.native_bfloat16 and features.int8_dot_product
    line = features.describe()
    assert line.startswith("x86-amx: Intel(R) Xeon(R) Platinum 8480+ (GenuineIntel), x86_64;")
    assert "amx_tile amx_bf16 amx_int8" in line and "\n" not in line


def test_amd_epyc_has_native_bf16_and_vnni_but_no_amx():
    features = features_from_cpuinfo(AMD_EPYC)
    assert features.vendor == "AuthenticAMD" and not features.amx
    assert features.native_bfloat16 and features.int8_dot_product
    assert features.flags == {"avx512_vnni", "avx512_bf16", "avx512f", "avx512bw", "avx2", "fma"}


def test_avx512_without_bf16_hardware_is_not_native_bf16_even_if_onednn_says_it_supports_bf16():
    """oneDNN's bf16 check is True on any AVX-512 CPU (emulation); the hardware flags decide."""
    onednn_says_yes = TorchCPUView(capability="AVX512", mkldnn=True, mkldnn_bf16=True, amx_tile=False)
    cascade = features_from_cpuinfo(CASCADE_LAKE, torch_view=onednn_says_yes)
    assert not cascade.native_bfloat16 and cascade.int8_dot_product
    skylake = features_from_cpuinfo(SKYLAKE_SP, torch_view=onednn_says_yes)
    assert not skylake.native_bfloat16 and not skylake.int8_dot_product
    broadwell = features_from_cpuinfo(BROADWELL)
    assert (broadwell.flags, broadwell.native_bfloat16) == ({"avx2", "fma"}, False)


def test_torch_without_amx_support_overrules_the_flags():
    """A VM whose OS does not enable the AMX tiles: torch (cpuinfo) says no, so the next class down."""
    view = TorchCPUView(capability="AVX512", mkldnn=True, mkldnn_bf16=True, amx_tile=False)
    assert features_from_cpuinfo(SAPPHIRE_RAPIDS, torch_view=view).cpu_class == "x86-avx512-bf16-vnni"
    assert features_from_cpuinfo(SAPPHIRE_RAPIDS, torch_view=TorchCPUView(amx_tile=True)).cpu_class == "x86-amx"
    no_onednn_bf16 = TorchCPUView(mkldnn=True, mkldnn_bf16=False)
    assert not features_from_cpuinfo(AMD_EPYC, torch_view=no_onednn_bf16).native_bfloat16


def test_arm64_reads_features_and_implementer():
    graviton3 = features_from_cpuinfo(GRAVITON3)
    assert (graviton3.architecture, graviton3.vendor) == ("aarch64", "ARM")
    assert graviton3.model_name == "ARM CPU part 0xd40"
    assert graviton3.flags == {"bf16", "i8mm", "asimddp", "sve"}
    assert graviton3.native_bfloat16 and graviton3.int8_dot_product
    assert graviton3.describe().startswith("arm64: ARM CPU part 0xd40, aarch64; bf16 i8mm asimddp sve")
    graviton2 = features_from_cpuinfo(GRAVITON2)
    assert graviton2.flags == {"asimddp"} and not graviton2.native_bfloat16


def test_only_the_first_processor_block_is_read_and_other_architectures_are_other():
    text = AMD_EPYC + "\n" + BROADWELL.replace("processor\t: 0", "processor\t: 2")
    assert parse_cpuinfo(text)["model name"] == "AMD EPYC 9R14 96-Core Processor"
    assert features_from_cpuinfo("processor : 0\ncpu : POWER9\n", architecture="ppc64le").cpu_class == "other"
    assert classify("s390x", {"avx2", "fma"}) == "other"
    assert features_from_cpuinfo("", architecture="x86_64").cpu_class == "other"  # nothing readable


def test_as_dict_is_json_ready():
    import json

    data = features_from_cpuinfo(SAPPHIRE_RAPIDS).as_dict()
    assert json.loads(json.dumps(data))["cpu_class"] == "x86-amx"
    assert data["flags"] == sorted(data["flags"]) and data["native_bfloat16"] is True


def test_this_machine_is_detected_once_and_matches_its_cpuinfo():
    features = cpu_features()
    assert features is cpu_features()  # cached for the process
    assert features.cpu_class in CPU_CLASSES
    view = features.torch_view
    assert view.capability == torch.backends.cpu.get_cpu_capability()
    assert view.mkldnn == torch.backends.mkldnn.is_available()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        again = features_from_cpuinfo(cpuinfo.read_text(), features.architecture, view)
        assert (again.cpu_class, again.flags, again.model_name) == (features.cpu_class, features.flags,
                                                                    features.model_name)
        assert features.source == "/proc/cpuinfo"
    if features.is_x86 and view.flags:  # torch's cpuinfo sees the same decisive x86 flags as the kernel
        assert view.flags & {"avx512_vnni", "avx512_bf16", "avx2"} == features.flags & {
            "avx512_vnni", "avx512_bf16", "avx2"}


def test_importing_the_module_detects_nothing_and_imports_no_torch():
    code = ("import sys; import vallex.inference.cpu_features as c; "
            "print('torch' in sys.modules, c.cpu_features.cache_info().currsize)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                         check=True).stdout.split()
    assert out == ["False", "0"]
