"""Atomic writes: an interrupted write leaves neither a partial target nor a temporary file."""
from __future__ import annotations

import os
import stat

import pytest
import torch

from vallex.config import VallexConfig
from vallex.files import atomic_open, atomic_path, write_bytes_atomic, write_text_atomic
from vallex.model import VallexModel
from vallex.weights.checkpoint import load_model, save_checkpoint


class Interrupted(Exception):
    pass


def test_a_write_replaces_the_target_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    assert write_text_atomic(target, "new") == target
    assert target.read_text() == "new"
    assert write_bytes_atomic(tmp_path / "data.bin", b"\x00\x01") == tmp_path / "data.bin"
    assert (tmp_path / "data.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin", "out.json"]


@pytest.mark.parametrize("error", [Interrupted, KeyboardInterrupt])
def test_an_interrupted_write_keeps_the_old_target_and_no_temporary(tmp_path, error):
    target = tmp_path / "index.json"
    target.write_text("complete")
    with pytest.raises(error):
        with atomic_open(target, "w", encoding="utf-8") as handle:
            handle.write("half of the new con")
            handle.flush()
            raise error()
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]


def test_an_interrupted_first_write_leaves_no_file(tmp_path):
    with pytest.raises(Interrupted):
        with atomic_path(tmp_path / "new.bin") as partial:
            partial.write_bytes(b"partial")
            assert partial.parent == tmp_path and partial.name.startswith(".new.bin.")
            raise Interrupted()
    assert list(tmp_path.iterdir()) == []


def test_the_target_gets_the_permissions_of_a_plain_write(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    write_text_atomic(tmp_path / "atomic.txt", "x")
    assert stat.S_IMODE(os.stat(tmp_path / "atomic.txt").st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_atomic_open_refuses_modes_that_read_or_append(tmp_path):
    with pytest.raises(ValueError, match="mode must start with 'w'"):
        with atomic_open(tmp_path / "log.csv", "a"):
            pass


@pytest.mark.parametrize("name", ["model.pt", "model.safetensors"])
def test_an_interrupted_checkpoint_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, name):
    config = VallexConfig.tiny()
    torch.manual_seed(0)
    first = VallexModel(config)
    path = save_checkpoint(first, tmp_path / name)
    before = path.read_bytes()

    def fail_halfway(state, file, *args, **kwargs):  # stands in for torch.save / safetensors' save_file
        with open(file, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise Interrupted()

    import safetensors.torch

    monkeypatch.setattr(torch, "save", fail_halfway)
    monkeypatch.setattr(safetensors.torch, "save_file", fail_halfway)
    torch.manual_seed(1)
    with pytest.raises(Interrupted):
        save_checkpoint(VallexModel(config), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [name]
    monkeypatch.undo()
    reloaded = load_model(path, config)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), reloaded.state_dict().values()))
