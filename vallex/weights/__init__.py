"""Model weights: where each file comes from, where it is kept, and how it is checked.

Three models are needed (five files). Sources, tried in order, then the name in a weights folder
(``--weights-dir``):

* VALL-E X: on Hugging Face the model repository ``Plachta/VALL-E-X`` (the original, ``vallex-checkpoint.pt``;
  reported gone since 2025-09), the author's Space ``Plachta/VALL-E-X`` and the model repository
  ``camenduru/vall-e-x`` (``epoch-10.pt``, byte-identical copies), then ``audo/vall-e-x`` (``vallex-checkpoint.pt``)
  → ``vallex-checkpoint.pt`` or ``vallex-checkpoint.safetensors`` (preferred when both are there), plus optional
  ``vallex-config.json`` (model sizes; absent means the public checkpoint's).
* EnCodec 24 kHz: ``https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th``, then the copy in the
  Hugging Face repository ``facebook/encodec`` → ``encodec_24khz-d7cc33bc.th``.
* Vocos: Hugging Face ``charactr/vocos-encodec-24khz`` at commit :data:`VOCOS_REVISION`, files ``config.yaml`` and
  ``pytorch_model.bin`` → ``vocos-encodec-24khz/config.yaml`` and ``vocos-encodec-24khz/pytorch_model.bin``.

Sources of your own are tried first: ``VALLEX_CHECKPOINT_REPO`` (``owner/name[/file][@revision]``, several
separated by commas; ``vallex download --checkpoint-repo``), ``VALLEX_VOCOS_REPO`` (``owner/name[@revision]``) and
``VALLEX_ENCODEC_URL`` (a URL or ``owner/name[/file][@revision]``); ``spaces/owner/name...`` names a Space's file
(``datasets/...`` a dataset's), as huggingface.co spells them. ``HF_ENDPOINT`` (read by huggingface_hub)
replaces the Hugging Face endpoint; ``VALLEX_HF_MIRROR`` is tried after it for each Hugging Face source.

Where files are looked for:

* the VALL-E X checkpoint: ``checkpoint`` (``--checkpoint`` or ``$VALLEX_CHECKPOINT``) if given, e.g. a
  ``vallex train`` run's ``runs/de/checkpoint-00002000.pt``, used where it is (its ``.json`` and the run's
  ``languages.json`` beside it say its size and languages: :func:`vallex.weights.checkpoint.load_model`);
  the other files are then looked for as below.
* ``weights_dir`` (``--weights-dir`` or ``$VALLEX_WEIGHTS_DIR``) if given: that folder only, in the layout
  above; nothing is downloaded into the caches. ``vallex download --weights-dir DIR`` fills such a folder.
* otherwise the standard caches: the Hugging Face hub cache (``$HF_HOME``/``$HF_HUB_CACHE``, default
  ``~/.cache/huggingface/hub``) and torch hub (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch``),
  under each source's name, or wherever the download record (below) says an earlier download went; missing
  files are downloaded there with progress bars, unless offline (``HF_HUB_OFFLINE=1`` or ``VALLEX_OFFLINE=1``),
  where the lookup fails at once with one message listing every missing file.

Integrity: a downloaded file is checked before it is accepted, and a source whose file fails is skipped for the
next; your own sources are copies of the same files and are checked alike. EnCodec and Vocos's weights must have
their published SHA-256 (on every load too). The VALL-E X checkpoint is read safely, checked key by key and shape
by shape against the model, and must then have the published SHA-256 (:data:`VALLEX_CHECKPOINT`) or, for a copy
with other bytes (re-pickled elsewhere), the published tensors
(:func:`vallex.weights.checkpoint.check_published_tensors`; refused while their digest is not recorded). Its
SHA-256 is checked on download only: a weights folder may hold the ``.safetensors`` made from it, and a file you
place in a folder yourself, or give as ``checkpoint`` (a fine-tuned run), is yours: checked key by key when
loaded, never against the pin. Vocos's configuration is checked for its form. The VALL-E X sources track each
repository's ``main`` branch (:data:`TRACKED_REVISION`); the pinned SHA-256 says what they must hold. The SHA-256,
size and source of every download are recorded in ``vallex-sources.json`` in the folder that holds it (the weights
folder, or the cache's root); ``vallex download --check`` prints them and says whether each file still matches its
record.
A folder made by ``vallex make-random-weights`` carries a checksum file with the SHA-256 of each of its files,
which are checked instead.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vallex.config import VallexConfig

#: Environment variables (documented in the module docstring).
WEIGHTS_DIR_ENV = "VALLEX_WEIGHTS_DIR"
CHECKPOINT_ENV = "VALLEX_CHECKPOINT"
OFFLINE_ENV = "VALLEX_OFFLINE"
HF_MIRROR_ENV = "VALLEX_HF_MIRROR"
CHECKPOINT_REPO_ENV = "VALLEX_CHECKPOINT_REPO"
VOCOS_REPO_ENV = "VALLEX_VOCOS_REPO"
ENCODEC_URL_ENV = "VALLEX_ENCODEC_URL"

#: The checksum file of a random-weights folder (written by :func:`vallex.weights.random_weights.make_random_weights`):
#: the SHA-256 of every file in the folder, and ``"random": true``, which makes every use warn.
CHECKSUMS_NAME = "vallex-weights.json"
#: Where each download's source, size and SHA-256 are recorded (in the folder or cache root holding it).
SOURCES_RECORD_NAME = "vallex-sources.json"
VALLEX_CONFIG_NAME = "vallex-config.json"
VOCOS_SUBDIR = "vocos-encodec-24khz"

COMPONENTS: tuple[str, ...] = ("vallex", "encodec", "vocos")

NOISE_WARNING = ("These are RANDOM weights for development and tests: every output made with them is noise, "
                 "not speech.")

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
    description: str
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

    @property
    def default_filename(self) -> str:
        return self.layout_name.rsplit("/", 1)[-1]


def _hf(repo_id: str, filename: str, revision: str = TRACKED_REVISION, repo_type: str = "model") -> Source:
    return Source(repo_id=repo_id, filename=filename, revision=revision, repo_type=repo_type)


VALLEX_CHECKPOINT = WeightFile(
    component="vallex", description="VALL-E X checkpoint (1.48 GB)", layout_name="vallex-checkpoint.pt",
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
    component="encodec", description="EnCodec 24 kHz (89 MB)", layout_name="encodec_24khz-d7cc33bc.th",
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
    component="vocos", description="Vocos weights (40 MB)", layout_name=f"{VOCOS_SUBDIR}/pytorch_model.bin",
    sources=(_hf("charactr/vocos-encodec-24khz", "pytorch_model.bin", VOCOS_REVISION),), override_env=VOCOS_REPO_ENV,
    override_names_file=False,
    sha256="7e95bb260b74a1bfc43c52d355831c951acb81c8960e9c62b79bd2b3ab1e3a90",  # its LFS pointer at VOCOS_REVISION
)
WEIGHT_FILES: tuple[WeightFile, ...] = (VALLEX_CHECKPOINT, ENCODEC_CHECKPOINT, VOCOS_CONFIG, VOCOS_MODEL)


class RandomWeightsWarning(UserWarning):
    """The weights folder was made by ``vallex.weights.random_weights.make_random_weights``: outputs are noise."""


class WeightsNotFoundError(FileNotFoundError):
    """Some weight files are missing; the message lists each one, where it was looked for, and what to do."""


@dataclass(frozen=True)
class WeightPaths:
    """Local paths of the model files (None for components that were not requested)."""

    vallex: Path | None = None
    vallex_config_path: Path | None = None
    encodec: Path | None = None
    vocos_config: Path | None = None
    vocos_model: Path | None = None
    #: True when the files come from ``make_random_weights`` (outputs are noise).
    random: bool = False

    @property
    def vallex_config(self) -> VallexConfig | None:
        """The model sizes from ``vallex-config.json`` beside the checkpoint; None means the public sizes."""
        if self.vallex_config_path is None:
            return None
        from vallex.config import VallexConfig

        return VallexConfig.from_json(self.vallex_config_path)


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``VALLEX_OFFLINE`` is set to a true value."""
    return any(os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for name in ("HF_HUB_OFFLINE", OFFLINE_ENV))


