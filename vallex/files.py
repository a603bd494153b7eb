"""Writing files atomically: a reader, or the next run after a crash, sees the old file or the new one.

    with atomic_path("out.wav") as tmp:      # for writers that take a file name (soundfile, torch.save)
        soundfile.write(tmp, samples, 24000, format="WAV")
    with atomic_open("index.json", "w", encoding="utf-8") as handle:   # for writers that take a handle
        json.dump(index, handle)
    write_bytes_atomic("me.npz", data); write_text_atomic("last.json", text)

Each writes a temporary file beside the target (same folder, so the rename never crosses file systems),
named ``.<name>.<random>.partial``, flushes it to disk (fsync), and renames it over the target with
``os.replace``, which is atomic on POSIX and Windows; the folder is then fsynced so that the rename
itself survives a power cut. If anything fails before the rename (an exception in the ``with`` block,
Ctrl-C, a full disk), the temporary file is removed and an existing target is left untouched.

When the system refuses the write (a full disk, a quota, a read-only folder, no permission, a file size
limit), the error is a :class:`WriteError`: one line naming the target and the cause. The writers' own
wrappers of those errors count too: soundfile's ``LibsndfileError`` ("System error"), torch's
``PytorchStreamWriter``/``inline_container`` RuntimeError and safetensors' I/O error keep no ``errno`` (or
bury it in their text), so the cause is then read from the error's text or from the folder (no free space
left, or the temporary file stopped at the process's file size limit).

The temporary file is created like ``open(path, "w")`` creates one (mode 0o666 minus the umask), so the
target keeps the permissions a plain write would give it. The target's folder must exist: :func:`make_folder`
makes one (a refusal is a :class:`WriteError` too). Several files that belong together (a weights folder) are
written into a staging folder by :func:`staged_files` and appear all at once, or not at all.

Reading a small text file a user named (``--text-file``, ``--config``): :func:`read_small_text` reads regular
files only, up to a size limit, so that ``/dev/zero``, ``/dev/urandom`` or a FIFO is one clear error instead of
a read that never ends or fills memory.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

#: Largest text or config file :func:`read_small_text` reads: real ones are a few kilobytes.
MAX_SMALL_FILE_BYTES = 1 << 20

#: Ending of the temporary files (they also start with a dot, so they are hidden).
PARTIAL_SUFFIX = ".partial"

#: What to do about each way the system refuses a write, by errno; others say the system's own words.
_WRITE_CAUSES: dict[int, str] = {
    errno.ENOSPC: "no space left on the device: free some space and run again",
    errno.EDQUOT: "your disk quota is used up: free some space and run again",
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.EACCES: "permission denied: write to a folder you own",
    errno.EPERM: "operation not permitted: write to a folder you own",
    errno.ENOENT: "its folder does not exist",
    errno.EFBIG: "the file grew past the largest file allowed (the process's file size limit, ulimit -f, "
                 "or the file system's)",
}

#: Less free space than this after a failed write means the write filled the disk.
_FULL_DISK_BYTES = 1 << 20

#: How the writers that wrap a failed write() in their own errors say it (errno lost or inside the text).
_WRAPPED_WRITE_FAILURE = re.compile(
    r"PytorchStreamWriter|inline_container|iostream error|file write failed|I/O error|os error \d+|System error")


class WriteError(OSError):
    """The system refused to write a file (full disk, read-only, no permission...); ``str()`` is one line
    naming the target and the cause, ``errno`` is the cause's (None when it could not be told)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)  # one argument: OSError would otherwise print "[Errno 28] ..."
        self.errno = code

    def __str__(self) -> str:
        return str(self.args[0])


