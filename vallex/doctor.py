"""``vallex doctor``: does this device, in this precision, compute what the reference computes?

It runs the golden cases (``cases.json`` of a golden folder, e.g. the repository's ``tests/golden/public``: the
reference implementation's greedy codes and first-step logits, made on a CPU in float32) through the same
loading and precision path as synthesis (:func:`vallex.weights.checkpoint.load_model`,
:func:`vallex.inference.precision.apply_precision`) and the same decoder (:func:`vallex.inference.generation.generate`)
on the asked device and precision, and compares. Two checks per case:

* **codes**: every greedy decision is *teacher-forced*: a logits processor (AR) and forward hooks on the NAR's
  output layers record the device's raw logits, then force the reference's token, so every step sees the
  reference's history. A decision differs when the device scores another token strictly higher than the
  reference's. The deviation is the larger of the fractions of AR decisions (``ar_step_argmax``, T + 1 of them:
  the stop decision included) and of NAR codes (codebooks 1..7) that differ. Forcing keeps one early flip of a
  near-tie from changing every later frame, so the fraction measures the arithmetic, not where the first flip
  happened. With a bound of 0 (float32) every decision matches given the reference's history, which is the same
  as reproducing the reference's free-running codes exactly. A case whose AR the reference itself forced
  (``stop_reason == "forced"``) compares its NAR codes only.
* **first-step logits**: max |logit - reference| of the first AR step (1025 values).

The bounds per precision are :data:`BOUNDS` (float32: the golden README's 1e-3 and exact codes; the others
measured on a CPU, bench/README.md "vallex doctor's bounds"). Nothing here depends on a particular golden set:
any folder laid out as tests/golden/public/README.txt describes works.

The CLI (:mod:`vallex.cli.doctor`) saves the last report (:func:`save_last_result`, under ``$XDG_CACHE_HOME/vallex``);
``GET /health`` and the app show it (:func:`last_result_summary`).
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

#: Environment variable naming a golden folder (the test suite reads the same one).
GOLDEN_ENV = "VALLEX_GOLDEN_DIR"
#: The in-repository public set, next to the package in a clone (an installed wheel does not carry it).
REPO_GOLDEN_DIR = Path(__file__).resolve().parents[1] / "tests" / "golden" / "public"
#: What the doctor reads from a golden folder.
GOLDEN_FILES = ("config.json", "checkpoint.pt", "cases.json")
#: Where the project's source (and its golden folder) can be had.
SOURCE_HINT = ("clone the project's repository (or copy its tests/golden/public folder from a clone), then pass "
               f"--golden PATH/tests/golden/public or set {GOLDEN_ENV}")


@dataclass(frozen=True)
class Bound:
    """What a precision may deviate from the reference's float32 CPU values and still pass."""

    logits: float  # max |first-step logit - reference|
    codes: float  # largest fraction of AR decisions / NAR codes that may differ (0: exact)


#: The bounds, per precision: float32 from the golden README; the others measured on an AMD EPYC (bench/README.md,
#: "vallex doctor's bounds": the worst value seen over the public set, times the margin stated there).
BOUNDS: Mapping[str, Bound] = MappingProxyType({
    "float32": Bound(logits=1e-3, codes=0.0),
    "bfloat16": Bound(logits=4.0, codes=0.15),
    "float16": Bound(logits=0.5, codes=0.06),
    "int8": Bound(logits=3.0, codes=0.35),
})


@dataclass
class Check:
    """One comparison with the reference."""

    name: str  # e.g. "en_noprompt: codes"
    passed: bool
    deviation: float | None  # max |logit diff|, or the fraction of decisions that differ; None: not measured
    bound: float | None
    kind: str  # "codes", "logits" or "setup"
    detail: str = ""
    error: str | None = None  # what went wrong when the check could not run
    nonfinite: bool = False  # the device produced inf/NaN
    seconds: float = 0.0


