"""Tracebacks become one line (issue 24, case 5): a damaged folds.json in a run folder, a config key with ``..``,
``folds --out`` and ``export-variant`` into a place that cannot be written, ``--push-to-hub`` with a bad repo id
(checked before the export is written)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from metalearn.cli import main
from metalearn.configs.load import load_config
from metalearn.pretune.export import export_variant
from metalearn.run.config import ExperimentConfig, PretuneStageConfig
from metalearn.run.run_folder import to_yaml
from metalearn.run.runner import speaker_folds
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import make_folder

ROOT = "data.target.root=/x"
SPEAKERS = ["0011", "0012", "0013", "0014", "0015", "0016"]


def one_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("damage", ["[{\"fold\": 0, \"test\": [\"0011\"", "", "\xff\xfe", "{}"])
def test_damaged_folds_json_in_a_run_folder_is_one_line(tmp_path: Path, damage: str) -> None:
    cfg = load_config(None, [ROOT, "speakers.folds=2", "speakers.validation=1"])
    (tmp_path / "folds.json").write_bytes(damage.encode("latin-1"))
    with pytest.raises(MetalearnError, match="folds file .*folds.json") as err:
        speaker_folds(cfg, SPEAKERS, tmp_path)
    assert "\n" not in str(err.value)
    folds = speaker_folds(cfg, SPEAKERS, tmp_path / "fresh")  # an intact one is written and read back
    assert speaker_folds(cfg, SPEAKERS, tmp_path / "fresh") == folds


@pytest.mark.parametrize(("override", "expected"), [
    ("pretune.extra.a..b=x", "override 'pretune.extra.a..b=x': the key 'pretune.extra.a..b' has an empty part"),
    ("tracking..mode=offline", "has an empty part"),
    ("speakers.=[1]", "has an empty part"),
    ("pretune.extra={a: {b: x}}", "config key 'pretune.extra.a': Cannot convert 'dict' to string"),
    ("tracking.tags=[[1]]", "config key 'tracking.tags[0]'"),
])
def test_a_key_with_dots_or_a_mapping_for_a_string_is_one_line(override: str, expected: str) -> None:
    with pytest.raises(MetalearnError) as err:
        load_config(None, [override, ROOT])
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_saving_a_config_its_types_cannot_hold_is_one_line() -> None:
    cfg = ExperimentConfig(pretune=PretuneStageConfig(extra={"a": {"b": "x"}}))  # type: ignore[dict-item]
    with pytest.raises(MetalearnError, match="config key 'pretune.extra.a': Cannot convert 'dict'"):
        to_yaml(cfg)
    assert "extra: {}" in to_yaml(dataclasses.replace(cfg, pretune=PretuneStageConfig()))


def _immutable(folder: Path) -> bool:
    """Make ``folder`` unwritable for this user (chmod for a user, chattr +i for root); False where it cannot."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return True
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    return done


def _release(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    folder.chmod(0o755)


def unwritable_places(tmp_path: Path) -> list[Path]:
    (tmp_path / "a_file").write_text("x")
    return [Path("/proc/nope/out"), tmp_path / "a_file" / "out", Path("/sys/metalearn-out")]


def test_folds_out_where_nothing_can_be_written_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for place in unwritable_places(tmp_path):
        code = main(["folds", "--emobox", str(tmp_path), "--manifest", str(tmp_path / "m.csv"),
                     "--out", str(place / "folds.json")])
        assert code == 2 and "folds --out" in one_line(capsys)


def test_export_where_nothing_can_be_written_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for place in unwritable_places(tmp_path):
        code = main(["export-variant", str(tmp_path / "variant"), str(place)])
        assert code == 2 and "export-variant OUT_DIR's folder" in one_line(capsys)
    locked = tmp_path / "locked"
    if not _immutable(locked):
        pytest.skip("cannot make a folder unwritable here")
    try:
        with pytest.raises(MetalearnError, match="locked is not writable"):
            export_variant(tmp_path / "variant", locked / "out")
        with pytest.raises(MetalearnError, match="locked is not writable"):
            make_folder(locked, "run folder")
    finally:
        _release(locked)


def test_bad_repo_id_is_refused_before_the_export(tmp_path: Path) -> None:
    with pytest.raises(MetalearnError, match="--push-to-hub 'not a repo' is not a Hub repo id"):
        export_variant(tmp_path / "variant", tmp_path / "out", repo="not a repo")
    assert not (tmp_path / "out").exists()


# -- found by experiments/adversarial.py -----------------------------------------------------------------------


def test_pretune_and_merge_out_where_nothing_can_be_written_is_one_line(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "m.csv").write_text("x")
    for place in unwritable_places(tmp_path):
        assert main(["pretune", "--manifests", str(tmp_path / "m.csv"), "--out", str(place)]) == 2
        assert "pretune --out" in one_line(capsys)
        assert main(["merge", str(place), str(tmp_path)]) == 2
        assert "run folder" in one_line(capsys)


def test_merge_into_a_folder_a_run_holds_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from metalearn.util.lock import run_lock

    with run_lock(tmp_path / "held"):
        assert main(["merge", str(tmp_path / "held"), str(tmp_path)]) == 2
    assert "is in use by" in one_line(capsys)


def test_report_with_a_reference_that_is_not_a_method_is_one_line(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    import json as json_

    from metalearn.report.records import RECORD_FIELDS, sealed

    record = {f: 0 for f in RECORD_FIELDS} | {"algorithm": "simpleshot", "pretune": "none", "speaker": "0011",
                                              "episode_id": "e", "protocol": "nway", "accuracy": 0.5}
    (tmp_path / "trials.jsonl").write_text(json_.dumps(sealed(record)) + "\n")
    assert main(["report", str(tmp_path), "--reference", "nope"]) == 2
    assert one_line(capsys) == f"error: --reference 'nope' is not a method of {tmp_path} (its methods: simpleshot)"


def test_episode_bad_numbers_and_unwritable_out_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["episode", "--k", "0"])
    assert exit_.value.code == 2 and "argument --k: 0: expected an integer >= 1" in capsys.readouterr().err
    for place in unwritable_places(tmp_path):
        assert main(["episode", "--manifest", str(tmp_path / "m.csv"), "--out", str(place / "e.png")]) == 2
        assert "episode --out's folder" in one_line(capsys)
