"""The experiment config: defaults -> YAML -> overrides; every mistake is one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalearn.configs.load import load_config, preset_names
from metalearn.fewshot.algorithms.maml import MAMLConfig
from metalearn.pretune.config import PretuneConfig
from metalearn.run.config import ExperimentConfig
from metalearn.run.run_folder import to_yaml
from metalearn.run.stages import check_roots
from metalearn.util.errors import MetalearnError

PRESETS = preset_names()
PAPER_A_CORPORA = ("target", "sources.iemocap", "sources.msp_improv", "sources.mandarin_affective",
                   "sources.msp_podcast")


def test_layers_apply_in_order_and_give_dataclasses() -> None:
    cfg = load_config("demo", ["episodes.ks=[1,3]", "algorithms.maml.inner_lr=0.2", "algorithms.maml.hidden=[32,16]"])
    assert isinstance(cfg, ExperimentConfig) and isinstance(cfg.algorithms.maml, MAMLConfig)
    assert isinstance(cfg.pretune.recipe, PretuneConfig)
    assert cfg.episodes.ks == [1, 3] and cfg.algorithms.maml.inner_lr == 0.2
    assert cfg.algorithms.maml.hidden == (32, 16)           # the constructor's own type
    assert cfg.pretune.recipe.trainable_layers == 1 and cfg.pretune.recipe.layer == 1  # from demo.yaml
    assert cfg.algorithms.fomaml.inner_lr == MAMLConfig().inner_lr  # the dataclass default
    assert cfg.out == "results/demo"


@pytest.mark.parametrize("preset", PRESETS)
def test_resolved_config_round_trips(preset: str, tmp_path: Path) -> None:
    overrides = {"paper_a": [f"data.{k}.root=/x" for k in PAPER_A_CORPORA],
                 "paper_b": ["data.target.root=/x"]}.get(preset, [])
    cfg = load_config(preset, overrides)
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(str(path)) == cfg


@pytest.mark.parametrize(("override", "expected"), [
    (["algorithms.maml.inner_lrr=3"], "config key 'algorithms.maml.inner_lrr' is not a valid key; closest valid "
                                      "keys: algorithms.maml.inner_lr"),
    (["episodes.repetitions=many"], "config key 'episodes.repetitions': Value 'many'"),
    (["episode.ks=[1]"], "closest valid keys: episodes"),
    (["algorithms.run=[mamll]"], "unknown algorithm 'mamll'; did you mean maml"),
    (["episodes.ks=[0,1]"], "config key 'episodes.ks'"),
    (["episodes.protocol=triplet"], "config key 'episodes.protocol': 'triplet'"),
    (["episodes.ks"], "override 'episodes.ks' is not key=value"),
    (["pretune.recipe.lr=-1"], "pretune lr must be > 0"),
    (["tracking.mode=offlne"], "unknown W&B mode 'offlne'"),
])
def test_mistakes_are_one_line_naming_the_key(override: list[str], expected: str) -> None:
    with pytest.raises(MetalearnError) as err:
        load_config("demo", override)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(MetalearnError, match="unknown preset 'dmeo'; expected one of: .*demo"):
        load_config("dmeo")


def test_real_corpus_preset_needs_its_roots(tmp_path: Path) -> None:
    with pytest.raises(MetalearnError, match=r"config key 'data.\w+.*root' has no value"):
        load_config("paper_a")
    overrides = [f"data.{k}.root={tmp_path / 'nowhere'}" for k in PAPER_A_CORPORA]
    cfg = load_config("paper_a", [*overrides, f"data.manifests_dir={tmp_path}"])
    with pytest.raises(MetalearnError, match=r"config key 'data.target.root': .*nowhere is not a folder"):
        check_roots(cfg)


def test_bad_yaml_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("episodes: {ks: [1, 2}\n")
    with pytest.raises(MetalearnError, match="bad.yaml: not valid YAML") as err:
        load_config(str(path))
    assert "\n" not in str(err.value)
    path.write_text("episodes:\n  kss: [1]\n")
    with pytest.raises(MetalearnError, match="'episodes.kss' is not a valid key; closest valid keys: episodes.ks"):
        load_config(str(path))


def test_a_yaml_whose_top_level_is_not_a_mapping_is_one_line(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(MetalearnError, match=r"list.yaml: the top level must be a mapping of config keys.*not a list"):
        load_config(str(path))


def test_only_names_a_registered_algorithm_and_may_name_one_left_out():
    cfg = load_config("demo", ["algorithms.run=[finetune]"])  # the preset's only.full_finetune is simply unused
    assert cfg.algorithms.run == ["finetune"] and "full_finetune" in cfg.algorithms.only
    with pytest.raises(MetalearnError, match="'algorithms.only.fulll_finetune'.*not a registered algorithm"):
        load_config("demo", ["algorithms.only.fulll_finetune.ks=[1]"])


def test_a_manifest_without_rows_is_one_line_naming_it(tmp_path):
    from metalearn.data.manifest import COLUMNS
    from metalearn.run.runner import run_experiment

    manifest = tmp_path / "empty.csv"
    manifest.write_text(",".join(COLUMNS) + "\n")
    cfg = load_config("demo", [f"data.target.manifest={manifest}", f"out={tmp_path / 'run'}", "pretune.subsets=[none]",
                               "pretune.clap.losses=[]", "algorithms.run=[finetune]", "tracking.wandb=false"])
    with pytest.raises(MetalearnError, match=r"empty.csv: no utterance of any speaker"):
        run_experiment(cfg)


def test_a_key_can_be_deleted_back_to_its_default() -> None:
    """``~key`` (as Hydra users type it) drops the preset's value, so a mapping can be emptied; a merge cannot."""
    cfg = load_config("demo", ["~data.sources", "~pretune.clap", "~meta_train.sources", "pretune.subsets=[none]",
                               "~algorithms.only", "algorithms.run=[finetune]"])
    assert cfg.data.sources == {} and cfg.meta_train.sources == [] and cfg.pretune.clap.losses == []
    assert load_config("demo").data.sources  # the preset's own
    with pytest.raises(MetalearnError, match=r"override '~data.nope': 'data.nope' is not a config key"):
        load_config("demo", ["~data.nope"])


def test_a_manifest_waives_the_root(tmp_path: Path) -> None:
    """A corpus named by its manifest is read from it: no root needed; without the file, one line names the key."""
    cfg = load_config(None, [f"data.target.manifest={tmp_path / 'mine.csv'}"])
    assert cfg.data.target.root == ""
    with pytest.raises(MetalearnError, match="config key 'data.target.root':  is not a folder"):
        check_roots(cfg)