@dataclass
class DoctorReport:
    """Every check of one doctor run, and where it ran."""

    device: str
    dtype: str  # as asked (e.g. "auto")
    precision: str  # what ran
    golden: str
    checks: list[Check]
    kernel_plan: str | None
    kernels: dict[str, str] | None
    torch_build: dict[str, Any]
    seconds: dict[str, float]
    when: str
    advice: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types; a non-finite deviation is None (its check says ``nonfinite``): strict JSON has no inf."""
        data = {"passed": self.passed, **asdict(self)}
        for check in data["checks"]:
            if check["deviation"] is not None and not math.isfinite(check["deviation"]):
                check["deviation"] = None
        return data


# The golden folder ----------------------------------------------------------------------------------------------
def golden_folder(path: str | Path | None = None) -> Path:
    """The golden folder to use: ``path``, else ``$VALLEX_GOLDEN_DIR``, else the repository's public set.

    ValueError (saying how to get one) when the folder is missing or lacks :data:`GOLDEN_FILES`.
    """
    if path is not None:
        folder, source = Path(path), "--golden"
    elif os.environ.get(GOLDEN_ENV, "").strip():
        folder, source = Path(os.environ[GOLDEN_ENV].strip()), f"${GOLDEN_ENV}"
    else:
        folder, source = REPO_GOLDEN_DIR, None
    if not folder.is_dir():
        if source is None:
            raise ValueError(f"No golden cases here: {folder} does not exist (an installed package does not carry "
                             f"the repository's tests/ folder). To check a device, {SOURCE_HINT}.")
        raise ValueError(f"{source} {folder} is not a folder: give a golden folder laid out like the repository's "
                         "tests/golden/public (config.json, checkpoint.pt, cases.json).")
    missing = [name for name in GOLDEN_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"The golden folder {folder} lacks {', '.join(missing)}: give a folder laid out like the "
                         f"repository's tests/golden/public, or {SOURCE_HINT}.")
    return folder.resolve()


def read_cases(folder: Path) -> list[dict[str, Any]]:
    """The cases of ``folder/cases.json`` (each a dict as README.txt describes); ValueError if unreadable."""
    path = folder / "cases.json"
    try:
        cases = json.loads(path.read_text(encoding="utf-8"))["cases"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a golden cases file ({type(error).__name__}: {error}): restore it from "
                         "the repository.") from None
    if not isinstance(cases, list) or not cases:
        raise ValueError(f"{path} holds no cases: restore it from the repository.")
    return cases


@dataclass(frozen=True)
class GoldenCase:
    """One inference golden, as tensors (fields: README.txt, "Inference goldens")."""

    name: str
    text: Tensor  # LongTensor [1, S]: prompt transcript ids ++ target ids
    enroll_len: int
    prompt_codes: Tensor  # LongTensor [1, P, 8] (P may be 0)
    prompt_language: str
    text_language: str | list[str]
    codes: Tensor  # LongTensor [1, T, 8]: the reference's output
    stop_reason: str  # "eos", "maxlen" or "forced"
    first_logits: Tensor  # float32 [1025]: the first AR step's logits
    ar_argmax: list[int]  # the argmax of every AR call (T + 1 of them)

    @classmethod
    def from_json(cls, case: Mapping[str, Any]) -> GoldenCase:
        inputs, out = case["inputs"], case["outputs"]
        prompt = torch.tensor(inputs["audio_prompts"], dtype=torch.long).reshape(inputs["audio_prompts_shape"])
        return cls(name=str(case["name"]), text=torch.tensor(inputs["text_tokens"], dtype=torch.long),
                   enroll_len=int(inputs["enroll_x_lens"]), prompt_codes=prompt,
                   prompt_language=inputs["prompt_language"], text_language=inputs["text_language"],
                   codes=torch.tensor(out["codes"], dtype=torch.long).reshape(out["codes_shape"]),
                   stop_reason=out["stop_reason"],
                   first_logits=torch.tensor(out["ar_first_step_logits"], dtype=torch.float32),
                   ar_argmax=[int(x) for x in out.get("ar_step_argmax", [])])

    def generate_inputs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`vallex.inference.generation.generate` for this case."""
        return dict(text=self.text, enroll_len=self.enroll_len, prompt_codes=self.prompt_codes,
                    prompt_language=self.prompt_language, text_language=self.text_language)


