"""Multi-corpus pre-finetuning: sampler, loss, splits, freezing, early stopping, variants, CLI and DDP."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from metalearn.data.manifest import Utterance, read_manifest, write_manifest
from metalearn.features.backbones import BackboneConfig, build_backbone
from metalearn.pretune.cli import main as pretune_main
from metalearn.pretune.config import PretuneConfig, apply_overrides, preset
from metalearn.pretune.data import SplitAudio, build_splits, split_corpus
from metalearn.pretune.model import MultiHeadClassifier, freeze_all_but_top, scaled_loss
from metalearn.pretune.schedule import EarlyStopping, ProportionalCorpusSampler
from metalearn.pretune.subsets import (
    Training,
    enumerate_subsets,
    load_variant,
    parse_subsets,
    run_variants,
    variant_name,
)
from metalearn.pretune.train import train
from metalearn.util.errors import MetalearnError
from tests.fixtures import write_wav

W2V = BackboneConfig(family="wav2vec2", source="tiny")
WHISPER = BackboneConfig(family="whisper", source="tiny")
FREQ = {"neutral": 150.0, "happy": 300.0, "angry": 450.0, "sad": 600.0}
CPU = torch.device("cpu")


def _corpus(root: Path, name: str, plan: list[tuple[str, str]], rng: np.random.Generator) -> Path:
    """A manifest of ``name`` with one short tone + noise per (emotion, split) in ``plan``."""
    rows = []
    for i, (emotion, split) in enumerate(plan):
        seconds = float(rng.choice([0.3, 0.4, 0.5]))
        t = np.arange(int(seconds * 16_000)) / 16_000
        x = 0.3 * np.sin(2 * np.pi * FREQ[emotion] * t) + 0.02 * rng.standard_normal(t.shape)
        path = write_wav(root / name / f"{name}_{i:03d}.wav", data=x.astype(np.float32))
        rows.append(Utterance(f"{name}_{i:03d}", str(path), name, f"spk{i % 3}", "female", emotion, emotion,
                              split, seconds, 16_000))
    return write_manifest(rows, root / f"{name}.csv")


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """alpha: 20 utterances, 4 emotions, no split; beta: binary, its own split, one sad test clip."""
    root = tmp_path_factory.mktemp("corpora")
    rng = np.random.default_rng(0)
    emotions = ["neutral", "happy", "angry", "sad"]
    alpha = [(emotions[i % 4], "") for i in range(20)]
    beta = [(["neutral", "angry"][i % 2], "train") for i in range(10)]
    beta += [("neutral", "development"), ("angry", "development"), ("neutral", "test1"), ("angry", "test2"),
             ("sad", "test1")]
    return [_corpus(root, "alpha", alpha, rng), _corpus(root, "beta", beta, rng)]


def _utterances(manifests: list[Path]) -> list[Utterance]:
    return [u for m in manifests for u in read_manifest(m)]


def _cfg(**kw: object) -> PretuneConfig:
    base = dict(lr=1e-3, batch_size=4, grad_accum=1, max_epochs=2, patience=2, max_seconds=0.5,
                steps_per_epoch=2, eval_batch_size=8, num_workers=0, device="cpu")
    return PretuneConfig(**{**base, **kw})


# --- sampler -------------------------------------------------------------------------------------------

def test_sampler_frequencies_follow_corpus_sizes() -> None:
    sizes = {"a": 100, "b": 300, "c": 600}
    sampler = ProportionalCorpusSampler(sizes, batch_size=3, seed=1)
    counts: Counter[str] = Counter()
    for step, (corpus, idx) in enumerate(sampler):
        if step == 6000:
            break
        assert len(idx) == 3 and all(0 <= i < sizes[corpus] for i in idx)
        counts[corpus] += 1
    for c, n in sizes.items():
        assert abs(counts[c] / 6000 - n / 1000) < 0.02, counts


def test_sampler_covers_a_corpus_before_repeating() -> None:
    sampler = ProportionalCorpusSampler({"a": 10, "b": 7}, batch_size=2, seed=3)
    seen: dict[str, list[int]] = {"a": [], "b": []}
    for step, (corpus, idx) in enumerate(sampler):
        seen[corpus] += idx
        if step == 200:
            break
    assert sorted(seen["a"][:10]) == list(range(10)) and sorted(seen["b"][:7]) == list(range(7))


def _take(sampler: ProportionalCorpusSampler, n: int) -> list[tuple[str, list[int]]]:
    out = []
    for item in sampler:
        out.append(item)
        if len(out) == n:
            return out
    return out


def test_sampler_is_deterministic_per_seed() -> None:
    sizes = {"a": 50, "b": 20}
    assert _take(ProportionalCorpusSampler(sizes, 4, seed=5), 100) == _take(
        ProportionalCorpusSampler(sizes, 4, seed=5), 100)
    assert _take(ProportionalCorpusSampler(sizes, 4, seed=5), 100) != _take(
        ProportionalCorpusSampler(sizes, 4, seed=6), 100)


@pytest.mark.parametrize(("world_size", "batch_size"), [(2, 4), (3, 4), (2, 5)])
def test_sampler_ranks_partition_each_global_batch(world_size: int, batch_size: int) -> None:
    sizes = {"a": 13, "b": 31, "c": 8}
    whole = _take(ProportionalCorpusSampler(sizes, batch_size, seed=2), 300)
    shares = [_take(ProportionalCorpusSampler(sizes, batch_size, 2, world_size, r), 300)
              for r in range(world_size)]
    for step, (corpus, batch) in enumerate(whole):
        assert {s[step][0] for s in shares} == {corpus}  # every rank draws the same corpus
        parts = [s[step][1] for s in shares]
        assert sum(len(p) for p in parts) == len(batch) == batch_size  # no position twice ...
        merged = [None] * batch_size
        for r, p in enumerate(parts):
            merged[r::world_size] = p
        assert merged == batch  # ... and every position once


def test_sampler_rejects_a_batch_smaller_than_the_world() -> None:
    with pytest.raises(ValueError, match="world_size"):
        ProportionalCorpusSampler({"a": 3}, batch_size=1, world_size=2)


# --- loss, subsets, config ------------------------------------------------------------------------------

@pytest.mark.parametrize("n_classes", [2, 4])
def test_scaled_loss_is_cross_entropy_over_log_classes(n_classes: int) -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(6, n_classes), torch.randint(0, n_classes, (6,))
    expected = torch.nn.functional.cross_entropy(logits, y) / math.log(n_classes)
    assert torch.allclose(scaled_loss(logits, y, n_classes), expected)
    assert torch.allclose(scaled_loss(logits, y, n_classes, "sum"), expected * 6)
    # Chance level costs 1.0 whatever the class count: binary and 4-class corpora weigh the same.
    assert torch.allclose(scaled_loss(torch.zeros(6, n_classes), y, n_classes), torch.tensor(1.0))


def test_subsets_of_four_corpora() -> None:
    corpora = ["msp_podcast", "iemocap", "mandarin_affective", "msp_improv"]
    subsets = enumerate_subsets(corpora)
    assert len(subsets) == 16 and subsets[0] == () and len(set(subsets)) == 16
    assert subsets == enumerate_subsets(reversed(corpora))
    names = [variant_name(s) for s in subsets]
    assert names[0] == "none" and names[1] == "pft-iemocap"
    assert names[-1] == "pft-iemocap+mandarin_affective+msp_improv+msp_podcast"
    assert variant_name(("b", "a")) == "pft-a+b"
    assert parse_subsets("b+a,none,a+b", ["a", "b"]) == [("a", "b"), ()]
    with pytest.raises(MetalearnError, match="'c'"):
        parse_subsets("a+c", ["a", "b"])


def test_config_presets_and_overrides() -> None:
    paper = preset("paper")
    assert (paper.lr, paper.batch_size, paper.grad_accum, paper.max_epochs, paper.patience) == (
        3e-5, 1, 4, 200, 3)
    assert (paper.min_delta, paper.max_seconds, paper.trainable_layers) == (0.02, 5.0, None)
    cfg = apply_overrides(preset("cpu-small"), ["lr=0.5", "trainable_layers=none", "steps_per_epoch=7",
                                                "precision=bf16"])
    assert (cfg.lr, cfg.trainable_layers, cfg.steps_per_epoch, cfg.precision) == (0.5, None, 7, "bf16")
    with pytest.raises(MetalearnError, match="config key 'lrate' is not a valid key; closest valid keys: .*lr"):
        apply_overrides(paper, ["lrate=1"])
    with pytest.raises(MetalearnError, match="config key 'batch_size': Value 'two'.*could not be converted"):
        apply_overrides(paper, ["batch_size=two"])
    with pytest.raises(MetalearnError, match="precision"):
        apply_overrides(paper, ["precision=fp8"])
    with pytest.raises(MetalearnError, match="preset"):
        preset("huge")


# --- data ---------------------------------------------------------------------------------------------

def test_splits_own_and_random(manifests: list[Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        splits = build_splits(_utterances(manifests), seed=0, split="utterance")
    alpha, beta = splits["alpha"], splits["beta"]
    assert not alpha.own_split and alpha.sizes() == {"train": 16, "dev": 2, "test": 2}
    assert alpha.labels == ("neutral", "happy", "angry", "sad")
    assert beta.own_split and beta.sizes() == {"train": 10, "dev": 2, "test": 2}
    assert beta.labels == ("neutral", "angry") and beta.dropped == {"test emotion not in train labels": 1}
    assert "beta: dropped 1" in caplog.text
    # The random split depends on the seed and the corpus alone, not on the other corpora.
    again = split_corpus("alpha", read_manifest(manifests[0]), seed=0, split="utterance")
    assert [u.utterance_id for u in again.dev] == [u.utterance_id for u in alpha.dev]
    other = split_corpus("alpha", read_manifest(manifests[0]), seed=1, split="utterance")
    assert [u.utterance_id for u in other.train] != [u.utterance_id for u in alpha.train]


IEMOCAP_RAW = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}


def _raw_corpus(root: Path) -> list[Utterance]:
    """40 IEMOCAP-like rows (8 per raw label, hap and exc both canonical happy), no split, one tiny wav each."""
    rows = []
    for i in range(40):
        raw = list(IEMOCAP_RAW)[i % 5]
        path = write_wav(root / f"iemo_{i:03d}.wav", seconds=0.05)
        rows.append(Utterance(f"iemo_{i:03d}", str(path), "iemocap", f"spk{i % 2}", "female", IEMOCAP_RAW[raw], raw,
                              "", 0.05, 16_000))
    return rows


def test_config_labels_choice() -> None:
    assert PretuneConfig().labels == "canonical" and preset("paper").labels == "canonical"
    assert apply_overrides(PretuneConfig(), ["labels=raw"]).labels == "raw"
    with pytest.raises(MetalearnError, match="pretune labels 'both': expected one of canonical, raw"):
        PretuneConfig(labels="both")
    with pytest.raises(MetalearnError, match="pretune labels 'x'"):
        build_splits([], labels="x")


def test_raw_labels_split_the_same_rows_into_more_classes(tmp_path: Path) -> None:
    rows = _raw_corpus(tmp_path)
    canonical = build_splits(rows, seed=0)["iemocap"]
    raw = build_splits(rows, seed=0, labels="raw")["iemocap"]
    assert canonical.labels == ("neutral", "happy", "angry", "sad")
    assert raw.labels == ("ang", "exc", "hap", "neu", "sad")
    for part in ("train", "dev", "test"):  # the label choice never moves an utterance between parts
        assert [u.utterance_id for u in raw.part(part)] == [u.utterance_id for u in canonical.part(part)]
    by_part = {p: SplitAudio({"iemocap": s}, "train", 0.05) for p, s in (("raw", raw), ("canonical", canonical))}
    for i, u in enumerate(raw.train):
        assert by_part["raw"][("iemocap", i)][1] == raw.labels.index(u.raw_label)
        assert by_part["canonical"][("iemocap", i)][1] == canonical.labels.index(u.emotion)
    assert {by_part["raw"][("iemocap", i)][1] for i in range(len(raw.train))} == set(range(5))


def test_raw_labels_drop_dev_labels_missing_from_train(tmp_path: Path) -> None:
    rows = _raw_corpus(tmp_path)
    rows = [dataclasses.replace(u, split="train") for u in rows if u.raw_label != "exc"] + [
        dataclasses.replace(u, split="development") for u in rows if u.raw_label in ("exc", "neu")]
    raw = split_corpus("iemocap", rows, labels="raw")
    assert raw.labels == ("ang", "hap", "neu", "sad") and raw.dropped == {"dev raw label not in train labels": 8}
    assert len(raw.dev) == 8 and {u.raw_label for u in raw.dev} == {"neu"}
    canonical = split_corpus("iemocap", rows)  # exc is canonical happy, which train has
    assert len(canonical.dev) == 16 and canonical.dropped == {}


# --- model --------------------------------------------------------------------------------------------

def _trainable(module: torch.nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def test_freezing_keeps_only_the_top_layers_and_heads() -> None:
    ssl = build_backbone(W2V)
    freeze_all_but_top(ssl, 1)
    assert _trainable(ssl) and all(n.startswith("model.encoder.layers.1.") for n in _trainable(ssl))
    model = MultiHeadClassifier(ssl, {"a": ["x", "y"], "b": ["x", "y", "z"]})
    assert {n for n in _trainable(model) if n.startswith("heads.")} == {
        "heads.a.weight", "heads.a.bias", "heads.b.weight", "heads.b.bias"}
    freeze_all_but_top(ssl, 0)
    assert not _trainable(ssl)
    for family in ("wavlm", "hubert", "data2vec-audio"):
        other = build_backbone(BackboneConfig(family=family, source="tiny"))
        freeze_all_but_top(other, 1)
        assert _trainable(other) and all(n.startswith("model.encoder.layers.1.") for n in _trainable(other))
    whisper = build_backbone(WHISPER)
    freeze_all_but_top(whisper, 1)
    assert {n.split(".")[1] for n in _trainable(whisper)} == {"layers", "layer_norm"}
    assert all(n.startswith(("encoder.layers.1.", "encoder.layer_norm.")) for n in _trainable(whisper))
    freeze_all_but_top(whisper, None)
    assert "encoder.conv1.weight" in _trainable(whisper)
    assert "encoder.embed_positions.weight" not in _trainable(whisper)
    with pytest.raises(MetalearnError, match="transformer layers"):
        freeze_all_but_top(whisper, 3)


def test_multihead_forward_shapes() -> None:
    model = MultiHeadClassifier(build_backbone(W2V), {"a": ["x", "y"], "b": ["x", "y", "z", "w"]})
    waves, lengths = torch.randn(3, 6000), torch.tensor([6000, 5000, 4000])
    assert model(waves, lengths, "a").shape == (3, 2) and model(waves, lengths, "b").shape == (3, 4)


# --- training -------------------------------------------------------------------------------------------

def test_early_stopping_counts_small_improvements_as_bad() -> None:
    stopper, best = EarlyStopping(patience=3, min_delta=0.02), []
    for value in [0.5, 0.6, 0.61, 0.605, 0.62, 0.9]:
        best.append(stopper.update(value))
        if stopper.stop:
            break
    assert best == [True, True, True, False, True] and stopper.best == 0.62


def test_train_stops_early_and_restores_the_best_state(manifests: list[Path], tmp_path: Path) -> None:
    splits = build_splits(_utterances(manifests), seed=0)
    script = iter([0.5, 0.6, 0.61, 0.605, 0.58, 0.9, 0.95])
    seen: list[dict[str, torch.Tensor]] = []

    def scripted(model, splits, part, cfg, device):  # noqa: ANN001, ANN202 - the Evaluator signature
        if part == "test":
            return {c: 0.25 for c in splits}
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        value = next(script)
        return {c: value for c in splits}

    torch.manual_seed(0)
    backbone = build_backbone(WHISPER)
    freeze_all_but_top(backbone, 1)
    model = MultiHeadClassifier(backbone, {c: s.labels for c, s in splits.items()})
    cfg = _cfg(max_epochs=10, patience=3, steps_per_epoch=1)
    result = train(model, splits, cfg, CPU, curve_path=tmp_path / "curve.jsonl", evaluator=scripted)
    assert (result.epochs, result.best_epoch, result.dev_mean, result.test_mean) == (5, 3, 0.61, 0.25)
    state = model.state_dict()
    assert all(torch.equal(state[k], seen[2][k]) for k in state)
    assert not all(torch.equal(state[k], seen[4][k]) for k in state)
    curve = [json.loads(line) for line in (tmp_path / "curve.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in curve] == [1, 2, 3, 4, 5] and curve[-1]["best_epoch"] == 3
    assert set(curve[0]) >= {"step", "epoch", "train_loss", "dev_accuracy"}


def test_variants_train_save_reload_and_skip(manifests: list[Path], tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    built = []

    def build(cfg: BackboneConfig):  # noqa: ANN202
        built.append(build_backbone(cfg))
        return built[-1]

    out, utts, cfg = tmp_path / "variants", _utterances(manifests), _cfg(trainable_layers=1)
    subsets = parse_subsets("none,alpha+beta,alpha", ["alpha", "beta"])
    status = run_variants(utts, subsets, out, Training(cfg, WHISPER, CPU, build))
    assert status == {"none": "written", "pft-alpha+beta": "trained", "pft-alpha": "trained"}
    assert sorted(p.name for p in (out / "none").iterdir()) == ["config.json", "done.json"]
    folder = out / "pft-alpha+beta"
    assert {"backbone.safetensors", "config.json", "curve.jsonl", "summary.json", "done.json"} <= {
        p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert config["label_sets"] == {"alpha": ["neutral", "happy", "angry", "sad"],
                                    "beta": ["neutral", "angry"]}
    assert config["pretune"]["trainable_layers"] == 1 and config["backbone"]["family"] == "whisper"
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["test_accuracy"]) == {"alpha", "beta"} and summary["best_epoch"] in (1, 2)
    # The saved backbone reloads strictly into a fresh one and computes the same outputs.
    trained = built[0].eval()
    fresh = load_variant(folder, build_backbone(WHISPER)).eval()
    waves, lengths = torch.randn(2, 8000), torch.tensor([8000, 6000])
    with torch.no_grad():
        assert torch.equal(trained(waves, lengths).hidden_states, fresh(waves, lengths).hidden_states)
    assert load_variant(out / "none", built[0]) is built[0]
    # Rerun: everything is skipped, nothing rewritten.
    stamp = (folder / "backbone.safetensors").stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        again = run_variants(utts, subsets, out, Training(cfg, WHISPER, CPU, build))
    assert set(again.values()) == {"skipped (done)"} and "already done" in caplog.text
    assert (folder / "backbone.safetensors").stat().st_mtime_ns == stamp
    # A killed run (no done.json) is trained again.
    (out / "pft-alpha" / "done.json").unlink()
    (out / "pft-alpha" / "backbone.safetensors").write_bytes(b"half written")
    redo = run_variants(utts, subsets, out, Training(cfg, WHISPER, CPU, build))
    assert redo["pft-alpha"] == "trained" and redo["pft-alpha+beta"] == "skipped (done)"
    assert (out / "pft-alpha" / "done.json").is_file()
    load_variant(out / "pft-alpha", build_backbone(WHISPER))
    with pytest.raises(MetalearnError, match="not finished"):
        load_variant(tmp_path, build_backbone(WHISPER))
    with pytest.raises(MetalearnError, match="does not fit"):
        load_variant(folder, build_backbone(W2V))


# --- CLI ----------------------------------------------------------------------------------------------

def _cli_args(manifests: list[Path], out: Path, *extra: str) -> list[str]:
    return ["pretune", "--manifests", *map(str, manifests), "--out", str(out), "--preset", "cpu-small",
            "--backbone-family", "whisper", "--backbone-source", "tiny", *extra]


def test_cli_errors_are_one_line(manifests: list[Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (_cli_args([tmp_path / "missing.csv"], tmp_path / "o"), "missing.csv does not exist"),
        (_cli_args(manifests, tmp_path / "o", "--set", "lrate=1"),
         "pretune override: config key 'lrate' is not a valid key"),
        (_cli_args(manifests, tmp_path / "o", "--subsets", "alpha+gamma"), "['gamma'] are not in"),
    ]
    for argv, message in cases:
        assert pretune_main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_cli_trains_one_variant(manifests: list[Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    argv = _cli_args(manifests, tmp_path / "o", "--subsets", "beta", "--set", "max_epochs=1",
                     "steps_per_epoch=2", "batch_size=4", "max_seconds=0.5", "device=cpu")
    assert pretune_main(argv) == 0
    assert "pft-beta" in capsys.readouterr().out
    assert (tmp_path / "o" / "pft-beta" / "done.json").is_file()


# --- DDP ----------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_ranks_match_one_process(manifests: list[Path], tmp_path: Path) -> None:
    """2 gloo ranks x 2 utterances == 1 process x 4 (same data, same steps), to float tolerance."""
    overrides = ["batch_size=4", "grad_accum=2", "steps_per_epoch=3", "max_epochs=1", "max_seconds=0.5",
                 "trainable_layers=none", "num_workers=0", "device=cpu", "lr=1e-3"]
    argv = _cli_args(manifests, tmp_path / "ddp", "--subsets", "alpha+beta", "--set", *overrides)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
           "127.0.0.1", "--master_port", str(_free_port()), "-m", "metalearn.pretune.cli", *argv]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = _cli_args(manifests, tmp_path / "one", "--subsets", "alpha+beta", "--set", *overrides)
    assert pretune_main(single) == 0
    a = load_file(str(tmp_path / "ddp" / "pft-alpha+beta" / "backbone.safetensors"))
    b = load_file(str(tmp_path / "one" / "pft-alpha+beta" / "backbone.safetensors"))
    torch.manual_seed(0)  # the seed the run built its backbone with
    start = build_backbone(WHISPER).state_dict()
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    assert any(not torch.allclose(b[k], start[k]) for k in b if k in start)  # training moved them
    config = json.loads((tmp_path / "ddp" / "pft-alpha+beta" / "config.json").read_text())
    assert config["world_size"] == 2


# --- reproducibility -------------------------------------------------------------------------------------

def _variant_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor a variant saved: its backbone and its heads."""
    return {f"{name}:{k}": v for name in ("backbone.safetensors", "heads.safetensors")
            for k, v in load_file(str(folder / name)).items()}


