"""CLAP pre-finetuning: the loop selects the best dev epoch by zero-shot UA, keeps it, scores test once.

(That the loss falls is tested on a fixed batch in test_clap_model.py; a tiny random backbone's features of
these tones are nearly constant, so random batches of them do not show learning within a few steps.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metalearn.clap.model import ClapConfig, ClapModel
from metalearn.clap.train import ClapParts, ClapTrainConfig, _optimizer, train_clap, zero_shot_scores
from metalearn.data.manifest import Utterance
from metalearn.features.backbones import BackboneConfig, build_backbone
from metalearn.util.errors import MetalearnError
from tests.fixtures import write_wav

PITCH = {"happy": 440.0, "sad": 220.0}


def rows(folder: Path, n: int, offset: int = 0) -> list[Utterance]:
    """Tones: emotion = pitch, gender = octave; n per (emotion, gender)."""
    out = []
    for emotion, f0 in PITCH.items():
        for gender, octave in (("female", 2.0), ("male", 1.0)):
            for i in range(n):
                path = write_wav(folder / f"{emotion}_{gender}_{offset + i}.wav", 0.3 + 0.02 * i,
                                 freq=f0 * octave * (1 + 0.01 * i))
                out.append(Utterance(f"{emotion}_{gender}_{offset + i}", str(path), "iemocap", "s1", gender, emotion,
                                     emotion, "", 0.3, 16000))
    return out


def model() -> ClapModel:
    torch.manual_seed(0)
    return ClapModel(build_backbone(BackboneConfig(family="whisper", source="tiny")),
                     ClapConfig(text_source="tiny", embed_dim=16, variant="sl", alpha=0.8))


def test_training_keeps_the_best_dev_epoch_and_reports_wa_ua(tmp_path: Path) -> None:
    train, dev, test = rows(tmp_path / "tr", 4), rows(tmp_path / "dv", 2, 10), rows(tmp_path / "te", 2, 20)
    cfg = ClapTrainConfig(batch_size=8, max_epochs=4, patience=4, head_lr=3e-3, trainable_layers=1, max_seconds=1.0,
                          steps_per_epoch=4)
    m = model()
    frozen = {k: v.clone() for k, v in m.backbone.state_dict().items() if "layers.0." in k}
    result = train_clap(m, ClapParts(train, dev, test), ["happy", "sad"], cfg, torch.device("cpu"),
                        tmp_path / "curve.jsonl")
    curve = [json.loads(x) for x in (tmp_path / "curve.jsonl").read_text().splitlines()]
    assert len(curve) == result.epochs == 4 and all(r["train_loss"] > 0 for r in curve)
    best = max(curve, key=lambda r: r["dev"]["ua"])  # the first of equal maxima
    assert result.best_epoch == best["epoch"] and result.dev == best["dev"]
    assert zero_shot_scores(m, dev, ["happy", "sad"], cfg, torch.device("cpu")) == result.dev  # best weights kept
    assert 0 <= result.test["wa"] <= 1 and 0 <= result.test["ua"] <= 1 and result.test["n"] == len(test)
    for k, v in frozen.items():  # below the trainable top layer nothing moved
        assert torch.equal(m.backbone.state_dict()[k], v), k


def test_zero_shot_scores_count_classes(tmp_path: Path) -> None:
    m = model()
    dev = rows(tmp_path / "dv", 1)
    scores = zero_shot_scores(m, dev, ["happy", "sad"], ClapTrainConfig(), torch.device("cpu"))
    assert scores["n"] == 4 and scores["wa"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    with pytest.raises(MetalearnError, match=r"emotions \['sad'\] are not among the classes \['happy'\]"):
        zero_shot_scores(m, dev, ["happy"], ClapTrainConfig(), torch.device("cpu"))


def test_bad_settings_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(MetalearnError, match="batch_size must be >= 2"):
        ClapTrainConfig(batch_size=1)
    with pytest.raises(MetalearnError, match="3 training utterances for a batch of 8"):
        train_clap(model(), ClapParts(rows(tmp_path, 1)[:3], [], []), ["happy", "sad"], ClapTrainConfig(batch_size=8),
                   torch.device("cpu"))


@pytest.mark.parametrize("train_text", [False, True])
def test_optimizer_groups_partition_the_trainable_parameters_by_learning_rate(train_text: bool) -> None:
    torch.manual_seed(0)
    m = ClapModel(build_backbone(BackboneConfig(family="whisper", source="tiny")),
                  ClapConfig(text_source="tiny", embed_dim=16, train_text=train_text))
    cfg = ClapTrainConfig(lr=2e-5, head_lr=3e-3, text_lr=7e-6, trainable_layers=1)
    groups = {g["lr"]: {id(p) for p in g["params"]} for g in _optimizer(m, cfg).param_groups}
    text = {id(p) for p in m.text.parameters()}
    backbone = {id(p) for p in m.backbone.parameters() if p.requires_grad}
    assert set(groups) == ({3e-3, 2e-5, 7e-6} if train_text else {3e-3, 2e-5})
    assert groups[2e-5] == backbone and (groups[7e-6] == text if train_text else True)
    assert groups[3e-3] == {id(p) for n, p in m.named_parameters()
                            if p.requires_grad and not n.startswith(("backbone.", "text."))}
    everything = set().union(*groups.values())
    assert everything == {id(p) for p in m.parameters() if p.requires_grad}
    assert sum(len(g) for g in groups.values()) == len(everything)  # no parameter in two groups
