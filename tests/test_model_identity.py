"""Which model is running (vallex.weights.identity): file name, SHA-256 prefix, languages, random or not, with the
digest taken from what already knows it before the file is hashed."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from vallex.weights import VALLEX_CHECKPOINT, ModelIdentity, WeightsManager, model_identity, sha256_file
from vallex.weights.checkpoint import checkpoint_languages
from vallex.weights.manager import WeightPaths
from vallex.weights.record import write_record
from vallex.weights.sources import parse_source


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vallex.weights.random_weights import make_random_weights

    folder = tmp_path_factory.mktemp("tiny")
    make_random_weights(folder, size="tiny")
    return folder


class NoHashing(WeightsManager):
    """A manager that fails the test if it has to read a file to hash it."""

    def sha256(self, path: Path) -> str:
        raise AssertionError(f"{path} was hashed although its digest is known")


def identity_of(manager: WeightsManager) -> ModelIdentity:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random folder's noise warning
        paths = manager.resolve(("vallex",), download=False)
    return model_identity(manager, paths, checkpoint_languages(paths.vallex, paths.vallex_config))


def test_a_random_folder_is_named_from_its_checksum_file(tiny: Path) -> None:
    manager = WeightsManager(tiny)
    identity = identity_of(manager)
    checkpoint = tiny / "vallex-checkpoint.pt"
    assert identity == ModelIdentity("vallex-checkpoint.pt", sha256_file(checkpoint)[:12], ("en", "zh", "ja"), True)
    assert identity.as_dict() == {"file": "vallex-checkpoint.pt", "sha256": identity.sha256,
                                  "languages": ["en", "zh", "ja"], "random": True}
    assert identity.describe() == (f"vallex-checkpoint.pt (SHA-256 {identity.sha256}; languages en, zh, ja; "
                                   "RANDOM weights: outputs are noise)")
    # Resolving verified the folder's files (that hashes them); the identity itself reads no file.
    paths = WeightPaths(vallex=checkpoint, random=True)
    assert model_identity(NoHashing(tiny), paths, ["en", "zh", "ja"]).sha256 == identity.sha256


def test_a_recorded_download_is_not_hashed_again(tiny: Path, tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    checkpoint = folder / "vallex-checkpoint.pt"
    shutil.copy(tiny / "vallex-checkpoint.pt", checkpoint)
    recorded = "ab" * 32  # not the file's digest: only the record can have said it
    write_record([folder], VALLEX_CHECKPOINT, checkpoint, parse_source("owner/name", "vallex-checkpoint.pt"), recorded)
    identity = model_identity(NoHashing(folder), WeightPaths(vallex=checkpoint), ["en", "zh", "ja"])
    assert (identity.sha256, identity.random) == (recorded[:12], False)
    # A record of another size is of another file: the file is hashed.
    checkpoint.write_bytes(checkpoint.read_bytes() + b"\0")
    identity = model_identity(WeightsManager(folder), WeightPaths(vallex=checkpoint), ["en"])
    assert identity.sha256 == sha256_file(checkpoint)[:12]


def test_a_hugging_face_blob_is_named_by_its_file_name(tmp_path: Path) -> None:
    digest = "cd" * 32
    blob = tmp_path / "blobs" / digest
    blob.parent.mkdir()
    blob.write_bytes(b"weights")
    link = tmp_path / "snapshots" / "main" / "epoch-10.pt"
    link.parent.mkdir(parents=True)
    link.symlink_to(blob)
    identity = model_identity(NoHashing(tmp_path / "unused"), WeightPaths(vallex=link), ["en", "zh", "ja"])
    assert (identity.file, identity.sha256) == ("epoch-10.pt", digest[:12])


def test_an_own_checkpoint_is_hashed_once(tiny: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "de"
    run.mkdir(parents=True)
    checkpoint = run / "checkpoint-00002000.pt"
    shutil.copy(tiny / "vallex-checkpoint.pt", checkpoint)
    hashed: list[Path] = []

    class Counting(WeightsManager):
        def sha256(self, path: Path) -> str:
            hashed.append(path)
            return super().sha256(path)

    manager = Counting(tiny, checkpoint=checkpoint)
    paths = WeightPaths(vallex=checkpoint)
    for _ in range(2):
        identity = model_identity(manager, paths, ["en", "zh", "ja", "de"])
    assert identity.file == "checkpoint-00002000.pt" and identity.languages == ("en", "zh", "ja", "de")
    assert identity.sha256 == sha256_file(checkpoint)[:12] and len(set(hashed)) == 1
    with pytest.raises(ValueError, match="No VALL-E X checkpoint"):
        model_identity(manager, WeightPaths(), ["en"])


def test_the_loaded_model_knows_its_identity(tiny: Path) -> None:
    from vallex.api import VallEX

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tts = VallEX.from_pretrained(tiny, device="cpu", download=False, tune_malloc=False)
    identity = tts.identity()
    assert identity is not None and identity is tts.identity()  # worked out once
    assert (identity.file, identity.languages, identity.random) == ("vallex-checkpoint.pt", ("en", "zh", "ja"), True)
