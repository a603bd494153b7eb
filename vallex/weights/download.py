"""Downloading one model file: its sources tried in turn, each download checked before it is accepted.

A Hugging Face source goes through ``hf_hub_download`` (into the hub cache, or a staging folder of the weights
folder), trying ``HF_ENDPOINT`` (or huggingface.co) and then ``VALLEX_HF_MIRROR``; a URL through torch hub's
downloader. An unreachable host is found by a 5 s TCP probe instead of the downloaders' long retries.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from vallex.weights.checks import PUBLISHED, check_form, checkpoint_config_file, read_checksums
from vallex.weights.environment import HF_MIRROR_ENV, torch_hub_dir
from vallex.weights.sources import Source, WeightFile

#: The folder inside the weights folder where a download waits until it is checked.
_STAGING_NAME = ".vallex-download"


class DownloadFailedError(RuntimeError):
    """Every source of one file failed; ``attempts`` holds one line per source: the source and its error."""

    def __init__(self, attempts: list[str]) -> None:
        super().__init__("; ".join(attempts) or "no source to download from")
        self.attempts = attempts


class Downloader:
    """Fetches files from their sources and checks them; remembers which hosts are unreachable.

    Args:
        report: where the progress lines go.
        sha256: hashes a file (the weights manager's, which hashes each file once).
    """

    def __init__(self, report: Callable[[str], None], sha256: Callable[[Path], str]) -> None:
        self._report = report
        self._sha256 = sha256
        self._reachability: dict[str, str | None] = {}  # host:port -> None (reachable) or the error

    def download(self, weight_file: WeightFile, sources: list[Source], into: Path | None) -> tuple[Path, Source, str]:
        """Fetch ``weight_file`` from ``sources`` in turn into ``into`` (weights-folder layout) or the caches.

        Each downloaded file is checked (:meth:`_check`) before it is accepted.

        Returns:
            The file's path, the source it came from and its SHA-256.

        Raises:
            DownloadFailedError: every source failed; one line per source.
        """
        attempts = []
        for number, source in enumerate(sources, 1):
            self._report(f"{weight_file.label}: downloading from {source} ({number} of {len(sources)})")
            try:
                path = self._fetch(weight_file, source, into)
                digest = self._check(weight_file, path, into)
                if into is not None:  # checked while staged: a bad file never replaces a good one
                    path = _move_into_place(path, into / weight_file.layout_name)
            except Exception as error:  # noqa: BLE001 - reported, then the next source
                attempts.append(f"{source}: {_short_error(error)}")
                more = "; trying the next source" if number < len(sources) else ""
                self._report(f"  failed: {_short_error(error)}{more}")
                continue
            return path, source, digest
        raise DownloadFailedError(attempts)

    def _fetch(self, weight_file: WeightFile, source: Source, into: Path | None) -> Path:
        """Download from one source: into the cache, or into a staging folder of ``into``."""
        staging = into / _STAGING_NAME if into is not None else None
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

        target_dir = staging if staging is not None else torch_hub_dir()
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / weight_file.default_filename
        unreachable = self._unreachable(str(source.url))
        if unreachable:
            raise ConnectionError(unreachable)
        # Checks the SHA-256 while writing to a temporary file, then renames it into place.
        torch.hub.download_url_to_file(str(source.url), str(target), hash_prefix=weight_file.sha256, progress=True)
        return target

    def _check(self, weight_file: WeightFile, path: Path, into: Path | None) -> str:
        """Check a downloaded file for what it must be; return its SHA-256. A cached file that fails is removed."""
        try:
            digest = self._sha256(path)
            published = (weight_file.sha256 or "").lower()
            other_bytes = bool(published) and not digest.startswith(published)
            if other_bytes and not weight_file.same_tensors_suffice:
                raise ValueError(f"SHA-256 {digest[:16]}... is not the published {published[:16]}...")
            # the published file (or its tensors): a random-weights folder's sizes are not its sizes
            check_form(weight_file, path, checkpoint_config_file(into, PUBLISHED, self._sha256, read_checksums(into)))
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


def _move_into_place(staged: Path, target: Path) -> Path:
    """Move a checked download from the staging folder to its layout name, and remove the staging folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)
    staging = next(p for p in staged.parents if p.name == _STAGING_NAME)
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


def _short_error(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:400]
