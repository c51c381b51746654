"""One run folder, one run (or the shards of one split): an OS-level lock per shard, refused at once with the holder.

Every run holds the lock file ``out/.locks/shard-<I>-of-<N>.lock`` (an unsharded run is shard 1 of 1) with
``flock`` through :class:`filelock.FileLock`, and writes who it is (pid, host, start time, command line) into
that file while holding it. The rules follow from two checks:

- the same shard twice: its lock file is already held;
- shards of another split (an unsharded run is a split into 1): the lock file of a shard of another count is
  held. Each run takes its own lock before it probes the others, so two runs of different splits starting
  at once never both go on (at worst both are refused).

So an unsharded run excludes any other run, and the shards of one split (same N, different I) run side by
side. The kernel drops a flock when its process dies, however it dies; what a killed holder wrote in its
lock file is only read while someone holds the lock, so a stale file never blocks a run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import make_folder

LOCKS = ".locks"          # the lock folder inside a run folder
OWN_WAIT_S = 0.5          # a peer's probe holds a lock file for microseconds; a running holder holds it for good
COMMAND_CHARS = 300       # holder info keeps the command line to this length


def lock_name(shard: tuple[int, int]) -> str:
    """``shard-<I>-of-<N>.lock`` for the 0-based shard ``(I - 1, N)``."""
    return f"shard-{shard[0] + 1}-of-{shard[1]}.lock"


def holder_info(shard: tuple[int, int]) -> dict:
    """What a holder writes into its lock file: pid, host, start time (epoch and local ISO), command line."""
    command = shlex.join(sys.orig_argv)
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
            "started_at": time.strftime("%Y-%m-%d %H:%M:%S"), "shard": f"{shard[0] + 1}/{shard[1]}",
            "command": command[:COMMAND_CHARS]}


def describe(lock_file: Path) -> str:
    """The holder of ``lock_file`` in words (from what it wrote), or why it is unknown."""
    try:
        info = json.loads(lock_file.read_text(encoding="utf-8"))
        shard, count = info["shard"], int(info["shard"].split("/")[1])
        what = "an unsharded run" if count == 1 else f"shard {shard} of a split run"
        return (f"{what} (pid {info['pid']} on {info['host']}, started {info['started_at']}, "
                f"command: {info['command']})")
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return f"a run that has not written its details yet ({lock_file})"


def _write_info(shard: tuple[int, int]) -> Callable[[int], None]:
    """The ``on_acquired`` callback: replace the lock file's content with this process's holder info."""
    data = (json.dumps(holder_info(shard)) + "\n").encode()

    def write(fd: int) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    return write


def held(lock_file: Path) -> bool:
    """Whether another process (or another lock in this one) holds ``lock_file`` now; a free lock is left free.

    The probe waits :data:`OWN_WAIT_S`: a sibling shard probing the same file at the same instant holds it for
    microseconds, a running holder for good (with ``timeout=0`` two shards starting together refused each other).
    """
    probe = FileLock(lock_file, timeout=OWN_WAIT_S, is_singleton=False)
    try:
        probe.acquire()
    except Timeout:
        return True
    probe.release()
    return False


def _other_split(folder: Path, shard: tuple[int, int]) -> Path | None:
    """A held lock file of a shard whose count differs from ``shard``'s, if any."""
    for lock_file in sorted(folder.glob("shard-*-of-*.lock")):
        count = lock_file.stem.rsplit("-", 1)[-1]
        if count.isdigit() and int(count) != shard[1] and held(lock_file):
            return lock_file
    return None


def _refusal(out: Path, shard: tuple[int, int], holder: Path, same: bool) -> MetalearnError:
    """The one-line refusal: who holds the folder and what to do."""
    me = "an unsharded run" if shard[1] == 1 else f"shard {shard[0] + 1}/{shard[1]}"
    if same:
        rule = f"{me} runs once at a time"
    elif shard[1] == 1:
        rule = "an unsharded run cannot share its folder with shards"
    elif holder.stem.endswith("-of-1"):
        rule = "shards cannot share the folder with an unsharded run"
    else:
        rule = f"{me} cannot share the folder with shards of a split into another number of parts"
    return MetalearnError(f"{out} is in use by {describe(holder)}; {rule}: wait for it to finish, stop it, "
                          f"or use another out=...")


@contextlib.contextmanager
def run_lock(out: str | os.PathLike, shard: tuple[int, int] = (0, 1)) -> Iterator[Path]:
    """Hold run folder ``out`` for shard ``shard`` = (0-based index, count) of a grid; (0, 1) is an unsharded run.

    Creates ``out`` if needed (path problems are one-line :class:`MetalearnError`s) and yields the lock file.
    Refused at once (a one-line :class:`MetalearnError` naming the holder and what to do) when the same shard
    runs, or a run of another split does (an unsharded run is a split into one). Released on exit; the OS
    releases it when the process dies.
    """
    index, count = shard
    if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
        raise MetalearnError(f"shard {index + 1}/{count}: expected I/N with 1 <= I <= N")
    out = make_folder(out, "run folder")
    folder = make_folder(out / LOCKS, "lock folder")
    lock_file = folder / lock_name(shard)
    lock = FileLock(lock_file, timeout=OWN_WAIT_S, is_singleton=False, on_acquired=_write_info(shard))
    try:
        lock.acquire()
    except Timeout:
        raise _refusal(out, shard, lock_file, same=True) from None
    except OSError as e:
        raise MetalearnError(f"cannot lock {lock_file} ({e.strerror or e}); expected a folder on a filesystem "
                             f"with file locks (flock)") from None
    try:
        if (other := _other_split(folder, shard)) is not None:
            raise _refusal(out, shard, other, same=False)
        yield lock_file
    finally:
        lock.release()
