"""The single-episode demo: episode shape, scores, no leakage of the episode's speaker, report, picture, CLI."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from metalearn.cli import main
from metalearn.data.manifest import Utterance, utterance_key
from metalearn.demo.episode import DEMO_OPTIONS, DemoSettings, demo_algorithms, format_report, run_episode_demo
from metalearn.demo.plot import plot_episode
from metalearn.fewshot.algorithms import AdapterSpec, build_adapter
from metalearn.util.errors import MetalearnError

SPEAKERS = ("0011", "0012", "0013", "0014", "0015")
EMOTIONS = ("neutral", "happy", "angry", "sad")
COUNTS = {"train": 8, "evaluation": 2, "test": 4}
DIM = 16


def make_data(seed: int = 0) -> tuple[list[Utterance], torch.Tensor]:
    """Rows of every speaker x emotion x split and features [N, DIM]: class means far apart, speaker offsets."""
    rng = np.random.default_rng(seed)
    class_mean = {e: rng.normal(scale=4.0, size=DIM) for e in EMOTIONS}
    offset = {s: rng.normal(scale=1.0, size=DIM) for s in SPEAKERS}
    rows, feats = [], []
    for s in SPEAKERS:
        for e in EMOTIONS:
            for split, n in COUNTS.items():
                for j in range(n):
                    uid = f"{s}_{e}_{split}_{j}"
                    rows.append(Utterance(uid, f"/fake/{uid}.wav", "esd", s, "female", e, e, split, 1.0, 16000,
                                          f"sentence {j} of {s}"))
                    feats.append(class_mean[e] + offset[s] + rng.normal(scale=0.5, size=DIM))
    return rows, torch.tensor(np.stack(feats), dtype=torch.float32)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is fastest, and far faster when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> tuple[list[Utterance], torch.Tensor]:
    return make_data()


@pytest.fixture(scope="module")
def result(data):
    rows, x = data
    return run_episode_demo(x, rows, "0012", demo_algorithms(), DemoSettings(3, queries=None, meta_steps=5, seed=0))


def test_support_and_query_are_disjoint_with_k_per_class(data, result) -> None:
    rows, _ = data
    e, by_key = result.episode, {utterance_key(u): u for u in rows}
    assert not set(e.support) & set(e.query)
    assert Counter(result.support_y.tolist()) == {c: 3 for c in range(len(EMOTIONS))}
    assert Counter(result.query_y.tolist()) == {c: COUNTS["test"] for c in range(len(EMOTIONS))}
    assert {(by_key[k].speaker, by_key[k].split) for k in e.support} == {("0012", "train")}
    assert {(by_key[k].speaker, by_key[k].split) for k in e.query} == {("0012", "test")}
    assert [e.classes[y] for y in result.query_y.tolist()] == [u.emotion for u in result.query_rows]
    assert result.support_x.shape == (12, DIM) and result.query_x.shape == (16, DIM)


def test_every_algorithm_scores_every_query(result) -> None:
    assert list(result.algorithms) == demo_algorithms()
    q, w = len(result.episode.query), len(result.episode.classes)
    for a in result.algorithms.values():
        assert a.logits.shape == (q, w) and a.predictions.shape == (q,)
        assert torch.equal(a.predictions, a.logits.argmax(-1))
        assert a.total == q == int(a.confusion.sum())
        assert a.accuracy == pytest.approx(float(a.confusion.trace()) / float(a.confusion.sum()))
        assert a.accuracy == pytest.approx(float((a.predictions == result.query_y).float().mean()))
        assert torch.equal(a.confusion.sum(1), torch.bincount(result.query_y, minlength=w))
        learns = build_adapter(a.name, AdapterSpec(DIM, w, 0), DEMO_OPTIONS.get(a.name)).meta_learns
        assert a.meta_steps == (5 if learns else 0), a.name
    assert {n for n, a in result.algorithms.items() if a.meta_steps} >= {"protonet_proj", "maml", "reptile"}
    assert not {n for n, a in result.algorithms.items() if a.meta_steps} & {"majority", "simpleshot", "finetune"}


def test_nearest_mean_methods_solve_separable_data(result) -> None:
    assert result.algorithms["simpleshot"].accuracy >= 0.9
    assert result.algorithms["protonet"].accuracy >= 0.9


def _with_garbage(rows: list[Utterance], x: torch.Tensor, speaker: str, seed: int
                  ) -> tuple[list[Utterance], torch.Tensor]:
    """``speaker``'s evaluation rows (never in an N-way episode) get huge random features and shuffled labels."""
    rng = np.random.default_rng(seed)
    idx = [i for i, u in enumerate(rows) if u.speaker == speaker and u.split == "evaluation"]
    labels = rng.permutation([rows[i].emotion for i in idx])
    rows = list(rows)
    for i, label in zip(idx, labels, strict=True):
        rows[i] = dataclasses.replace(rows[i], emotion=str(label), raw_label=str(label))
    x = x.clone()
    x[idx] = torch.tensor(rng.normal(scale=1000.0, size=(len(idx), x.shape[1])), dtype=x.dtype)
    return rows, x


