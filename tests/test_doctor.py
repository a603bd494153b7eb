"""``vallex doctor``: the golden cases on a device and precision against the reference's values (vallex.doctor)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from vallex import doctor
from vallex.cli import main
from vallex.doctor import BOUNDS, Check, advice, golden_folder, last_result_summary, read_cases, run_doctor

REDUCED = [p for p in BOUNDS if p != "float32"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The last result goes to this test's folder, never to the user's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def golden_copy(golden: Path, where: Path) -> Path:
    """A copy of what the doctor reads from ``golden`` (config, checkpoint, cases)."""
    where.mkdir()
    for name in doctor.GOLDEN_FILES:
        shutil.copy(golden / name, where / name)
    return where


def edit_cases(folder: Path, change) -> None:
    path = folder / "cases.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data["cases"])
    path.write_text(json.dumps(data), encoding="utf-8")


# Passing ----------------------------------------------------------------------------------------------------------

def test_float32_on_cpu_reproduces_every_case_exactly(golden: Path) -> None:
    report = run_doctor("cpu", "float32", golden)
    cases = read_cases(golden)
    assert report.passed and report.advice == [] and report.precision == "float32"
    assert len(report.checks) == 2 * len(cases)
    codes = [c for c in report.checks if c.kind == "codes"]
    logits = [c for c in report.checks if c.kind == "logits"]
    assert len(codes) == len(logits) == len(cases)
    assert all(c.deviation == 0.0 and c.bound == 0.0 for c in codes)  # exact: no decision differs
    assert all(0 <= c.deviation < 1e-3 and c.bound == 1e-3 for c in logits)  # the golden README's bound
    assert report.kernel_plan.startswith("float32 on ") and report.kernels["ar_attention"] == "sdpa-fp32"
    assert report.torch_build["torch"] == torch.__version__ and report.torch_build["kind"] in ("CPU", "CUDA", "ROCm",
                                                                                                "MPS")


@pytest.mark.parametrize("precision", REDUCED)
def test_each_reduced_precision_this_cpu_runs_stays_within_its_bounds(golden: Path, precision: str) -> None:
    # int8 runs on every build the project installs (x86-64 and arm64 wheels have a quantized engine): no skip.
    report = run_doctor("cpu", precision, golden)
    assert report.passed, [(c.name, c.deviation, c.error) for c in report.checks if not c.passed]
    assert report.precision == precision
    for check in report.checks:
        assert check.bound == (BOUNDS[precision].codes if check.kind == "codes" else BOUNDS[precision].logits)
        assert check.deviation is not None and 0 <= check.deviation <= check.bound


def test_auto_runs_what_synthesis_picks(golden: Path) -> None:
    from vallex.inference.precision import resolve_precision

    report = run_doctor("cpu", "auto", golden)
    assert report.dtype == "auto" and report.precision == resolve_precision("auto", "cpu")


# Failing --------------------------------------------------------------------------------------------------------

def test_a_changed_stored_logit_or_code_fails_its_check_with_exit_1_and_advice(golden: Path, tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    folder = golden_copy(golden, tmp_path / "golden")
    cases = read_cases(folder)
    first, second = cases[0]["name"], cases[-1]["name"]

    def corrupt(cases: list[dict]) -> None:
        cases[0]["outputs"]["ar_first_step_logits"][5] += 0.01  # 10x the float32 bound
        codes = cases[-1]["outputs"]["codes"]  # [1, T, 8]: one NAR code of the last frame
        codes[0][-1][3] = (codes[0][-1][3] + 1) % 1024

    edit_cases(folder, corrupt)
    code = main(["doctor", "--device", "cpu", "--dtype", "float32", "--golden", str(folder), "--no-save"])
    out = capsys.readouterr().out
    assert code == 1
    failed = [line.split("  ")[0] for line in out.splitlines() if " FAILED " in line]
    assert failed == [f"{first}: first-step logits", f"{second}: codes"]
    assert "2 of" in out and "checks FAILED" in out
    assert "What to do: float32 on the CPU should reproduce the reference exactly" in out

    report = run_doctor("cpu", "float32", folder)
    logit_check = next(c for c in report.checks if c.name == f"{first}: first-step logits")
    assert logit_check.deviation == pytest.approx(0.01, abs=1e-3) and "at id 5" in logit_check.detail
    code_check = next(c for c in report.checks if c.name == f"{second}: codes")
    # the changed code itself differs, and (teacher-forced into the later stages) it changes some of theirs too
    assert code_check.deviation > 0 and "NAR 0/" not in code_check.detail


def tampered_checkpoint(golden: Path, tmp_path: Path, change) -> Path:
    """A golden copy whose checkpoint has ``change(tensor)`` applied to the first AR decoder 2-D weight."""
    folder = golden_copy(golden, tmp_path / "golden")
    state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
    weights = state["model"]
    name = next(k for k, v in weights.items() if k.startswith("ar_decoder") and k.endswith("weight") and v.ndim == 2)
    weights[name] = change(weights[name].clone())
    torch.save(state, folder / "checkpoint.pt")
    return folder


def test_a_perturbed_model_weight_fails(golden: Path, tmp_path: Path) -> None:
    folder = tampered_checkpoint(golden, tmp_path, lambda w: w * 1.01)
    report = run_doctor("cpu", "float32", folder)
    assert not report.passed
    assert all(not c.passed for c in report.checks if c.kind == "logits")  # every case starts in the AR decoder
    assert report.advice and "--dtype float32" not in report.advice[0]  # float32 itself failed: not that advice


def test_non_finite_values_are_reported_as_such(golden: Path, tmp_path: Path, capsys) -> None:
    folder = tampered_checkpoint(golden, tmp_path, lambda w: w.fill_(float("nan")))
    assert main(["doctor", "--device", "cpu", "--dtype", "bfloat16", "--golden", str(folder), "--no-save"]) == 1
    out = capsys.readouterr().out
    assert "non-finite" in out and "Traceback" not in out
    assert "What to do: Use --dtype float32 on this device (cpu)" in out
    assert main(["doctor", "--device", "cpu", "--dtype", "float32", "--golden", str(folder), "--json",
                 "--no-save"]) == 1
    kept = json.loads(capsys.readouterr().out)  # strict JSON: a non-finite deviation is null
    assert any(c["nonfinite"] and c["deviation"] is None for c in kept["checks"])
    report = run_doctor("cpu", "float32", folder)
    # the AR decoder's weight: every first step is NaN, and every decision the AR makes itself
    assert all(c.nonfinite and not c.passed for c in report.checks if c.kind == "logits")
    ar_made = [c for c in report.checks if c.kind == "codes" and "AR forced" not in c.detail]
    assert ar_made and all(c.nonfinite and not c.passed and not c.detail.startswith("AR 0/") for c in ar_made)


def test_a_case_that_cannot_run_fails_alone_without_a_traceback(golden: Path, tmp_path: Path, capsys) -> None:
    folder = golden_copy(golden, tmp_path / "golden")
    edit_cases(folder, lambda cases: cases[0]["inputs"].pop("text_tokens"))
    report = run_doctor("cpu", "float32", folder)
    broken = [c for c in report.checks if not c.passed]
    assert len(broken) == 2 and all(c.error == "KeyError: 'text_tokens'" for c in broken)
    assert sum(c.passed for c in report.checks) == len(report.checks) - 2  # the other cases still ran
    assert main(["doctor", "--device", "cpu", "--dtype", "float32", "--golden", str(folder), "--no-save"]) == 1
    assert "KeyError: 'text_tokens'" in capsys.readouterr().out


def test_advice_per_device_and_precision() -> None:
    failed = [Check("c: codes", False, 0.5, 0.0, "codes")]
    overflow = [Check("c: first-step logits", False, float("inf"), 0.5, "logits", nonfinite=True)]
    assert advice("cuda", "float16", []) == []
    cuda16 = advice("cuda", "float16", overflow, "cuda:0")
    assert "overflowed" in cuda16[0] and "--dtype float32" in cuda16[0]
    assert "--dtype float32" in cuda16[1] and "vallex doctor --device cuda:0 --dtype float32" in cuda16[1]
    assert len(advice("cuda", "float16", failed)) == 1  # no overflow: only "use float32"
    assert "--dtype float32" in advice("mps", "bfloat16", failed)[0]
    assert "--device cpu" in advice("mps", "float32", failed)[0]
    assert "--device cpu" in advice("cuda", "float32", failed)[0]
    assert "golden folder is intact" in advice("cpu", "float32", failed)[0]


# Input -------------------------------------------------------------------------------------------------------------

def test_where_the_golden_folder_comes_from(golden: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = golden_copy(golden, tmp_path / "copy")
    monkeypatch.setenv(doctor.GOLDEN_ENV, str(copy))
    assert golden_folder() == copy.resolve()
    assert golden_folder(golden) == golden.resolve()  # --golden wins
    monkeypatch.delenv(doctor.GOLDEN_ENV)
    monkeypatch.setattr(doctor, "REPO_GOLDEN_DIR", tmp_path / "no-repo")  # an installed wheel
    with pytest.raises(ValueError, match="does not carry.*clone the project's repository"):
        golden_folder()
    (copy / "cases.json").unlink()
    with pytest.raises(ValueError, match="lacks cases.json"):
        golden_folder(copy)


def test_bad_input_exits_2_before_anything_runs(tmp_path: Path, capsys) -> None:
    assert main(["doctor", "--golden", str(tmp_path / "nothing"), "--device", "cpu"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["doctor", "--device", "tpu"]) == 2
    assert "device 'tpu'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["doctor", "--dtype", "int4"])
    assert exit_info.value.code == 2
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in doctor.GOLDEN_FILES:
        (bad / name).write_text("{", encoding="utf-8")
    assert main(["doctor", "--device", "cpu", "--golden", str(bad)]) == 2
    assert "is not a golden cases file" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # nothing ran, nothing was kept


def test_int8_off_the_cpu_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vallex.api.select_device", lambda device: torch.device("mps"))
    with pytest.raises(ValueError, match="int8 runs on CPU only"):
        doctor.check_device_precision("mps", "int8")


# Output and the last result ----------------------------------------------------------------------------------------

def test_human_and_json_output(golden: Path, capsys) -> None:
    assert main(["doctor", "--device", "cpu", "--dtype", "float32", "--golden", str(golden), "--no-save"]) == 0
    out = capsys.readouterr().out
    cases = read_cases(golden)
    for case in cases:
        assert any(line.startswith(f"{case['name']}: codes") and " passed " in line for line in out.splitlines())
    for field in ("device:      cpu", "dtype:       float32", "kernel plan: float32 on", "torch:       "
                  + torch.__version__, "time:", f"All {2 * len(cases)} checks passed"):
        assert field in out, field

    assert main(["doctor", "--device", "cpu", "--dtype", "float16", "--golden", str(golden), "--json",
                 "--no-save"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is True and report["precision"] == "float16" and report["device"] == "cpu"
    assert report["torch_build"]["torch"] == torch.__version__ and report["kernel_plan"].startswith("float16")
    assert {"name", "passed", "deviation", "bound", "kind"} <= set(report["checks"][0])
    assert report["seconds"]["total"] > 0 and report["when"]


def test_the_last_result_is_kept_and_read_by_health_and_the_app(golden: Path, tiny_tts, _own_cache: Path) -> None:
    from fastapi.testclient import TestClient

    from demo.ui import doctor_markdown
    from vallex.serving import SpeechEngine
    from vallex.serving.http import create_api

    assert last_result_summary() is None and "Not run on this machine yet" in doctor_markdown()
    engine = SpeechEngine(tiny_tts, max_batch=2)
    try:
        client = TestClient(create_api(engine, model_loaded=lambda: True))
        assert client.get("/health").json()["doctor"] is None
        assert main(["doctor", "--device", "cpu", "--dtype", "float32", "--golden", str(golden)]) == 0
        kept = json.loads((_own_cache / "vallex" / "doctor-last.json").read_text(encoding="utf-8"))
        assert kept["passed"] is True and kept["device"] == "cpu" and kept["precision"] == "float32"
        assert {"when", "checks", "torch_build", "advice", "kernel_plan"} <= set(kept)
        summary = client.get("/health").json()["doctor"]
        assert summary == last_result_summary()
        assert summary["passed"] is True and summary["dtype"] == "float32" and summary["failed"] == []
        assert summary["checks"] == 2 * len(read_cases(golden)) and summary["torch"]["torch"] == torch.__version__
        assert "float32 on cpu: all" in doctor_markdown()
        shown, on_load = app_doctor_block(_own_cache.parent)
        assert "float32 on cpu: all" in shown.value and on_load is doctor_markdown  # read again at each page load

        folder = golden_copy(golden, _own_cache.parent / "corrupt")
        edit_cases(folder, lambda cases: cases[0]["outputs"]["ar_first_step_logits"].__setitem__(0, 1e6))
        assert main(["doctor", "--device", "cpu", "--dtype", "float32", "--golden", str(folder)]) == 1
        summary = client.get("/health").json()["doctor"]
        assert summary["passed"] is False and summary["failed"] == [f"{read_cases(folder)[0]['name']}: first-step "
                                                                    "logits"]
        assert "1 of" in doctor_markdown() and "What to do" in doctor_markdown()
    finally:
        engine.close()


def app_doctor_block(tmp_path: Path):
    """The app's "Device check" text and the function that refreshes it at each page load (an app without
    weights: no model is needed to show it)."""
    from demo.config import AppConfig
    from demo.engine import Engine
    from demo.ui import build_app

    (tmp_path / "weights").mkdir()
    config = AppConfig(weights_dir=tmp_path / "weights", presets_dir=tmp_path / "presets")
    engine = Engine(config)
    try:
        app = build_app(config, engine)
    finally:
        engine.close()
    blocks = [b for b in app.blocks.values() if getattr(b, "elem_id", None) == "doctor-result"]
    assert len(blocks) == 1
    loads = [fn.fn for fn in app.fns.values() if [b._id for b in fn.outputs] == [blocks[0]._id]]
    return blocks[0], loads[0] if len(loads) == 1 else None


def test_an_unreadable_last_result_is_no_result(_own_cache: Path) -> None:
    path = _own_cache / "vallex" / "doctor-last.json"
    path.parent.mkdir(parents=True)
    path.write_text("not json", encoding="utf-8")
    assert last_result_summary() is None
