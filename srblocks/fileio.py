"""Atomic file writes: every file srblocks writes is either its previous content or its complete new content.

:func:`atomic_write` is the one helper every output goes through (upscaled images, exported specs, search reports,
checkpoints and weights). It writes to a temporary file **in the target's folder** (so that the final rename
never crosses a file system), flushes and ``fsync``\\ s it, then ``os.replace``\\ s it onto the target (atomic on
POSIX and Windows) and ``fsync``\\ s the folder (best effort) so that the rename itself survives a power loss.

* If the body raises (an encoding error, a full disk, Ctrl-C, ...), the temporary file is removed and the target
  is untouched: an existing file keeps its old content, a new one does not appear.
* If the process is killed (``kill -9``, power loss), the target is still old-or-new. Only the temporary file can
  be left behind: it is hidden and named ``.NAME.XXXXXXXX.tmp`` (``.tmp`` is no image extension, so folder scans
  of images, specs or checkpoints never pick it up); delete such files at leisure.
* :func:`atomic_path` does the same for writers that need a file name (matplotlib, formats chosen by extension):
  it yields a path with the target's own name inside a hidden temporary folder beside the target.
* The new file gets the permissions a plain ``open(path, "w")`` would give it (``0o666`` minus the umask), or the
  permissions of the file it replaces.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = ["atomic_write", "atomic_path", "write_bytes_atomic", "write_text_atomic", "TEMP_SUFFIX"]

#: suffix of the temporary files (``.NAME.<8 hex digits>.tmp`` beside the target)
TEMP_SUFFIX = ".tmp"


def _temporary(path: Path) -> tuple[int, Path]:
    """Create and open a new, empty temporary file beside ``path``: (descriptor, its path)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, flags, 0o666), tmp  # 0o666 & ~umask, like open(path, "w")
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {str(path)!r}")  # pragma: no cover


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows, or a folder we may not open: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "wb",
    *,
    encoding: str | None = None,
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Open ``path`` for writing so that it is replaced only once the ``with`` body has completed.

    Args:
        path: the target file; its folder must exist (it is not created).
        mode: ``"wb"`` (default) or ``"w"`` (text; then ``encoding`` defaults to UTF-8 and ``newline`` is passed
            to :func:`open`).

    Yields:
        the open temporary file (``f.name`` is its path). Write to it; do not close it.

    Raises:
        OSError: the temporary file cannot be created, written or renamed (the target is then unchanged and the
            temporary file removed).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write supports mode 'wb' or 'w', got {mode!r}")
    target = Path(path)
    fd, tmp = _temporary(target)
    try:
        with contextlib.suppress(OSError):  # keep the replaced file's permission bits
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        if mode == "w":
            f: IO[Any] = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline=newline)
        else:
            f = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_folder(target.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Like :func:`atomic_write`, for writers that take a file *name* (and read the format from its extension).

    Yields a temporary path with the target's own file name, inside a new hidden folder
    (``.NAME.XXXXXXXX.tmp/NAME``) beside the target. Write the file there; when the body completes, the file is
    fsynced and renamed onto the target and the folder removed. If the body raises, both are removed and the target
    is untouched.
    """
    target = Path(path)
    for _ in range(100):
        folder = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            folder.mkdir()
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover
        raise FileExistsError(f"cannot create a temporary folder beside {str(target)!r}")
    tmp = folder / target.name
    try:
        yield tmp
        with contextlib.suppress(OSError):
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        with contextlib.suppress(OSError):
            folder.rmdir()
    _fsync_folder(target.parent)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically replace ``path`` with ``data`` (see :func:`atomic_write`); returns the path."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> Path:
    """Atomically replace ``path`` with ``text`` (UTF-8 by default; see :func:`atomic_write`); returns the path."""
    with atomic_write(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)
