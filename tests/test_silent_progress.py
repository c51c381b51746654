"""Progress bars only on a terminal (issue 23): a redirected log gets plain lines, never tqdm's carriage
returns or escape codes."""

from __future__ import annotations

import io
import sys

import pytest
from tqdm import tqdm

from metalearn.util import progress as progress_mod
from metalearn.util.progress import LineProgress, progress


def test_a_log_gets_plain_lines(capsys: pytest.CaptureFixture) -> None:
    with progress(10, "trials", "trial", initial=2) as bar:
        assert isinstance(bar, LineProgress)
        bar.update(3)
        bar.update(min(5, bar.total - bar.n))
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    assert err.splitlines() == [line for line in err.splitlines() if line.startswith("trials: ")]
    assert err.splitlines()[0].startswith("trials: 2/10 trial (20%)") and err.splitlines()[-1].endswith("done")
    assert "10/10 trial (100%)" in err.splitlines()[-1]


def test_a_line_every_interval_with_an_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(float(t) for t in range(0, 1000, 10))
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    bar = LineProgress(100, "embeddings", "s", every=25.0, file=out)
    for _ in range(10):
        bar.update(10)
    bar.close()
    bar.close()  # once
    lines = out.getvalue().splitlines()
    assert lines[0] == "embeddings: 0/100 s (0%), 00:00 elapsed, started"
    assert lines[1] == "embeddings: 30/100 s (30%), 00:30 elapsed, ~01:10 left"  # 30 s after the start
    assert lines[-1] == "embeddings: 100/100 s (100%), 01:50 elapsed, done" and len(lines) == 5


def test_disabled_writes_nothing(capsys: pytest.CaptureFixture) -> None:
    with progress(5, "nothing to do", disable=True) as bar:
        bar.update(0)
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_the_live_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with progress(3, "live") as bar:
        assert isinstance(bar, tqdm)
        bar.update(3)