def test_meta_training_and_standardisation_never_see_the_episode_speaker(data) -> None:
    rows, x = data
    names = ["simpleshot", "protonet_proj", "maml", "reptile"]
    run = lambda r, f: run_episode_demo(f, r, "0012", names, DemoSettings(3, queries=2, meta_steps=5, seed=1))  # noqa: E731
    clean = run(rows, x)
    assert "0012" not in clean.meta_speakers and len(clean.meta_speakers) == len(SPEAKERS) - 1
    dirty = run(*_with_garbage(rows, x, "0012", seed=2))  # the episode's speaker: nothing may change
    assert dirty.episode == clean.episode
    for name in names:
        assert torch.equal(dirty.algorithms[name].logits, clean.algorithms[name].logits), name
    # the control: the same garbage in another speaker's rows does change the standardised features and maml
    other = run(*_with_garbage(rows, x, "0013", seed=2))
    assert not torch.allclose(other.support_x, clean.support_x)
    assert not torch.allclose(other.algorithms["maml"].logits, clean.algorithms["maml"].logits)


def test_report_lists_every_query_and_algorithm(result) -> None:
    text = format_report(result)
    assert all(u.utterance_id in text for u in result.query_rows + result.support_rows)
    assert all(name in text for name in demo_algorithms())
    assert text.count("Confusion matrix") == len(demo_algorithms())
    assert f"{result.algorithms['maml'].correct}/{len(result.episode.query)}" in text


def test_report_fits_100_columns_with_the_default_algorithms(data) -> None:
    rows, x = data
    r = run_episode_demo(x, rows, "0011", ["simpleshot", "protonet", "finetune", "maml"],
                         DemoSettings(2, queries=None, meta_steps=2, seed=0))
    text = format_report(r)
    assert max(len(line) for line in text.splitlines()) <= 100
    wrong = [u.utterance_id for u, p, y in zip(r.query_rows, r.algorithms["maml"].predictions, r.query_y, strict=True)
             if p != y]
    for line in text.splitlines():  # a wrong prediction is marked on its query's line
        if line.strip().split(" ")[0] in wrong:
            assert " x" in line


def test_picture_is_a_png(tmp_path: Path, result) -> None:
    import matplotlib.image

    path = plot_episode(result, tmp_path / "sub" / "episode.png", algorithm="maml")
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 400 and image.shape[1] > 600
    with pytest.raises(MetalearnError, match="not run"):
        plot_episode(result, tmp_path / "x.png", algorithm="nosuch")


def one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_user_errors_are_one_line(data) -> None:
    rows, x = data
    run = lambda speaker="0011", algorithms=("simpleshot",), **kw: run_episode_demo(  # noqa: E731
        x, rows, speaker, algorithms, DemoSettings(**{"k": 2, "queries": None, "meta_steps": 0, "seed": 0, **kw}))
    with pytest.raises(MetalearnError) as err:
        run(speaker="9999")
    assert "9999" in one_line(err) and all(s in str(err.value) for s in SPEAKERS)
    with pytest.raises(MetalearnError) as err:
        run(k=9)
    assert "k=9" in one_line(err) and "needs 9" in str(err.value)
    with pytest.raises(MetalearnError) as err:
        run(queries=5)
    assert "test" in one_line(err)
    with pytest.raises(MetalearnError) as err:
        run(algorithms=["simpleshot", "bogus"])
    assert "bogus" in one_line(err) and "maml" in str(err.value)
    few = [i for i, u in enumerate(rows) if u.speaker == "0011" or u.split == "train"]  # others: 8 per emotion
    with pytest.raises(MetalearnError) as err:  # meta-training tasks need k + 1 clips per emotion elsewhere
        run_episode_demo(x[few], [rows[i] for i in few], "0011", ["maml"],
                         DemoSettings(8, queries=None, meta_steps=1, seed=0))
    assert "meta-training" in one_line(err) and "at least 9" in str(err.value)


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 short tones (3 speakers x 3 emotions x 5 train + 3 test) as WAV files and their manifest."""
    from metalearn.data.manifest import write_manifest
    from tests.fixtures import write_wav

    out, rows = tmp_path_factory.mktemp("tones"), []
    for s, speaker in enumerate(("0011", "0012", "0013")):
        for e, emotion in enumerate(("neutral", "angry", "sad")):
            for j, split in enumerate(["train"] * 5 + ["test"] * 3):
                uid = f"{speaker}_{e}{j:02d}"
                path = write_wav(out / f"{uid}.wav", seconds=0.3, freq=150.0 * (e + 1) + 20 * s + 3 * j)
                rows.append(Utterance(uid, str(path), "esd", speaker, "male", emotion, emotion, split, 0.3, 16000))
    return write_manifest(rows, out / "esd.csv")


def test_cli_end_to_end(tmp_path: Path, tiny_manifest: Path, capsys: pytest.CaptureFixture) -> None:
    common = ["episode", "--manifest", str(tiny_manifest), "--cache-dir", str(tmp_path / "cache"),
              "--backbone-source", "tiny", "--backbone-family", "wav2vec2"]
    out, page = tmp_path / "pic" / "episode.png", tmp_path / "page" / "episode.html"
    assert main([*common, "--k", "2", "--algorithms", "simpleshot,maml", "--meta-steps", "2", "--layer", "mean",
                 "--out", str(out), "--html", str(page)]) == 0
    text = capsys.readouterr().out
    assert "simpleshot" in text and "maml" in text and f"picture: {out}" in text and out.is_file()
    html = page.read_text(encoding="utf-8")  # 3 emotions x (2 support + 3 query) clips, each with a player
    assert f"page: {page}" in text and html.count("<audio ") == 15 and html.count('data-method="maml"') == 9
    assert main([*common, "--speaker", "nobody", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "nobody" in err
    assert main([*common, "--layer", "99", "--out", str(out)]) == 2
    assert "--layer 99" in capsys.readouterr().err
