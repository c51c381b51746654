"""Durable file writes: a reader (or a killed run) never sees half a file, and writers never collide.

Every atomic write goes through its own uniquely named hidden temporary in the target's folder, is fsynced,
renamed over the target in one step, and the folder is fsynced after, so any number of threads or processes
may write one target at once: the target always holds one writer's complete content.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from metalearn.util.errors import MetalearnError


def make_folder(path: str | os.PathLike, what: str = "folder") -> Path:
    """Create ``path`` (with its parents) as a folder this process can write into, and return it.

    A file in the way, a path inside a file, or a folder without write permission is a one-line
    :class:`MetalearnError` that names ``what`` (e.g. ``"run folder out="``) and the path.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MetalearnError(f"{what} {path} is a file; expected a folder (or a path where one can be created)")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise MetalearnError(f"{what} {path} lies inside the file {blocker}; expected a path under a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MetalearnError(f"cannot create {what} {path} ({e.strerror or e}); expected a path where this user "
                             f"can create a folder") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise MetalearnError(f"{what} {path} is not writable; expected a folder this user can write into")
    try:  # what access() cannot see (a read-only mount, an immutable folder, root's view): one real try
        _unique_sibling(path / ".write-probe").unlink()
    except OSError as e:
        raise MetalearnError(f"{what} {path} is not writable ({e.strerror or e}); expected a folder this user can "
                             f"write into") from None
    return path


def writable_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check, before any work, that a file can be written at ``path``: not a folder, and its folder creatable
    and writable (created here, as :func:`make_folder` does). One-line :class:`MetalearnError` naming ``what``."""
    path = Path(path)
    if path.is_dir():
        raise MetalearnError(f"{what} {path} is a folder; expected a file path")
    make_folder(path.parent, f"{what}'s folder")
    return path


def _unique_sibling(path: Path) -> Path:
    """Create (O_EXCL, mode 0o666 less the umask) an empty hidden temporary next to ``path`` and return it."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a folder's entries') data to disk; filesystems that cannot sync a folder are skipped."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``path``; on success it replaces ``path`` in one step.

    The temporary is unique to this call (concurrent writers of one target never share it), is fsynced before
    the rename and the folder after it; on any error it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique_sibling(path)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def write_json(path: str | os.PathLike, obj: object, indent: int | None = 1) -> None:
    """``obj`` as JSON at ``path``, atomically."""
    write_atomic(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cut_torn_tail(path: str | os.PathLike) -> int:
    """Truncate a JSON Lines file after its last newline (a line a killed writer left half-written).

    Returns the number of bytes cut (0 when the file ends with a newline or is empty).
    """
    path = Path(path)
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut < len(data):
        with open(path, "r+b") as f:
            f.truncate(cut)
    return len(data) - cut


def append_durably(path: str | os.PathLike, data: bytes) -> None:
    """Append ``data`` to an existing file in one ``O_APPEND`` write loop, then fsync before returning."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def swap_in_folder(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` at ``out``: any old ``out`` is moved aside first and removed after."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