def default_weights_dir() -> Path | None:
    value = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def default_checkpoint() -> Path | None:
    """``$VALLEX_CHECKPOINT``: a VALL-E X checkpoint used instead of the weights folder's (None when unset)."""
    value = os.environ.get(CHECKPOINT_ENV, "").strip()
    return Path(value).expanduser() if value else None


def resolve_weights(
    weights_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    components: Iterable[str] = COMPONENTS,
    checkpoint: str | os.PathLike | None = None,
) -> WeightPaths:
    """Find (and, when allowed, download) the files of ``components``; see :class:`WeightsManager`."""
    return WeightsManager(weights_dir, checkpoint=checkpoint).resolve(components, download=download)


class DownloadFailedError(RuntimeError):
    """Every source of one file failed; ``attempts`` holds one line per source: the source and its error."""

    def __init__(self, attempts: list[str]) -> None:
        super().__init__("; ".join(attempts) or "no source to download from")
        self.attempts = attempts


class WeightsManager:
    """Locates, downloads and verifies model files.

    Args:
        weights_dir: a folder in the documented layout; default ``$VALLEX_WEIGHTS_DIR``; None: the caches.
        checkpoint_repo: the user's own VALL-E X sources, tried first (the form of ``$VALLEX_CHECKPOINT_REPO``,
            which it replaces).
        report: where the progress lines of downloads go (default: standard error).
        checkpoint: a VALL-E X checkpoint file used where it is, instead of the folder's or the caches' (default
            ``$VALLEX_CHECKPOINT``); never downloaded, never replaced.
    """

    def __init__(self, weights_dir: str | os.PathLike | None = None, *, checkpoint_repo: str | None = None,
                 report: Callable[[str], None] | None = None, checkpoint: str | os.PathLike | None = None):
        self.weights_dir: Path | None = Path(weights_dir).expanduser() if weights_dir else default_weights_dir()
        self.checkpoint: Path | None = Path(checkpoint).expanduser() if checkpoint else default_checkpoint()
        self.checkpoint_repo = checkpoint_repo
        self._report = report or _stderr_line
        # SHA-256 of files already hashed, keyed by (path, size, mtime): a 1.5 GB file is hashed once.
        self._verified: dict[tuple[str, int, int], str] = {}
        self._reachability: dict[str, str | None] = {}  # host:port -> None (reachable) or the error

    def __repr__(self) -> str:
        return f"WeightsManager(weights_dir={self.weights_dir!r})"

    # Public -------------------------------------------------------------------------------------
    def resolve(self, components: Iterable[str] = COMPONENTS, *, download: bool = True) -> WeightPaths:
        """Local paths for ``components`` ("vallex", "encodec", "vocos"), verified.

        Raises:
            WeightsNotFoundError: one message listing every missing file (offline: without any network call).
            ValueError: unknown component, or a file whose checksum does not match.
        """
        wanted = _check_components(components)
        own_checkpoint = self._own_checkpoint() if "vallex" in wanted else None
        files = [f for f in WEIGHT_FILES if f.component in wanted and not (own_checkpoint and f.component == "vallex")]
        found: dict[str, Path] = {}  # layout name -> local path
        missing: list[tuple[WeightFile, list[str], list[str]]] = []
        checksums = self._checksums()
        for weight_file in files:
            path, places = self._find_local(weight_file)
            if path is None:
                missing.append((weight_file, places, []))
            else:
                found[weight_file.layout_name] = path
        if missing and download and self.weights_dir is None and not is_offline():
            still_missing = []
            for weight_file, places, _ in missing:
                try:
                    found[weight_file.layout_name] = self._download(weight_file, into=None)
                except DownloadFailedError as error:
                    still_missing.append((weight_file, places, error.attempts))
            missing = still_missing
        if missing:
            raise WeightsNotFoundError(self._missing_message(missing, download))
        for weight_file in files:
            self._verify(weight_file, found[weight_file.layout_name], checksums)
        if checksums is not None and checksums.get("random"):
            # A warning, not a log line: Python shows it once per folder however often the folder is resolved.
            warnings.warn(f"{NOISE_WARNING} ({self.weights_dir})", RandomWeightsWarning, stacklevel=1)
        config_path = None
        checkpoint = found.get(VALLEX_CHECKPOINT.layout_name)
        if checkpoint is not None and checkpoint.with_name(VALLEX_CONFIG_NAME).is_file():
            config_path = checkpoint.with_name(VALLEX_CONFIG_NAME)
        if own_checkpoint is not None:
            checkpoint = own_checkpoint  # its configuration: load_model finds the .json written beside it
        return WeightPaths(
            vallex=checkpoint, vallex_config_path=config_path,
            encodec=found.get(ENCODEC_CHECKPOINT.layout_name), vocos_config=found.get(VOCOS_CONFIG.layout_name),
            vocos_model=found.get(VOCOS_MODEL.layout_name), random=bool(checksums and checksums.get("random")),
        )

    def _own_checkpoint(self) -> Path | None:
        """The ``checkpoint`` given (checked to be a file), or None."""
        if self.checkpoint is None:
            return None
        if not self.checkpoint.is_file():
            raise WeightsNotFoundError(
                f"The checkpoint {self.checkpoint} (--checkpoint or {CHECKPOINT_ENV}) does not exist: give the .pt "
                "or .safetensors file itself, e.g. runs/my-run/checkpoint-00002000.pt.")
        return self.checkpoint

    def download(self, components: Iterable[str] = COMPONENTS, *, force: bool = False) -> WeightPaths:
        """Fetch ``components`` into the weights folder (if set) or the caches; return the resolved paths."""
        wanted = _check_components(components)
        if is_offline():
            raise WeightsNotFoundError(
                "Cannot download while offline (HF_HUB_OFFLINE / VALLEX_OFFLINE is set). Unset it, or copy the "
                f"files into a folder laid out as `vallex download --help` shows and set {WEIGHTS_DIR_ENV}."
            )
        failures = []
        for weight_file in (f for f in WEIGHT_FILES if f.component in wanted):
            path, _ = self._find_local(weight_file)
            if path is not None and not force:
                continue
            try:
                self._download(weight_file, into=self.weights_dir)
            except DownloadFailedError as error:
                failures.append(f"  - {weight_file.description}: every source failed:")
                failures.extend(f"      {attempt}" for attempt in error.attempts)
        if failures:
            raise WeightsNotFoundError(
                "Some downloads failed:\n" + "\n".join(failures) + "\n" + _by_hand_hint(self.weights_dir)
            )
        return self.resolve(wanted, download=False)

    def sources(self, weight_file: WeightFile) -> list[Source]:
        """Where ``weight_file`` is downloaded from, in order: the user's own sources, then the built-in ones."""
        env = weight_file.override_env
        text = os.environ.get(env, "") if env else ""
        if env == CHECKPOINT_REPO_ENV and self.checkpoint_repo:
            text = self.checkpoint_repo
        own = [parse_source(item, weight_file.default_filename, allow_file=weight_file.override_names_file,
                            origin=env or "source")
               for item in (part.strip() for part in text.split(",")) if item]
        return list(dict.fromkeys([*own, *weight_file.sources]))

    def sources_text(self, weight_file: WeightFile) -> str:
        """:meth:`sources` as one line, for messages."""
        return "; then ".join(str(s) for s in self.sources(weight_file))

    def status(self) -> list[tuple[WeightFile, Path | None]]:
        """(file, local path or None) for every file, without network access."""
        return [(f, self._find_local(f)[0]) for f in WEIGHT_FILES]

    def record(self, weight_file: WeightFile, path: Path) -> dict | None:
        """What was recorded when ``path`` was downloaded (source, sha256, size, downloaded), or None."""
        for root in self._record_roots():
            entry = _read_record(root).get(weight_file.layout_name)
            if isinstance(entry, dict) and _recorded_path(root, entry) == path:
                return entry
        return None

    def sha256(self, path: Path) -> str:
        """The file's SHA-256 (hashed once per size and modification time)."""
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._verified:
            self._verified[key] = sha256_file(path)
        return self._verified[key]

    # Lookup -------------------------------------------------------------------------------------
    def _find_local(self, weight_file: WeightFile) -> tuple[Path | None, list[str]]:
        """A local copy of ``weight_file`` and the list of places searched (for the error message)."""
        if self.weights_dir is not None:
            names = (*weight_file.preferred, weight_file.layout_name)
            candidates = [self.weights_dir / name for name in names]
            for candidate in candidates:
                if candidate.is_file():
                    return candidate, []
            return None, [str(c) for c in candidates]
        from huggingface_hub import constants, try_to_load_from_cache

        places = []
        for source in self.sources(weight_file):
            if source.repo_id:
                cached = try_to_load_from_cache(source.repo_id, source.filename, revision=source.revision,
                                                repo_type=source.repo_type)
                if isinstance(cached, str) and Path(cached).is_file():
                    return Path(cached), []
                places.append(f"Hugging Face cache {constants.HF_HUB_CACHE} ({source.repo_path}@{source.revision})")
            else:
                target = _torch_hub_dir() / weight_file.layout_name
                if target.is_file():
                    return target, []
                places.append(f"torch hub cache {target}")
        for root in self._record_roots():  # a download from a source that is no longer configured
            entry = _read_record(root).get(weight_file.layout_name)
            if isinstance(entry, dict) and (path := _recorded_path(root, entry)) and path.is_file():
                return path, []
        return None, list(dict.fromkeys(places))

    def _checksums(self) -> dict | None:
        """The folder's checksum file (None when there is none)."""
        if self.weights_dir is None or not (self.weights_dir / CHECKSUMS_NAME).is_file():
            return None
        try:
            checksums = json.loads((self.weights_dir / CHECKSUMS_NAME).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{self.weights_dir / CHECKSUMS_NAME} is not valid JSON ({error}); delete or "
                             "regenerate it.") from None
        if not isinstance(checksums, dict) or not isinstance(checksums.get("sha256", {}), dict):
            raise ValueError(f"{self.weights_dir / CHECKSUMS_NAME} is malformed; delete or regenerate it.")
        return checksums

    # Download -----------------------------------------------------------------------------------
    def _download(self, weight_file: WeightFile, into: Path | None) -> Path:
        """Fetch one file from its sources in turn into ``into`` (weights-folder layout) or the caches.

        Each downloaded file is checked (:meth:`_check_download`) before it is accepted and recorded.

        Raises:
            DownloadFailedError: every source failed; one line per source.
        """
        sources = self.sources(weight_file)
        attempts = []
        for number, source in enumerate(sources, 1):
            self._report(f"{weight_file.description}: downloading from {source} ({number} of {len(sources)})")
            try:
                path = self._fetch(weight_file, source, into)
                digest = self._check_download(weight_file, path, into)
                if into is not None:  # checked while staged: a bad file never replaces a good one
                    path = _move_into_place(path, into / weight_file.layout_name)
            except Exception as error:  # noqa: BLE001 - reported, then the next source
                attempts.append(f"{source}: {_short_error(error)}")
                more = "; trying the next source" if number < len(sources) else ""
                self._report(f"  failed: {_short_error(error)}{more}")
                continue
            self._write_record(weight_file, path, source, digest, into)
            self._report(f"  saved {path} (SHA-256 {digest})")
            return path
        raise DownloadFailedError(attempts)

    def _fetch(self, weight_file: WeightFile, source: Source, into: Path | None) -> Path:
        """Download from one source: into the cache, or into a staging folder of ``into``."""
        staging = into / ".vallex-download" if into is not None else None
        if source.repo_id:
            return self._fetch_hf(source, staging)
        return self._fetch_url(weight_file, source, staging)

    def _fetch_hf(self, source: Source, staging: Path | None) -> Path:
        from huggingface_hub import constants, hf_hub_download

        endpoints: list[str | None] = [None]  # None: HF_ENDPOINT or huggingface.co, as huggingface_hub has it
        if os.environ.get(HF_MIRROR_ENV):
            endpoints.append(os.environ[HF_MIRROR_ENV])
        last_error: Exception = ConnectionError("no Hugging Face endpoint")
        for endpoint in endpoints:
            # The endpoint probed is the one used (huggingface_hub's URL template is fixed at its import).
            endpoint = endpoint or constants.ENDPOINT
            # huggingface_hub retries an unreachable host for ~25 s per file; a 5 s probe fails faster.
            unreachable = self._unreachable(endpoint)
            if unreachable:
                last_error = ConnectionError(unreachable)
                continue
            try:
                return Path(hf_hub_download(source.repo_id, source.filename, revision=source.revision,
                                            repo_type=source.repo_type, endpoint=endpoint, local_dir=staging))
            except Exception as error:  # noqa: BLE001 - try the next endpoint
                last_error = error
        raise last_error

    def _fetch_url(self, weight_file: WeightFile, source: Source, staging: Path | None) -> Path:
        import torch

        target_dir = staging if staging is not None else _torch_hub_dir()
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / weight_file.default_filename
        unreachable = self._unreachable(str(source.url))
        if unreachable:
            raise ConnectionError(unreachable)
        # Checks the SHA-256 while writing to a temporary file, then renames it into place.
        torch.hub.download_url_to_file(str(source.url), str(target), hash_prefix=weight_file.sha256, progress=True)
        return target

    def _check_download(self, weight_file: WeightFile, path: Path, into: Path | None) -> str:
        """Check a downloaded file for what it must be; return its SHA-256. A cached file that fails is removed."""
        try:
            digest = self.sha256(path)
            published = (weight_file.sha256 or "").lower()
            other_bytes = bool(published) and not digest.startswith(published)
            if other_bytes and not weight_file.same_tensors_suffice:
                raise ValueError(f"SHA-256 {digest[:16]}... is not the published {published[:16]}...")
            _check_form(weight_file, path, into)
            if other_bytes:
                from vallex.weights.checkpoint import check_published_tensors

                tensors = check_published_tensors(path, digest, published)
                self._report(f"  other bytes than the published file, the published tensors (state-dict digest "
                             f"{tensors[:16]}...)")
        except Exception:
            if into is None:
                _discard_cached(path)
            raise
        return digest

    def _unreachable(self, url: str, timeout: float = 5.0) -> str | None:
        """None if a TCP connection to ``url``'s host opens, else why not (remembered per host)."""
        import socket
        from urllib.parse import urlsplit
        from urllib.request import getproxies

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or getproxies():
            return None  # file:// URLs, or a proxy (a direct probe proves nothing): let the downloader report
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = f"{parts.hostname}:{port}"
        if key not in self._reachability:
            try:
                socket.create_connection((parts.hostname, port), timeout=timeout).close()
                self._reachability[key] = None
            except OSError as error:
                self._reachability[key] = f"cannot reach {key} ({error}); no network?"
        return self._reachability[key]

    # Records ------------------------------------------------------------------------------------
    def _record_roots(self) -> list[Path]:
        if self.weights_dir is not None:
            return [self.weights_dir]
        from huggingface_hub import constants

        return [Path(constants.HF_HUB_CACHE), _torch_hub_dir()]

    def _write_record(self, weight_file: WeightFile, path: Path, source: Source, digest: str,
                      into: Path | None) -> None:
        """Record the download's source, size and SHA-256 in the folder (or cache root) that holds it."""
        from vallex.files import write_text_atomic

        if into is not None:
            root = into
        else:
            root = next((r for r in self._record_roots() if path.absolute().is_relative_to(r.absolute())),
                        path.parent)
        records = _read_record(root)
        stored = path.absolute().relative_to(root.absolute()) if path.absolute().is_relative_to(root.absolute()) \
            else path.absolute()
        records[weight_file.layout_name] = {
            "path": stored.as_posix(), "source": str(source), "sha256": digest, "size": path.stat().st_size,
            "downloaded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(root / SOURCES_RECORD_NAME, json.dumps(records, indent=2, ensure_ascii=False) + "\n")

    # Verification -------------------------------------------------------------------------------
    def _verify(self, weight_file: WeightFile, path: Path, checksums: dict | None) -> None:
        """Check the file's SHA-256 against the checksum file (random weights) or the published one."""
        expected = None
        if checksums is not None:
            expected = checksums.get("sha256", {}).get(path.relative_to(self.weights_dir).as_posix())
        if expected is None and not (checksums and checksums.get("random")) and not weight_file.same_tensors_suffice:
            expected = weight_file.sha256
        if not expected:
            return
        actual = self.sha256(path)
        if not actual.startswith(expected.lower()):
            raise ValueError(
                f"Checksum mismatch for {path}: SHA-256 {actual[:16]}... does not start with {expected[:16]}. "
                "The file is damaged or not the expected one; delete it and download it again."
            )

    # Messages -----------------------------------------------------------------------------------
    def _missing_message(self, missing: list[tuple[WeightFile, list[str], list[str]]], download: bool) -> str:
        if self.weights_dir is not None:
            why = f"in the weights folder {self.weights_dir} (set by --weights-dir or {WEIGHTS_DIR_ENV})"
        elif is_offline():
            why = "and downloading is off (offline: HF_HUB_OFFLINE or VALLEX_OFFLINE is set)"
        elif not download:
            why = "and downloading was not allowed"
        else:
            why = "and could not be downloaded"
        lines = [f"{len(missing)} model file(s) not found {why}:"]
        for weight_file, places, attempts in missing:
            lines.append(f"  - {weight_file.description}: {weight_file.layout_name}")
            lines.append(f"      looked in: {'; '.join(places)}")
            if attempts:
                lines.append("      tried, in order:")
                lines.extend(f"        {attempt}" for attempt in attempts)
            else:
                lines.append(f"      sources: {self.sources_text(weight_file)}")
        lines.append("How to provide them:")
        if self.weights_dir is not None:
            lines.append(f"  * copy each file to {self.weights_dir}/<name shown above> "
                         f"(or run `vallex download --weights-dir {self.weights_dir}` with network access);")
        else:
            lines.append("  * run `vallex download` once with network access (fills the caches), or")
        lines.append("  * " + _by_hand_hint(self.weights_dir))
        lines.append(f"  * another public copy: set {CHECKPOINT_REPO_ENV}=owner/name[/file][@revision] "
                     f"({VOCOS_REPO_ENV}, {ENCODEC_URL_ENV} likewise); {_mirror_hint()}")
        lines.append("  * for offline development only: `vallex make-random-weights DIR` (outputs are noise).")
        return "\n".join(lines)


def _check_form(weight_file: WeightFile, path: Path, into: Path | None) -> None:
    """Raise ValueError unless ``path`` is what ``weight_file`` must be (checkpoint keys and shapes, Vocos forms)."""
    if weight_file.component == "vallex":
        from vallex.config import VallexConfig
        from vallex.weights.checkpoint import check_checkpoint

        config_file = (into / VALLEX_CONFIG_NAME) if into is not None else None
        check_checkpoint(path, VallexConfig.from_json(config_file) if config_file and config_file.is_file() else None)
    elif weight_file.layout_name.endswith(".yaml"):
        import yaml

        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(config, dict) or not {"backbone", "head"} <= set(config):
            raise ValueError(f"{path} is not a Vocos configuration (no backbone and head sections).")
    elif weight_file.component == "vocos":
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path} is not a Vocos state dict of tensors.")


