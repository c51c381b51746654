"""``tune`` finds damage and holds its folder: a damaged journal, a truncated tuning config, an edited objective
and a run in the same folder are each one line, never a traceback or a silent result."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from metalearn.configs.load import load_config
from metalearn.tune.folder import tune_lock
from metalearn.tune.journal import JOURNAL
from metalearn.tune.study import tune
from metalearn.util.errors import MetalearnError
from metalearn.util.lock import run_lock
from tests.conftest import overrides, tiny_corpora

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py
TINY = {"algorithms": ["finetune", "majority"], "repetitions": 1, "trials": 2}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny corpus and one finished tuning of finetune (``base/tuned``)."""
    root = tmp_path_factory.mktemp("tune_damage")
    tiny_corpora(root / "data")
    tune(load_config(None, overrides(root, "tuned", "tune.algorithms=[finetune]", **TINY)))
    return root


def _copy(base: Path, name: str) -> Path:
    shutil.copytree(base / "tuned", base / name)
    return base / name


def _tune(base: Path, name: str) -> None:
    tune(load_config(None, overrides(base, name, "tune.algorithms=[finetune]", **TINY)))


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_finished_tuning_reruns_quietly(base: Path) -> None:
    out = _copy(base, "again")
    before = [(out / "tuning" / name).read_bytes() for name in ("finetune.csv", "tuned.yaml")]
    _tune(base, "again")
    assert [(out / "tuning" / name).read_bytes() for name in ("finetune.csv", "tuned.yaml")] == before


def test_a_damaged_journal_is_one_line_naming_it(base: Path) -> None:
    out = _copy(base, "damaged")
    journal = out / "tuning" / JOURNAL
    lines = journal.read_text().splitlines(keepends=True)
    lines[3] = lines[3][: len(lines[3]) // 2] + "\n"  # a line cut in the middle of the file
    journal.write_text("".join(lines))
    with pytest.raises(MetalearnError) as e:
        _tune(base, "damaged")
    assert re.search(rf"{re.escape(str(journal))}: a damaged Optuna journal .*delete", _one_line(e))


def test_a_truncated_tuning_config_is_called_damaged(base: Path) -> None:
    out = _copy(base, "truncated")
    saved = out / "tuning" / "config.yaml"
    text = saved.read_text()
    saved.write_text(text[: len(text) // 2])
    with pytest.raises(MetalearnError) as e:
        _tune(base, "truncated")
    message = _one_line(e)
    assert f"{saved}: damaged" in message and "another config" not in message
    saved.write_text(text)  # restored: accepted again
    _tune(base, "truncated")


def test_an_edited_objective_is_refused(base: Path) -> None:
    out = _copy(base, "edited")
    journal = out / "tuning" / JOURNAL
    text = journal.read_text()
    edited, n = re.subn(r'("op_code":6,[^\n]*"values":\[)[0-9.e-]+(\])', r"\g<1>0.99\g<2>", text, count=1)
    assert n == 1
    journal.write_text(edited)
    with pytest.raises(MetalearnError) as e:
        _tune(base, "edited")
    assert re.search(r"study finetune/none/fold0 trial 0 \(validation accuracy 0.99\) does not match its checksum",
                     _one_line(e))


def test_tune_and_run_do_not_share_a_folder(base: Path) -> None:
    out = base / "locked"
    with run_lock(out):
        with pytest.raises(MetalearnError) as e:
            _tune(base, "locked")
    assert re.search(r"is in use by an unsharded run .*tune cannot share the folder with a run", _one_line(e))
    assert not (out / "tuning").exists()  # refused before any work
    with run_lock(out, (1, 2)), pytest.raises(MetalearnError, match="is in use by shard 2/2"):
        _tune(base, "locked")
    with tune_lock(out), tune_lock(out):  # tune workers side by side share the folder
        with pytest.raises(MetalearnError, match="is in use by"):
            with run_lock(out):
                pass
        with pytest.raises(MetalearnError, match="is in use by"):
            with run_lock(out, (0, 2)):
                pass
    with run_lock(out):  # released
        pass
