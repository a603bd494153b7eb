"""Where each model file comes from and where it lives in a weights folder: :class:`WeightFile`, the table of the
files of the three models (:data:`WEIGHT_FILES`), and their :class:`Source` s in the order they are tried.

The sources of the user's own (``VALLEX_CHECKPOINT_REPO``, ``VALLEX_VOCOS_REPO``, ``VALLEX_ENCODEC_URL``) come
first: :func:`sources_for`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from vallex.weights.environment import CHECKPOINT_REPO_ENV, ENCODEC_URL_ENV, VOCOS_REPO_ENV

#: The three models.
COMPONENTS: tuple[str, ...] = ("vallex", "encodec", "vocos")
#: The optional model sizes beside the VALL-E X checkpoint (absent: the public checkpoint's).
VALLEX_CONFIG_NAME = "vallex-config.json"
VOCOS_SUBDIR = "vocos-encodec-24khz"

#: The Hugging Face revision of a source that names none: the ``main`` branch, whatever it holds at the time. The
#: VALL-E X sources stay on it (their file's SHA-256 is pinned instead; the original repository is gone).
TRACKED_REVISION = "main"
#: The commit of ``charactr/vocos-encodec-24khz`` whose weights are used ("Update model weights", 2023-10-17, shown
#: as 4e61d08): its weights were replaced twice. A full commit id: the hub cache is looked up by it, offline too,
#: and a short one is found by neither the cache nor the ``/resolve/`` URL.
VOCOS_REVISION = "4e61d082c08045a4c11e5b148ad93b1d0c591a14"
#: The Hugging Face repository kinds a source may name, by the prefix huggingface.co puts in their URLs.
_REPO_TYPE_PREFIXES = {"spaces": "space", "datasets": "dataset"}

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")


@dataclass(frozen=True)
class Source:
    """One place a file can be downloaded from: a file of a Hugging Face repository (a model's, a Space's or a
    dataset's: ``repo_type`` as ``hf_hub_download`` takes it), or a URL."""

    repo_id: str | None = None
    filename: str | None = None
    revision: str = TRACKED_REVISION
    url: str | None = None
    repo_type: str = "model"  # "model" | "space" | "dataset"

    def __str__(self) -> str:
        if self.repo_id:
            return f"huggingface.co/{self.repo_path} (file {self.filename}, revision {self.revision})"
        return str(self.url)

    @property
    def repo_path(self) -> str:
        """The repository as huggingface.co's URLs name it: ``owner/name``, ``spaces/owner/name``, ..."""
        prefix = next((p for p, kind in _REPO_TYPE_PREFIXES.items() if kind == self.repo_type), None)
        return f"{prefix}/{self.repo_id}" if prefix else str(self.repo_id)


def parse_source(text: str, default_filename: str, *, allow_file: bool = True, origin: str = "source") -> Source:
    """A :class:`Source` from ``[spaces/|datasets/]owner/name[/path/to/file][@revision]`` (a model repository
    unless prefixed, as in huggingface.co's URLs) or an ``http(s)://`` / ``file://`` URL.

    Raises:
        ValueError: naming ``origin`` (e.g. the environment variable) and the expected form.
    """
    text = text.strip()
    if re.match(r"(https?|file)://", text):
        return Source(url=text)
    form = "[spaces/]owner/name[/file][@revision]" if allow_file else "[spaces/]owner/name[@revision]"
    location, _, revision = text.partition("@")
    parts = location.split("/")
    repo_type = _REPO_TYPE_PREFIXES.get(parts[0], "model")
    parts = parts[1:] if repo_type != "model" else parts
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:]) or default_filename
    bad_file = not allow_file and len(parts) > 2
    unsafe = any(part in ("", ".", "..") for part in filename.split("/")) or "\\" in filename
    if not _REPO_ID.fullmatch(repo_id) or bad_file or unsafe or (revision and not _REVISION.fullmatch(revision)):
        raise ValueError(f"{origin}: {text!r} is not a Hugging Face source of the form {form} or a URL "
                         "(https://..., file://...).")
    return Source(repo_id=repo_id, filename=filename, revision=revision or TRACKED_REVISION, repo_type=repo_type)


@dataclass(frozen=True)
class WeightFile:
    """One file of one model: where it comes from and where it lives in a weights folder."""

    component: str  # "vallex" | "encodec" | "vocos"
    description: str  # what the file is, e.g. "EnCodec 24 kHz"
    layout_name: str  # path inside a weights folder
    sources: tuple[Source, ...]  # built-in public sources, tried in order after the user's own
    #: The environment variable with the user's own sources (comma-separated), tried first.
    override_env: str | None = None
    #: Whether an override may name a file (False: the repository's file of the built-in name is used).
    override_names_file: bool = True
    sha256: str | None = None  # the published SHA-256 (or its leading hex digits)
    #: False: ``sha256`` is checked on download and on every load, bytes only. True (the VALL-E X checkpoint): on
    #: download only (a weights folder may hold the .safetensors made from it), and a copy with other bytes passes
    #: when its tensors are the published ones (:func:`vallex.weights.checkpoint.check_published_tensors`).
    same_tensors_suffice: bool = False
    #: Names in a weights folder that are tried BEFORE ``layout_name`` (e.g. a converted, pickle-free copy).
    preferred: tuple[str, ...] = ()
    #: The published file's size (decimal units), for messages about downloading it; a file on disk is described
    #: by its own size.
    published_size: str | None = None

    @property
    def label(self) -> str:
        """The description with the published size, e.g. "EnCodec 24 kHz (93 MB)": what a download fetches."""
        return f"{self.description} ({self.published_size})" if self.published_size else self.description

    @property
    def default_filename(self) -> str:
        return self.layout_name.rsplit("/", 1)[-1]


