"""bench/woq_inductor.py runs end to end (one decoder layer), so the benchmark cannot rot."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import woq_inductor  # noqa: E402


def test_the_weight_only_benchmark_times_every_kernel(tmp_path):
    out = tmp_path / "woq.json"
    assert woq_inductor.main(["--threads", "1", "--layers", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["linears"] == 4 and report["threads"] == 1
    assert set(report["ms_one_row"]) == {"eager bf16 x int8 weights", "inductor, freezing, default",
                                         "inductor, freezing, max-autotune-no-cudagraphs",
                                         "fbgemm dynamic int8 (float32 activations)"}
    assert all(ms > 0 for ms in report["ms_one_row"].values())
