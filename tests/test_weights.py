"""The weights manager: local folders, the caches, checksums, offline failure, and random-weight folders."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import shutil
import time

import huggingface_hub
import pytest
import torch

from vallex.cli import main as cli_main
from vallex.config import VallexConfig
from vallex.weights import (
    CHECKSUMS_NAME,
    ENCODEC_CHECKPOINT,
    SOURCES_RECORD_NAME,
    VALLEX_CHECKPOINT,
    VOCOS_MODEL,
    VOCOS_REVISION,
    DownloadFailedError,
    Source,
    WeightsManager,
    WeightsNotFoundError,
    is_offline,
    manager,  # where the manager reads the file table (patched below)
    resolve_weights,
)

LAYOUT = ["vallex-checkpoint.pt", "encodec_24khz-d7cc33bc.th", "vocos-encodec-24khz/config.yaml",
          "vocos-encodec-24khz/pytorch_model.bin"]


@pytest.fixture(scope="module")
def random_dir(tmp_path_factory):
    """A random-weight folder made through the CLI, with what the CLI printed."""
    directory = tmp_path_factory.mktemp("weights") / "random"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(["make-random-weights", str(directory), "--size", "tiny", "--seed", "1"])
    assert code == 0
    return directory, out.getvalue()


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Offline, with empty Hugging Face and torch hub caches, and any download attempt an error."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("VALLEX_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))

    def no_network(*args, **kwargs):
        raise AssertionError("the weights manager tried to download while offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path


def test_make_random_weights_writes_the_layout_and_says_noise(random_dir):
    directory, printed = random_dir
    for name in LAYOUT + ["vallex-config.json", CHECKSUMS_NAME]:
        assert (directory / name).is_file(), name
    assert "noise" in printed.lower() and "RANDOM" in printed


def test_random_files_have_the_real_formats(random_dir):
    directory, _ = random_dir
    checkpoint = torch.load(directory / "vallex-checkpoint.pt", map_location="cpu", weights_only=True)
    assert set(checkpoint) == {"model"} and all(isinstance(v, torch.Tensor) for v in checkpoint["model"].values())
    encodec_state = torch.load(directory / "encodec_24khz-d7cc33bc.th", map_location="cpu", weights_only=True)
    assert "quantizer.vq.layers.0._codebook.embed" in encodec_state
    assert encodec_state["quantizer.vq.layers.0._codebook.embed"].shape == (1024, 128)
    vocos_state = torch.load(directory / "vocos-encodec-24khz/pytorch_model.bin", weights_only=True)
    # Like the published file: the Vocos codebook table (16 codebooks) but not the EnCodec inside it.
    assert vocos_state["feature_extractor.codebook_weights"].shape == (16 * 1024, 128)
    assert not any(key.startswith("feature_extractor.encodec.") for key in vocos_state)


def test_resolve_from_a_local_folder(random_dir, empty_caches):
    directory, _ = random_dir
    paths = resolve_weights(directory)
    assert paths.random
    assert paths.vallex == directory / "vallex-checkpoint.pt"
    assert paths.encodec == directory / "encodec_24khz-d7cc33bc.th"
    assert paths.vocos_config == directory / "vocos-encodec-24khz" / "config.yaml"
    assert paths.vocos_model == directory / "vocos-encodec-24khz" / "pytorch_model.bin"
    from vallex.config import VallexConfig
    from vallex.weights.checkpoint import load_model

    assert paths.vallex_config == VallexConfig.tiny()
    model = load_model(paths.vallex, config=paths.vallex_config)
    assert model.config == VallexConfig.tiny()


def test_safetensors_checkpoint_is_preferred(random_dir, tmp_path, empty_caches):
    from vallex.weights.checkpoint import convert_checkpoint

    directory, _ = random_dir
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    convert_checkpoint(copy / "vallex-checkpoint.pt", copy / "vallex-checkpoint.safetensors")
    assert resolve_weights(copy).vallex == copy / "vallex-checkpoint.safetensors"
    (copy / "vallex-checkpoint.pt").unlink()
    assert resolve_weights(copy).vallex == copy / "vallex-checkpoint.safetensors"


def test_weights_dir_from_environment(random_dir, empty_caches, monkeypatch):
    directory, _ = random_dir
    monkeypatch.setenv("VALLEX_WEIGHTS_DIR", str(directory))
    assert resolve_weights().encodec == directory / "encodec_24khz-d7cc33bc.th"


def test_missing_file_in_folder_is_named_with_where_it_was_looked_for(random_dir, tmp_path, empty_caches):
    directory, _ = random_dir
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    (copy / "vocos-encodec-24khz" / "pytorch_model.bin").unlink()
    with pytest.raises(WeightsNotFoundError) as caught:
        resolve_weights(copy)
    message = str(caught.value)
    assert message.startswith("1 model file(s) not found")
    assert str(copy / "vocos-encodec-24khz" / "pytorch_model.bin") in message
    assert "charactr/vocos-encodec-24khz" in message
    assert "vallex download --weights-dir" in message
    # Components that are present still resolve.
    assert resolve_weights(copy, components=("vallex", "encodec")).vocos_model is None


def test_offline_fails_fast_with_one_message_listing_every_file(empty_caches):
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as caught:
        resolve_weights()
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    message = str(caught.value)
    assert "offline" in message and "HF_HUB_OFFLINE" in message
    for name in LAYOUT:
        assert name in message
    assert message.count("looked in:") == 4
    assert str(empty_caches / "hf") in message and str(empty_caches / "torch") in message
    assert "vallex download" in message and "VALLEX_WEIGHTS_DIR" in message and "HF_ENDPOINT" in message


def _put_in_hf_cache(cache, repo_id: str, files: dict[str, object], commit: str = "0" * 40) -> None:
    """Lay files out as huggingface_hub's cache does: refs/main -> snapshots/<commit>/<file>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        shutil.copy(source, snapshot / name)


