"""bench/gpu_smoke.py, the first script to run on a CUDA machine, runs here on the CPU (tiny model) so it cannot rot."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import gpu_smoke  # noqa: E402


def test_the_smoke_run_passes_on_the_cpu_and_writes_one_json(tmp_path, capsys):
    out = tmp_path / "smoke.json"
    # One precision: every precision runs the same checks (the GPU run does all three).
    assert gpu_smoke.main(["--device", "cpu", "--quick", "--dtypes", "float32", "--json", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["passed"] and report["quick"] and report["device"] == "cpu"
    names = {check["name"] for check in report["checks"]}
    for part in ("synthesize seeded top_k (twice, equal)", "synthesize best_of=3", "synthesize_stream long text",
                 "synthesize_batch of 3", "engine: 4 concurrent requests", "make_prompt",
                 "injected NaN logits: clear error, device still usable",
                 "injected NaN logits in the NAR: clear error, device still usable", "precision decisions on cpu",
                 "greedy float32 codes on cpu equal the CPU's", "doctor: golden cases against the reference",
                 "ZeroGPU call sizing: GPU seconds per character",
                 "training: 3 steps", "benchmark: inference", "benchmark: serving_ar_step"):
        assert part in names, part
    assert all(check["ok"] for check in report["checks"])
    assert report["benchmarks"]["serving_ar_step"]["ar_step"]["rows"][0]["batch"] == 1
    assert report["benchmarks"]["inference"]["results"]
    doctor = report["doctor"]["float32"]  # the whole doctor report, one per precision
    assert doctor["passed"] and doctor["device"] == "cpu" and doctor["checks"]


def test_a_failing_check_fails_the_run_and_is_reported(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("deliberately broken")

    monkeypatch.setattr(gpu_smoke, "training_checks", lambda report, *a: report.check("training", "bf16", broken))
    out = tmp_path / "smoke.json"
    code = gpu_smoke.main(["--device", "cpu", "--quick", "--dtypes", "float32", "--skip-benchmarks",
                           "--json", str(out)])
    report = json.loads(out.read_text(encoding="utf-8"))
    assert code == 1 and not report["passed"]
    assert [c["error"] for c in report["checks"] if not c["ok"]] == ["RuntimeError: deliberately broken"]


def test_without_cuda_it_says_so_and_stops(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_smoke.main([]) == 2
    assert "no CUDA GPU here" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_smoke.main(["--device", "cpu"])  # the full-size run on a CPU is refused: --quick