def make_folder(path: str | os.PathLike) -> Path:
    """``mkdir -p path``; a refusal (read-only, no permission, a file in the way) is a :class:`WriteError`."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        code = errno.EEXIST if isinstance(error, FileExistsError) else error.errno
        if code in (errno.EEXIST, errno.ENOTDIR):
            cause = "a file (not a folder) is in the way on that path"
        else:
            cause = _WRITE_CAUSES.get(code, os.strerror(code) if code else str(error))
        raise WriteError(f"Could not make the folder {folder}: {cause}.", code) from error
    return folder


@contextmanager
def staged_files(directory: str | os.PathLike) -> Iterator[Path]:
    """A staging folder inside ``directory`` to write several files into. When the block ends without an
    exception each file in it (subfolders included) replaces its namesake in ``directory``; otherwise the staging
    folder is removed and ``directory`` is as it was (a full disk half-way leaves no half-made set)."""
    import shutil

    folder = make_folder(directory)
    staging = folder / f".staged-{secrets.token_hex(6)}{PARTIAL_SUFFIX}"
    try:
        staging.mkdir()
    except OSError as error:
        raise _write_error(staging, None, error) from error
    try:
        yield staging
        files = sorted(path for path in staging.rglob("*") if path.is_file())
        parents = {folder / path.parent.relative_to(staging) for path in files}
        for parent in sorted(parents):
            make_folder(parent)
        for path in files:  # file by file: a subfolder's other files stay (a rename would refuse a full folder)
            os.replace(path, folder / path.relative_to(staging))
        for parent in parents:
            _fsync_folder(parent)
    except WriteError as error:  # named by the file it was to become, not its staging copy
        raise WriteError(str(error).replace(str(staging), str(folder)), error.errno) from error.__cause__
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; on success it replaces ``path``, on failure it is removed."""
    target = Path(path)
    try:
        temporary = _create_temporary(target)
    except OSError as error:
        raise _write_error(target, None, error) from error
    mode = temporary.stat().st_mode & 0o777  # 0o666 less the umask, as for any new file
    try:
        yield temporary
        if temporary.stat().st_mode & 0o777 != mode:  # a writer that replaced the file (safetensors: 0o600)
            os.chmod(temporary, mode)
        _fsync_file(temporary)
        os.replace(temporary, target)
    except BaseException as error:
        # Told apart before the temporary file goes: its size and the space it holds are the evidence.
        failure = _write_error(target, temporary, error) if _is_write_failure(error) else None
        temporary.unlink(missing_ok=True)
        if failure is not None:
            raise failure from error
        raise
    _fsync_folder(target.parent)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **open_args: Any) -> Iterator[IO]:
    """``open(path, mode, **open_args)`` (a writing mode: "w", "wb", ...) whose content appears only when the
    block ends without an exception."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a new file: mode must start with 'w', got {mode!r}.")
    with atomic_path(path) as temporary, open(temporary, mode, **open_args) as handle:
        yield handle


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """``Path(path).write_bytes(data)``, atomically; returns the path."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """``Path(path).write_text(text, encoding)``, atomically; returns the path."""
    with atomic_open(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return Path(path)


def _is_write_failure(error: BaseException) -> bool:
    """Whether ``error`` is the system refusing a write, raised as such or wrapped by a writer library."""
    if isinstance(error, WriteError):
        return False  # already says it (a nested atomic write)
    if isinstance(error, OSError):
        return True
    if not isinstance(error, Exception):  # Ctrl-C; SafetensorError is a plain Exception
        return False
    return bool(_WRAPPED_WRITE_FAILURE.search(f"{error} {getattr(error, 'error_string', '')}"))


def _write_error(target: Path, temporary: Path | None, error: BaseException) -> WriteError:
    """One line naming ``target`` and why the system refused it (``temporary``: the file being written)."""
    code = error.errno if isinstance(error, OSError) else None
    if code is None:
        found = re.search(r"os error (\d+)|errno (\d+)", str(error), re.IGNORECASE)  # safetensors: "(os error 28)"
        code = int(found.group(1) or found.group(2)) if found else _cause_from_folder(target, temporary)
    if code in _WRITE_CAUSES:
        cause = _WRITE_CAUSES[code]
    elif code is not None:
        cause = os.strerror(code)
    else:  # a quota, a network file system: nothing on this side tells which
        cause = "the system refused the write (a full disk or quota?)"
    return WriteError(f"Could not write {target}: {cause}. No partial file was left.", code)


def _cause_from_folder(target: Path, temporary: Path | None) -> int | None:
    """The errno a writer's wrapper lost, told from what it left: a full disk, or a file stopped at the size
    limit (RLIMIT_FSIZE; a write past it fails with EFBIG once SIGXFSZ is ignored)."""
    try:
        import resource  # POSIX only, as are statvfs and the size limit
    except ImportError:
        return None
    try:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if temporary is not None and limit != resource.RLIM_INFINITY and temporary.stat().st_size >= limit:
            return errno.EFBIG
        space = os.statvfs(target.parent)
        if space.f_bavail * space.f_frsize < _FULL_DISK_BYTES:
            return errno.ENOSPC
    except OSError:
        pass
    return None


def _create_temporary(target: Path) -> Path:
    for _ in range(100):
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return temporary
    raise FileExistsError(f"Could not create a temporary file beside {target}.")


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; folders cannot be opened (or need not be synced) on some systems."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def read_small_text(path: str | os.PathLike, name: str | None = None, limit: int = MAX_SMALL_FILE_BYTES) -> str:
    """The UTF-8 text of the regular file ``path`` of at most ``limit`` bytes.

    Anything else is a ValueError naming the file (``name``, e.g. ``"--text-file x.txt"``, else the path): a
    missing file, a folder, a device, FIFO or socket (never read: they may never end), a larger file, bytes
    that are not UTF-8.
    """
    label = name or str(path)
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer before the type check could run.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ValueError(f"{label} does not exist.") from None
    except OSError as error:
        raise ValueError(f"{label} cannot be read: {error.strerror or error}.") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a device, pipe or socket)"
        raise ValueError(f"{label} is {kind}: give a UTF-8 text file.")
    with os.fdopen(descriptor, "rb") as handle:
        try:
            data = handle.read(limit + 1)  # one byte over shows a file larger than the limit, or still growing
        except OSError as error:
            raise ValueError(f"{label} cannot be read: {error.strerror or error}.") from None
    if len(data) > limit:
        raise ValueError(f"{label} is larger than {limit // 1024} KiB: a text or config file is never that big.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{label} is not UTF-8 text: save it as UTF-8.") from None
