"""DDP through torchrun: 2 CPU processes (gloo) with half the batch each train exactly like 1 process."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from vallex.training.espeak_corpus import write_espeak_corpus
from vallex.training.prepare import prepare_dataset, scan_folder
from vallex.weights.checkpoint import load_model

STEPS = 5


def run(args: list[str], cwd) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def losses(path) -> list[float]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no gloo backend")
def test_two_processes_match_one(tmp_path):
    from vallex.weights.random_weights import random_codec

    write_espeak_corpus(tmp_path / "raw", {"en": ["Hello there.", "Good morning.", "See you soon.", "Open the door."],
                                           "zh": ["你好。", "再见。", "谢谢你。", "早上好。"]})
    prepare_dataset(scan_folder(tmp_path / "raw"), tmp_path / "prep", random_codec(seed=0), progress=False)
    (tmp_path / "micro.json").write_text(json.dumps({"d_model": 32, "nhead": 2, "num_layers": 1}), encoding="utf-8")
    # batch_size is the global batch: 4 utterances in one process, 2 + 2 in two.
    (tmp_path / "train.yaml").write_text(
        f"data: prep\nmodel: micro.json\nmax_steps: {STEPS}\nbatch_size: 4\nlr: 0.002\nwarmup_steps: 2\n"
        "num_buckets: 2\ndropout: 0.0\nvalid_fraction: 0.0\nvalid_data: prep\nlog_every: 1\nsave_every: 100\n"
        "num_threads: 1\n", encoding="utf-8")
    run(["-m", "vallex", "train", "--config", "train.yaml", "--out", "one"], tmp_path)
    run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vallex", "train",
         "--config", "train.yaml", "--out", "two"], tmp_path)
    one, two = losses(tmp_path / "one" / "log.csv"), losses(tmp_path / "two" / "log.csv")
    assert len(one) == len(two) == STEPS
    assert one[-1] < one[0]  # it trained
    for a, b in zip(one, two):
        assert b == pytest.approx(a, rel=1e-4)
    # Validation (at the last step) is shared out over the ranks too and gives the same loss.
    valid_one, valid_two = losses(tmp_path / "one" / "valid.csv"), losses(tmp_path / "two" / "valid.csv")
    assert len(valid_one) == len(valid_two) == 1
    assert valid_two[0] == pytest.approx(valid_one[0], rel=1e-4)
    name = f"checkpoint-{STEPS:08d}.pt"
    a, b = load_model(tmp_path / "one" / name), load_model(tmp_path / "two" / name)
    for (key, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(pb, pa, atol=1e-5, rtol=1e-4, msg=key)
