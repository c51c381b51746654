"""Ids stay strings: a speaker id typed without quotes keeps its text in every config layer (issue 24, case 2).

YAML 1.1 reads ``0011``-``0017`` as octal numbers (``0011`` is 9) and ``0020`` as 16: ESD's speakers would be
excluded, tested or tuned under another name, or not at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from metalearn.configs.load import load_config
from metalearn.pretune.config import PretuneConfig
from metalearn.run.run_folder import to_yaml
from metalearn.util.config_merge import merge_overrides
from metalearn.util.yaml_ids import from_dotlist, parse_value

ESD = ["0011", "0012", "0013", "0014", "0015", "0016", "0017", "0018", "0019", "0020"]


def test_leading_zero_numbers_keep_their_text() -> None:
    assert parse_value(f"[{', '.join(ESD)}]") == ESD
    assert parse_value("[0, 11, 0.5, 1e-3, 0x10, true]") == [0, 11, 0.5, 0.001, 16, True]  # others as before
    assert from_dotlist(["a.b=[0011]", "c=0010"]) == {"a": {"b": ["0011"]}, "c": "0010"}


def test_override_speaker_ids_are_what_was_typed() -> None:
    cfg = load_config("demo", ["speakers.exclude=[0011,0017,0020]", "speakers.test=[0012]"])
    assert cfg.speakers.exclude == ["0011", "0017", "0020"]
    assert cfg.speakers.test == ["0012"]


def test_leading_zero_still_fills_a_number_field() -> None:
    cfg = load_config("demo", ["episodes.repetitions=0010"])
    assert cfg.episodes.repetitions == 10
    assert merge_overrides(PretuneConfig(), ["grad_accum=0010"]).grad_accum == 10  # pretune's own overrides


def test_preset_file_speaker_ids_are_what_was_typed(tmp_path: Path) -> None:
    preset = tmp_path / "esd.yaml"
    preset.write_text("name: esd\ndata: {target: {root: /x}}\nspeakers: {exclude: [0011, 0012], test: [0013, 0019]}\n")
    cfg = load_config(str(preset))
    assert cfg.speakers.exclude == ["0011", "0012"] and cfg.speakers.test == ["0013", "0019"]
    saved = tmp_path / "config.yaml"  # a run folder's config.yaml reads back the same
    saved.write_text(to_yaml(cfg))
    assert load_config(str(saved)).speakers == cfg.speakers


@pytest.mark.parametrize("ids", [["0019", "0011"], ["0020", "0018"]])
def test_tuned_overlay_speaker_ids_are_what_was_typed(tmp_path: Path, ids: list[str]) -> None:
    overlay = tmp_path / "tuned.yaml"
    overlay.write_text("tuned:\n  folds:\n  - fold: 0\n"
                       f"    validation: [{ids[0]}]\n    meta_train: [{ids[1]}, 0012]\n"
                       "    algorithms: {protonet: {}}\n    meta_steps: {protonet: 25}\n")
    cfg = load_config("demo", [f"tuned.file={overlay}"])
    assert cfg.tuned.folds[0].validation == [ids[0]]
    assert cfg.tuned.folds[0].meta_train == [ids[1], "0012"]


def test_an_excluded_id_that_is_no_speaker_is_named(tmp_path: Path, caplog) -> None:
    """A typo in speakers.exclude excludes nothing: one warning names it (found by experiments/adversarial.py)."""
    import logging

    from metalearn.run.runner import target_rows

    manifest = tmp_path / "esd.csv"
    manifest.write_text("utterance_id,path,corpus,speaker,gender,emotion,raw_label,split,duration_s,sample_rate,text\n"
                        f"u1,{tmp_path}/a.wav,esd,0011,male,angry,Angry,train,1.0,16000,x\n")
    cfg = load_config(None, [f"data.target.root={tmp_path}", f"data.target.manifest={manifest}",
                             "speakers.exclude=[9999, Unknown]"])
    with caplog.at_level(logging.WARNING):
        assert [u.speaker for u in target_rows(cfg)] == ["0011"]
    said = [r.getMessage() for r in caplog.records if "speakers.exclude" in r.getMessage()]
    assert said == ["config key 'speakers.exclude': ['9999'] are not speakers of the target corpus esd; they exclude "
                    "nothing"]