def test_files_are_found_in_the_standard_caches_offline(random_dir, empty_caches, monkeypatch):
    directory, _ = random_dir
    _put_in_hf_cache(empty_caches / "hf", "Plachta/VALL-E-X", {"vallex-checkpoint.pt": directory / LAYOUT[0]})
    vocos = {"config.yaml": directory / LAYOUT[2], "pytorch_model.bin": directory / LAYOUT[3]}
    _put_in_hf_cache(empty_caches / "hf", "charactr/vocos-encodec-24khz", vocos)  # an earlier main: other weights
    with pytest.raises(WeightsNotFoundError, match=f"vocos-encodec-24khz@{VOCOS_REVISION}"):
        resolve_weights(components=("vocos",))
    _put_in_hf_cache(empty_caches / "hf", "charactr/vocos-encodec-24khz", vocos, commit=VOCOS_REVISION)
    with pytest.raises(ValueError, match="Checksum mismatch"):  # the random weights are not the pinned ones
        resolve_weights(components=("vocos",))
    monkeypatch.setattr(manager, "WEIGHT_FILES", tuple(  # pin the random file instead
        dataclasses.replace(f, sha256=hashlib.sha256((directory / LAYOUT[3]).read_bytes()).hexdigest())
        if f is VOCOS_MODEL else f for f in manager.WEIGHT_FILES))
    paths = resolve_weights(components=("vallex", "vocos"))
    assert paths.vallex.read_bytes() == (directory / LAYOUT[0]).read_bytes()
    assert paths.vocos_model.name == "pytorch_model.bin" and paths.vocos_model.parent.name == VOCOS_REVISION
    assert not paths.random


def test_published_sha256_prefix_is_checked(random_dir, empty_caches):
    """A file in the torch hub cache named like EnCodec's but with other contents is refused."""
    directory, _ = random_dir
    hub = empty_caches / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    shutil.copy(directory / LAYOUT[1], hub / LAYOUT[1])
    with pytest.raises(ValueError, match="Checksum mismatch"):
        resolve_weights(components=("encodec",))


