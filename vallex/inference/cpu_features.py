"""What this CPU can do, and which class of CPU it is (the kernel choices of
:mod:`vallex.inference.precision` follow the class).

The project runs on different processors: an AMD EPYC with AVX-512 VNNI and AVX512-BF16 but no AMX (where
every speed figure in the README was measured), Intel Xeons with AMX tile units (bf16 and int8 matrix
products in hardware), AVX2-only x86 machines and arm64 servers. Which int8/bf16 kernels pay differs between
them, so :func:`cpu_features` reads, once per process and only when first asked:

* ``/proc/cpuinfo`` (Linux): vendor, model name and the flags that matter here (AMX, VNNI, AVX512-BF16,
  AVX-512, AVX2/FMA; on arm64 bf16, i8mm, dot product, SVE);
* torch's own view: ``torch.backends.cpu.get_cpu_capability()`` (the ATen kernels it dispatches to),
  ``torch.cpu.get_capabilities()`` (cpuinfo's flags; also the fallback where ``/proc/cpuinfo`` is missing),
  whether oneDNN (mkldnn) is built in and whether it runs bfloat16
  (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``).

and :func:`classify` turns the flags into one of :data:`CPU_CLASSES`. Importing this module does nothing but
define names; the detection result is cached for the process (the CPU does not change under it).
"""
from __future__ import annotations

import functools
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

#: The CPU classes, most capable first, with examples of processors in each.
CPU_CLASSES: Mapping[str, str] = MappingProxyType({
    "x86-amx": "x86 with AMX tiles for bf16 and int8 (amx_tile, amx_bf16, amx_int8): Intel Xeon 4th gen "
               "(Sapphire Rapids) and later",
    "x86-avx512-bf16-vnni": "x86 with AVX-512, AVX512-VNNI and AVX512-BF16, no AMX: AMD EPYC Zen 4/5 "
                            "(Genoa, Turin), Intel Cooper Lake",
    "x86-avx512-vnni": "x86 with AVX-512 and AVX512-VNNI, no native bf16: Intel Cascade Lake, Ice Lake",
    "x86-avx512": "x86 with AVX-512 (F, BW) but no VNNI: Intel Skylake-SP",
    "x86-avx2": "x86 with AVX2 and FMA, no AVX-512: Intel Haswell to Broadwell and client cores, AMD Zen 1-3",
    "arm64": "64-bit Arm (aarch64): AWS Graviton, Ampere Altra, Apple silicon",
    "other": "anything else (x86 without AVX2, other architectures)",
})

#: The flags that decide the class or the kernels, by architecture (Linux /proc/cpuinfo names).
X86_FLAGS = ("amx_tile", "amx_bf16", "amx_int8", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512f",
             "avx512bw", "avx2", "fma")
ARM64_FLAGS = ("bf16", "i8mm", "asimddp", "sve")
AMX_FLAGS = frozenset({"amx_tile", "amx_bf16", "amx_int8"})

#: torch.cpu.get_capabilities() names -> /proc/cpuinfo names, for machines without /proc/cpuinfo.
_TORCH_FLAG_NAMES = {
    "amx_tile": "amx_tile", "amx_bf16": "amx_bf16", "amx_int8": "amx_int8", "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni", "avx512_bf16": "avx512_bf16", "avx512_f": "avx512f", "avx512_bw": "avx512bw",
    "avx2": "avx2", "fma3": "fma", "bf16": "bf16", "i8mm": "i8mm", "dot": "asimddp", "sve": "sve",
}

#: ``CPU implementer`` codes of arm64 /proc/cpuinfo -> vendor names (the common ones).
_ARM_IMPLEMENTERS = {"0x41": "ARM", "0x42": "Broadcom", "0x43": "Cavium", "0x46": "Fujitsu", "0x48": "HiSilicon",
                     "0x4e": "NVIDIA", "0x51": "Qualcomm", "0x61": "Apple", "0xc0": "Ampere"}

_X86_MACHINES = ("x86_64", "amd64", "i386", "i686", "x86")
_ARM64_MACHINES = ("aarch64", "arm64")