# Running the cases ----------------------------------------------------------------------------------------------
def run_case(model: torch.nn.Module, case: GoldenCase, bound: Bound) -> list[Check]:
    """The codes and first-step-logits checks of ``case`` on ``model`` (already on its device and precision)."""
    from vallex.inference.generation import generate

    eos = model.config.eos_id
    forced = case.codes[0, :, 0].tolist()
    ar_reference = case.ar_argmax if case.stop_reason != "forced" else []
    ar_gaps: list[Tensor] = []  # per AR step [1]: the device's best logit minus its logit for the reference's token
    nar_gaps: list[Tensor] = []  # per NAR stage [T]: the same, per frame
    nonfinite: list[Tensor] = []
    first_logits: list[Tensor] = []  # the first AR step's logits [1025], as the device computed them

    def gap(logits: Tensor, reference: Tensor) -> Tensor:  # logits [N, V], reference LongTensor [N] -> [N], >= 0
        logits = logits.float()
        nonfinite.append(~torch.isfinite(logits).all())  # kept on the device: one read at the end
        return logits.max(dim=-1).values - logits.gather(-1, reference[:, None])[:, 0]

    def teacher(step: int, logits: Tensor) -> Tensor:  # logits [1, 1025]: record, then force the reference's token
        if step == 0:
            first_logits.append(logits[0].float().clone())  # a copy: float() of float32 logits is no copy
        if step < len(ar_reference):
            ar_gaps.append(gap(logits, torch.tensor([ar_reference[step]], device=logits.device)))
        out = torch.full_like(logits, -1e4)  # representable in float16 too
        out[:, forced[step] if step < len(forced) else eos] = 1e4
        return out

    def nar_teacher(stage: int):
        reference = case.codes[0, :, stage + 1]  # [T]

        def hook(module: torch.nn.Module, args: Any, logits: Tensor) -> Tensor:  # logits [1, T, 1024]
            if logits.shape[:2] != (1, reference.shape[0]):
                raise RuntimeError(f"NAR stage {stage + 1} predicted {list(logits.shape[:2])} frames, the reference "
                                   f"has {reference.shape[0]}")
            target = reference.to(logits.device)
            nar_gaps.append(gap(logits[0], target))
            out = torch.full_like(logits, -1e4)
            out[0, torch.arange(target.shape[0], device=logits.device), target] = 1e4
            return out
        return hook

    hooks = [layer.register_forward_hook(nar_teacher(stage)) for stage, layer in enumerate(model.nar_predict_layers)]
    try:
        generate(model, **case.generate_inputs(), top_k=1, logits_processor=teacher)
    finally:
        for handle in hooks:
            handle.remove()
    first = first_logits[0].cpu()
    bad = bool(torch.stack(nonfinite).any()) if nonfinite else False
    ar = torch.cat(ar_gaps).cpu() if ar_gaps else torch.zeros(0)
    nar = torch.cat(nar_gaps).cpu() if nar_gaps else torch.zeros(0)
    ar_total = len(ar_reference)
    nar_total = case.codes[..., 1:].numel()
    # A decision differs when the device scores another token strictly higher than the reference's (a tie,
    # common in 16 bits, is no disagreement); a step the device never reached differs too.
    ar_differ = int((~(ar <= 0)).sum()) + (ar_total - ar.numel())  # ~(<= 0): a NaN gap differs too
    nar_differ = int((~(nar <= 0)).sum()) + (nar_total - nar.numel())
    fractions = [differ / total for differ, total in ((ar_differ, ar_total), (nar_differ, nar_total)) if total]
    deviation = math.inf if bad else max(fractions, default=0.0)
    worst = float(torch.cat([ar, nar]).max()) if ar.numel() + nar.numel() else 0.0
    ar_part = (f"AR {ar_differ}/{ar_total}" if ar_total else
               "AR forced" if case.stop_reason == "forced" else "AR without reference decisions")
    detail = (f"{ar_part}, NAR {nar_differ}/{nar_total} differ; largest gap {worst:.3g}"
              + ("; non-finite logits" if bad else ""))
    code_check = Check(f"{case.name}: codes", deviation <= bound.codes, deviation, bound.codes, "codes", detail,
                       nonfinite=bad)

    if first.shape != case.first_logits.shape:
        logit_check = Check(f"{case.name}: first-step logits", False, None, bound.logits, "logits",
                            f"{list(first.shape)} logits, reference {list(case.first_logits.shape)}")
    else:
        bad = not bool(torch.isfinite(first).all())
        worst = math.inf if bad else float((first - case.first_logits).abs().max())
        logit_check = Check(f"{case.name}: first-step logits", worst <= bound.logits, worst, bound.logits, "logits",
                            "non-finite logits" if bad else f"at id {int((first - case.first_logits).abs().argmax())}",
                            nonfinite=bad)
    return [code_check, logit_check]


