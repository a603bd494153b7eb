"""Where weights come from when a source disappears: sources in order, overrides, checks, records, --check.

Downloads go through the real ``hf_hub_download`` to a hub served on loopback (:mod:`fake_hub`), whose
original VALL-E X repository answers "Repository not found", as the real one has since 2025-09.
"""
from __future__ import annotations

import hashlib
import json
import shutil

import huggingface_hub
import pytest
import torch
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
    WEIGHTS_DIR_ENV,
    Source,
    WeightsManager,
    WeightsNotFoundError,
    parse_source,
)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """The bytes of a tiny random weights folder, by layout name, and the folder itself."""
    from vallex.weights.random_weights import make_random_weights

    folder = tmp_path_factory.mktemp("tiny-source")
    make_random_weights(folder, "tiny")
    return folder


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
    for bad in ("noslash", "owner/name/../secret", "owner/name/a\\b", "a b/c", "owner/name@bad rev", "/x/y"):
        with pytest.raises(ValueError, match="MY_VAR.*owner/name"):
            parse_source(bad, "f.pt", origin="MY_VAR")
    with pytest.raises(ValueError, match=r"owner/name\[@revision\]"):
        parse_source("me/vocos/config.yaml", "config.yaml", allow_file=False)


def test_the_users_sources_come_first_without_repeats(monkeypatch):
    monkeypatch.setenv(CHECKPOINT_REPO_ENV, "me/copy@abc, audo/vall-e-x")
    sources = WeightsManager().sources(VALLEX_CHECKPOINT)
    assert [(s.repo_id, s.revision) for s in sources] == [("me/copy", "abc"), ("audo/vall-e-x", "main"),
                                                          ("Plachta/VALL-E-X", "main")]
    assert all(s.filename == "vallex-checkpoint.pt" for s in sources)
    # the CLI's --checkpoint-repo replaces the variable
    assert WeightsManager(checkpoint_repo="x/y/w.pt").sources(VALLEX_CHECKPOINT)[0] == Source(
        repo_id="x/y", filename="w.pt")
    monkeypatch.setenv(VOCOS_REPO_ENV, "me/vocos@r1")
    assert [str(s) for s in WeightsManager().sources(VOCOS_MODEL)][0] == \
        "huggingface.co/me/vocos (file pytorch_model.bin, revision r1)"
    monkeypatch.setenv(CHECKPOINT_REPO_ENV, "not a repo")
    with pytest.raises(ValueError, match=CHECKPOINT_REPO_ENV):
        WeightsManager().sources(VALLEX_CHECKPOINT)


def _tiny_folder(tiny_files, tmp_path):
    """An empty weights folder that says the model is tiny (so a tiny checkpoint passes the strict check)."""
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(tiny_files / VALLEX_CONFIG_NAME, folder / VALLEX_CONFIG_NAME)
    return folder


def test_a_gone_repository_falls_through_to_the_copy_and_is_recorded(tiny_files, tmp_path, online, capsys):
    checkpoint = (tiny_files / VALLEX_CHECKPOINT.layout_name).read_bytes()
    hub = online({("audo/vall-e-x", "vallex-checkpoint.pt"): checkpoint})
    folder = _tiny_folder(tiny_files, tmp_path)
    with hub:
        assert cli_main(["download", "--weights-dir", str(folder), "--only", "vallex"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "Plachta/VALL-E-X" in err[0] and "(1 of 2)" in err[0]
    assert err[1].startswith("  failed:") and "trying the next source" in err[1]
    assert "audo/vall-e-x" in err[2] and "(2 of 2)" in err[2] and err[3].startswith("  saved")
    assert (folder / "vallex-checkpoint.pt").read_bytes() == checkpoint
    record = json.loads((folder / SOURCES_RECORD_NAME).read_text())["vallex-checkpoint.pt"]
    assert record["sha256"] == hashlib.sha256(checkpoint).hexdigest() and record["size"] == len(checkpoint)
    assert "audo/vall-e-x" in record["source"] and record["path"] == "vallex-checkpoint.pt"
    assert not (folder / ".vallex-download").exists()

    assert cli_main(["download", "--check", "--weights-dir", str(folder), "--only", "vallex"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok") and "audo/vall-e-x" in out and record["sha256"] in out
    (folder / "vallex-checkpoint.pt").write_bytes(checkpoint[:-1] + bytes([checkpoint[-1] ^ 1]))
    assert cli_main(["download", "--check", "--weights-dir", str(folder), "--only", "vallex"]) == 1
    assert capsys.readouterr().out.startswith("CHANGED")


def test_checkpoint_repo_option_is_tried_first(tiny_files, tmp_path, online, capsys):
    checkpoint = (tiny_files / VALLEX_CHECKPOINT.layout_name).read_bytes()
    hub = online({("me/copy", "weights/vallex.pt"): checkpoint})
    folder = _tiny_folder(tiny_files, tmp_path)
    with hub:
        assert cli_main(["download", "--weights-dir", str(folder), "--only", "vallex",
                         "--checkpoint-repo", "me/copy/weights/vallex.pt"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "me/copy" in err[0] and "(1 of 3)" in err[0] and err[1].startswith("  saved")
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
    tried = message[message.index("tried, in order:"):].splitlines()[1:3]
    assert "Plachta/VALL-E-X" in tried[0] and "does not match the model configuration" in tried[0]
    assert "audo/vall-e-x" in tried[1] and "not a PyTorch checkpoint" in tried[1]
    assert WEIGHTS_DIR_ENV in message and CHECKPOINT_REPO_ENV in message
    for repo in ("Plachta/VALL-E-X", "audo/vall-e-x"):  # neither rejected file stays in the cache
        cached = huggingface_hub.try_to_load_from_cache(repo, "vallex-checkpoint.pt")
        assert not isinstance(cached, str)


def test_a_download_from_an_override_is_found_later_through_the_record(tiny_files, online, monkeypatch):
    vocos = {name: (tiny_files / f.layout_name).read_bytes()
             for name, f in (("config.yaml", VOCOS_CONFIG), ("pytorch_model.bin", VOCOS_MODEL))}
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