def test_the_checksum_file_catches_a_modified_file(random_dir, tmp_path, empty_caches):
    directory, _ = random_dir
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    weights = copy / LAYOUT[3]
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ValueError, match="Checksum mismatch") as caught:  # held to its pin on every load
        resolve_weights(copy)
    message = str(caught.value)
    assert "neither the published Vocos weights" in message and "nor the random file make-random-weights" in message
    assert "--only vocos --force" in message and "\n" not in message
    shutil.copy(directory / LAYOUT[3], weights)
    config = copy / "vocos-encodec-24khz" / "config.yaml"  # no pin: a file placed by hand, checked for its form
    config.write_text(config.read_text() + "# edited\n")
    assert resolve_weights(copy).random  # the other files are still the random ones
    (copy / CHECKSUMS_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        resolve_weights(copy)


def test_url_sources_are_tried_in_turn_and_the_sha256_is_checked(tmp_path):
    source = tmp_path / "mirror" / "encodec_24khz-d7cc33bc.th"
    source.parent.mkdir()
    source.write_bytes(b"pretend weights" * 1000)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    gone = Source(url=(tmp_path / "gone" / source.name).as_uri())
    good = dataclasses.replace(ENCODEC_CHECKPOINT, sources=(gone, Source(url=source.as_uri())), sha256=digest)
    target = tmp_path / "weights"
    lines = []
    path = WeightsManager(target, report=lines.append)._download(good, into=target)
    assert path == target / "encodec_24khz-d7cc33bc.th" and path.read_bytes() == source.read_bytes()
    assert "(1 of 2)" in lines[0] and "failed" in lines[1] and "trying the next source" in lines[1]
    assert "(2 of 2)" in lines[2] and digest in lines[3]
    record = json.loads((target / SOURCES_RECORD_NAME).read_text())[good.layout_name]
    assert record["sha256"] == digest and record["source"] == source.as_uri() and record["path"] == good.layout_name
    assert not (target / ".vallex-download").exists()

    bad = dataclasses.replace(good, sources=(Source(url=source.as_uri()),), sha256="0" * 64)
    path.unlink()
    with pytest.raises(DownloadFailedError) as caught:
        WeightsManager(target, report=lines.append)._download(bad, into=target)
    assert "hash" in caught.value.attempts[0].lower()
    assert not (target / "encodec_24khz-d7cc33bc.th").exists()


def test_unreachable_hosts_fail_fast_without_calling_the_downloaders(empty_caches, monkeypatch):
    """Online mode with no route to the hosts: a quick TCP probe replaces ~25 s of retries per file."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens there
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", closed)
    files = tuple(dataclasses.replace(f, sources=tuple(Source(url=f"{closed}/{f.layout_name}") if s.url else s
                                                       for s in f.sources))
                  for f in manager.WEIGHT_FILES)
    monkeypatch.setattr(manager, "WEIGHT_FILES", files)
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as caught:
        resolve_weights()
    assert time.perf_counter() - start < 5.0
    message = str(caught.value)
    assert message.startswith("4 model file(s) not found and could not be downloaded")
    # every source of every file was tried: VALL-E X 4, EnCodec 2, Vocos 1 + 1
    assert message.count("cannot reach 127.0.0.1:9") == 8
    assert "spaces/Plachta/VALL-E-X" in message and "camenduru/vall-e-x" in message and "audo/vall-e-x" in message
    assert "facebook/encodec" in message and "VALLEX_WEIGHTS_DIR" in message


def test_unknown_component_is_a_value_error():
    with pytest.raises(ValueError, match="Unknown model component"):
        resolve_weights(components=("whisper",))


def test_cli_download_check_and_offline_download(random_dir, empty_caches, capsys):
    directory, _ = random_dir
    assert cli_main(["download", "--check", "--weights-dir", str(directory)]) == 0
    assert capsys.readouterr().out.count("ok") == 4
    assert cli_main(["download", "--check"]) == 1
    assert capsys.readouterr().out.count("MISSING") == 4
    assert cli_main(["download"]) == 2
    assert "offline" in capsys.readouterr().err


@pytest.fixture(scope="module")
def other_random_dir(tmp_path_factory):
    """Random files of another seed: stand-ins for the published files, whose SHA-256 tests pin (:func:`pin`)."""
    from vallex.weights.random_weights import make_random_weights

    directory = tmp_path_factory.mktemp("weights") / "other"
    make_random_weights(directory, size="tiny", seed=2)
    return directory


def pin(monkeypatch, *files) -> None:
    """Pin each of ``files`` (a WeightFile and a path) as its published file, as the real files are pinned."""
    pins = {weight_file.layout_name: hashlib.sha256(path.read_bytes()).hexdigest() for weight_file, path in files}
    monkeypatch.setattr(manager, "WEIGHT_FILES", tuple(
        dataclasses.replace(f, sha256=pins[f.layout_name]) if f.layout_name in pins else f
        for f in manager.WEIGHT_FILES))


def test_a_published_file_placed_in_a_random_folder_is_the_published_one(random_dir, other_random_dir, tmp_path,
                                                                         empty_caches, monkeypatch):
    """The published SHA-256 wins over the random folder's checksum file, which records the random files only."""
    directory, _ = random_dir
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    published = [(VALLEX_CHECKPOINT, other_random_dir / LAYOUT[0]), (ENCODEC_CHECKPOINT, other_random_dir / LAYOUT[1])]
    pin(monkeypatch, *published)
    shutil.copy(other_random_dir / LAYOUT[0], copy / LAYOUT[0])
    shutil.copy(other_random_dir / LAYOUT[1], copy / LAYOUT[1])
    paths = resolve_weights(copy)  # was: "Checksum mismatch ... damaged ...; delete it and download it again"
    assert paths.vallex == copy / LAYOUT[0] and paths.encodec == copy / LAYOUT[1]
    assert paths.random  # Vocos is still the random one: outputs are noise
    # The random folder's vallex-config.json describes the random checkpoint it was written with, not this one.
    assert paths.public_sizes and paths.vallex_config == VallexConfig.public()
    assert resolve_weights(directory).vallex_config == VallexConfig.named("tiny")  # beside its own checkpoint
    shutil.copy(other_random_dir / LAYOUT[2], copy / LAYOUT[2])  # the same bytes as this folder's: random still
    pin(monkeypatch, *published, (VOCOS_MODEL, other_random_dir / LAYOUT[3]))
    shutil.copy(other_random_dir / LAYOUT[3], copy / LAYOUT[3])
    config = copy / LAYOUT[2]
    config.write_text(config.read_text() + "# the published one\n")
    assert not resolve_weights(copy).random  # every random file replaced: no longer noise


def _check_output(directory, *only) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(["download", "--check", "--weights-dir", str(directory), *(["--only", *only] if only else [])])
    return code, out.getvalue()


def test_download_check_runs_the_checks_loading_runs(random_dir, other_random_dir, tmp_path, empty_caches,
                                                     monkeypatch):
    directory, _ = random_dir
    folder = tmp_path / "placed"  # files placed by hand: no checksum file
    shutil.copytree(directory, folder)
    (folder / CHECKSUMS_NAME).unlink()
    code, out = _check_output(folder)
    assert code == 1  # was: "ok" for each, while loading refuses EnCodec and Vocos for their SHA-256
    sections = _sections(out)
    assert sections["EnCodec 24 kHz"].startswith("UNUSABLE")
    assert "cannot be used: Checksum mismatch for" in sections["EnCodec 24 kHz"]
    assert "is not the published EnCodec 24 kHz's d7cc33bcf1aad7f2" in sections["EnCodec 24 kHz"]
    with pytest.raises(ValueError, match="is not the published EnCodec"):  # the same words as loading's
        resolve_weights(folder, components=("encodec",))
    # The checkpoint: its own size, not the published file's label; its keys and shapes checked.
    checkpoint = sections["VALL-E X checkpoint"]
    assert checkpoint.startswith("ok       VALL-E X checkpoint\n") and "(1.48 GB)" not in checkpoint.splitlines()[0]
    size = (folder / LAYOUT[0]).stat().st_size
    assert f"size:    {size / 1e6:.3g} MB ({size:,} bytes); the published file: 1.48 GB" in checkpoint

    state = torch.load(folder / LAYOUT[0], weights_only=True)["model"]
    torch.save({"model": {f"module.{key}": value for key, value in state.items()}}, folder / LAYOUT[0])
    code, out = _check_output(folder, "vallex")
    assert code == 0 and out.startswith("ok")  # DDP keys: loading strips the prefix, so --check says ok
    mixed = {(f"module.{key}" if number % 2 else key): value for number, (key, value) in enumerate(state.items())}
    torch.save({"model": mixed}, folder / LAYOUT[0])
    code, out = _check_output(folder, "vallex")
    assert code == 1 and out.startswith("UNUSABLE") and "cannot be used:" in out and "mixes keys" in out
    (folder / LAYOUT[0]).write_bytes(b"")
    code, out = _check_output(folder, "vallex")
    assert code == 1 and "cannot be used:" in out and "is empty" in out

    # In a random folder: the random files are ok (and said to be), a published one placed there too.
    copy = tmp_path / "random"
    shutil.copytree(directory, copy)
    pin(monkeypatch, (VALLEX_CHECKPOINT, other_random_dir / LAYOUT[0]))
    shutil.copy(other_random_dir / LAYOUT[0], copy / LAYOUT[0])
    # its stand-in is tiny, so here the public sizes are the tiny ones (the random vallex-config.json is not used)
    monkeypatch.setattr(VallexConfig, "public", classmethod(lambda cls: cls.named("tiny")))
    code, out = _check_output(copy)
    assert code == 0, out
    sections = _sections(out)
    assert "pinned:  the published file" in sections["VALL-E X checkpoint"]
    assert "is:      the random file make-random-weights wrote here" in sections["EnCodec 24 kHz"]
    (copy / LAYOUT[1]).write_bytes(b"not EnCodec")
    code, out = _check_output(copy, "encodec")
    assert code == 1 and "neither the published EnCodec 24 kHz" in _sections(out)["EnCodec 24 kHz"]


def _sections(out: str) -> dict[str, str]:
    """``download --check``'s report, by file description: each file's lines."""
    sections: dict[str, str] = {}
    for block in ("\n" + out).split("\n")[1:]:
        if block[:1].strip():  # a state word starts each file's lines
            name = block[9:]
            sections[name] = block
        else:
            sections[name] += "\n" + block
    return sections


def test_is_offline_reads_both_variables(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("VALLEX_OFFLINE", raising=False)
    assert not is_offline()
    monkeypatch.setenv("VALLEX_OFFLINE", "true")
    assert is_offline()
