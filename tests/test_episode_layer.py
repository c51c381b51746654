"""The student episode reads the demo run's feature: the layer from the run folder (the fold that tested the
speaker), else one chosen as the run chooses (SimpleShot on the other speakers), and the page says which and why,
with a line on each method."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metalearn.data.manifest import Utterance
from metalearn.demo.cli import add_parser
from metalearn.demo.episode import DemoSettings, main, run_episode_demo
from metalearn.demo.layer import LayerChoice, run_layer, validation_layer
from metalearn.demo.methods import method_line
from metalearn.demo.page import episode_page
from metalearn.util.errors import MetalearnError
from tests.test_episode_demo import EMOTIONS, make_data, tiny_manifest  # noqa: F401 (a fixture)

FOLDS = [{"fold": 0, "test": ["0011", "0012"], "validation": ["0013"], "meta_train": ["0014"]},
         {"fold": 1, "test": ["0013", "0014"], "validation": ["0011"], "meta_train": ["0012"]}]


def run_folder(tmp_path: Path, layers: dict[tuple[str, int], int]) -> Path:
    folder = tmp_path / "run"
    folder.mkdir(exist_ok=True)
    (folder / "folds.json").write_text(json.dumps(FOLDS))
    entries = [{"variant": v, "fold": f, "layer": layer, "validation": FOLDS[f]["validation"],
                "scores": {str(i): 0.5 + 0.1 * (i == layer) for i in range(4)}} for (v, f), layer in layers.items()]
    (folder / "layers.json").write_text(json.dumps(entries))
    return folder


def test_the_run_folder_gives_the_layer_of_the_fold_that_tested_the_speaker(tmp_path: Path) -> None:
    folder = run_folder(tmp_path, {("none", 0): 1, ("none", 1): 3, ("pft-a", 0): 2})
    choice = run_layer(folder, "none", "0012", states=4)
    assert (choice.layer, choice.source) == (1, "run") and "fold 0" in choice.reason and "60.0%" in choice.reason
    assert run_layer(folder, "none", "0014", states=4).layer == 3
    assert run_layer(folder, "pft-a", "0011", states=4).layer == 2
    with pytest.raises(MetalearnError, match="no layer of variant 'pft-a' in fold 1"):
        run_layer(folder, "pft-a", "0013", states=4)
    with pytest.raises(MetalearnError, match="test speaker of no fold"):
        run_layer(folder, "none", "0099", states=4)


def layered(rows: list[Utterance], x: torch.Tensor, good: int, states: int = 4) -> np.ndarray:
    """[N, states, D]: state ``good`` holds the separable features, the others noise."""
    rng = np.random.default_rng(1)
    values = rng.normal(size=(len(rows), states, x.shape[1])).astype(np.float32)
    values[:, good] = x.numpy()
    return values


def test_without_a_run_the_layer_is_chosen_on_the_other_speakers_only() -> None:
    rows, x = make_data()
    values = layered(rows, x, good=2)
    choice = validation_layer(values, rows, "0012", k=3, seed=0)
    assert (choice.layer, choice.source) == (2, "validation") and choice.scores[2] > max(choice.scores[i] for i in
                                                                                          (0, 1, 3))
    assert "0012 was not read" in choice.reason
    mine = np.array([u.speaker == "0012" for u in rows])
    scrambled = values.copy()
    scrambled[mine] = np.random.default_rng(5).normal(size=scrambled[mine].shape)  # the speaker's own features
    assert validation_layer(scrambled, rows, "0012", k=3, seed=0).scores == pytest.approx(choice.scores)


def test_the_page_states_its_layer_and_explains_every_method() -> None:
    rows, x = make_data()
    choice = LayerChoice(1, "run", "the demo run results/demo read it for none in fold 1")
    result = run_episode_demo(x, rows, "0012", ["majority", "simpleshot", "finetune"],
                              DemoSettings(2, queries=2, meta_steps=0, seed=0), feature=choice)
    html = episode_page(result, None, {})
    assert "Features: hidden state 1</b>" in html and "the demo run results/demo read it for none in fold 1" in html
    for name in ("majority", "simpleshot", "finetune"):
        assert method_line(name) in html.replace("&#x27;", "'")
    assert len({method_line(n) for n in ("majority", "simpleshot", "finetune", "maml")}) == 4


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_episode_command_reads_the_run_folder_or_chooses_and_says_so(tmp_path: Path, tiny_manifest: Path,  # noqa: F811
                                                                     capsys: pytest.CaptureFixture) -> None:
    common = ["episode", "--manifest", str(tiny_manifest), "--cache-dir", str(tmp_path / "cache"), "--k", "2",
              "--backbone-source", "tiny", "--backbone-family", "wav2vec2", "--algorithms", "simpleshot,finetune",
              "--out", str(tmp_path / "e.png"), "--html", str(tmp_path / "e.html")]
    folder = run_folder(tmp_path, {("none", 0): 1, ("none", 1): 0})
    (folder / "config.yaml").write_text("backbone: {family: wav2vec2, source: tiny}\n")
    assert main(parse([*common, "--run", str(folder)])) == 0
    html = (tmp_path / "e.html").read_text(encoding="utf-8")
    assert "Features: hidden state 1</b>" in html and "fold 0" in html  # speaker 0011 is tested in fold 0
    assert "features: hidden state 1 of the backbone" in capsys.readouterr().out
    assert main(parse(common)) == 0
    html = (tmp_path / "e.html").read_text(encoding="utf-8")
    assert "Features: hidden state" in html and "chosen as the demo run chooses" in html
    assert main(parse([*common, "--layer", "-1"])) == 0
    assert "(--layer -1)" in (tmp_path / "e.html").read_text(encoding="utf-8")
    (folder / "config.yaml").write_text("backbone: {family: whisper, source: default}\n")
    with pytest.raises(MetalearnError, match="its backbone has family='whisper'"):
        main(parse([*common, "--run", str(folder)]))
