"""Atomic writes: an interrupted write leaves neither a partial target nor a temporary file."""
from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from golden_fixtures import REPO_ROOT

from vallex.config import VallexConfig
from vallex.files import (
    WriteError,
    atomic_open,
    atomic_path,
    make_folder,
    staged_files,
    write_bytes_atomic,
    write_text_atomic,
)
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


# The system refusing a write ------------------------------------------------------------------------------
# Real refusals, no privileges needed: a child process whose file size limit (RLIMIT_FSIZE) is smaller than
# what it writes gets EFBIG from write() (Python ignores SIGXFSZ, which would otherwise kill it). Each writer
# library wraps that its own way; every one must come out as one WriteError naming the target.

WRITERS = {
    "soundfile": "from vallex.audio.files import save_audio; save_audio(target + '.wav', np.zeros(48000))",
    "torch.save": "with atomic_path(target + '.pt') as p: torch.save({'x': torch.zeros(100000)}, p)",
    "safetensors": "with atomic_path(target + '.safetensors') as p: "
                   "save_file({'x': torch.zeros(100000)}, str(p))",
    "np.save": "with atomic_open(target + '.npy') as h: np.save(h, np.zeros(100000))",
    "plain": "write_text_atomic(target + '.json', 'x' * 100000)",
}


def writer_code(folder: Path, statement: str, size_limit: int | None) -> str:
    """Python that runs ``statement`` (``target`` is ``folder/out``) limited to ``size_limit`` bytes a file and,
    on a WriteError, prints its errno, its message and what ``folder`` then holds, and exits with 3."""
    return "\n".join([
        "import os, resource, sys",
        "import numpy as np, torch",
        "from safetensors.torch import save_file",
        "from vallex.files import WriteError, atomic_open, atomic_path, write_text_atomic",
        f"target = {str(folder / 'out')!r}",
        f"limit = {size_limit!r}",
        "if limit: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))",
        "try:",
        f"    {statement}",
        "except WriteError as error:",
        f"    print(error.errno); print(error); print(sorted(os.listdir({str(folder)!r}))); sys.exit(3)",
    ])


def refusal(result: subprocess.CompletedProcess) -> tuple[int, str, str]:
    """(errno, message, the folder's listing) printed by a :func:`writer_code` child that got a WriteError."""
    assert result.returncode == 3, result.stdout + result.stderr
    number, message, listing = result.stdout.strip().splitlines()
    return int(number), message, listing


def run_child(code: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run([*command, sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), timeout=120)


@pytest.mark.skipif(not hasattr(os, "statvfs"), reason="file size limits are POSIX")
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_refused_write_is_one_line_naming_the_target_and_leaves_nothing(tmp_path, writer):
    number, message, listing = refusal(run_child(writer_code(tmp_path, WRITERS[writer], 4096)))
    assert number == errno.EFBIG
    assert message.startswith(f"Could not write {tmp_path / 'out'}.") and "file size limit" in message
    assert listing == "[]" and list(tmp_path.iterdir()) == []  # no temporary file, no partial target


def test_a_refused_write_keeps_the_old_target(tmp_path):
    old = tmp_path / "out.json"
    old.write_text("complete")
    refusal(run_child(writer_code(tmp_path, WRITERS["plain"], 4096)))
    assert old.read_text() == "complete" and list(tmp_path.iterdir()) == [old]


@pytest.mark.parametrize("writer", ["soundfile", "torch.save", "safetensors", "plain"])
def test_a_full_disk_and_a_read_only_folder_are_named(tmp_path, writer):
    """A real full disk (ENOSPC) and read-only folder (EROFS): tmpfs mounts in a user namespace, which needs
    no privileges where the kernel allows unprivileged namespaces (skipped where it does not)."""
    full, readonly = tmp_path / "full", tmp_path / "readonly"
    full.mkdir()
    readonly.mkdir()
    mounts = f"mount -t tmpfs -o size=64k tmpfs {full} && mount -t tmpfs -o ro tmpfs {readonly}"
    namespace = ["unshare", "--user", "--map-root-user", "--mount"]
    if shutil.which("unshare") is None or subprocess.run([*namespace, "sh", "-c", mounts],
                                                         capture_output=True, timeout=30).returncode != 0:
        pytest.skip("no unprivileged user namespace to mount a small tmpfs in")
    for folder, number, cause in ((full, errno.ENOSPC, "no space left"), (readonly, errno.EROFS, "read-only")):
        code = writer_code(folder, WRITERS[writer], None)
        result = run_child(code, *namespace, "sh", "-c", f'{mounts} && exec "$0" "$@"')
        got, message, listing = refusal(result)
        assert got == number and message.startswith(f"Could not write {folder / 'out'}.") and cause in message
        assert listing == "[]"


@pytest.mark.parametrize(("number", "cause"), [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"),
                                               (errno.EDQUOT, "quota"), (errno.EACCES, "permission denied")])
def test_each_refusal_cause_is_named_where_no_tmpfs_can_be_mounted(tmp_path, number, cause):
    """The causes the tmpfs test above gets from a real kernel, raised as the OS raises them, on any machine
    (the test above needs unprivileged user namespaces, which some kernels refuse)."""
    with pytest.raises(WriteError) as caught, atomic_path(tmp_path / "out") as partial:
        partial.write_bytes(b"half")
        raise OSError(number, os.strerror(number))
    assert caught.value.errno == number and cause in str(caught.value) and list(tmp_path.iterdir()) == []


def test_make_folder_refusals_are_write_errors(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    with pytest.raises(WriteError, match="a file .not a folder. is in the way") as caught:
        make_folder(blocked / "inside")
    assert str(blocked / "inside") in str(caught.value) and "\n" not in str(caught.value)
    assert make_folder(tmp_path / "a" / "b").is_dir()


def test_staged_files_appear_together_or_not_at_all(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "one.txt").write_text("old one")
    (folder / "sub").mkdir()
    (folder / "sub" / "kept.txt").write_text("kept")
    with staged_files(folder) as staging:
        write_text_atomic(staging / "one.txt", "new one")
        write_text_atomic(staging / "two.txt", "new two")
        (staging / "sub").mkdir()
        write_text_atomic(staging / "sub" / "three.txt", "new three")
        assert not (folder / "two.txt").exists()  # nothing shows before the block ends
    assert sorted(p.name for p in folder.iterdir()) == ["one.txt", "sub", "two.txt"]
    assert (folder / "one.txt").read_text() == "new one"
    assert sorted(p.name for p in (folder / "sub").iterdir()) == ["kept.txt", "three.txt"]  # into a full subfolder
    with pytest.raises(RuntimeError, match="half-way"), staged_files(folder) as staging:
        write_text_atomic(staging / "one.txt", "newer one")
        raise RuntimeError("failed half-way")
    assert sorted(p.name for p in folder.iterdir()) == ["one.txt", "sub", "two.txt"]
    assert (folder / "one.txt").read_text() == "new one"