@dataclass(frozen=True)
class TorchCPUView:
    """What the installed torch reports about this CPU (None: this torch build cannot say)."""

    capability: str | None = None  # torch.backends.cpu.get_cpu_capability(): "AVX512", "AVX2", "SVE256", ...
    mkldnn: bool | None = None  # oneDNN built in (torch.backends.mkldnn.is_available())
    mkldnn_bf16: bool | None = None  # oneDNN runs bf16 matmuls; also True on AVX-512 CPUs that emulate bf16
    amx_tile: bool | None = None  # torch.cpu._is_amx_tile_supported() (cpuinfo: CPUID and OS support)
    flags: frozenset[str] = frozenset()  # torch.cpu.get_capabilities()' flags, under /proc/cpuinfo names


@dataclass(frozen=True)
class CPUFeatures:
    """One CPU's class, identity and the features that decide kernels (see :func:`cpu_features`)."""

    cpu_class: str
    architecture: str  # "x86_64", "aarch64", ...
    vendor: str  # "AuthenticAMD", "GenuineIntel", "ARM", ...; "" when unknown
    model_name: str  # "" when unknown (arm64 /proc/cpuinfo has none)
    flags: frozenset[str]  # the flags of X86_FLAGS / ARM64_FLAGS this CPU has
    torch_view: TorchCPUView = field(default_factory=TorchCPUView)
    source: str = "/proc/cpuinfo"  # where the flags came from: "/proc/cpuinfo", "torch" or "text"

    @property
    def is_x86(self) -> bool:
        return self.architecture.lower() in _X86_MACHINES

    @property
    def amx(self) -> bool:
        """AMX bf16 and int8 tiles usable (the class is x86-amx)."""
        return self.cpu_class == "x86-amx"

    @property
    def native_bfloat16(self) -> bool:
        """bfloat16 dot products in hardware (AVX512-BF16 / AMX-BF16; arm64 BF16) that oneDNN can use.

        Not the same as oneDNN's own bf16 check, which is also True on any AVX-512 CPU (it then emulates
        bf16 with float32 instructions, slower than float32 itself).
        """
        if self.is_x86:
            has = bool(self.flags & {"avx512_bf16", "amx_bf16"})
        else:
            has = "bf16" in self.flags
        return has and self.torch_view.mkldnn_bf16 is not False

    @property
    def int8_dot_product(self) -> bool:
        """int8 dot products accumulating in int32 (VNNI, AMX-INT8, arm64 SDOT): no int16 saturation."""
        return bool(self.flags & {"avx512_vnni", "amx_int8", "avx_vnni", "asimddp"})

    def describe(self) -> str:
        """One line: class, processor, the flags that matter and torch's view."""
        who = self.model_name or self.vendor or "unknown processor"
        if self.vendor and self.model_name and self.vendor not in self.model_name:
            who = f"{self.model_name} ({self.vendor})"
        order = X86_FLAGS if self.is_x86 else ARM64_FLAGS
        flags = " ".join(f for f in order if f in self.flags) or "none of the flags that matter here"
        view = self.torch_view
        torch_part = []
        if view.capability is not None:
            torch_part.append(f"torch kernels {view.capability}")
        if view.mkldnn is not None:
            torch_part.append("oneDNN " + ("yes" if view.mkldnn else "no"))
        if view.mkldnn_bf16 is not None:
            torch_part.append("oneDNN bf16 " + ("yes" if view.mkldnn_bf16 else "no"))
        if view.amx_tile is not None:
            torch_part.append("torch AMX " + ("yes" if view.amx_tile else "no"))
        line = f"{self.cpu_class}: {who}, {self.architecture}; {flags}"
        return line + (f"; {', '.join(torch_part)}" if torch_part else "")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (flags as sorted lists)."""
        data = asdict(self)
        data["flags"] = sorted(self.flags)
        data["torch_view"]["flags"] = sorted(self.torch_view.flags)
        data["native_bfloat16"] = self.native_bfloat16
        return data


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first processor's ``key: value`` lines of a /proc/cpuinfo text (keys lower-case)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:  # end of the first processor's block
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def classify(architecture: str, flags: frozenset[str] | set[str], torch_amx: bool | None = None) -> str:
    """The :data:`CPU_CLASSES` name for these flags.

    ``torch_amx``: torch's own AMX check; False (cpuinfo found the OS does not enable the tiles, e.g. some
    virtual machines) overrules the flags, None (unknown) does not.
    """
    machine = architecture.lower()
    if machine in _ARM64_MACHINES:
        return "arm64"
    if machine not in _X86_MACHINES:
        return "other"
    if AMX_FLAGS <= flags and torch_amx is not False:
        return "x86-amx"
    if {"avx512f", "avx512bw"} <= flags:
        if "avx512_vnni" in flags:
            return "x86-avx512-bf16-vnni" if "avx512_bf16" in flags else "x86-avx512-vnni"
        return "x86-avx512"
    if {"avx2", "fma"} <= flags:
        return "x86-avx2"
    return "other"


def features_from_cpuinfo(text: str, architecture: str | None = None,
                          torch_view: TorchCPUView | None = None) -> CPUFeatures:
    """:class:`CPUFeatures` from a /proc/cpuinfo text (a real one, or a test's).

    ``architecture``: ``platform.machine()``'s answer; default: inferred from the text (x86 texts have a
    ``flags`` line, arm64 ones ``Features`` and ``CPU architecture: 8``).
    """
    info = parse_cpuinfo(text)
    if architecture is None:
        if "flags" in info:
            architecture = "x86_64"
        elif "features" in info and info.get("cpu architecture", "").startswith("8"):
            architecture = "aarch64"
        else:
            architecture = platform.machine() or "unknown"
    arm = architecture.lower() in _ARM64_MACHINES
    raw = set((info.get("features") if arm else info.get("flags", "")).split()) if info else set()
    wanted = ARM64_FLAGS if arm else X86_FLAGS
    flags = frozenset(f for f in wanted if f in raw)
    if arm:
        implementer = info.get("cpu implementer", "").lower()
        vendor = _ARM_IMPLEMENTERS.get(implementer, implementer)
        part = info.get("cpu part", "")
        model_name = info.get("model name", "") or (f"{vendor} CPU part {part}" if part else "")
    else:
        vendor, model_name = info.get("vendor_id", ""), info.get("model name", "")
    view = torch_view or TorchCPUView()
    return CPUFeatures(classify(architecture, flags, view.amx_tile), architecture, vendor, model_name, flags,
                       view, source="text")


def torch_cpu_view() -> TorchCPUView:
    """The installed torch's view of this CPU; every part that this torch version lacks is None."""
    import torch

    def ask(function: Any) -> Any:
        try:
            return function()
        except (AttributeError, RuntimeError, NotImplementedError):
            return None

    capability = ask(torch.backends.cpu.get_cpu_capability)
    mkldnn = ask(torch.backends.mkldnn.is_available)
    mkldnn_bf16 = ask(lambda: torch.ops.mkldnn._is_mkldnn_bf16_supported()) if mkldnn else (
        False if mkldnn is False else None)
    amx = ask(lambda: torch.cpu._is_amx_tile_supported())
    capabilities: Mapping[str, Any] = ask(lambda: torch.cpu.get_capabilities()) or {}
    flags = frozenset(ours for theirs, ours in _TORCH_FLAG_NAMES.items() if capabilities.get(theirs) is True)
    return TorchCPUView(
        capability=None if capability is None else str(capability),
        mkldnn=None if mkldnn is None else bool(mkldnn),
        mkldnn_bf16=None if mkldnn_bf16 is None else bool(mkldnn_bf16),
        amx_tile=None if amx is None else bool(amx),
        flags=flags,
    )


@functools.lru_cache(maxsize=1)
def cpu_features() -> CPUFeatures:
    """This machine's :class:`CPUFeatures`, detected on the first call and cached for the process.

    Flags from ``/proc/cpuinfo`` where it exists (Linux), else from torch's cpuinfo-based capabilities
    (macOS, Windows); the vendor and model name from the same places.
    """
    import torch

    view = torch_cpu_view()
    architecture = platform.machine() or "unknown"
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    if parse_cpuinfo(text):
        return replace(features_from_cpuinfo(text, architecture, view), source="/proc/cpuinfo")
    # No /proc/cpuinfo: torch's cpuinfo library saw the same CPUID / hwcaps bits.
    capabilities: Mapping[str, Any] = {}
    try:
        capabilities = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):
        pass
    arm = architecture.lower() in _ARM64_MACHINES
    flags = frozenset(f for f in view.flags if f in (ARM64_FLAGS if arm else X86_FLAGS))
    model_name = str(capabilities.get("cpu_name", "") or platform.processor())
    return CPUFeatures(classify(architecture, flags, view.amx_tile), architecture, "", model_name, flags, view,
                       source="torch")
