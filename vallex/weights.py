"""Model weights: where each file comes from, where it is kept, and how it is checked.

Three models are needed (five files). Source, then the name in a weights folder (``--weights-dir``):

* VALL-E X: Hugging Face ``Plachta/VALL-E-X``, file ``vallex-checkpoint.pt``
  → ``vallex-checkpoint.pt`` or ``vallex-checkpoint.safetensors`` (preferred when both are there), plus optional
  ``vallex-config.json``
  (model sizes; absent means the public checkpoint's).
* EnCodec 24 kHz: ``https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th``
  → ``encodec_24khz-d7cc33bc.th``.
* Vocos: Hugging Face ``charactr/vocos-encodec-24khz``, files ``config.yaml`` and ``pytorch_model.bin``
  → ``vocos-encodec-24khz/config.yaml`` and ``vocos-encodec-24khz/pytorch_model.bin``.

Where files are looked for:

* ``weights_dir`` (``--weights-dir`` or ``$VALLEX_WEIGHTS_DIR``) if given: that folder only, in the layout
  above; nothing is downloaded into the caches. ``vallex download --weights-dir DIR`` fills such a folder.
* otherwise the standard caches: the Hugging Face hub cache (``$HF_HOME``/``$HF_HUB_CACHE``, default
  ``~/.cache/huggingface/hub``) and torch hub (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch``);
  missing files are downloaded there with progress bars, unless offline (``HF_HUB_OFFLINE=1`` or
  ``VALLEX_OFFLINE=1``), where the lookup fails at once with one message listing every missing file.

Mirrors: ``HF_ENDPOINT`` (read by huggingface_hub, e.g. ``https://hf-mirror.com``) replaces the Hugging Face
endpoint; ``VALLEX_HF_MIRROR`` is tried after it when a download fails; ``VALLEX_ENCODEC_URL`` is tried
after the official EnCodec URL.

Integrity: EnCodec's file name carries the first 8 hex digits of its SHA-256, checked on every load as
torch hub does. No SHA-256 is published for the VALL-E X and Vocos files, and they are not pinned either:
they are fetched from the tip of each repository's ``main`` branch (:data:`TRACKED_REVISION`), so a change
upstream would arrive unchecked. The VALL-E X checkpoint is read with ``weights_only=True`` and checked key
by key and shape by shape regardless.
A folder made by ``vallex make-random-weights`` carries a checksum file with the SHA-256 of each of its files,
which are checked instead.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vallex.config import VallexConfig

_LOG = logging.getLogger(__name__)

#: Environment variables (documented in the module docstring).
WEIGHTS_DIR_ENV = "VALLEX_WEIGHTS_DIR"
OFFLINE_ENV = "VALLEX_OFFLINE"
HF_MIRROR_ENV = "VALLEX_HF_MIRROR"
ENCODEC_URL_ENV = "VALLEX_ENCODEC_URL"

#: The checksum file of a random-weights folder (written by :func:`vallex.random_weights.make_random_weights`):
#: the SHA-256 of every file in the folder, and ``"random": true``, which makes every use warn.
CHECKSUMS_NAME = "vallex-weights.json"
VALLEX_CONFIG_NAME = "vallex-config.json"
VOCOS_SUBDIR = "vocos-encodec-24khz"

COMPONENTS: tuple[str, ...] = ("vallex", "encodec", "vocos")

NOISE_WARNING = ("These are RANDOM weights for development and tests: every output made with them is noise, "
                 "not speech.")


@dataclass(frozen=True)
class WeightFile:
    """One file of one model: where it comes from and where it lives in a weights folder."""

    component: str  # "vallex" | "encodec" | "vocos"
    description: str
    layout_name: str  # path inside a weights folder
    repo_id: str | None = None  # Hugging Face source...
    repo_filename: str | None = None
    revision: str | None = None
    url: str | None = None  # ...or a plain URL (saved into the torch hub cache)
    sha256_prefix: str | None = None  # the known leading hex digits of the file's SHA-256
    #: Names in a weights folder that are tried BEFORE ``layout_name`` (e.g. a converted, pickle-free copy).
    preferred: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        if self.repo_id:
            return f"https://huggingface.co/{self.repo_id} (file {self.repo_filename}, revision {self.revision})"
        return str(self.url)


#: The Hugging Face revision downloaded: the ``main`` branch, i.e. whatever it holds at the time, not a fixed
#: snapshot. No commit hash could be looked up when this was written (no network); putting one here
#: (hf_hub_download accepts either) would pin a reviewed snapshot.
TRACKED_REVISION = "main"

VALLEX_CHECKPOINT = WeightFile(
    component="vallex", description="VALL-E X checkpoint (1.48 GB)", layout_name="vallex-checkpoint.pt",
    repo_id="Plachta/VALL-E-X", repo_filename="vallex-checkpoint.pt", revision=TRACKED_REVISION,
    preferred=("vallex-checkpoint.safetensors",),  # made by `vallex convert-checkpoint`: no pickle, mmapped
)
ENCODEC_CHECKPOINT = WeightFile(
    component="encodec", description="EnCodec 24 kHz (89 MB)", layout_name="encodec_24khz-d7cc33bc.th",
    url="https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th", sha256_prefix="d7cc33bc",
)
VOCOS_CONFIG = WeightFile(
    component="vocos", description="Vocos config", layout_name=f"{VOCOS_SUBDIR}/config.yaml",
    repo_id="charactr/vocos-encodec-24khz", repo_filename="config.yaml", revision=TRACKED_REVISION,
)
VOCOS_MODEL = WeightFile(
    component="vocos", description="Vocos weights (40 MB)", layout_name=f"{VOCOS_SUBDIR}/pytorch_model.bin",
    repo_id="charactr/vocos-encodec-24khz", repo_filename="pytorch_model.bin", revision=TRACKED_REVISION,
)
WEIGHT_FILES: tuple[WeightFile, ...] = (VALLEX_CHECKPOINT, ENCODEC_CHECKPOINT, VOCOS_CONFIG, VOCOS_MODEL)


class RandomWeightsWarning(UserWarning):
    """The weights folder was made by ``vallex.random_weights.make_random_weights``: outputs are noise."""


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


def resolve_weights(
    weights_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    components: Iterable[str] = COMPONENTS,
) -> WeightPaths:
    """Find (and, when allowed, download) the files of ``components``; see :class:`WeightsManager`."""
    return WeightsManager(weights_dir).resolve(components, download=download)


class WeightsManager:
    """Locates, downloads and verifies model files.

    Args:
        weights_dir: a folder in the documented layout; default ``$VALLEX_WEIGHTS_DIR``; None: the caches.
    """

    def __init__(self, weights_dir: str | os.PathLike | None = None):
        self.weights_dir: Path | None = Path(weights_dir).expanduser() if weights_dir else default_weights_dir()
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
        files = [f for f in WEIGHT_FILES if f.component in wanted]
        found: dict[str, Path] = {}  # layout name -> local path
        missing: list[tuple[WeightFile, list[str], str | None]] = []
        checksums = self._checksums()
        for weight_file in files:
            path, places = self._find_local(weight_file)
            if path is None:
                missing.append((weight_file, places, None))
            else:
                found[weight_file.layout_name] = path
        if missing and download and self.weights_dir is None and not is_offline():
            still_missing = []
            for weight_file, places, _ in missing:
                try:
                    found[weight_file.layout_name] = self._download(weight_file, into=None)
                except Exception as error:  # noqa: BLE001 - reported together below
                    still_missing.append((weight_file, places, _short_error(error)))
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
        return WeightPaths(
            vallex=checkpoint, vallex_config_path=config_path,
            encodec=found.get(ENCODEC_CHECKPOINT.layout_name), vocos_config=found.get(VOCOS_CONFIG.layout_name),
            vocos_model=found.get(VOCOS_MODEL.layout_name), random=bool(checksums and checksums.get("random")),
        )

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
            except Exception as error:  # noqa: BLE001 - reported together below
                failures.append(f"  - {weight_file.description}: {weight_file.source}: {_short_error(error)}")
        if failures:
            raise WeightsNotFoundError(
                "Some downloads failed:\n" + "\n".join(failures) + "\n" + _mirror_hint()
            )
        return self.resolve(wanted, download=False)

    def status(self) -> list[tuple[WeightFile, Path | None]]:
        """(file, local path or None) for every file, without network access."""
        return [(f, self._find_local(f)[0]) for f in WEIGHT_FILES]

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
        if weight_file.repo_id:
            from huggingface_hub import constants, try_to_load_from_cache

            cached = try_to_load_from_cache(weight_file.repo_id, weight_file.repo_filename,
                                            revision=weight_file.revision)
            if isinstance(cached, str) and Path(cached).is_file():
                return Path(cached), []
            return None, [f"Hugging Face cache {constants.HF_HUB_CACHE} ({weight_file.repo_id}@{weight_file.revision})"]
        target = _torch_hub_dir() / weight_file.layout_name
        return (target, []) if target.is_file() else (None, [f"torch hub cache {target}"])

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
        """Fetch one file into ``into`` (weights-folder layout) or the cache; return its path."""
        if weight_file.repo_id:
            return self._download_hf(weight_file, into)
        return self._download_url(weight_file, into)

    def _download_hf(self, weight_file: WeightFile, into: Path | None) -> Path:
        from huggingface_hub import constants, hf_hub_download

        endpoints: list[str | None] = [None]  # None: HF_ENDPOINT or huggingface.co
        if os.environ.get(HF_MIRROR_ENV):
            endpoints.append(os.environ[HF_MIRROR_ENV])
        local_dir = None
        if into is not None:
            local_dir = (into / weight_file.layout_name).parent
        last_error: Exception | None = None
        for endpoint in endpoints:
            # huggingface_hub retries an unreachable host for ~25 s per file; a 5 s probe fails faster.
            unreachable = self._unreachable(endpoint or constants.ENDPOINT)
            if unreachable:
                last_error = ConnectionError(unreachable)
                continue
            try:
                _LOG.info("Downloading %s from %s", weight_file.description, endpoint or "the Hugging Face hub")
                # local_dir keeps the repository file name, which is the layout name in that folder.
                return Path(hf_hub_download(weight_file.repo_id, weight_file.repo_filename,
                                            revision=weight_file.revision, endpoint=endpoint, local_dir=local_dir))
            except Exception as error:  # noqa: BLE001 - try the next endpoint
                last_error = error
        assert last_error is not None
        raise last_error

    def _download_url(self, weight_file: WeightFile, into: Path | None) -> Path:
        import torch

        target_dir = into if into is not None else _torch_hub_dir()
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / weight_file.layout_name
        urls = [weight_file.url] + ([os.environ[ENCODEC_URL_ENV]] if os.environ.get(ENCODEC_URL_ENV) else [])
        last_error: Exception | None = None
        for url in urls:
            unreachable = self._unreachable(url)
            if unreachable:
                last_error = ConnectionError(unreachable)
                continue
            try:
                _LOG.info("Downloading %s from %s", weight_file.description, url)
                # Checks the SHA-256 prefix while writing to a temporary file, then renames it into place.
                torch.hub.download_url_to_file(url, str(target), hash_prefix=weight_file.sha256_prefix,
                                               progress=True)
                return target
            except Exception as error:  # noqa: BLE001 - try the mirror
                last_error = error
        assert last_error is not None
        raise last_error

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

    # Verification -------------------------------------------------------------------------------
    def _verify(self, weight_file: WeightFile, path: Path, checksums: dict | None) -> None:
        """Check the file's SHA-256 against the checksum file (random weights) or the published prefix."""
        expected = None
        if checksums is not None:
            expected = checksums.get("sha256", {}).get(path.relative_to(self.weights_dir).as_posix())
        if expected is None and not (checksums and checksums.get("random")):
            expected = weight_file.sha256_prefix
        if not expected:
            return
        actual = self._sha256(path)
        if not actual.startswith(expected.lower()):
            raise ValueError(
                f"Checksum mismatch for {path}: SHA-256 {actual[:16]}... does not start with {expected[:16]}. "
                "The file is damaged or not the expected one; delete it and download it again."
            )

    def _sha256(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._verified:
            self._verified[key] = sha256_file(path)
        return self._verified[key]

    # Messages -----------------------------------------------------------------------------------
    def _missing_message(self, missing: list[tuple[WeightFile, list[str], str | None]], download: bool) -> str:
        if self.weights_dir is not None:
            why = f"in the weights folder {self.weights_dir} (set by --weights-dir or {WEIGHTS_DIR_ENV})"
        elif is_offline():
            why = "and downloading is off (offline: HF_HUB_OFFLINE or VALLEX_OFFLINE is set)"
        elif not download:
            why = "and downloading was not allowed"
        else:
            why = "and could not be downloaded"
        lines = [f"{len(missing)} model file(s) not found {why}:"]
        for weight_file, places, error in missing:
            lines.append(f"  - {weight_file.description}: {weight_file.layout_name}")
            lines.append(f"      looked in: {'; '.join(places)}")
            lines.append(f"      source: {weight_file.source}")
            if error:
                lines.append(f"      download error: {error}")
        lines.append("How to provide them:")
        if self.weights_dir is not None:
            lines.append(f"  * copy each file to {self.weights_dir}/<name shown above> "
                         f"(or run `vallex download --weights-dir {self.weights_dir}` with network access);")
        else:
            lines.append("  * run `vallex download` once with network access (fills the caches), or")
            lines.append(f"  * put the files in a folder with the names shown above and pass --weights-dir DIR or "
                         f"set {WEIGHTS_DIR_ENV}=DIR;")
        lines.append("  * " + _mirror_hint())
        lines.append("  * for offline development only: `vallex make-random-weights DIR` (outputs are noise).")
        return "\n".join(lines)


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
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _mirror_hint() -> str:
    return (f"behind a firewall: set HF_ENDPOINT (or {HF_MIRROR_ENV}) to a Hugging Face mirror, e.g. "
            f"https://hf-mirror.com, and {ENCODEC_URL_ENV} to a copy of {ENCODEC_CHECKPOINT.layout_name};")
