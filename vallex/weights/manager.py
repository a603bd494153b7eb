"""The weights manager: finds each model file (the weights folder, the caches, the download record), downloads
what is missing when allowed, verifies what it returns, and says in one message what is missing and how to get it.

    paths = resolve_weights()                      # WeightPaths of the three models, downloaded if needed
    manager = WeightsManager("/data/weights")      # a weights folder; nothing downloaded into the caches
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vallex.weights.checks import (
    RANDOM,
    UNCHECKED,
    checkpoint_config_file,
    identify,
    read_checksums,
    sha256_file,
    warn_random_weights,
)
from vallex.weights.download import Downloader, DownloadFailedError
from vallex.weights.environment import (
    CHECKPOINT_ENV,
    CHECKPOINT_REPO_ENV,
    ENCODEC_URL_ENV,
    HF_MIRROR_ENV,
    VOCOS_REPO_ENV,
    WEIGHTS_DIR_ENV,
    default_checkpoint,
    default_weights_dir,
    is_offline,
    torch_hub_dir,
)
from vallex.weights.record import record_roots, recorded_files, write_record
from vallex.weights.sources import (
    COMPONENTS,
    ENCODEC_CHECKPOINT,
    VALLEX_CHECKPOINT,
    VALLEX_CONFIG_NAME,
    VOCOS_CONFIG,
    VOCOS_MODEL,
    WEIGHT_FILES,
    Source,
    WeightFile,
    sources_for,
)

if TYPE_CHECKING:
    from vallex.config import VallexConfig


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
    #: True when the ``vallex-config.json`` beside the checkpoint is the one make-random-weights wrote for the random
    #: checkpoint that another has since replaced (:func:`~vallex.weights.checks.checkpoint_config_file`): the public
    #: sizes are used instead.
    public_sizes: bool = False

    @property
    def vallex_config(self) -> VallexConfig | None:
        """The model sizes: from ``vallex-config.json`` beside the checkpoint, or the public ones (``public_sizes``);
        None: whatever the checkpoint's loader finds (:func:`vallex.weights.checkpoint.load_model`)."""
        from vallex.config import VallexConfig

        if self.public_sizes:
            return VallexConfig.public()
        return VallexConfig.from_json(self.vallex_config_path) if self.vallex_config_path is not None else None


def resolve_weights(
    weights_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    components: Iterable[str] = COMPONENTS,
    checkpoint: str | os.PathLike | None = None,
) -> WeightPaths:
    """Find (and, when allowed, download) the files of ``components``; see :class:`WeightsManager`."""
    return WeightsManager(weights_dir, checkpoint=checkpoint).resolve(components, download=download)


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
        self._downloader = Downloader(self._report, self.sha256)

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
        checksums = read_checksums(self.weights_dir)
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
        kinds = {f.layout_name: identify(f, found[f.layout_name], self.sha256, checksums, self.weights_dir)
                 for f in files}
        # Random while any file is still one make-random-weights wrote (or cannot be told from one): a folder
        # whose random files were all replaced by the published ones is no longer noise.
        random = bool(checksums and checksums.get("random")) and any(k in (RANDOM, UNCHECKED) for k in kinds.values())
        if random:
            # A warning, not a log line: Python shows it once per folder however often the folder is resolved.
            warn_random_weights(self.weights_dir)
        checkpoint = found.get(VALLEX_CHECKPOINT.layout_name)
        config_path, public_sizes = None, False
        if checkpoint is not None:
            kind = kinds[VALLEX_CHECKPOINT.layout_name]
            config_path = checkpoint_config_file(checkpoint.parent, kind, self.sha256, checksums)
            public_sizes = config_path is None and checkpoint.with_name(VALLEX_CONFIG_NAME).is_file()
        if own_checkpoint is not None:
            checkpoint = own_checkpoint  # its configuration: load_model finds the .json written beside it
        return WeightPaths(
            vallex=checkpoint, vallex_config_path=config_path,
            encodec=found.get(ENCODEC_CHECKPOINT.layout_name), vocos_config=found.get(VOCOS_CONFIG.layout_name),
            vocos_model=found.get(VOCOS_MODEL.layout_name), random=random, public_sizes=public_sizes,
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
                failures.append(f"  - {weight_file.label}: every source failed:")
                failures.extend(f"      {attempt}" for attempt in error.attempts)
        if failures:
            raise WeightsNotFoundError(
                "Some downloads failed:\n" + "\n".join(failures) + "\n" + _by_hand_hint(self.weights_dir)
            )
        return self.resolve(wanted, download=False)

    def sources(self, weight_file: WeightFile) -> list[Source]:
        """Where ``weight_file`` is downloaded from, in order: the user's own sources, then the built-in ones."""
        return sources_for(weight_file, self.checkpoint_repo)

    def sources_text(self, weight_file: WeightFile) -> str:
        """:meth:`sources` as one line, for messages."""
        return "; then ".join(str(s) for s in self.sources(weight_file))

    def status(self) -> list[tuple[WeightFile, Path | None]]:
        """(file, local path or None) for every file, without network access."""
        return [(f, self._find_local(f)[0]) for f in WEIGHT_FILES]

    def record(self, weight_file: WeightFile, path: Path) -> dict | None:
        """What was recorded when ``path`` was downloaded (source, sha256, size, downloaded), or None."""
        return next((entry for entry, recorded in recorded_files(record_roots(self.weights_dir), weight_file)
                     if recorded == path), None)

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
                target = torch_hub_dir() / weight_file.layout_name
                if target.is_file():
                    return target, []
                places.append(f"torch hub cache {target}")
        # a download from a source that is no longer configured
        for _, path in recorded_files(record_roots(self.weights_dir), weight_file):
            if path.is_file():
                return path, []
        return None, list(dict.fromkeys(places))

    # Download -----------------------------------------------------------------------------------
    def _download(self, weight_file: WeightFile, into: Path | None) -> Path:
        """Fetch one file from its sources in turn into ``into`` (weights-folder layout) or the caches, checked,
        and record where it came from.

        Raises:
            DownloadFailedError: every source failed; one line per source.
        """
        path, source, digest = self._downloader.download(weight_file, self.sources(weight_file), into)
        write_record([into] if into is not None else record_roots(self.weights_dir), weight_file, path, source,
                     digest)
        self._report(f"  saved {path} (SHA-256 {digest})")
        return path

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
            lines.append(f"  - {weight_file.label}: {weight_file.layout_name}")
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


def _check_components(components: Iterable[str]) -> tuple[str, ...]:
    wanted = tuple(dict.fromkeys(components))
    unknown = [c for c in wanted if c not in COMPONENTS]
    if unknown or not wanted:
        raise ValueError(f"Unknown model component(s) {unknown or '(none)'}: choose from {', '.join(COMPONENTS)}.")
    return wanted


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _mirror_hint() -> str:
    return (f"behind a firewall: set HF_ENDPOINT (or {HF_MIRROR_ENV}) to a Hugging Face mirror, e.g. "
            f"https://hf-mirror.com, and {ENCODEC_URL_ENV} to a copy of {ENCODEC_CHECKPOINT.layout_name};")


def _by_hand_hint(weights_dir: Path | None) -> str:
    folder = weights_dir or "DIR"
    return (f"by hand: get each file from any copy you trust, put it in {folder} under the name shown "
            f"(`vallex download --help` shows the layout) and set {WEIGHTS_DIR_ENV}={folder} (or --weights-dir); "
            "the VALL-E X checkpoint is checked key by key when loaded, EnCodec and Vocos by their SHA-256;")