def _move_into_place(staged: Path, target: Path) -> Path:
    """Move a checked download from the staging folder to its layout name, and remove the staging folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)
    staging = next(p for p in staged.parents if p.name == ".vallex-download")
    shutil.rmtree(staging, ignore_errors=True)
    return target


def _discard_cached(path: Path) -> None:
    """Remove a rejected file from the cache (for the Hugging Face cache: its snapshot link and blob)."""
    blob = path.resolve()
    for item in {path, blob}:
        try:
            item.unlink()
        except OSError:
            pass


def _read_record(root: Path) -> dict:
    try:
        records = json.loads((root / SOURCES_RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return records if isinstance(records, dict) else {}


def _recorded_path(root: Path, entry: dict) -> Path | None:
    stored = entry.get("path")
    return (root / stored) if isinstance(stored, str) and stored else None


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _check_components(components: Iterable[str]) -> tuple[str, ...]:
    wanted = tuple(dict.fromkeys(components))
    unknown = [c for c in wanted if c not in COMPONENTS]
    if unknown or not wanted:
        raise ValueError(f"Unknown model component(s) {unknown or '(none)'}: choose from {', '.join(COMPONENTS)}.")
    return wanted


def _torch_hub_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``, computed as torch does when torch is not imported yet (fast)."""
    import sys

    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir()) / "checkpoints"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("TORCH_HOME", cache / "torch")).expanduser() / "hub" / "checkpoints"


def _short_error(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:400]


def _mirror_hint() -> str:
    return (f"behind a firewall: set HF_ENDPOINT (or {HF_MIRROR_ENV}) to a Hugging Face mirror, e.g. "
            f"https://hf-mirror.com, and {ENCODEC_URL_ENV} to a copy of {ENCODEC_CHECKPOINT.layout_name};")


def _by_hand_hint(weights_dir: Path | None) -> str:
    folder = weights_dir or "DIR"
    return (f"by hand: get each file from any copy you trust, put it in {folder} under the name shown "
            f"(`vallex download --help` shows the layout) and set {WEIGHTS_DIR_ENV}={folder} (or --weights-dir); "
            "the VALL-E X checkpoint is checked key by key when loaded, EnCodec and Vocos by their SHA-256;")