def _hf(repo_id: str, filename: str, revision: str = TRACKED_REVISION, repo_type: str = "model") -> Source:
    return Source(repo_id=repo_id, filename=filename, revision=revision, repo_type=repo_type)


VALLEX_CHECKPOINT = WeightFile(
    component="vallex", description="VALL-E X checkpoint", published_size="1.48 GB",
    layout_name="vallex-checkpoint.pt",
    # The original repository answers "Repository not found" since 2025-09 (reference issue #187). The author's
    # Space (initial commit b1e1a76, as its duplicates show) and camenduru/vall-e-x (commit 4c7b62c) hold the same
    # bytes as epoch-10.pt: their LFS pointers name the SHA-256 below. audo/vall-e-x, a copy of the same size and
    # pickle globals, is held to the same pin.
    sources=(_hf("Plachta/VALL-E-X", "vallex-checkpoint.pt"), _hf("Plachta/VALL-E-X", "epoch-10.pt", repo_type="space"),
             _hf("camenduru/vall-e-x", "epoch-10.pt"), _hf("audo/vall-e-x", "vallex-checkpoint.pt")),
    override_env=CHECKPOINT_REPO_ENV,
    # As the original repository's LFS pointer (commit d7240d7) gives it: 1,482,302,113 bytes.
    sha256="c5fcd05ee0c9c84a16a7b44495c46262177e66d5d454c20ca5f1da9832dbd5ac",
    same_tensors_suffice=True,
    preferred=("vallex-checkpoint.safetensors",),  # made by `vallex convert-checkpoint`: no pickle, mmapped
)
ENCODEC_CHECKPOINT = WeightFile(
    component="encodec", description="EnCodec 24 kHz", published_size="93 MB",
    layout_name="encodec_24khz-d7cc33bc.th",
    sources=(Source(url="https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th"),
             _hf("facebook/encodec", "encodec_24khz-d7cc33bc.th")),
    override_env=ENCODEC_URL_ENV,
    # The file name carries the first 8 hex digits; the whole digest (93,171,529 bytes) is the one that other
    # public projects pin for this file.
    sha256="d7cc33bcf1aad7f2dad9836f36431530744abeace3ca033005e3290ed4fa47bf",
)
VOCOS_CONFIG = WeightFile(
    component="vocos", description="Vocos config", layout_name=f"{VOCOS_SUBDIR}/config.yaml",
    sources=(_hf("charactr/vocos-encodec-24khz", "config.yaml", VOCOS_REVISION),), override_env=VOCOS_REPO_ENV,
    override_names_file=False,
)
VOCOS_MODEL = WeightFile(
    component="vocos", description="Vocos weights", published_size="40 MB",
    layout_name=f"{VOCOS_SUBDIR}/pytorch_model.bin",
    sources=(_hf("charactr/vocos-encodec-24khz", "pytorch_model.bin", VOCOS_REVISION),), override_env=VOCOS_REPO_ENV,
    override_names_file=False,
    sha256="7e95bb260b74a1bfc43c52d355831c951acb81c8960e9c62b79bd2b3ab1e3a90",  # its LFS pointer at VOCOS_REVISION
)
WEIGHT_FILES: tuple[WeightFile, ...] = (VALLEX_CHECKPOINT, ENCODEC_CHECKPOINT, VOCOS_CONFIG, VOCOS_MODEL)


def sources_for(weight_file: WeightFile, checkpoint_repo: str | None = None) -> list[Source]:
    """Where ``weight_file`` is downloaded from, in order: the user's own sources (its ``override_env``, or
    ``checkpoint_repo`` for the VALL-E X checkpoint), then the built-in ones, without repeats.

    Raises:
        ValueError: a source of the user's that is not of the form :func:`parse_source` reads.
    """
    env = weight_file.override_env
    text = os.environ.get(env, "") if env else ""
    if env == CHECKPOINT_REPO_ENV and checkpoint_repo:
        text = checkpoint_repo
    own = [parse_source(item, weight_file.default_filename, allow_file=weight_file.override_names_file,
                        origin=env or "source")
           for item in (part.strip() for part in text.split(",")) if item]
    return list(dict.fromkeys([*own, *weight_file.sources]))
