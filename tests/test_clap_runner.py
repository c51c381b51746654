"""GEmo-CLAP in the runner: CLAP pretune variants, zero-shot at k = 0 and the text-initialised head.

Invariants: a prior carried through any standardisation is the same function of the raw features;
the text-initialised head before any step predicts exactly what zero-shot predicts; zero-shot ignores
the support set; in a run, the zero-shot records are the nearest class prompt of the raw CLAP embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metalearn.clap.model import ClapConfig, ClapModel
from metalearn.clap.variant import load_clap_heads, prompt_head
from metalearn.configs.load import load_config
from metalearn.data.manifest import read_manifest, utterance_key
from metalearn.features.featurize import reparametrize
from metalearn.fewshot.algorithms.finetune import FinetuneConfig
from metalearn.fewshot.algorithms.text_head import TextHead, ZeroShot
from metalearn.fewshot.episode_io import load_episodes
from metalearn.report.records import read_trials, trial_key
from metalearn.run.runner import run_experiment
from metalearn.run.stages import open_variant, variant_features
from metalearn.util.errors import MetalearnError
from tests.conftest import overrides, tiny_corpora


def random_prior(dim: int, ways: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"weight": torch.randn(dim, ways, generator=gen), "bias": torch.randn(ways, generator=gen)}


def test_reparametrize_is_the_same_function_of_the_raw_features() -> None:
    gen = torch.Generator().manual_seed(1)
    prior = random_prior(5, 3)
    shift, scale = torch.randn(4, 5, generator=gen), torch.rand(4, 5, generator=gen) + 0.5
    z = torch.randn(4, 7, 5, generator=gen)
    weight, bias = reparametrize(prior["weight"], prior["bias"], shift, scale)
    assert weight.shape == (4, 5, 3) and bias.shape == (4, 3)
    raw = (z * scale[:, None] + shift[:, None]) @ prior["weight"] + prior["bias"]
    torch.testing.assert_close(z @ weight + bias[:, None], raw, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("standardize", ["global", "per_dim", "none"])
def test_text_head_before_any_step_is_zero_shot(standardize: str) -> None:
    gen = torch.Generator().manual_seed(2)
    prior, ways = random_prior(6, 3), 3
    sx, qx = torch.randn(4, 6, 6, generator=gen) * 3 + 1, torch.randn(4, 9, 6, generator=gen) * 3 + 1
    sy = torch.arange(6).remainder(ways).expand(4, 6)
    zero = ZeroShot(6, prior).predict(sx, sy, qx, ways)
    start = TextHead(6, prior, FinetuneConfig(steps=0, standardize=standardize)).predict(sx, sy, qx, ways)
    torch.testing.assert_close(start, zero, atol=1e-4, rtol=1e-4)
    trained = TextHead(6, prior, FinetuneConfig(steps=20, standardize=standardize)).predict(sx, sy, qx, ways)
    assert not torch.allclose(trained, zero, atol=1e-3)  # the support set moves it


def test_zero_shot_ignores_the_support_set_and_checks_ways() -> None:
    prior = random_prior(4, 2)
    qx = torch.randn(3, 5, 4)
    a = ZeroShot(4, prior).predict(torch.zeros(3, 2, 4), torch.tensor([[0, 1]] * 3), qx, 2)
    b = ZeroShot(4, prior).predict(torch.randn(3, 6, 4), torch.tensor([[1, 0, 1, 0, 1, 0]] * 3), qx, 2)
    assert torch.equal(a, b)
    with pytest.raises(MetalearnError, match="2 classes, episodes have 3"):
        ZeroShot(4, prior).predict(torch.zeros(1, 3, 4), torch.tensor([[0, 1, 2]]), qx[:1], 3)
    with pytest.raises(MetalearnError, match=r"weight \[5, W\]"):
        ZeroShot(5, prior)


def test_prompt_head_equals_zero_shot_logits() -> None:
    torch.manual_seed(0)
    model = ClapModel(12, ClapConfig(text_source="tiny", embed_dim=8)).eval()
    pooled = torch.randn(7, 12)
    classes = ["angry", "happy", "sad"]
    head = prompt_head(model, classes)
    with torch.no_grad():
        features = model.project_audio(pooled)
        torch.testing.assert_close(features @ head["weight"] + head["bias"], model.zero_shot_logits(pooled, classes))


# ---------------------------------------------------------------------------------------------- the runner


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clap_runner")
    tiny_corpora(root / "data")
    return root


TINY = {"clap": True, "algorithms": ["zeroshot", "texthead", "finetune"], "chunk": 3}  # tests/conftest.py


@pytest.fixture(scope="module")
def clap_run(base: Path):
    return run_experiment(load_config(None, overrides(base, "run", **TINY)))


def test_clap_variants_are_trained_and_share_the_untouched_encoders_cache(base: Path, clap_run) -> None:
    assert clap_run.complete
    for loss in ("emo", "sl"):
        folder = base / "pretune" / f"clap-{loss}-iemocap+msp_podcast"
        config = json.loads((folder / "config.json").read_text())
        assert config["kind"] == "clap" and config["weights"] is None and config["clap"]["variant"] == loss
        assert config["clap"]["alpha"] == {"emo": 1.0, "sl": 0.8}[loss]
        assert "other" not in config["classes"]  # excluded by default: no emotion to prompt for
        for name in ("clap_heads.safetensors", "summary.json", "done.json"):
            assert (folder / name).is_file(), name
    assert len(list((base / "cache").iterdir())) == 1  # frozen encoder: one cache for none and both CLAP variants


def test_prompted_algorithms_run_on_clap_variants_only_and_zero_shot_is_k0(clap_run) -> None:
    records = read_trials(clap_run.out)
    assert len({trial_key(r) for r in records}) == len(records) == clap_run.planned
    by = {(r["pretune"], r["algorithm"]) for r in records}
    clap = {"clap-emo-iemocap+msp_podcast", "clap-sl-iemocap+msp_podcast"}
    assert by == {(v, a) for v in clap for a in ("zeroshot", "texthead", "finetune")} | {("none", "finetune")}
    zero = [r for r in records if r["algorithm"] == "zeroshot"]
    assert zero and all(r["k"] == 0 and r["n_support"] == 0 and r["episode_id"].startswith("nway/k1/")
                        for r in zero)
    texthead = [r for r in records if r["algorithm"] == "texthead"]
    assert {r["k"] for r in texthead} == {1, 2}


def test_zero_shot_records_are_the_nearest_prompt_of_the_raw_embeddings(base: Path, clap_run) -> None:
    """Fold standardisation is carried into the prior: the runner's zero-shot = argmax of raw CLAP logits."""
    cfg = load_config(None, overrides(base, "run", **TINY))
    folder = base / "pretune" / "clap-sl-iemocap+msp_podcast"
    rows = read_manifest(base / "manifests" / "esd.csv")
    table = variant_features(cfg, open_variant(folder), rows)
    kept, x = table.rows, table.x
    assert table.layer == "clap"
    assert x.shape[1] == 8 and torch.allclose(x.norm(dim=1), torch.ones(len(x)), atol=1e-5)
    index = {utterance_key(u): i for i, u in enumerate(kept)}
    episodes = {e.episode_id: e for e in load_episodes(clap_run.out / "episodes-seed0.jsonl")[0]}
    model = load_clap_heads(folder)
    checked = 0
    for r in read_trials(clap_run.out):
        if r["algorithm"] != "zeroshot" or r["pretune"] != folder.name:
            continue
        e = episodes[r["episode_id"]]
        head = prompt_head(model, e.classes)
        pred = (x[[index[k] for k in e.query]] @ head["weight"]).argmax(-1)
        accuracy = (pred == torch.tensor(e.query_labels)).float().mean().item()
        assert r["accuracy"] == pytest.approx(accuracy, abs=1e-6)
        checked += 1
    assert checked == 4 * 2  # 4 speakers x 2 repetitions at the smallest k


