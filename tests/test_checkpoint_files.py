"""Checkpoint files as they are published: trainer-style pickles with Windows or POSIX paths, zip or legacy.

Built from the golden set's state dict (``VALLEX_GOLDEN_DIR``) by :mod:`checkpoint_fixtures`, which writes them
with torch.save alone; what each must load to is the state dict read from the golden file by plain
``torch.load``, not by the loader under test.
"""
from __future__ import annotations

import pathlib
import pickle

import pytest
import torch
from checkpoint_fixtures import (
    FORMATS,
    PATH_FLAVOURS,
    PUBLISHED_GLOBALS,
    pickle_globals,
    write_code_running_checkpoint,
    write_trainer_checkpoint,
)

from vallex.cli import main as cli_main
from vallex.config import VallexConfig
from vallex.inference.decoding import generate
from vallex.weights.checkpoint import load_model, read_state_dict


@pytest.fixture(scope="module")
def golden_state(golden) -> dict[str, torch.Tensor]:
    return dict(torch.load(golden / "checkpoint.pt", map_location="cpu", weights_only=True)["model"])


@pytest.fixture(scope="module")
def golden_config(golden) -> VallexConfig:
    return VallexConfig.from_json(golden / "config.json")


@pytest.fixture(scope="module")
def trainer_files(golden_state, tmp_path_factory) -> dict[tuple[str, str], pathlib.Path]:
    folder = tmp_path_factory.mktemp("trainer-checkpoints")
    return {(fmt, flavour): write_trainer_checkpoint(golden_state, folder / f"{fmt}-{flavour}.pt", fmt=fmt,
                                                     flavour=flavour)
            for fmt in FORMATS for flavour in PATH_FLAVOURS}


def test_the_windows_fixture_has_the_published_files_globals(trainer_files):
    """The same four globals as Hugging Face's scan of the published file: nothing more, nothing less."""
    assert pickle_globals(trainer_files["zip", "windows"]) == PUBLISHED_GLOBALS
    assert ("pathlib", "PosixPath") in pickle_globals(trainer_files["zip", "posix"])


def test_a_foreign_path_class_cannot_be_loaded_the_naive_way(trainer_files):
    """Why the loader maps path classes: allow-listing the concrete class fails on the other OS."""
    foreign = "posix" if pathlib.Path is pathlib.WindowsPath else "windows"
    with torch.serialization.safe_globals([pathlib.WindowsPath, pathlib.PosixPath]), \
            pytest.raises((NotImplementedError, pickle.UnpicklingError)):
        torch.load(trainer_files["zip", foreign], map_location="cpu", weights_only=True)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("flavour", PATH_FLAVOURS)
@pytest.mark.parametrize("mmap", [True, False])
def test_trainer_checkpoints_load_to_exactly_the_state_dict_inside(trainer_files, golden_state, fmt, flavour, mmap):
    state, config = read_state_dict(trainer_files[fmt, flavour], mmap=mmap)
    assert config is None
    assert list(state) == list(golden_state)  # only ["model"] is kept, in its order
    for key, value in golden_state.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key


def test_a_model_from_the_windows_file_gives_the_golden_codes(trainer_files, golden, golden_config):
    """The arithmetic the goldens prove, reached through a file in the published format."""
    import json

    cases = json.loads((golden / "cases.json").read_text(encoding="utf-8"))["cases"]
    case = next(c for c in cases if c["outputs"]["stop_reason"] != "forced")
    inputs, out = case["inputs"], case["outputs"]
    model = load_model(trainer_files["legacy", "windows"], golden_config)
    result = generate(
        model, torch.tensor(inputs["text_tokens"]), enroll_len=int(inputs["enroll_x_lens"]),
        prompt_codes=torch.tensor(inputs["audio_prompts"]).reshape(inputs["audio_prompts_shape"]),
        prompt_language=inputs["prompt_language"], text_language=inputs["text_language"], top_k=1)
    assert torch.equal(result.codes, torch.tensor(out["codes"]).reshape(out["codes_shape"]))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_code_running_payload_is_refused_in_one_line(golden_state, tmp_path, fmt, capfd):
    path = write_code_running_checkpoint(golden_state, tmp_path / "payload.pt", fmt=fmt)
    with pytest.raises(ValueError) as caught:
        read_state_dict(path)
    message = str(caught.value)
    assert "\n" not in message and "refused" in message and "system" in message
    assert "must never run" not in capfd.readouterr().out


@pytest.mark.parametrize("fmt", FORMATS)
def test_convert_checkpoint_turns_a_windows_file_into_safetensors(trainer_files, golden_state, golden, tmp_path,
                                                                  fmt, capsys):
    target = tmp_path / "vallex-checkpoint.safetensors"
    code = cli_main(["convert-checkpoint", str(trainer_files[fmt, "windows"]), str(target),
                     "--config", str(golden / "config.json")])
    assert code == 0, capsys.readouterr().err
    state, config = read_state_dict(target)
    assert config == VallexConfig.from_json(golden / "config.json")
    for key, value in state.items():  # the tied predictors are stored once, under the embedding's name
        assert torch.equal(value, golden_state[key]), key


BAD_FILES = {
    "empty": (b"", "is empty"),
    "text": (b"hello, this is not a checkpoint\n", "not a PyTorch checkpoint"),
    "plain pickle": (pickle.dumps({"model": {"w": 1}}, protocol=4), "not a PyTorch checkpoint"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_convert_checkpoint_rejects_non_checkpoints_in_one_line(kind, tmp_path, capsys):
    data, expected = BAD_FILES[kind]
    source = tmp_path / "bad.pt"
    source.write_bytes(data)
    assert cli_main(["convert-checkpoint", str(source), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_convert_checkpoint_rejects_payloads_and_damaged_files_in_one_line(golden_state, tmp_path, fmt, capsys):
    payload = write_code_running_checkpoint(golden_state, tmp_path / "payload.pt", fmt=fmt)
    assert cli_main(["convert-checkpoint", str(payload), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and err.count("\n") == 1
    good = write_trainer_checkpoint(golden_state, tmp_path / "good.pt", fmt=fmt, flavour="windows")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert cli_main(["convert-checkpoint", str(truncated), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "could not be read" in err and err.count("\n") == 1
    assert not (tmp_path / "out.safetensors").exists()


def test_converted_files_get_the_usual_permissions(golden, tmp_path):
    """Like any new file (0o666 less the umask): safetensors' writer alone would leave 0o600."""
    import os

    source = tmp_path / "vallex-checkpoint.pt"
    source.write_bytes((golden / "checkpoint.pt").read_bytes())
    umask = os.umask(0o022)
    try:
        for target in (tmp_path / "a.safetensors", tmp_path / "b.pt"):
            assert cli_main(["convert-checkpoint", str(source), str(target), "--config",
                             str(golden / "config.json")]) == 0
            assert target.stat().st_mode & 0o777 == 0o644, target.name
    finally:
        os.umask(umask)
