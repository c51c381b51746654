"""Backbone fine-tuning of several episodes in one pass (episodes_per_pass) gives the per-trial path's predictions."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import metalearn.fewshot.algorithms.full_finetune_batched as batched_module
from metalearn.features.backbones import BackboneConfig, build_backbone
from metalearn.fewshot.algorithms import AudioInputs
from metalearn.fewshot.algorithms.base import EpisodeBatch
from metalearn.fewshot.algorithms.full_finetune import CPU_SMALL, FullFinetune, FullFinetuneConfig
from metalearn.fewshot.algorithms.functional import AdamSettings, adam_init, batched_adam_step
from metalearn.fewshot.episodes import Episode
from metalearn.run.config import ExperimentConfig
from metalearn.run.grid import Batching, plan_units
from metalearn.run.planning import episodes_per_unit
from tests.test_trunk_finetune import episode, paths, whisper_tiny  # noqa: F401 (paths: the module's clips fixture)

CFG = FullFinetuneConfig(**{**CPU_SMALL, "steps": 8, "eval_every": 2}, episodes_per_pass=4)


def _no_validation(ep: Episode) -> Episode:
    return dataclasses.replace(ep, validation=(), validation_labels=())


def _episodes() -> list[Episode]:
    """Four episodes of one shape, clips of unequal lengths; the last without validation (its final logits)."""
    return [episode("s1"), episode("s2", shift=1), episode("s1", shift=3), _no_validation(episode("s2", shift=5))]


@pytest.fixture
def backbone():
    """The tiny Whisper in float64, so the two paths differ by rounding only: in float32, Adam turns a gradient at
    the rounding level (the binary head's bias gradient after one step is ~1e-7, its exact value ~0) into an
    lr-sized step, and the two paths' logits part by ~1e-4 whatever their order of sums."""
    built = whisper_tiny().double()
    log_mel = built.features
    built.features = lambda waves, lengths: tuple(t.double() if t.is_floating_point() else t
                                                  for t in log_mel(waves.double(), lengths))
    return lambda: built


def _both(backbone, paths, cfg: FullFinetuneConfig):  # noqa: F811
    eps = _episodes()
    adapter = FullFinetune(AudioInputs(backbone, paths), cfg)
    trial = [adapter.run_episode(ep) for ep in eps]
    assert trial[0][0].dtype == torch.float64
    assert adapter.batched()
    together, steps = adapter.run_episodes(eps)
    return [q for q, _ in trial], [info["best_step"] for _, info in trial], together, steps


def _gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("changes", [dict(), dict(backbone_steps=3, weight_decay=1e-2), dict(trainable_layers=0),
                                     dict(backbone_steps=0, head="mlp", mlp_hidden=(8,))],
                         ids=["n1", "n1-steps3-wd", "n0", "n1-steps0-mlp"])
def test_one_pass_gives_the_per_trial_logits_and_steps(backbone, paths, changes) -> None:  # noqa: F811
    trial, trial_steps, together, steps = _both(backbone, paths, dataclasses.replace(CFG, **changes))
    assert _gap(trial, together) <= 1e-5
    assert steps == trial_steps and steps[-1] == CFG.steps  # the episode without validation: its final logits
    assert not all(torch.allclose(q, torch.zeros_like(q)) for q in together)


def test_a_wrong_adam_step_is_caught(backbone, paths, monkeypatch) -> None:  # noqa: F811
    """The comparison can fail: Adam's bias correction one step off moves the logits well past the bound."""
    def off_by_one(params, grads, state, adam, step):  # noqa: ANN001, ANN202
        return batched_adam_step(params, grads, state, adam, step + 1)

    monkeypatch.setattr(batched_module, "batched_adam_step", off_by_one)
    trial, _, together, _ = _both(backbone, paths, dataclasses.replace(CFG, backbone_steps=3))
    assert _gap(trial, together) > 1e-4


def test_the_batched_adam_step_is_torch_adam_with_two_groups_and_weight_decay() -> None:
    gen = torch.Generator().manual_seed(0)
    head, layer = torch.randn(3, 4, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen,
                                                                                     dtype=torch.float64)
    ref = [head.clone().requires_grad_(True), layer.clone().requires_grad_(True)]
    opt = torch.optim.Adam([{"params": [ref[0]]}, {"params": [ref[1]], "lr": 1e-3}], lr=1e-2, betas=(0.8, 0.95),
                           eps=1e-7, weight_decay=0.1)
    mine = [{"p": head.clone()}, {"p": layer.clone()}]
    states = [adam_init(p) for p in mine]
    settings = [AdamSettings(lr, (0.8, 0.95), 1e-7, 0.1) for lr in (1e-2, 1e-3)]
    for step in range(1, 6):
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in ref]
        grads[0] = grads[0].T.contiguous().T  # laid out transposed, as a bmm's weight gradient is
        for p, g in zip(ref, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        for i in range(2):
            batched_adam_step(mine[i], {"p": grads[i]}, states[i], settings[i], step)
    for p, m in zip(ref, mine, strict=True):
        torch.testing.assert_close(m["p"], p.detach(), atol=1e-14, rtol=0)


def test_score_adapts_a_pass_at_a_time_and_ssl_backbones_one_by_one(backbone, paths) -> None:  # noqa: F811
    eps = _episodes()[:3]
    batch = EpisodeBatch(eps, 2, torch.zeros(3, 6, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long),
                         torch.ones(3, 4, dtype=torch.bool))
    adapter = FullFinetune(AudioInputs(backbone, paths), dataclasses.replace(CFG, episodes_per_pass=1))
    a = adapter.score(batch)
    adapter.cfg = dataclasses.replace(CFG, episodes_per_pass=2)  # a pass of 2, then 1
    b = adapter.score(batch)
    assert a.shape == (3, 4, 2) and (a - b).abs().max() <= 1e-5
    ssl = FullFinetune(AudioInputs(lambda: build_backbone(BackboneConfig(family="wav2vec2", source="tiny")), paths),
                       dataclasses.replace(CFG, steps=1, episodes_per_pass=2))
    assert not ssl.batched() and ssl.score(batch).shape == (3, 4, 2)


def test_the_grid_gives_full_finetune_its_episodes_per_pass_per_unit() -> None:
    cfg = ExperimentConfig()
    assert episodes_per_unit(cfg, "full_finetune") == 1
    section = dataclasses.replace(cfg.algorithms.full_finetune, episodes_per_pass=3)
    cfg = dataclasses.replace(cfg, algorithms=dataclasses.replace(cfg.algorithms, full_finetune=section))
    assert episodes_per_unit(cfg, "full_finetune") == 3
    eps = {0: [episode("s1", shift=i) for i in range(7)]}
    for slow, sizes in (({"full_finetune": 3}, [3, 3, 1]), ({"full_finetune": 1}, [1] * 7)):
        units = plan_units(["v"], [0], [["s1"]], ["full_finetune"], eps, Batching(100, slow=slow))
        assert [len(u.episodes) for u in units] == sizes
