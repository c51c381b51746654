"""full_finetune nests finetune: with trainable_layers 0 it gives finetune's predictions, trial by trial, in a run.

One tiny run (tests/conftest.py: the tiny Whisper on the synthetic corpus, 2 folds, the layer chosen per fold on
validation, standardized per fold) scores both algorithms on the same episodes with the same head options; every
query logit of every trial is captured as the trial engine scores it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metalearn.configs.load import load_config
from metalearn.fewshot.algorithms.base import AdapterBase
from metalearn.fewshot.algorithms.full_finetune import FullFinetune
from metalearn.report.records import read_trials
from metalearn.run.runner import run_experiment
from tests.conftest import overrides, tiny_corpora

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py
HEAD = ("steps=12", "eval_every=3", "lr=0.05", "weight_decay=0.001", "standardize=per_dim")  # both algorithms


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nested")
    tiny_corpora(root / "data")
    return root


def scored(base: Path, out: str, monkeypatch: pytest.MonkeyPatch, *extra: str) -> tuple[dict, list[dict]]:
    """Run finetune and full_finetune; (query logits [Q, W] per (algorithm, episode id), the trial records)."""
    logits: dict[tuple[str, str], torch.Tensor] = {}

    def capture(score):
        def wrapped(self, batch):
            out = score(self, batch)
            for i, e in enumerate(batch.episodes):
                logits[(self.name, e.episode_id)] = out[i, : len(e.query)].detach().cpu()
            return out
        return wrapped

    monkeypatch.setattr(AdapterBase, "score", capture(AdapterBase.score))
    monkeypatch.setattr(FullFinetune, "score", capture(FullFinetune.score))
    options = [f"algorithms.{a}.{o}" for a in ("finetune", "full_finetune") for o in HEAD]
    cfg = load_config(None, overrides(base, out, *options, "features.choose_layer=true", "workers=1",  # captured here
                                      "algorithms.full_finetune.trainable_layers=0", *extra,
                                      algorithms=["finetune", "full_finetune"], meta_train=False))
    run_experiment(cfg)
    return logits, read_trials(base / out)


def test_trainable_layers_0_gives_finetunes_predictions(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logits, records = scored(base, "nested", monkeypatch)
    ids = sorted({e for a, e in logits if a == "finetune"})
    assert ids and sorted(e for a, e in logits if a == "full_finetune") == ids
    # the features are the cache's up to float32 rounding (other batches through the backbone): relative gap
    gap = max(float((logits[("finetune", e)] - logits[("full_finetune", e)]).abs().max()) for e in ids)
    scale = max(float(logits[("finetune", e)].abs().max()) for e in ids)
    assert gap <= 1e-5 * max(scale, 1.0), (gap, scale)
    for e in ids:
        assert torch.equal(logits[("finetune", e)].argmax(-1), logits[("full_finetune", e)].argmax(-1)), e
    by = {(r["algorithm"], r["episode_id"], r["seed"]): r for r in records}
    pairs = [(r, by[("full_finetune", r["episode_id"], r["seed"])]) for r in records if r["algorithm"] == "finetune"]
    assert len(pairs) == len(ids)
    for a, b in pairs:
        assert (a["accuracy"], a["macro_f1"], a["layer"]) == (b["accuracy"], b["macro_f1"], b["layer"])
    chosen = {str(c["layer"]) for c in json.loads((base / "nested" / "layers.json").read_text())}
    assert {b["layer"] for _, b in pairs} == chosen  # each fold's chosen state was read