def test_rerun_has_nothing_left_to_do(base: Path, clap_run) -> None:
    again = run_experiment(load_config(None, overrides(base, "run", **TINY)))
    assert again.ran == 0 and again.complete and again.done == clap_run.done


def test_finetuned_encoder_variant_saves_its_backbone(base: Path) -> None:
    result = run_experiment(load_config(None, overrides(
        base, "finetuned", f"pretune.out={base / 'pretune-ft'}", "pretune.clap.losses=[ml]",
        "pretune.clap.encoder=finetune", "pretune.clap.corpora=iemocap", "pretune.clap.device=cpu",
        "pretune.clap.train={batch_size: 4, steps_per_epoch: 2, max_epochs: 1, max_seconds: 1.0, eval_batch_size: 8}",
        "algorithms.run=[zeroshot]", **TINY)))
    folder = base / "pretune-ft" / "clap-ml-iemocap"
    assert json.loads((folder / "config.json").read_text())["weights"] == "backbone.safetensors"
    assert (folder / "backbone.safetensors").is_file() and (folder / "curve.jsonl").is_file()
    records = read_trials(result.out)
    assert result.complete and {r["pretune"] for r in records} == {"clap-ml-iemocap"}


@pytest.mark.parametrize(("extra", "message"), [
    (["pretune.clap.losses=[]"], r"\['zeroshot', 'texthead'\] need CLAP variants"),
    (["episodes.protocol=binary", "episodes.ks=[2]"], "need episodes.protocol=nway"),
    (["pretune.clap.losses=[emo,xl]"], r"'pretune.clap.losses': \['xl'\] are not CLAP losses"),
    (["pretune.clap.encoder=partial"], "'pretune.clap.encoder': 'partial' is not one of frozen, finetune"),
    (["pretune.clap.model.train_text=true"], "'pretune.clap.model.train_text'"),
])
def test_bad_clap_settings_are_one_line_errors(base: Path, extra: list[str], message: str) -> None:
    with pytest.raises(MetalearnError, match=message):
        load_config(None, overrides(base, "bad", *extra, **TINY))


def test_clap_corpora_must_be_sources(base: Path) -> None:
    with pytest.raises(MetalearnError, match="'pretune.clap.corpora': 'cremad' names corpora"):
        run_experiment(load_config(None, overrides(base, "bad2", "pretune.clap.corpora=cremad", **TINY)))


def test_frozen_clap_variants_embed_like_none_and_are_extracted_once(base: Path, clap_run) -> None:
    folders = [base / "pretune" / n for n in ("none", "clap-emo-iemocap+msp_podcast", "clap-sl-iemocap+msp_podcast")]
    variants = [open_variant(f) for f in folders]
    assert [type(v).__name__ for v in variants] == ["PretuneVariant", "ClapVariant", "ClapVariant"]
    assert len({v.encoder_identity for v in variants}) == 1