def _assert_bit_identical(a: Path, b: Path) -> None:
    ta, tb = _variant_tensors(a), _variant_tensors(b)
    assert ta.keys() == tb.keys()
    assert [k for k in ta if not torch.equal(ta[k], tb[k])] == []
    losses = [[json.loads(line)["train_loss"] for line in (f / "curve.jsonl").read_text().splitlines()] for f in (a, b)]
    assert losses[0] == losses[1]


def test_pretraining_is_bit_identical_under_different_loader_timing(manifests: list[Path], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """In the main process, then in 2 worker processes whose every clip load sleeps a random 0-40 ms, so batches
    are ready in a different order each time: the weights come out bit for bit the same."""
    import metalearn.pretune.data as pretune_data

    utts, subsets = _utterances(manifests), [("alpha", "beta")]
    run_variants(utts, subsets, tmp_path / "plain", Training(_cfg(trainable_layers=1, num_workers=0), WHISPER, CPU))
    real = pretune_data.load_audio

    def slow(path, **kw):  # noqa: ANN001, ANN003, ANN202 - load_audio's signature
        time.sleep(os.urandom(1)[0] / 255 * 0.04)  # not from any seeded generator: real timing noise
        return real(path, **kw)

    monkeypatch.setattr(pretune_data, "load_audio", slow)
    run_variants(utts, subsets, tmp_path / "slow", Training(_cfg(trainable_layers=1, num_workers=2), WHISPER, CPU))
    _assert_bit_identical(tmp_path / "plain" / "pft-alpha+beta", tmp_path / "slow" / "pft-alpha+beta")


def test_a_backbone_build_that_draws_random_numbers_changes_nothing(manifests: list[Path], tmp_path: Path) -> None:
    """The default Whisper's first build on a machine imports it, initialising a model at random from torch's
    global RNG; later builds load the import and draw nothing. The variant must not depend on which happened
    (it did: two fresh clones trained different pft-iemocap, the first variant each trained)."""
    def drawing(cfg: BackboneConfig):  # noqa: ANN202
        torch.rand(10_000)  # what the first-use import's random initialisation does
        return build_backbone(cfg)

    utts, subsets, cfg = _utterances(manifests), [("alpha",)], _cfg(trainable_layers=1)
    run_variants(utts, subsets, tmp_path / "cached", Training(cfg, WHISPER, CPU))
    run_variants(utts, subsets, tmp_path / "imported", Training(cfg, WHISPER, CPU, drawing))
    _assert_bit_identical(tmp_path / "cached" / "pft-alpha", tmp_path / "imported" / "pft-alpha")
