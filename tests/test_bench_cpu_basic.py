"""bench/cpu_basic.py runs end to end in its quick mode (tiny random weights; the app, Chromium, both tabs), so the
benchmark cannot rot: every run finished, its timings are finite, and the live audio came before the whole."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import cpu_basic  # noqa: E402


def test_quick_mode_measures_both_tabs_in_the_browser(tmp_path: Path) -> None:
    if not Path(cpu_basic.CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: run make system-deps")
    out = tmp_path / "cpu-basic.json"
    # The cold round only (the warm ones are the same code); seed 1003: with the tiny random weights it makes 18 s
    # of long-text audio on this project's CPU (length guards are off by default), so the live player has
    # time to start playing before the whole audio arrives.
    assert cpu_basic.main(["--quick", "--runs", "0", "--no-mandarin", "--seed", "1003", "--json", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["quick"] and report["skipped"] == []
    assert report["app"]["precision"] in ("float32", "bfloat16", "float16", "int8")
    assert report["app"]["peak_rss_mb"] >= report["app"]["rss_after_load_mb"] > 100
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu_model"]
    assert set(report["scenarios"]) == {"presets-en", "long-text-en"}
    for name, result in report["scenarios"].items():
        runs = result["runs"]
        assert [(run["round"], run["cold"], run["seed"]) for run in runs] == [(0, True, 1003)]
        limit = report["length_bounds"][name]["max_s"]
        for run in runs:
            assert "error" not in run, run
            assert math.isfinite(run["whole_s"]) and run["whole_s"] > 0
            assert 0 < run["audio_s"] <= limit + 0.1  # never past the sentence's limit
            assert math.isfinite(run["load1"])
        assert result["cold"]["whole_s"] == runs[0]["whole_s"] and result["warm"] == {}
    for run in report["scenarios"]["long-text-en"]["runs"]:
        assert 0 < run["first_chunk_s"] <= run["whole_s"]  # the first chunk reaches the page before the whole audio
        if run["audio_s"] >= 10:  # and with seconds of audio still to make, the live player starts before it too
            assert run["first_chunk_s"] <= run["first_audio_s"] <= run["whole_s"]
    for run in report["scenarios"]["presets-en"]["runs"]:
        assert not report["length_bounds"]["presets-en"]["length_guards"] and "first_audio_s" not in run
