"""GEmo-CLAP's leave-one-session-out pieces over features: sessions, folds, a frozen-encoder fold, the table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metalearn.clap.heads import ClapHeadsConfig
from metalearn.clap.model import ClapConfig
from metalearn.data.emotions import FOUR_CLASS
from metalearn.data.manifest import Utterance
from metalearn.loso.folds import (
    SessionSplit,
    check_fold,
    heads_fold,
    loso_fold,
    loso_table,
    loso_table_rows,
    session,
    sessions_of,
    train_sessions,
)
from metalearn.util.errors import MetalearnError


def corpus(sessions: int = 2, per: int = 6, dim: int = 16) -> tuple[list[Utterance], torch.Tensor]:
    """Utterances of every session x gender x 4-class emotion, features = a class direction plus noise."""
    gen = torch.Generator().manual_seed(0)
    rows, x = [], []
    for s in range(1, sessions + 1):
        for g, gender in (("F", "female"), ("M", "male")):
            for c, emotion in enumerate(FOUR_CLASS):
                for i in range(per):
                    rows.append(Utterance(f"Ses0{s}{g}_{emotion}_{i}", f"/x/{s}{g}{c}{i}.wav", "iemocap",
                                          f"Ses0{s}{g}", gender, emotion, emotion, "", 2.0, 16000))
                    x.append(torch.randn(dim, generator=gen) * 0.3 + 3.0 * torch.eye(dim)[c])
    return rows, torch.stack(x)


def test_sessions_come_from_iemocap_speakers() -> None:
    rows, _ = corpus(3, 1)
    assert session(rows[0]) == "Ses01" and sessions_of(rows) == ["Ses01", "Ses02", "Ses03"]
    bad = Utterance("u", "/x/u.wav", "esd", "0011", "male", "sad", "Sad", "", 1.0, 16000)
    with pytest.raises(MetalearnError, match="speaker '0011' does not name an IEMOCAP session"):
        session(bad)
    with pytest.raises(MetalearnError, match="needs >= 2 sessions"):
        sessions_of(corpus(1, 2)[0])


@pytest.mark.parametrize("seed", [0, 1])
def test_fold_holds_out_one_session_and_splits_the_rest(seed: int) -> None:
    rows, _ = corpus(3, 5)
    for held in ("Ses01", "Ses02", "Ses03"):
        fold = loso_fold(rows, held, 0.2, seed)
        assert {session(rows[i]) for i in fold.test} == {held} and len(fold.test) == 2 * 4 * 5
        assert held not in {session(rows[i]) for i in (*fold.train, *fold.dev)}
        assert sorted((*fold.train, *fold.dev, *fold.test)) == list(range(len(rows)))
        assert len(fold.dev) == round(0.2 * 2 * 2 * 4 * 5) and train_sessions(rows, fold) == "+".join(
            s for s in ("Ses01", "Ses02", "Ses03") if s != held)
    assert not np.array_equal(loso_fold(rows, "Ses01", 0.2, 0).dev, loso_fold(rows, "Ses01", 0.2, 1).dev)


def test_a_leaking_fold_is_refused() -> None:
    rows, _ = corpus(2, 1)
    test = np.array([i for i, u in enumerate(rows) if session(u) == "Ses01"])
    with pytest.raises(MetalearnError, match="fold Ses01: .*held-out session must be unseen"):
        check_fold(rows, SessionSplit("Ses01", test[:2], np.array([len(rows) - 1]), test))


def test_frozen_fold_learns_separable_classes() -> None:
    rows, x = corpus()
    fold = loso_fold(rows, "Ses02", 0.1, 0)
    model_cfg = ClapConfig(text_source="tiny", embed_dim=8, variant="sl", alpha=0.8)
    heads_cfg = ClapHeadsConfig(steps=40, batch_size=16, lr=1e-2, eval_every=20)
    record = heads_fold(x, rows, fold, FOUR_CLASS, model_cfg, heads_cfg)
    assert record["n_test"] == 2 * 4 * 6 and record["n_train"] + record["n_dev"] == 2 * 4 * 6
    assert record["best_step"] in (20, 40) and record["ua"] > 0.5  # chance 0.25
    assert heads_fold(x, rows, fold, FOUR_CLASS, model_cfg, heads_cfg) == record  # seeded


def records(seeds: tuple[int, ...] = (0,)) -> list[dict]:
    out = []
    for v, base in (("emo", 0.5), ("sl", 0.6)):
        for s in range(1, 6):
            for seed in seeds:
                out.append({"loss": v, "session": f"Ses0{s}", "seed": seed, "wa": base + 0.01 * s + 0.02 * seed,
                            "ua": base - 0.01 * s})
    return out


def test_table_has_the_papers_layout_with_ci_and_fold_count() -> None:
    table = loso_table(records(), order=["sl", "emo", "ml"]).splitlines()
    assert table[0] == ("| method | Ses01 WA | Ses01 UA | Ses02 WA | Ses02 UA | Ses03 WA | Ses03 UA | Ses04 WA | "
                        "Ses04 UA | Ses05 WA | Ses05 UA | mean WA | mean UA | folds |")
    assert table[1] == "|:--|" + "--:|" * 13
    # SL first (the given order; ml has no records), mean WA 63.0 over 5 folds: t(0.975, 4) * s / sqrt(5)
    half = 2.776445 * np.std([61, 62, 63, 64, 65], ddof=1) / math.sqrt(5)
    assert table[2] == (f"| SL-GEmo-CLAP | 61.0 | 59.0 | 62.0 | 58.0 | 63.0 | 57.0 | 64.0 | 56.0 | 65.0 | 55.0 | "
                        f"63.0 ± {half:.1f} | 57.0 ± {half:.1f} | 5 |")
    assert table[3].startswith("| Emo-CLAP | 51.0 | 49.0 |") and len(table) == 4


def test_table_cells_with_several_seeds_and_missing_folds() -> None:
    recs = [r for r in records((0, 1)) if not (r["loss"] == "emo" and r["session"] == "Ses05")]
    table = loso_table(recs).splitlines()
    emo = table[2].strip("| ").split(" | ")
    assert emo[0] == "Emo-CLAP" and emo[1] == "52.0 ± 12.7 (n=2)" and emo[9:11] == ["–", "–"]
    assert emo[-1] == "4" and table[3].endswith("| 5 |")
    rows = loso_table_rows(recs)
    assert rows[0]["Ses01_wa"] == 52.0 and math.isnan(rows[0]["Ses05_wa"]) and rows[0]["seeds"] == 2
    assert rows[1]["folds"] == 5 and rows[1]["wa_mean"] == 64.0
