"""The content check: per-query side records, their statistics per speaker, and the report files they give.

A content-only feature (the one-hot of the sentence an utterance says) must fail the check: on episodes whose
support and query share sentences, the queries that share one score far below chance, the others at chance.
"""

from __future__ import annotations

import csv
import json
import math
import random

import numpy as np
import pytest
import torch

from metalearn.data.manifest import utterance_key
from metalearn.fewshot.algorithms import AdapterSpec, build_adapter
from metalearn.fewshot.episodes import NwayRule, nway_episodes
from metalearn.fewshot.trials import TrialTags, episode_batch, trial_record
from metalearn.report.content import (
    CONTENT_FIELDS,
    QUERY_CORRECT,
    QueryLog,
    content_rows,
    query_file,
    query_records,
    read_queries,
    shares_content,
)
from metalearn.report.records import TrialLog
from metalearn.report.tables import write_report
from metalearn.util.errors import MetalearnError
from tests.test_text_disjoint import cremad


def _record(speaker: str, episode: str, k: int = 2, algorithm: str = "protonet") -> dict:
    return {"run": "r", "pretune": "none", "algorithm": algorithm, "protocol": "nway", "k": k, "speaker": speaker,
            "target_emotion": "", "seed": 0, "accuracy": 0.5, "macro_f1": 0.5, "weighted_f1": 0.5, "uar": 0.5,
            "n_support": 2 * k, "n_query": 4, "seconds": 0.1, "episode_id": episode, "repetition": 0, "ways": 2}


def _query(record: dict, correct: str, shared: str) -> dict:
    return {"pretune": record["pretune"], "algorithm": record["algorithm"], "episode_id": record["episode_id"],
            "seed": record["seed"], "correct": correct, "shared": shared}


def _toy() -> tuple[list[dict], list[dict]]:
    """Speaker a: shared 2/5 right (2 episodes pooled), other 2/3; speaker b: shared 0/2, other 2/2."""
    recs = [_record("a", "e1"), _record("a", "e2"), _record("b", "e3")]
    queries = [_query(recs[0], "1010", "1100"), _query(recs[1], "0011", "1101"), _query(recs[2], "0011", "1100")]
    return recs, queries


def test_accuracy_is_pooled_within_a_speaker_then_averaged_over_speakers():
    recs, queries = _toy()
    (row,) = content_rows(recs, queries)
    assert set(row) == set(CONTENT_FIELDS)
    assert (row["n_speakers"], row["n_trials"], row["n_shared"], row["n_other"]) == (2, 3, 7, 5)
    # a: shared 2/5 (e1: 1 of 2, e2: 1 of 3), other 2/3 (e1: 1 of 2, e2: 1 of 1); b: shared 0/2, other 2/2
    assert row["shared_mean"] == pytest.approx((2 / 5 + 0) / 2)
    assert row["other_mean"] == pytest.approx((2 / 3 + 1) / 2)
    diffs = [2 / 5 - 2 / 3, 0 - 1]
    assert row["diff_mean"] == pytest.approx(np.mean(diffs)) and row["n_paired"] == 2
    assert row["diff_ci95"] == pytest.approx(12.7062047 * np.std(diffs, ddof=1) / math.sqrt(2), rel=1e-6)
    shuffled = queries[::-1]
    random.Random(0).shuffle(recs)
    assert content_rows(recs, shuffled) == [row]  # any order, the same bits


def test_cells_are_per_method_and_k_and_unmatched_queries_are_ignored():
    recs, queries = _toy()
    more = [_record("a", "e1", algorithm="finetune"), _record("a", "e4", k=4)]
    rows = content_rows(recs + more, queries + [_query(more[0], "11", "10"), _query(more[1], "1", "0"),
                                                _query(_record("z", "gone"), "1", "1")])
    assert [(r["algorithm"], r["k"], r["n_trials"]) for r in rows] == [("finetune", 2, 1), ("protonet", 2, 3),
                                                                        ("protonet", 4, 1)]
    k4 = rows[2]
    assert math.isnan(k4["shared_mean"]) and k4["other_mean"] == 1.0 and k4["n_paired"] == 0
    assert content_rows(recs, []) == []


