"""bench/serving.py's client and streaming parts run end to end (tiny model), so the benchmark cannot rot."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import serving  # noqa: E402


def test_clients_and_streaming_run_over_http_and_the_engine(tmp_path):
    from vallex.config import VallexConfig
    from vallex.model import VallexModel
    from vallex.weights.checkpoint import save_checkpoint

    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(VallexModel(VallexConfig.tiny()), checkpoint)
    out = tmp_path / "serving.json"
    for part in ("clients", "streaming"):
        argv = ["--part", part, "--threads", "1", "--clients", "2", "--stream-requests", "1",
                "--checkpoint", str(checkpoint), "--json", str(out)]
        assert serving.main(argv) == 0
        report = json.loads(out.read_text(encoding="utf-8"))
        if part == "clients":
            rows = report["clients"]["rows"]
            assert {(row["clients"], row["engine"]) for row in rows} == {(2, "batched"), (2, "serial")}
            for row in rows:  # every request got all its audio: 300 frames of 4 s each
                assert row["requests"] == 2 and abs(row["audio_s"] - 8.0) < 0.01 and row["throughput"] > 0
        else:
            streaming = report["streaming"]
            assert streaming["streamed_vs_whole_throughput"] > 0
            assert streaming["streamed"]["chunks"] > 1 and streaming["whole_sentences"]["chunks"] == 1
            for kind in ("streamed", "whole_sentences"):
                assert [run["audio_s"] for run in streaming[kind]["runs"]] == [4.0]


def test_the_paragraph_part_runs_each_paragraph_together_and_one_by_one(tmp_path):
    from vallex.config import VallexConfig
    from vallex.model import VallexModel
    from vallex.weights.checkpoint import save_checkpoint

    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(VallexModel(VallexConfig.tiny()), checkpoint)
    out = tmp_path / "serving.json"
    argv = ["--part", "paragraph", "--threads", "1", "--paragraph-clients", "1", "--checkpoint", str(checkpoint),
            "--json", str(out)]
    assert serving.main(argv) == 0
    rows = json.loads(out.read_text(encoding="utf-8"))["paragraph"]["rows"]
    assert [(row["clients"], row["paragraph"]) for row in rows] == [(1, 8), (1, 1)]
    for row in rows:  # six sentences of 300 frames (24 s) and five pauses of 0.2 s, however they were decoded
        assert row["requests"] == 1 and abs(row["audio_s"] - 25.0) < 0.01 and row["vs_one_by_one"] > 0


def test_the_fairness_part_times_a_normal_request_alone_and_beside_a_costly_one(tmp_path):
    from vallex.config import VallexConfig
    from vallex.model import VallexModel
    from vallex.weights.checkpoint import save_checkpoint

    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(VallexModel(VallexConfig.tiny()), checkpoint)
    out = tmp_path / "serving.json"
    assert serving.main(["--part", "fairness", "--threads", "1", "--checkpoint", str(checkpoint),
                         "--json", str(out)]) == 0
    fair = json.loads(out.read_text(encoding="utf-8"))["fairness"]
    assert fair["recogniser_hears_en"] is True  # the bundled Whisper tiny.en checked the costly request's rows
    assert fair["alone_s"] > 0 and fair["beside_costly_s"] > 0 and fair["ratio"] > 0
