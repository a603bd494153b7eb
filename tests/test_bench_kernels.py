"""bench/kernels.py: every Linear and attention kernel it times computes what float32 computes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import kernels  # noqa: E402

from vallex.config import VallexConfig  # noqa: E402

torch.set_num_threads(1)

#: max relative error against float32 that each kernel family may show on random inputs.
TOLERANCE = {"fp32": 1e-5, "bf16": 2e-2, "int8": 6e-2}


def test_every_kernel_is_timed_and_close_to_float32():
    config = VallexConfig(d_model=64, nhead=4, num_layers=1)
    names = [k for k in kernels.LINEAR_KERNELS if k != "aten-fp16" and kernels.available(k)]
    rows = kernels.bench_linears(config, names, (1, 5), repeats=1, min_time_s=0.0)
    assert {(r["rows"], r["kernel"]) for r in rows} == {(n, k) for n in (1, 5) for k in names}
    for row in rows:
        family = row["kernel"].rsplit("-", 1)[-1] if not row["kernel"].endswith("packed") else "bf16"
        assert row["ms"] > 0 and row["max_rel_error"] <= TOLERANCE[family], row
        if row["kernel"] == kernels.BASELINE:
            assert row["vs_fp32"] == 1.0
    attention = kernels.bench_attention(config, 7, repeats=1, min_time_s=0.0)
    assert [r["kernel"] for r in attention] == ["sdpa-fp32", "sdpa-bf16", "matmul-fp32", "matmul-bf16"]
    for row in attention:
        assert row["max_rel_error"] <= TOLERANCE["fp32" if row["kernel"].endswith("fp32") else "bf16"], row


def test_an_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="Unknown kernel"):
        kernels.convert(torch.nn.Linear(4, 4), "int4", 1)
    with pytest.raises(SystemExit):
        kernels.main(["--kernels", "int4"])