def onehot_scores(name: str, disjoint: str, k: int = 4) -> tuple[list, list[dict]]:
    """Episodes of the CREMA-D layout scored by ProtoNet on the one-hot of each clip's true sentence."""
    rows, truth = cremad()
    classes = ("neutral", "happy", "angry")
    episodes, _ = nway_episodes(rows, sorted({u.speaker for u in rows}), k, 10, seed=0,
                                rule=NwayRule(classes=classes, disjoint=disjoint))
    sentences = sorted(set(truth.values()))
    keys = [utterance_key(u) for u in rows]
    x = torch.eye(len(sentences))[[sentences.index(truth[key]) for key in keys]]  # [N, V]
    index_of = {key: i for i, key in enumerate(keys)}
    adapter = build_adapter(name, AdapterSpec(x.shape[1], len(classes)))
    records = []
    for e in episodes:
        batch = episode_batch([e], index_of, x)
        hits = (adapter.score(batch).argmax(-1) == batch.query_y)[0, :len(e.query)].tolist()
        record = trial_record(e, adapter, {"accuracy": float(np.mean(hits)), "macro_f1": 0.0, "weighted_f1": 0.0,
                                           "uar": 0.0}, TrialTags("t", "none", 0), 0.0)
        records.append(record | {QUERY_CORRECT: "".join("1" if h else "0" for h in hits)})
    return episodes, records


def test_a_content_only_feature_fails_the_check_only_where_sentences_are_shared():
    episodes, records = onehot_scores("protonet", "none")
    assert all(shares_content(e) for e in episodes)
    (row,) = content_rows(records, query_records(episodes, records))
    chance = 1 / 3
    # matched to the other emotions that said its sentence (its own class said it again only for sentence IEO)
    assert row["shared_mean"] < 0.5 * chance, row
    assert abs(row["other_mean"] - chance) < 0.1, row  # no signal: every class mean is as far
    assert row["diff_mean"] < -0.2 and row["diff_mean"] + row["diff_ci95"] < 0
    episodes, records = onehot_scores("protonet", "text")
    assert not any(shares_content(e) for e in episodes) and query_records(episodes, records) == []
    assert abs(np.mean([r["accuracy"] for r in records]) - chance) < 0.1


def test_query_records_need_per_query_correctness():
    episodes, records = onehot_scores("simpleshot", "none", k=1)
    lines = query_records(episodes, records)
    assert len(lines) == len(records) and all(len(q["correct"]) == len(q["shared"]) for q in lines)
    with pytest.raises(MetalearnError, match="per_query=True"):
        query_records(episodes, [{k: v for k, v in records[0].items() if k != QUERY_CORRECT}])


def test_report_writes_the_content_check_when_the_run_logged_queries(tmp_path):
    recs, queries = _toy()
    TrialLog(tmp_path / "trials.jsonl").extend(recs)
    written = write_report(tmp_path, plots=False)
    assert "content.md" not in written and not (tmp_path / "content.csv").exists()
    QueryLog(tmp_path / query_file(0, 2)).extend(queries[:2])
    QueryLog(tmp_path / query_file(1, 2)).extend(queries[1:])  # shards may repeat a trial: kept once
    with open(tmp_path / query_file(1, 2), "a") as f:
        f.write('{"pretune": "none", "algori')  # a torn last line of a killed writer
    assert len(read_queries(tmp_path)) == 3
    written = write_report(tmp_path, plots=False)
    with open(written["content.csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CONTENT_FIELDS and len(rows) == 1 and rows[0]["n_shared"] == "7"
    text = written["content.md"].read_text()
    assert "| none | protonet | 2 | 20.0 ± " in text and "| 2 | 7 / 5 |" in text
    (tmp_path / "queries.jsonl").write_text(json.dumps({"pretune": "none"}) + "\n{}\n")
    with pytest.raises(MetalearnError, match="queries.jsonl:1: query record lacks field"):
        read_queries(tmp_path)
