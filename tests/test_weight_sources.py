"""Where weights come from when a source disappears: sources in order, overrides, pins, checks, records, --check.

Downloads go through the real ``hf_hub_download`` to a hub served on loopback (:mod:`fake_hub`), whose
original VALL-E X repository answers "Repository not found", as the real one has since 2025-09. The real files'
SHA-256 pins cannot be met by test files: :func:`pinned` pins the test files' own, as the real ones are pinned.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import huggingface_hub
import pytest
import torch
from checkpoint_fixtures import tensors_digest_by_hand, write_trainer_checkpoint
from fake_hub import FakeHub

from vallex.cli import main as cli_main
from vallex.weights import (
    CHECKPOINT_REPO_ENV,
    ENCODEC_URL_ENV,
    HF_MIRROR_ENV,
    SOURCES_RECORD_NAME,
    VALLEX_CHECKPOINT,
    VALLEX_CONFIG_NAME,
    VOCOS_CONFIG,
    VOCOS_MODEL,
    VOCOS_REPO_ENV,
    VOCOS_REVISION,
    WEIGHTS_DIR_ENV,
    Source,
    WeightsManager,
    WeightsNotFoundError,
    manager,  # where the manager reads the file table (patched below)
    parse_source,
)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """The bytes of a tiny random weights folder, by layout name, and the folder itself."""
    from vallex.weights.random_weights import make_random_weights

    folder = tmp_path_factory.mktemp("tiny-source")
    make_random_weights(folder, "tiny")
    return folder


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def pinned(monkeypatch):
    """``pinned(vallex=sha, vocos=sha, tensors=digest)``: pin these instead of the real files' SHA-256 (and the
    recorded digest of the published tensors, :data:`vallex.weights.checkpoint.PUBLISHED_STATE_DIGEST`)."""
    from vallex.weights import checkpoint

    def pin(vallex: str | None = None, vocos: str | None = None, tensors: str | None = None) -> None:
        shas = {VALLEX_CHECKPOINT.layout_name: vallex, VOCOS_MODEL.layout_name: vocos}
        monkeypatch.setattr(manager, "WEIGHT_FILES", tuple(
            dataclasses.replace(f, sha256=shas[f.layout_name]) if shas.get(f.layout_name) else f
            for f in manager.WEIGHT_FILES))
        monkeypatch.setattr(checkpoint, "PUBLISHED_STATE_DIGEST", tensors)

    return pin


@pytest.fixture
def online(tmp_path, monkeypatch):
    """Online, but with empty caches and nothing reachable except the loopback hub a test starts."""
    for name in ("HF_HUB_OFFLINE", "VALLEX_OFFLINE", CHECKPOINT_REPO_ENV, VOCOS_REPO_ENV, ENCODEC_URL_ENV,
                 HF_MIRROR_ENV, WEIGHTS_DIR_ENV, "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                 "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    def serve(files: dict[tuple[str, str], bytes]) -> FakeHub:
        hub = FakeHub(files)
        # as HF_ENDPOINT would set both when huggingface_hub is imported
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        return hub

    return serve


def test_parse_source_forms():
    assert parse_source("owner/name", "f.pt") == Source(repo_id="owner/name", filename="f.pt", revision="main")
    assert parse_source(" me/copy/sub/x.pt@v1.2 ", "f.pt") == Source(repo_id="me/copy", filename="sub/x.pt",
                                                                     revision="v1.2")
    assert parse_source("https://example.org/e.th", "e.th") == Source(url="https://example.org/e.th")
    space = parse_source("spaces/Plachta/VALL-E-X/epoch-10.pt", "f.pt")
    assert space == Source(repo_id="Plachta/VALL-E-X", filename="epoch-10.pt", repo_type="space")
    assert str(space) == "huggingface.co/spaces/Plachta/VALL-E-X (file epoch-10.pt, revision main)"
    assert parse_source("datasets/me/data@v1", "f.pt", allow_file=False) == Source(
        repo_id="me/data", filename="f.pt", revision="v1", repo_type="dataset")
    for bad in ("noslash", "owner/name/../secret", "owner/name/a\\b", "a b/c", "owner/name@bad rev", "/x/y",
                "spaces/only-a-name"):
        with pytest.raises(ValueError, match="MY_VAR.*owner/name"):
            parse_source(bad, "f.pt", origin="MY_VAR")
    with pytest.raises(ValueError, match=r"owner/name\[@revision\]"):
        parse_source("me/vocos/config.yaml", "config.yaml", allow_file=False)


def test_the_users_sources_come_first_without_repeats(monkeypatch):
    monkeypatch.setenv(CHECKPOINT_REPO_ENV, "me/copy@abc, audo/vall-e-x")
    sources = WeightsManager().sources(VALLEX_CHECKPOINT)
    assert [(s.repo_path, s.filename, s.revision) for s in sources] == [
        ("me/copy", "vallex-checkpoint.pt", "abc"), ("audo/vall-e-x", "vallex-checkpoint.pt", "main"),
        ("Plachta/VALL-E-X", "vallex-checkpoint.pt", "main"), ("spaces/Plachta/VALL-E-X", "epoch-10.pt", "main"),
        ("camenduru/vall-e-x", "epoch-10.pt", "main")]
    # the CLI's --checkpoint-repo replaces the variable
    assert WeightsManager(checkpoint_repo="x/y/w.pt").sources(VALLEX_CHECKPOINT)[0] == Source(
        repo_id="x/y", filename="w.pt")
    monkeypatch.setenv(VOCOS_REPO_ENV, "me/vocos@r1")
    assert [str(s) for s in WeightsManager().sources(VOCOS_MODEL)] == [
        "huggingface.co/me/vocos (file pytorch_model.bin, revision r1)",
        f"huggingface.co/charactr/vocos-encodec-24khz (file pytorch_model.bin, revision {VOCOS_REVISION})"]
    monkeypatch.setenv(CHECKPOINT_REPO_ENV, "not a repo")
    with pytest.raises(ValueError, match=CHECKPOINT_REPO_ENV):
        WeightsManager().sources(VALLEX_CHECKPOINT)


def _tiny_folder(tiny_files, tmp_path):
    """An empty weights folder that says the model is tiny (so a tiny checkpoint passes the strict check)."""
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(tiny_files / VALLEX_CONFIG_NAME, folder / VALLEX_CONFIG_NAME)
    return folder


def test_gone_sources_fall_through_to_a_copy_with_the_pinned_bytes_which_is_recorded(tiny_files, tmp_path, online,
                                                                                     pinned, capsys):
    checkpoint = (tiny_files / VALLEX_CHECKPOINT.layout_name).read_bytes()
    pinned(vallex=hashlib.sha256(checkpoint).hexdigest())
    hub = online({("camenduru/vall-e-x", "epoch-10.pt"): checkpoint})
    folder = _tiny_folder(tiny_files, tmp_path)
    with hub:
        assert cli_main(["download", "--weights-dir", str(folder), "--only", "vallex"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "huggingface.co/Plachta/VALL-E-X" in err[0] and "(1 of 4)" in err[0]
    assert err[1].startswith("  failed:") and "trying the next source" in err[1]
    assert "huggingface.co/spaces/Plachta/VALL-E-X" in err[2] and "(2 of 4)" in err[2]
    assert "camenduru/vall-e-x (file epoch-10.pt" in err[4] and "(3 of 4)" in err[4] and err[5].startswith("  saved")
    assert (folder / "vallex-checkpoint.pt").read_bytes() == checkpoint
    record = json.loads((folder / SOURCES_RECORD_NAME).read_text())["vallex-checkpoint.pt"]
    assert record["sha256"] == hashlib.sha256(checkpoint).hexdigest() and record["size"] == len(checkpoint)
    assert "camenduru/vall-e-x" in record["source"] and record["path"] == "vallex-checkpoint.pt"
    assert not (folder / ".vallex-download").exists()

    assert cli_main(["download", "--check", "--weights-dir", str(folder), "--only", "vallex"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok") and "camenduru/vall-e-x" in out and record["sha256"] in out
    assert "pinned:  the published file" in out
    (folder / "vallex-checkpoint.pt").write_bytes(checkpoint[:-1] + bytes([checkpoint[-1] ^ 1]))
    assert cli_main(["download", "--check", "--weights-dir", str(folder), "--only", "vallex"]) == 1
    assert capsys.readouterr().out.startswith("CHANGED")


def test_checkpoint_repo_option_is_tried_first(tiny_files, tmp_path, online, pinned, capsys):
    checkpoint = (tiny_files / VALLEX_CHECKPOINT.layout_name).read_bytes()
    pinned(vallex=hashlib.sha256(checkpoint).hexdigest())
    hub = online({("me/copy", "weights/vallex.pt"): checkpoint})
    folder = _tiny_folder(tiny_files, tmp_path)
    with hub:
        assert cli_main(["download", "--weights-dir", str(folder), "--only", "vallex",
                         "--checkpoint-repo", "me/copy/weights/vallex.pt"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "me/copy" in err[0] and "(1 of 5)" in err[0] and err[1].startswith("  saved")
    assert (folder / "vallex-checkpoint.pt").read_bytes() == checkpoint
    assert hub.requests and all("Plachta" not in r for r in hub.requests)


def test_files_that_fail_their_check_are_skipped_and_removed_from_the_cache(tiny_files, online):
    """In the caches the model is the public size: a tiny checkpoint and a text file are both refused."""
    hub = online({("Plachta/VALL-E-X", "vallex-checkpoint.pt"): (tiny_files / "vallex-checkpoint.pt").read_bytes(),
                  ("audo/vall-e-x", "vallex-checkpoint.pt"): b"<html>not a checkpoint</html>"})
    with hub, pytest.raises(WeightsNotFoundError) as caught:
        WeightsManager(report=lambda line: None).resolve(("vallex",))
    message = str(caught.value)
    assert "tried, in order:" in message
    tried = message[message.index("tried, in order:"):].splitlines()[1:5]
    assert "huggingface.co/Plachta/VALL-E-X" in tried[0] and "does not match the model configuration" in tried[0]
    assert "spaces/Plachta/VALL-E-X" in tried[1] and "camenduru/vall-e-x" in tried[2]  # gone: RepoNotFound
    assert "audo/vall-e-x" in tried[3] and "not a PyTorch checkpoint" in tried[3]
    assert WEIGHTS_DIR_ENV in message and CHECKPOINT_REPO_ENV in message
    for repo in ("Plachta/VALL-E-X", "audo/vall-e-x"):  # neither rejected file stays in the cache
        cached = huggingface_hub.try_to_load_from_cache(repo, "vallex-checkpoint.pt")
        assert not isinstance(cached, str)


def test_a_download_from_an_override_is_found_later_through_the_record(tiny_files, online, pinned, monkeypatch):
    vocos = {name: (tiny_files / f.layout_name).read_bytes()
             for name, f in (("config.yaml", VOCOS_CONFIG), ("pytorch_model.bin", VOCOS_MODEL))}
    pinned(vocos=hashlib.sha256(vocos["pytorch_model.bin"]).hexdigest())
    hub = online({("me/vocos", name): data for name, data in vocos.items()})
    monkeypatch.setenv(VOCOS_REPO_ENV, "me/vocos")
    with hub:
        paths = WeightsManager(report=lambda line: None).resolve(("vocos",))
    assert paths.vocos_model.read_bytes() == vocos["pytorch_model.bin"]
    monkeypatch.delenv(VOCOS_REPO_ENV)
    manager = WeightsManager()
    assert manager.resolve(("vocos",), download=False).vocos_model == paths.vocos_model  # no hub running now
    record = manager.record(VOCOS_MODEL, paths.vocos_model)
    assert record is not None and "me/vocos" in record["source"]
    assert record["sha256"] == hashlib.sha256(vocos["pytorch_model.bin"]).hexdigest()


def test_a_vocos_file_of_the_wrong_form_is_refused(tiny_files, online, monkeypatch):
    hub = online({("charactr/vocos-encodec-24khz", "config.yaml"): b"just: text\n",
                  ("charactr/vocos-encodec-24khz", "pytorch_model.bin"): (tiny_files / VOCOS_MODEL.layout_name)
                  .read_bytes()})
    with hub, pytest.raises(WeightsNotFoundError, match="not a Vocos configuration"):
        WeightsManager(report=lambda line: None).resolve(("vocos",))
    assert torch.load(tiny_files / VOCOS_MODEL.layout_name, weights_only=True)  # the weights were fine


def test_a_space_source_is_downloaded_from_the_space(tiny_files, tmp_path, online, pinned, capsys):
    """The author's Space holds the checkpoint as epoch-10.pt; the model repository of the same name is gone."""
    checkpoint = (tiny_files / VALLEX_CHECKPOINT.layout_name).read_bytes()
    pinned(vallex=hashlib.sha256(checkpoint).hexdigest())
    hub = online({("spaces/Plachta/VALL-E-X", "epoch-10.pt"): checkpoint})
    folder = _tiny_folder(tiny_files, tmp_path)
    with hub:
        assert cli_main(["download", "--weights-dir", str(folder), "--only", "vallex"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "(2 of 4)" in err[2] and err[3].startswith("  saved")
    # repo_type="space" is what puts spaces/ in the URL: the model repository was asked first, and failed
    assert "GET /spaces/Plachta/VALL-E-X/resolve/main/epoch-10.pt" in hub.requests
    assert any(r.startswith("HEAD /Plachta/VALL-E-X/resolve/main/vallex-checkpoint.pt") for r in hub.requests)
    assert (folder / "vallex-checkpoint.pt").read_bytes() == checkpoint
    record = json.loads((folder / SOURCES_RECORD_NAME).read_text())["vallex-checkpoint.pt"]
    assert record["source"] == "huggingface.co/spaces/Plachta/VALL-E-X (file epoch-10.pt, revision main)"


def test_a_space_of_your_own_is_cached_as_a_space_and_found_offline(tiny_files, online, pinned, monkeypatch):
    vocos = {name: (tiny_files / f.layout_name).read_bytes()
             for name, f in (("config.yaml", VOCOS_CONFIG), ("pytorch_model.bin", VOCOS_MODEL))}
    pinned(vocos=hashlib.sha256(vocos["pytorch_model.bin"]).hexdigest())
    hub = online({("spaces/me/vocos", name): data for name, data in vocos.items()})
    monkeypatch.setenv(VOCOS_REPO_ENV, "spaces/me/vocos")
    with hub:
        paths = WeightsManager(report=lambda line: None).resolve(("vocos",))
    assert "spaces--me--vocos" in str(paths.vocos_model)
    assert paths.vocos_model.read_bytes() == vocos["pytorch_model.bin"]
    (paths.vocos_model.parents[3] / SOURCES_RECORD_NAME).unlink()  # found by its Space's cache entry alone
    assert WeightsManager().resolve(("vocos",), download=False).vocos_model == paths.vocos_model


def test_vocos_comes_from_its_pinned_commit_with_its_pinned_sha256(tiny_files, online, pinned):
    vocos = {name: (tiny_files / f.layout_name).read_bytes()
             for name, f in (("config.yaml", VOCOS_CONFIG), ("pytorch_model.bin", VOCOS_MODEL))}
    files = {("charactr/vocos-encodec-24khz", name): data for name, data in vocos.items()}
    with online(files) as hub, pytest.raises(WeightsNotFoundError, match="is not the published 7e95bb260b74a1bf"):
        WeightsManager(report=lambda line: None).resolve(("vocos",))  # other weights than the pinned ones
    assert f"GET /charactr/vocos-encodec-24khz/resolve/{VOCOS_REVISION}/config.yaml" in hub.requests  # kept
    assert f"GET /charactr/vocos-encodec-24khz/resolve/{VOCOS_REVISION}/pytorch_model.bin" in hub.requests

    pinned(vocos=hashlib.sha256(vocos["pytorch_model.bin"]).hexdigest())
    with online(files) as hub:
        paths = WeightsManager(report=lambda line: None).resolve(("vocos",))
    assert hub.requests and all(f"/resolve/{VOCOS_REVISION}/pytorch_model.bin" in r for r in hub.requests)
    assert paths.vocos_model.parent.name == VOCOS_REVISION  # the snapshot of that commit, found offline by it:
    (paths.vocos_model.parents[3] / SOURCES_RECORD_NAME).unlink()
    assert WeightsManager().resolve(("vocos",), download=False).vocos_model == paths.vocos_model


@pytest.fixture
def repickled(golden, tmp_path, pinned):
    """A copy of the golden checkpoint re-pickled as on Linux (other bytes, the same tensors), a weights folder for
    it, and the golden file pinned as "the published one" with the digest of its tensors hashed by hand."""
    state = dict(torch.load(golden / "checkpoint.pt", map_location="cpu", weights_only=True)["model"])
    copy = write_trainer_checkpoint(state, tmp_path / "epoch-10.pt", fmt="zip", flavour="posix")
    assert sha256_of(copy) != sha256_of(golden / "checkpoint.pt")
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(golden / "config.json", folder / VALLEX_CONFIG_NAME)
    return state, copy, folder, lambda tensors: pinned(vallex=sha256_of(golden / "checkpoint.pt"), tensors=tensors)


def test_a_repickled_copy_is_accepted_when_its_tensors_are_the_published_ones(repickled, online):
    state, copy, folder, pin = repickled
    pin(tensors_digest_by_hand(state))
    lines = []
    with online({("camenduru/vall-e-x", "epoch-10.pt"): copy.read_bytes()}):
        WeightsManager(folder, report=lines.append).download(("vallex",))
    assert (folder / "vallex-checkpoint.pt").read_bytes() == copy.read_bytes()
    assert any("other bytes than the published file, the published tensors" in line for line in lines)
    assert json.loads((folder / SOURCES_RECORD_NAME).read_text())["vallex-checkpoint.pt"]["sha256"] == \
        sha256_of(copy)


@pytest.mark.parametrize("recorded", ["other tensors", "none recorded"])
def test_a_repickled_copy_is_refused_when_its_tensors_cannot_be_shown_to_be_the_published_ones(repickled, online,
                                                                                            recorded):
    state, copy, folder, pin = repickled
    changed = {**state, "ar_text_position.alpha": state["ar_text_position.alpha"] + 1}
    pin(tensors_digest_by_hand(changed) if recorded == "other tensors" else None)
    lines = []
    with online({("camenduru/vall-e-x", "epoch-10.pt"): copy.read_bytes()}), \
            pytest.raises(WeightsNotFoundError) as caught:
        WeightsManager(folder, report=lines.append).download(("vallex",))
    message = str(caught.value)
    assert "camenduru/vall-e-x" in message and "is not the published" in message
    if recorded == "other tensors":
        assert "its tensors are not the published ones either" in message
    else:
        assert "no digest of the published tensors is recorded" in message and "vallex checkpoint-digest" in message
    assert not (folder / "vallex-checkpoint.pt").exists()


def test_your_own_checkpoint_and_files_you_placed_are_not_held_to_the_pin(tiny_files, tmp_path, monkeypatch):
    """The real pin: a fine-tuned run's checkpoint, and a folder's converted copy, have other bytes and still load."""
    from vallex.weights.checkpoint import convert_checkpoint

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    own = tmp_path / "runs" / "checkpoint-00002000.pt"
    own.parent.mkdir(parents=True)
    shutil.copy(tiny_files / VALLEX_CHECKPOINT.layout_name, own)
    assert WeightsManager(checkpoint=own).resolve(("vallex",), download=False).vallex == own
    folder = _tiny_folder(tiny_files, tmp_path)  # no checksum file: not a random-weights folder
    converted = convert_checkpoint(tiny_files / VALLEX_CHECKPOINT.layout_name, folder / "vallex-checkpoint.safetensors")
    assert WeightsManager(folder).resolve(("vallex",), download=False).vallex == converted
