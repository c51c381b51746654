"""The run folder ``tune`` works in: its lock, shared with ``run``, and the config its studies came from.

**The lock.** ``run`` (and ``launch``'s jobs) hold ``out/.locks/shard-I-of-N.lock`` exclusively
(:mod:`metalearn.util.lock`). ``tune`` holds the unsharded run's lock file (``shard-1-of-1.lock``) *shared*
(``flock(LOCK_SH)``): tune workers side by side share it, so several shells may still work on the same
studies, while a run of the folder (unsharded: its exclusive lock fails; sharded: its probe of the unsharded
lock fails) is refused, and ``tune`` is refused, in one line naming the holder, while a run or a shard holds the
folder.

**The config.** ``tuning/config.yaml`` is the resolved config the studies were tuned with, its first line a
SHA-256 of the rest: a truncated or edited copy is reported damaged, not "another config".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from metalearn.run.run_folder import config_difference
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import make_folder, write_atomic
from metalearn.util.lock import LOCKS, describe, held, holder_info, lock_name

FREE_KEYS = ("tune.trials", "tune.algorithms", "tuned", "tracking", "name", "out")  # may change between workers
SUM = "# sha256 of the lines below: "


@contextlib.contextmanager
def tune_lock(out: str | os.PathLike) -> Iterator[Path]:
    """Hold run folder ``out`` for tuning (shared with other tune workers, exclusive of runs), or refuse at
    once with one :class:`MetalearnError` line naming the holder."""
    import fcntl

    folder = make_folder(Path(out) / LOCKS, "lock folder")
    path = folder / lock_name((0, 1))
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise MetalearnError(f"cannot open {path} ({e.strerror or e}); expected a writable run folder out=") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refused(Path(out), path) from None
        except OSError as e:
            raise MetalearnError(f"cannot lock {path} ({e.strerror or e}); expected a folder on a filesystem with "
                                 f"file locks (flock)") from None
        for other in sorted(folder.glob("shard-*-of-*.lock")):
            if other != path and held(other):
                raise _refused(Path(out), other)
        info = dict(holder_info((0, 1)), shard="1/1")
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock


def _refused(out: Path, holder: Path) -> MetalearnError:
    return MetalearnError(f"{out} is in use by {describe(holder)}; tune cannot share the folder with a run: wait for "
                          f"it to finish, stop it, or use another out=...")


def with_sum(text: str) -> str:
    """``text`` under a first line holding its SHA-256."""
    return f"{SUM}{hashlib.sha256(text.encode()).hexdigest()}\n{text}"


def check_folder(text: str, folder: Path) -> None:
    """Refuse a tuning folder whose studies came from another config than ``text`` (a resolved config's YAML;
    :data:`FREE_KEYS` aside), or whose saved config is damaged; then save ``text`` there."""
    saved, journal = folder / "config.yaml", folder / "journal.log"
    if journal.is_file() and journal.stat().st_size:
        if not saved.is_file():
            raise MetalearnError(f"{folder} holds studies ({journal.name}) but no config.yaml to tell their config; "
                                 f"delete {folder} (or use another out=...) and tune again")
        difference = config_difference(_without_free(_intact(saved), saved), _without_free(text, saved))
        if difference:
            raise MetalearnError(f"{folder} holds studies of another config ({difference}); use another out=... "
                                 f"or delete {folder}")
    write_atomic(saved, with_sum(text))


def _intact(path: Path) -> str:
    """The YAML of a saved ``config.yaml`` whose checksum line matches (a file saved before checksums: as it is)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MetalearnError(f"{path}: unreadable ({e}); delete {path.parent} and tune again") from None
    first, _, rest = raw.partition("\n")
    if first.startswith(SUM):
        if hashlib.sha256(rest.encode()).hexdigest() != first.removeprefix(SUM).strip():
            raise MetalearnError(f"{path}: damaged (truncated or edited: its content does not match its checksum); "
                                 f"restore it, or delete {path.parent} (or use another out=...) and tune again")
        return rest
    return raw


def _without_free(text: str, path: Path) -> str:
    """``text`` (the YAML of ``path``) without :data:`FREE_KEYS`; unreadable YAML is one line calling it damaged."""
    import yaml

    try:
        data, why = yaml.safe_load(text) or {}, "not a mapping of config keys"
    except yaml.YAMLError as e:
        data, why = None, (str(e).strip().splitlines() or [type(e).__name__])[0]
    if not isinstance(data, dict):
        raise MetalearnError(f"{path}: damaged ({why}); restore it, or delete {path.parent} (or use another out=...) "
                             f"and tune again")
    for key in FREE_KEYS:
        head, _, tail = key.partition(".")
        if tail and isinstance(data.get(head), dict):
            data[head].pop(tail, None)
        elif not tail:
            data.pop(key, None)
    return yaml.safe_dump(data)
