"""The transfer baseline (Chen et al.'s Baseline) and fine-tuning's MLP head."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from metalearn.fewshot.algorithms import AdapterSpec, EpisodeBatch, build_adapter
from metalearn.fewshot.algorithms.finetune import FinetuneConfig, FitInputs, fit_heads, fit_heads_loop, reference_head
from metalearn.fewshot.algorithms.heads import head_forward, init_head
from metalearn.fewshot.algorithms.transfer import (
    LabelledClips,
    SgdAdapt,
    Transfer,
    TransferConfig,
    class_logits,
    membership,
    sgd_trajectory,
)
from metalearn.util.errors import MetalearnError

EMOTIONS = ("neutral", "happy", "angry", "sad")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


def speakers(n: int, per: int, dim: int = 12, seed: int = 0) -> tuple[torch.Tensor, list[str], list[int]]:
    """Clips of ``n`` speakers: emotion means shared by every speaker, plus a speaker shift and noise."""
    g = torch.Generator().manual_seed(seed)
    means = 3 * torch.randn(len(EMOTIONS), dim, generator=g)
    xs, labels, who = [], [], []
    for s in range(n):
        shift = torch.randn(dim, generator=g)
        for e in range(len(EMOTIONS)):
            xs.append(means[e] + shift + torch.randn(per, dim, generator=g))
            labels += [EMOTIONS[e]] * per
            who += [s] * per
    return torch.cat(xs), labels, who


def trained(cfg: TransferConfig | None = None, steps: int = 150) -> Transfer:
    x, labels, _ = speakers(4, 20)
    model = Transfer(12, cfg or TransferConfig(hidden=(16,), lr=1e-2), seed=0)
    model.meta_train(LabelledClips(x, labels, seed=0), steps)
    return model


def test_labelled_clips_keep_one_class_order() -> None:
    x = torch.arange(6.0)[:, None]
    clips = LabelledClips(x, ["sad", "happy", "sad", "neutral", "happy", "sad"], seed=0)
    assert clips.classes == ("neutral", "happy", "sad") and clips.ways == 3
    sx, sy, qx, qy = clips.sample(50)
    assert sx.shape == (50, 1, 1) and qx.shape == (50, 0, 1) and qy.shape == (50, 0)
    names = ["sad", "happy", "sad", "neutral", "happy", "sad"]
    assert all(clips.classes[int(y)] == names[int(v)] for v, y in zip(sx.flatten(), sy.flatten(), strict=True))
    with pytest.raises(MetalearnError, match="hold 1 emotion"):
        LabelledClips(x, ["sad"] * 6, seed=0)


def test_class_logits_pick_or_pool_emotions() -> None:
    logits = torch.randn(3, 4)
    nway = class_logits(logits, membership(("sad", "neutral"), EMOTIONS))
    assert torch.equal(nway, logits[:, [3, 0]])  # one emotion per class: exactly its logit
    binary = class_logits(logits, membership(("not_angry", "angry"), EMOTIONS))
    assert torch.allclose(binary[:, 0], torch.logsumexp(logits[:, [0, 1, 3]], -1)) and torch.equal(binary[:, 1],
                                                                                                 logits[:, 2])
    with pytest.raises(MetalearnError, match="'surprise' is not among the emotions"):
        membership(("surprise", "sad"), EMOTIONS)


def test_the_speaker_independent_classifier_works_without_support() -> None:
    model = trained()
    x, labels, who = speakers(6, 10)  # the same emotion means (seed 0); speakers 4 and 5 are new shifts
    new = torch.tensor([w >= 4 for w in who])
    qx, qy = x[new][None], torch.tensor([EMOTIONS.index(e) for e, n in zip(labels, new, strict=True) if n])[None]
    logits = model.predict(torch.zeros(1, 0, 12), torch.zeros(1, 0, dtype=torch.long), qx, 4, classes=EMOTIONS)
    assert (logits.argmax(-1) == qy).float().mean() > 0.8  # chance: 0.25
    assert model.losses[-1] < model.losses[0] / 3


def test_fine_tuning_follows_the_support_and_selects_on_validation() -> None:
    model = trained(TransferConfig(hidden=(16,), lr=1e-2, test_steps=15, test_lr=0.05))
    g = torch.Generator().manual_seed(3)
    sx, qx = torch.randn(2, 4, 12, generator=g), torch.randn(2, 6, 12, generator=g)
    flipped = torch.tensor([[1, 0, 1, 0]] * 2)  # labels the trained classifier disagrees with, on purpose
    classes = ("happy", "neutral")
    unadapted = model.predict(sx[:, :0], flipped[:, :0], sx, 2, classes=classes).argmax(-1)
    adapted = model.predict(sx, flipped, sx, 2, classes=classes).argmax(-1)
    assert (adapted == flipped).float().mean() > (unadapted == flipped).float().mean()
    # validation on the unadapted predictions selects step 0: exactly the unadapted logits
    chosen = model.predict(sx, flipped, qx, 2, sx, unadapted, classes=classes)
    assert torch.equal(chosen, model.predict(sx[:, :0], flipped[:, :0], qx, 2, classes=classes))


def test_sgd_trajectory_is_plain_sgd() -> None:
    params = init_head([5, 7], 3, seed=1)
    g = torch.Generator().manual_seed(0)
    sx, sy, x = torch.randn(6, 5, generator=g), torch.tensor([0, 1, 2, 0, 1, 2]), torch.randn(4, 5, generator=g)
    path = sgd_trajectory(params, sx, sy, x, SgdAdapt(head_forward, 3, 0.1), every=True)
    p = {k: v.clone().requires_grad_() for k, v in params.items()}
    for step in range(3):
        grads = torch.autograd.grad(F.cross_entropy(head_forward(p, sx), sy), list(p.values()))
        p = {k: (v - 0.1 * gr).detach().requires_grad_() for (k, v), gr in zip(p.items(), grads, strict=True)}
        assert torch.allclose(path[step + 1], head_forward(p, x), atol=1e-6)
    last_only = sgd_trajectory(params, sx, sy, x, SgdAdapt(head_forward, 3, 0.1, ("w1", "b1")), every=False)
    assert not torch.allclose(last_only, path[-1])


def test_score_groups_binary_episodes_by_target() -> None:
    model = trained()
    g = torch.Generator().manual_seed(4)
    episodes = [SimpleNamespace(classes=(f"not_{t}", t)) for t in ("sad", "happy", "sad")]
    batch = EpisodeBatch(episodes, 2, torch.tensor([[0, 1]] * 3), torch.zeros(3, 5, dtype=torch.long),
                         torch.ones(3, 5, dtype=torch.bool), torch.randn(3, 2, 12, generator=g),
                         torch.randn(3, 5, 12, generator=g))
    logits = model.score(batch)
    for i, e in enumerate(episodes):
        alone = model.predict(batch.support_x[i:i + 1], batch.support_y[i:i + 1], batch.query_x[i:i + 1], 2,
                              classes=e.classes)
        assert torch.allclose(logits[i], alone[0], atol=1e-6)


def test_transfer_is_built_by_name_and_needs_training() -> None:
    model = build_adapter("transfer", AdapterSpec(dim=12, ways=4, seed=3), {"hidden": [16]})
    assert isinstance(model, Transfer) and model.trains_on == "labels" and model.zero_point and model.meta_learns
    with pytest.raises(MetalearnError, match="meta_train must run before predict"):
        model.predict(torch.zeros(1, 0, 12), torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 3, 12), 4)
    with pytest.raises(MetalearnError, match="classifier 'cos'"):
        Transfer(12, TransferConfig(classifier="cos"))
    cosine = trained(TransferConfig(hidden=(16,), lr=1e-2, classifier="cosine"))  # Baseline++
    assert cosine.losses[-1] < cosine.losses[0]


@pytest.mark.parametrize("with_val", [False, True])
def test_mlp_finetuning_matches_the_reference_loop(with_val: bool) -> None:
    g = torch.Generator().manual_seed(0)
    sx, qx = torch.randn(3, 6, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    sy = torch.tensor([[0, 1, 2, 0, 1, 2]] * 3)
    val = (torch.randn(3, 5, 5, generator=g), torch.randint(0, 3, (3, 5), generator=g)) if with_val else (None, None)
    head = init_head([5, 8], 3, seed=2)
    init = {k: v.expand(3, *v.shape).contiguous() for k, v in head.items()}
    cfg = FinetuneConfig(steps=12, lr=0.05, weight_decay=1e-3, eval_every=3, head="mlp")
    rows = FitInputs(sx, sy, qx, *val)
    fast, ref = fit_heads(rows, 3, cfg, init), fit_heads_loop(rows, 3, cfg, init)
    assert torch.allclose(fast.logits, ref.logits, atol=1e-5) and torch.equal(fast.best_step, ref.best_step)
    assert all(torch.allclose(fast.params[k], ref.params[k], atol=1e-5) for k in init)
    assert torch.allclose(reference_head(head)(qx[0]), head_forward(head, qx[0]))


def test_finetune_head_is_selectable() -> None:
    g = torch.Generator().manual_seed(1)
    sx, qx, sy = torch.randn(2, 6, 5, generator=g), torch.randn(2, 4, 5, generator=g), torch.tensor([[0, 1] * 3] * 2)
    mlp = build_adapter("finetune", AdapterSpec(5, 2, seed=4), {"head": "mlp", "mlp_hidden": [8], "steps": 0,
                                                                "standardize": "none"})
    start = init_head([5, 8], 2, seed=4)
    assert torch.allclose(mlp.predict(sx, sy, qx, 2), head_forward(start, qx))  # 0 steps: the seeded MLP itself
    with pytest.raises(MetalearnError, match="head 'deep'"):
        build_adapter("finetune", AdapterSpec(5, 2), {"head": "deep"})
    prior = {"weight": torch.zeros(5, 2), "bias": torch.zeros(2)}
    with pytest.raises(MetalearnError, match="a prompt prior is a linear head"):
        build_adapter("texthead", AdapterSpec(5, 2, prior=prior), {"head": "mlp"})
