"""A report's figures are drawn by forked workers, side by side: the same PNG bytes as drawn one after another in
this process, the files in the report's order, a failing figure's error raised to the caller."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest

from metalearn.report import render
from metalearn.report.render import draw_all
from metalearn.report.tables import write_report
from tests.test_plots_figures import mock_records


def _pid() -> Path:
    return Path(str(os.getpid()))


def _fail(message: str) -> Path:
    raise ValueError(message)


def test_report_figures_drawn_in_workers_equal_those_drawn_here(tmp_path, monkeypatch):
    records = mock_records()
    (tmp_path / "workers" / "run").mkdir(parents=True)
    (tmp_path / "here" / "run").mkdir(parents=True)
    forked = write_report(tmp_path / "workers" / "run", records)
    one_by_one = render.draw_all
    monkeypatch.setattr(render, "draw_all", lambda jobs: one_by_one(jobs, workers=1))
    here = write_report(tmp_path / "here" / "run", records)
    pngs = [name for name in forked if name.endswith(".png")]
    assert len(pngs) >= 8 and list(forked) == list(here)
    for name in pngs:
        assert forked[name].read_bytes() == here[name].read_bytes(), name


@pytest.mark.skipif(not os.uname().sysname == "Linux", reason="workers are forked on Linux only")
def test_jobs_run_in_other_processes_and_come_back_in_order():
    names = [f"figure{i}" for i in range(6)]
    drawn = draw_all(dict.fromkeys(names, _pid), workers=2)
    assert list(drawn) == names
    pids = {int(p.name) for p in drawn.values()}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert {int(p.name) for p in draw_all(dict.fromkeys(names, _pid), workers=1).values()} == {os.getpid()}


def test_a_failing_job_raises_its_error():
    with pytest.raises(ValueError, match="no rows"):
        draw_all({"a.png": _pid, "b.png": partial(_fail, "no rows")}, workers=2)
