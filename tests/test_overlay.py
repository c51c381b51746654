"""The tuned overlay: speaker ids written quoted and refused as numbers, per-variant values winning over the
fold's, and the committed overlay (fold-level values only) still read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from metalearn.configs.load import load_config
from metalearn.configs.overlay import read_overlay
from metalearn.run.config import TunedConfig, TunedFold
from metalearn.run.grid import Fold
from metalearn.run.tuned import apply_tuned, meta_steps_for, options_for
from metalearn.tune.results import overlay
from metalearn.util.errors import MetalearnError

FOLDS = [Fold(0, ("0011",), ("0019", "0020"), ("0012", "0013")), Fold(1, ("0012",), ("0011", "0017"), ("0014",))]


def _cfg():
    return load_config(None, ["tracking.wandb=false", "meta_train.steps=300", "data.target.root=unused"])


def test_speaker_ids_are_written_quoted_and_read_back_as_text(tmp_path: Path) -> None:
    text = overlay(_cfg(), FOLDS, {})
    for speaker in ("0011", "0017", "0019", "0020"):
        assert f"'{speaker}'" in text and f" {speaker}\n" not in text and f" {speaker}," not in text
    path = tmp_path / "tuned.yaml"
    path.write_text(text)
    assert yaml.safe_load(text)["tuned"]["folds"][0]["validation"] == ["0019", "0020"]
    folds = read_overlay(path)
    assert [(f.validation, f.meta_train) for f in folds] == [(["0019", "0020"], ["0012", "0013"]),
                                                             (["0011", "0017"], ["0014"])]


def test_an_unquoted_leading_zero_speaker_id_keeps_its_text(tmp_path: Path) -> None:
    """YAML 1.1 would read 0011 as octal 9; the overlay reader keeps the text the user wrote."""
    path = tmp_path / "tuned.yaml"
    path.write_text("tuned:\n  folds:\n  - fold: 0\n    validation: [0011]\n    meta_train: ['0012']\n")
    fold = read_overlay(path)[0]
    assert fold.validation == ["0011"] and fold.meta_train == ["0012"]


def test_the_committed_overlay_is_read_with_its_fold_level_values() -> None:
    cfg = load_config("demo", ["tracking.wandb=false"])
    fold = cfg.tuned.folds[0]
    assert all(isinstance(s, str) and len(s) == 4 for s in [*fold.validation, *fold.meta_train])
    for variant in (None, "none", "pft-iemocap+msp_podcast"):  # no variant of its own: the fold's values
        assert options_for(cfg, "maml", 0, variant)["inner_lr"] == fold.algorithms["maml"]["inner_lr"]
        assert meta_steps_for(cfg, "maml", 0, variant) == fold.meta_steps["maml"]


def _tuned(cfg, variants: dict):
    from metalearn.run.config import TunedVariant

    folds = [TunedFold(f.fold, list(f.validation), list(f.meta_train), {"finetune": {"lr": 0.5, "steps": 7}},
                       {"maml": 40}, variants={v: TunedVariant(**values) for v, values in variants.items()})
             for f in FOLDS]
    return dataclasses.replace(cfg, tuned=TunedConfig("", folds))


def test_a_variants_own_values_win_method_by_method() -> None:
    cfg = _tuned(_cfg(), {"pft": {"algorithms": {"finetune": {"lr": 0.25}}, "meta_steps": {"maml": 10}},
                          "clap": {"algorithms": {"protonet": {"cosine_scale": 3.0}}, "meta_steps": {}}})
    assert options_for(cfg, "finetune", 1, "pft")["lr"] == 0.25
    assert options_for(cfg, "finetune", 1, "pft")["steps"] == cfg.algorithms.finetune.steps  # the variant's own
    assert options_for(cfg, "finetune", 1, "clap") == options_for(cfg, "finetune", 1)  # none of its own: the fold's
    assert options_for(cfg, "finetune", 1)["lr"] == 0.5 and options_for(cfg, "finetune", 1, "other")["lr"] == 0.5
    assert options_for(cfg, "protonet", 0, "clap")["cosine_scale"] == 3.0
    assert options_for(cfg, "protonet", 0, "pft")["cosine_scale"] == cfg.algorithms.protonet.cosine_scale
    assert (meta_steps_for(cfg, "maml", 0, "pft"), meta_steps_for(cfg, "maml", 0, "clap"),
            meta_steps_for(cfg, "maml", 0), meta_steps_for(cfg, "anil", 0, "pft")) == (10, 40, 40, 300)
    assert apply_tuned(cfg, FOLDS) is cfg
    bad = _tuned(_cfg(), {"pft": {"algorithms": {"finetuned": {"lr": 0.1}}, "meta_steps": {}}})
    with pytest.raises(MetalearnError, match=r"fold 0 names unknown algorithms \['finetuned'\]"):
        apply_tuned(bad, FOLDS)


def test_an_overlay_edited_after_tune_wrote_it_is_refused_unless_its_digest_goes(tmp_path: Path) -> None:
    text = overlay(_cfg(), FOLDS, {})
    assert text.rstrip().splitlines()[-1].startswith("sha256: ")
    path = tmp_path / "tuned.yaml"
    path.write_text(text)
    assert len(read_overlay(path)) == 2  # as written: accepted
    path.write_text(text.replace("'0019'", "'0018'", 1))
    with pytest.raises(MetalearnError, match=r"tuned\.yaml: its values do not match its sha256 .* delete the sha256"):
        read_overlay(path)
    path.write_text("\n".join(line for line in text.replace("'0019'", "'0018'", 1).splitlines()
                              if not line.startswith("sha256:")) + "\n")
    assert read_overlay(path)[0].validation == ["0018", "0020"]  # by hand, without a digest: read as it is