def _failed(name: str, kind: str, bound: float | None, error: BaseException) -> Check:
    message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    return Check(name, False, None, bound, kind, error=message[:500],
                 nonfinite=type(error).__name__ == "NonFiniteLogits")


def check_device_precision(device: str | torch.device | None, dtype: str | None) -> tuple[torch.device, str]:
    """The device (default the best available) and concrete precision (default ``"auto"``'s choice) to check;
    ValueError for an unknown or unavailable device, an unknown precision, or int8 off the CPU."""
    from vallex.api import select_device
    from vallex.inference.precision import check_precision_option, resolve_precision

    chosen = select_device(device)
    precision = resolve_precision(check_precision_option(dtype) or "auto", chosen)
    if precision == "int8" and chosen.type != "cpu":
        raise ValueError(f"--dtype int8 runs on CPU only, not on {chosen.type}: check float32, bfloat16 or float16 "
                         "there.")
    return chosen, precision


def run_doctor(device: str | torch.device | None = None, dtype: str | None = "auto",
               golden: str | Path | None = None) -> DoctorReport:
    """Run every golden case on ``device`` in ``dtype`` and compare with the reference (see the module docstring).

    ``device``: default the best available (:func:`vallex.api.select_device`); ``dtype``: ``"auto"`` (default:
    what synthesis picks there), float32, bfloat16, float16 or int8; ``golden``: :func:`golden_folder`'s choice.
    Bad input raises ValueError before anything runs; whatever fails while running is a failed :class:`Check`,
    never an exception.
    """
    from vallex.config import VallexConfig
    from vallex.inference.precision import apply_precision, kernel_plan, kernels_in_use
    from vallex.weights.checkpoint import load_model

    chosen, precision = check_device_precision(device, dtype)
    folder = golden_folder(golden)
    cases = read_cases(folder)
    bound = BOUNDS[precision]
    started = time.perf_counter()
    checks: list[Check] = []
    plan = kernels = None
    try:
        plan = kernel_plan(precision, chosen).describe()
    except (ValueError, RuntimeError) as error:
        plan = f"unavailable ({error})"
    setup = f"load the golden model on {chosen} in {precision}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # float16 on CPU warns that it is slow: known, and the point here
            model = load_model(folder / "checkpoint.pt", VallexConfig.from_json(folder / "config.json"), chosen)
            model = apply_precision(model, precision, chosen)
        kernels = kernels_in_use(model)
    except Exception as error:  # noqa: BLE001 - reported as a failed check, with advice
        checks.append(_failed(setup, "setup", None, error))
        model = None
    load_s = time.perf_counter() - started
    if model is not None:
        for index, raw in enumerate(cases):
            name = str(raw.get("name", f"case {index}")) if isinstance(raw, dict) else f"case {index}"
            case_started = time.perf_counter()
            try:
                found = run_case(model, GoldenCase.from_json(raw), bound)
            except Exception as error:  # noqa: BLE001 - one case's failure is reported, the others still run
                found = [_failed(f"{name}: codes", "codes", bound.codes, error),
                         _failed(f"{name}: first-step logits", "logits", bound.logits, error)]
            seconds = round(time.perf_counter() - case_started, 3)
            for check in found:
                check.seconds = seconds
            checks.extend(found)
        del model
    total = time.perf_counter() - started
    report = DoctorReport(device=str(chosen), dtype=str(dtype or "auto"), precision=precision, golden=str(folder),
                          checks=checks, kernel_plan=plan, kernels=kernels, torch_build=torch_build(chosen),
                          seconds={"load": round(load_s, 3), "cases": round(total - load_s, 3),
                                   "total": round(total, 3)},
                          when=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    report.advice = advice(chosen.type, precision, [c for c in checks if not c.passed], str(chosen))
    return report


def torch_build(device: torch.device | None = None) -> dict[str, Any]:
    """The torch build and what it sees: version, CUDA/ROCm/MPS, the GPU's name and capability, threads."""
    build: dict[str, Any] = {
        "torch": torch.__version__, "cuda": torch.version.cuda, "hip": getattr(torch.version, "hip", None),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "mps_built": torch.backends.mps.is_built(), "mps_available": torch.backends.mps.is_available(),
        "threads": torch.get_num_threads(), "python": platform.python_version(),
        "platform": platform.platform(terse=True), "machine": platform.machine(),
    }
    build["kind"] = ("ROCm" if build["hip"] else "CUDA" if build["cuda"] else "MPS" if build["mps_built"] else "CPU")
    if device is not None and device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        build["gpu"] = torch.cuda.get_device_name(index)
        build["capability"] = ".".join(map(str, torch.cuda.get_device_capability(index)))
    return build


# What to do ------------------------------------------------------------------------------------------------------
def advice(device_type: str, precision: str, failed: Sequence[Check], device: str | None = None) -> list[str]:
    """What a user should do about ``failed`` checks of ``precision`` on a ``device_type`` device (empty: none
    failed). A pure function of its arguments, so every branch is testable without the device."""
    if not failed:
        return []
    where = device or device_type
    nonfinite = any(check.nonfinite for check in failed)
    lines: list[str] = []
    if precision != "float32":
        if device_type == "cuda" and precision == "float16" and nonfinite:
            lines.append("float16 overflowed to inf/NaN on this GPU: use --dtype float32 (or --dtype bfloat16 on a "
                         "GPU of compute capability 8.0 or newer).")
        lines.append(f"Use --dtype float32 on this device ({where}): `vallex synthesize/serve --dtype float32`, "
                     f"VALLEX_DTYPE=float32 for the app. Check it first: `vallex doctor --device {where} "
                     "--dtype float32`.")
        return lines
    if device_type == "mps":
        lines.append("float32 on Apple MPS does not reproduce the reference with this torch (its MPS attention "
                     "kernels have had silent-correctness bugs): use --device cpu (VALLEX_DEVICE=cpu for the app), "
                     "and try a newer torch.")
    elif device_type == "cuda":
        lines.append("float32 on this GPU does not reproduce the reference: use --device cpu (VALLEX_DEVICE=cpu "
                     "for the app), and report the `vallex doctor --json` output with your torch build.")
    else:
        lines.append("float32 on the CPU should reproduce the reference exactly: check that the golden folder is "
                     "intact (`git status tests/golden`) and that torch is the pinned version "
                     "(`pip install -r requirements.txt`); if it persists, report the `vallex doctor --json` "
                     "output.")
    return lines


# Output ------------------------------------------------------------------------------------------------------------
def _number(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if math.isinf(value) or math.isnan(value):
        return "non-finite"
    if kind == "codes":
        return f"{100 * value:.1f}%"
    return f"{value:.2e}"


def format_report(report: DoctorReport) -> str:
    """The human-readable report: a line per check, then where it ran, the timing, the verdict and advice."""
    width = max((len(check.name) for check in report.checks), default=10)
    lines = []
    for check in report.checks:
        state = "passed" if check.passed else "FAILED"
        what = "differ" if check.kind == "codes" else "max |dev|"
        line = (f"{check.name:<{width}}  {state}  {_number(check.deviation, check.kind):>9} {what:<9}  "
                f"bound {_number(check.bound, check.kind):<8}")
        note = check.error or (check.detail if check.kind == "codes" or not check.passed else "")
        lines.append((line + (f"  {note}" if note else "")).rstrip())
    build = report.torch_build
    gpu = f", {build['gpu']} (sm {build['capability']})" if build.get("gpu") else ""
    lines += [
        "",
        f"device:      {report.device}{gpu}",
        f"dtype:       {report.precision}" + (f" (asked: {report.dtype})" if report.dtype != report.precision else ""),
        f"kernel plan: {report.kernel_plan}",
        f"torch:       {build['torch']} ({build['kind']} build; CUDA {build['cuda']}, MPS "
        f"{'available' if build['mps_available'] else 'built' if build['mps_built'] else 'not built'}; "
        f"{build['threads']} thread(s))",
        f"golden:      {report.golden}",
        f"time:        {report.seconds['total']:.1f} s (load {report.seconds['load']:.1f} s, "
        f"{len({c.name.split(':')[0] for c in report.checks if c.kind != 'setup'})} cases "
        f"{report.seconds['cases']:.1f} s)",
        "",
    ]
    failed = [check for check in report.checks if not check.passed]
    if report.passed:
        lines.append(f"All {len(report.checks)} checks passed: {report.precision} on {report.device} "
                     + ("computes what the reference computes." if report.precision == "float32" else
                        f"stays within {report.precision}'s bounds of the reference."))
    else:
        lines.append(f"{len(failed)} of {len(report.checks)} checks FAILED.")
        lines += [f"What to do: {line}" for line in report.advice]
    return "\n".join(lines)


# The last result --------------------------------------------------------------------------------------------------
def last_result_path() -> Path:
    """Where the CLI keeps the last report: ``$XDG_CACHE_HOME/vallex/doctor-last.json`` (default ``~/.cache``)."""
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(cache) / "vallex" / "doctor-last.json"


def save_last_result(report: DoctorReport, path: Path | None = None) -> Path:
    """Write ``report`` (as :meth:`DoctorReport.as_dict`) to :func:`last_result_path` (or ``path``), atomically."""
    from vallex.files import make_folder, write_text_atomic

    target = path or last_result_path()
    make_folder(target.parent)
    return write_text_atomic(target, json.dumps(report.as_dict(), indent=1) + "\n")


def load_last_result(path: Path | None = None) -> dict[str, Any] | None:
    """The last saved report, or None when there is none or it cannot be read (it is informative only)."""
    try:
        data = json.loads((path or last_result_path()).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def last_result_summary(path: Path | None = None) -> dict[str, Any] | None:
    """A short summary of the last saved report (for ``GET /health`` and the app), or None when there is none:
    when, device, dtype, passed, how many checks, the failed checks' names, the advice and the torch build."""
    data = load_last_result(path)
    if data is None:
        return None
    checks = data.get("checks") if isinstance(data.get("checks"), list) else []
    build = data.get("torch_build") if isinstance(data.get("torch_build"), dict) else {}
    return {"when": data.get("when"), "device": data.get("device"), "dtype": data.get("precision"),
            "passed": data.get("passed"), "checks": len(checks),
            "failed": [c.get("name") for c in checks if isinstance(c, dict) and not c.get("passed")],
            "advice": data.get("advice") or [], "kernel_plan": data.get("kernel_plan"),
            "torch": {key: build.get(key) for key in ("torch", "kind", "cuda", "gpu") if key in build}}


def describe_summary(summary: Mapping[str, Any] | None) -> str:
    """:func:`last_result_summary` as a few lines of text (what the app shows)."""
    if summary is None:
        return ("Not run on this machine yet: `vallex doctor` checks this device and precision against the "
                "reference's values.")
    torch_info = summary.get("torch") or {}
    verdict = (f"all {summary.get('checks')} checks passed" if summary.get("passed")
               else f"{len(summary.get('failed') or [])} of {summary.get('checks')} checks FAILED")
    lines = [f"{summary.get('when')}: {summary.get('dtype')} on {summary.get('device')}: {verdict} "
             f"(torch {torch_info.get('torch')}, {torch_info.get('kind')} build)"]
    lines += [f"What to do: {line}" for line in summary.get("advice") or []]
    return "\n".join(lines)
