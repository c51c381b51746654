"""Durable file helpers: atomic writes (concurrent writers included), torn-tail repair, append + fsync,
folders made with one-line errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import (
    append_durably,
    atomic_path,
    cut_torn_tail,
    make_folder,
    write_atomic,
    write_json,
)


@pytest.mark.parametrize(("content", "kept"), [
    (b"", b""),
    (b'{"a": 1}\n', b'{"a": 1}\n'),
    (b'{"a": 1}\n{"b": 2}\n', b'{"a": 1}\n{"b": 2}\n'),
    (b'{"a": 1}\n{"b"', b'{"a": 1}\n'),
    (b'{"a"', b""),
])
def test_cut_torn_tail_keeps_exactly_the_whole_lines(tmp_path: Path, content: bytes, kept: bytes) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(content)
    assert cut_torn_tail(path) == len(content) - len(kept)
    assert path.read_bytes() == kept
    assert cut_torn_tail(path) == 0  # idempotent


def test_append_durably_appends_in_order_after_a_repair(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"1\n2")
    cut_torn_tail(path)
    append_durably(path, b"3\n")
    append_durably(path, b"4\n" * 10_000)
    assert path.read_bytes() == b"1\n3\n" + b"4\n" * 10_000


def test_append_durably_needs_an_existing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        append_durably(tmp_path / "missing.jsonl", b"x\n")


def test_write_atomic_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    write_atomic(path, "old content that is longer")
    write_atomic(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temporary left behind


def _complete(data: bytes) -> bool:
    """Whether ``data`` is one whole write of :data:`WRITER`: a ``writer:i:n`` header, then exactly n bytes."""
    header, _, body = data.partition(b"|")
    return len(header.split(b":")) == 3 and len(body) == int(header.split(b":")[2])


WRITER = """
import sys
from metalearn.util.fileio import write_atomic
me, path = sys.argv[1], sys.argv[2]
for i in range({n}):
    body = (me * (1 + (i * 7919) % 5000)).encode()  # sizes vary so a torn file would show
    write_atomic(path, f"{{me}}:{{i}}:{{len(body)}}|".encode() + body)
"""


def test_processes_writing_one_target_at_once_never_collide(tmp_path: Path) -> None:
    """3 processes x 200 atomic writes of one file: none fails, a reader only ever sees whole writes."""
    target = tmp_path / "config.yaml"
    write_atomic(target, b"seed:0:0|")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER.format(n=200), name, str(target)],
                                cwd=Path(__file__).parents[1], stderr=subprocess.PIPE)
               for name in ("a", "b", "c")]
    seen = 0
    while any(w.poll() is None for w in writers):
        assert _complete(target.read_bytes())
        seen += 1
    for w in writers:
        assert w.wait() == 0, w.stderr.read().decode()
    final = target.read_bytes()
    assert _complete(final) and final.split(b":")[1] == b"199"  # some writer's last write won
    assert seen > 0 and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_threads_writing_one_target_at_once_never_collide(tmp_path: Path) -> None:
    target = tmp_path / "meta.json"
    errors: list[BaseException] = []

    def work(me: int) -> None:
        try:
            for i in range(50):
                write_json(target, {"writer": me, "i": i, "pad": "x" * (me * 1000 + i)})
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(me,)) for me in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = json.loads(target.read_text())
    assert final["i"] == 49 and len(final["pad"]) == final["writer"] * 1000 + 49
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]


def test_a_failed_write_leaves_the_target_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    write_atomic(target, "old")
    with pytest.raises(RuntimeError, match="half way"), atomic_path(target) as tmp:
        tmp.write_text("new, half")
        raise RuntimeError("half way")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_temporaries_are_unique_hidden_siblings(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    with atomic_path(target) as one, atomic_path(target) as two:
        assert one != two and one.parent == two.parent == tmp_path
        assert one.name.startswith(".x.json.") and one.name.endswith(".tmp")
        one.write_text("1")
        two.write_text("2")
    assert target.read_text() == "1"  # the outer write finished last


def test_written_files_keep_the_usual_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o644  # not mkstemp's 0o600


def test_make_folder_creates_nested_folders(tmp_path: Path) -> None:
    assert make_folder(tmp_path / "a" / "b").is_dir()
    assert make_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"  # again: no error


def test_make_folder_names_a_file_in_the_way(tmp_path: Path) -> None:
    file = tmp_path / "results.csv"
    file.write_text("x")
    with pytest.raises(MetalearnError, match=f"run folder {file} is a file; expected a folder"):
        make_folder(file, "run folder")
    with pytest.raises(MetalearnError, match=f"{file / 'run'} lies inside the file {file}"):
        make_folder(file / "run", "run folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_make_folder_names_a_read_only_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(MetalearnError, match=f"{locked} is not writable"):
        make_folder(locked, "run folder")
    with pytest.raises(MetalearnError, match=f"cannot create run folder {locked / 'run'} .*Permission denied"):
        make_folder(locked / "run", "run folder")


def test_make_folder_reports_permission_errors_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The read-only cases without needing a non-root user: mkdir refused, and a folder access() calls read-only."""
    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(MetalearnError, match=f"cannot create run folder {tmp_path / 'new'} \\(Permission denied\\)"):
        make_folder(tmp_path / "new", "run folder")
    monkeypatch.undo()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(MetalearnError, match=f"run folder {tmp_path} is not writable"):
        make_folder(tmp_path, "run folder")
