"""Durable file helpers: atomic writes, torn-tail repair, append + fsync."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalearn.util.fileio import append_durably, cut_torn_tail, write_atomic


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
