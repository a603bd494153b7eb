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

The temporary file is created like ``open(path, "w")`` creates one (mode 0o666 minus the umask), so the
target keeps the permissions a plain write would give it. The target's folder must exist.

Reading a small text file a user named (``--text-file``, ``--config``): :func:`read_small_text` reads regular
files only, up to a size limit, so that ``/dev/zero``, ``/dev/urandom`` or a FIFO is one clear error instead of
a read that never ends or fills memory.
"""
from __future__ import annotations

import os
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


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; on success it replaces ``path``, on failure it is removed."""
    target = Path(path)
    temporary = _create_temporary(target)
    mode = temporary.stat().st_mode & 0o777  # 0o666 less the umask, as for any new file
    try:
        yield temporary
        if temporary.stat().st_mode & 0o777 != mode:  # a writer that replaced the file (safetensors: 0o600)
            os.chmod(temporary, mode)
        _fsync_file(temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
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
