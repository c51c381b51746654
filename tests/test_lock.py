"""The run-folder lock: one unsharded run or the shards of one split, refused at once naming the holder;
a killed holder leaves nothing locked."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metalearn.util.errors import MetalearnError
from metalearn.util.lock import LOCKS, lock_name, run_lock

ROOT = Path(__file__).parents[1]
HOLDER = """
import sys, time
from pathlib import Path
from metalearn.util.errors import MetalearnError
from metalearn.util.lock import run_lock
out, index, count, hold, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5])
while not go.exists():
    time.sleep(0.005)
try:
    with run_lock(out, (index, count)):
        print("held", time.time(), flush=True)
        time.sleep(hold)
        print("released", time.time(), flush=True)
except MetalearnError as e:
    print("refused", e, flush=True)
"""


def start(out: Path, shard: tuple[int, int], hold: float, go: Path) -> subprocess.Popen:
    """A process that waits for ``go`` to exist, then tries to hold ``out`` for ``hold`` seconds."""
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(shard[0]), str(shard[1]), str(hold), str(go)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def refusal(out: Path, shard: tuple[int, int]) -> str:
    """The message of a refused :func:`run_lock` (fails the test when it is not refused)."""
    with pytest.raises(MetalearnError) as info, run_lock(out, shard):
        pass
    return str(info.value)


def test_a_second_unsharded_run_is_refused_at_once_naming_the_holder(tmp_path: Path) -> None:
    with run_lock(tmp_path, (0, 1)) as lock_file:
        assert lock_file == tmp_path / LOCKS / "shard-1-of-1.lock"
        start_s = time.perf_counter()
        message = refusal(tmp_path, (0, 1))
        assert time.perf_counter() - start_s < 2.0
    assert "\n" not in message and message.startswith(f"{tmp_path} is in use by an unsharded run (pid {os.getpid()} ")
    assert f"on {socket.gethostname()}, started " in message and "command: " in message
    assert message.endswith("or use another out=...")
    with run_lock(tmp_path, (0, 1)):  # released on exit
        pass


def test_shards_of_one_split_coexist_and_exclude_everything_else(tmp_path: Path) -> None:
    with run_lock(tmp_path, (0, 3)), run_lock(tmp_path, (2, 3)):
        assert "shard 1/3 runs once at a time" in refusal(tmp_path, (0, 3))
        assert "an unsharded run cannot share its folder with shards" in refusal(tmp_path, (0, 1))
        assert "another number of parts" in refusal(tmp_path, (1, 2))
        with run_lock(tmp_path, (1, 3)):
            pass
    with run_lock(tmp_path, (0, 1)):
        assert "shards cannot share the folder with an unsharded run" in refusal(tmp_path, (1, 3))
    with run_lock(tmp_path, (1, 2)):  # another split, once the folder is free
        pass


def test_a_killed_holder_leaves_the_folder_free(tmp_path: Path) -> None:
    go = tmp_path / "go"
    go.touch()
    holder = start(tmp_path / "run", (0, 1), 60.0, go)
    try:
        assert holder.stdout.readline().startswith("held "), holder.stderr.read()
        message = refusal(tmp_path / "run", (0, 1))
        assert f"(pid {holder.pid} on " in message and "-c" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    stale = json.loads((tmp_path / "run" / LOCKS / lock_name((0, 1))).read_text())
    assert stale["pid"] == holder.pid  # its details are still there, and do not block
    with run_lock(tmp_path / "run", (0, 1)):
        pass


def test_garbage_in_a_free_lock_file_does_not_block(tmp_path: Path) -> None:
    (tmp_path / LOCKS).mkdir()
    for shard in ((0, 1), (0, 2)):
        (tmp_path / LOCKS / lock_name(shard)).write_text('{"pid": 12')
    with run_lock(tmp_path, (1, 2)):
        pass
    with run_lock(tmp_path, (0, 1)) as lock_file:
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()


@pytest.mark.parametrize("shards", [
    [(0, 1)] * 4,
    [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (1, 2)],
])
def test_runs_starting_at_once_never_break_the_rules(tmp_path: Path, shards: list[tuple[int, int]]) -> None:
    """Processes racing for one folder: the holders are always shards of one split, each shard at most once."""
    go = tmp_path / "go"
    procs = [start(tmp_path / "run", s, 1.5, go) for s in shards]
    time.sleep(0.5)  # let the interpreters start
    go.touch()
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    assert all(out.startswith(("held", "refused")) for out, _ in outputs)
    held = [(s, float(out.split()[1]), float(out.split()[3])) for s, (out, _) in zip(shards, outputs, strict=True)
            if out.startswith("held")]
    assert held
    # A slow interpreter may start after the first holders left, so the rules bind holders whose times overlap.
    for i, (a, a_start, a_end) in enumerate(held):
        for b, b_start, b_end in held[i + 1:]:
            if a_start < b_end and b_start < a_end:
                assert a != b and a[1] == b[1], (a, b)
    if len(set(shards)) == 1 and all(start < held[0][2] for _, start, _ in held):
        assert len(held) == 1  # the same shard, all at once: exactly one of them runs


def test_bad_shards_and_paths_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(MetalearnError, match=r"shard 3/2: expected I/N with 1 <= I <= N"):
        run_lock(tmp_path, (2, 2)).__enter__()
    file = tmp_path / "out.txt"
    file.write_text("x")
    with pytest.raises(MetalearnError, match=f"run folder {file} is a file; expected a folder"):
        run_lock(file, (0, 1)).__enter__()
