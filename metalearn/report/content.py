"""The content check: do the methods recognise the emotion, or the sentence the support set already said?

Emotional corpora record the same sentences in every emotion. Where an episode's support and query may share
a sentence (``Episode.disjoint == "none"``), a query whose sentence the support holds (with other emotions:
the corpus says each sentence once per emotion) can be matched by its words instead of its emotion. The check
compares, per method and k, the accuracy of those queries with that of the queries whose sentence the support
lacks; a content effect shows as a gap.

Per-query correctness is not in the trial records (one row per episode). The runner keeps it, for the
episodes this check concerns, in a side log beside the trial log: ``queries.jsonl`` (a shard's
``queries.shard-I-of-N.jsonl``), one line per trial, keyed like the trial (:func:`trial_key`), with
``correct`` and ``shared``: one character per query item, in the episode's query order ("1" = predicted
right, resp. "1" = its sentence is in the support). :func:`content_rows` joins it with the trial records
(protocol, k, speaker); the report (:func:`metalearn.report.tables.write_report`) writes ``content.csv`` and
``content.md`` when a run has such records.

Statistics as everywhere in the report: the speaker is the unit. Per (pretune, algorithm, protocol, k) and
speaker, the accuracy of each kind of query pooled over the speaker's trials; then the mean over speakers
and its 95% t-interval; the difference (shared - other) is paired per speaker (speakers with both kinds).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from metalearn.fewshot.episodes import Episode
from metalearn.report.records import DEFAULTS, trial_key
from metalearn.report.stats import paired_test
from metalearn.util import markdown
from metalearn.util.errors import MetalearnError
from metalearn.util.intervals import t_interval
from metalearn.util.jsonl_log import JsonlLog, read_jsonl

QUERIES = "queries.jsonl"
QUERIES_GLOB = "queries*.jsonl"
QUERY_FIELDS = ("pretune", "algorithm", "episode_id", "seed", "meta_seed", "correct", "shared")
QUERY_CORRECT = "query_correct"  # the per-query key run_trials(..., per_query=True) adds to a trial record
CONTENT_FIELDS = ("pretune", "algorithm", "protocol", "k", "n_speakers", "n_trials", "n_shared", "n_other",
                  "shared_mean", "shared_ci95", "other_mean", "other_ci95", "n_paired", "diff_mean", "diff_ci95",
                  "p_value")


def shares_content(e: Episode) -> bool:
    """Whether ``e``'s support and query may share a sentence (drawn with ``disjoint="none"``, sentence ids kept)."""
    return e.disjoint == "none" and len(e.query_sentences) == len(e.query) > 0


def query_file(index: int, count: int) -> str:
    """The side log of shard ``index`` (0-based) of ``count``, named like its trial log."""
    return QUERIES if count == 1 else f"queries.shard-{index + 1}-of-{count}.jsonl"


class QueryLog(JsonlLog):
    """The per-query side log of a run folder (fields :data:`QUERY_FIELDS`, keyed by :func:`trial_key`)."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, trial_key, QUERY_FIELDS, defaults=DEFAULTS)


def _bits(values: Iterable[bool]) -> str:
    return "".join("1" if v else "0" for v in values)


def query_records(episodes: Sequence[Episode], records: Sequence[dict]) -> list[dict]:
    """The side-log lines of ``records`` whose episode :func:`shares_content` (each record must carry
    :data:`QUERY_CORRECT`, one "0"/"1" per query item of its episode)."""
    by_id = {e.episode_id: e for e in episodes if shares_content(e)}
    out = []
    for r in records:
        e = by_id.get(r["episode_id"])
        if e is None:
            continue
        correct = r.get(QUERY_CORRECT)
        if not isinstance(correct, str) or len(correct) != len(e.query):
            raise MetalearnError(f"trial {trial_key(r)}: no per-query correctness for its {len(e.query)} queries "
                                 f"(score it with run_trials(..., per_query=True))")
        out.append({**{f: r.get(f, DEFAULTS.get(f)) for f in QUERY_FIELDS[:5]}, "correct": correct,
                    "shared": _bits(e.query_in_support)})
    return out


def _read(path: Path) -> list[dict]:
    """A side log's records (a torn last line is ignored); 'correct' and 'shared' must be of one length."""
    records = read_jsonl(path, QUERY_FIELDS, "query record", DEFAULTS)
    for i, rec in enumerate(records, 1):
        if len(rec["correct"]) != len(rec["shared"]):
            raise MetalearnError(f"{path}: query record {i}: 'correct' and 'shared' must be of one length")
    return records


def read_queries(run_dir: str | os.PathLike) -> list[dict]:
    """Every per-query record of a run folder (all shards), one per trial key."""
    kept: dict[tuple, dict] = {}
    for path in sorted(Path(run_dir).glob(QUERIES_GLOB)):
        for rec in _read(path):
            kept.setdefault(trial_key(rec), rec)
    return list(kept.values())


def _cell(per_speaker: dict[str, list[int]]) -> dict:
    """Means over speakers from per-speaker counts [correct shared, shared, correct other, other]."""
    cells = [per_speaker[s] for s in sorted(per_speaker)]  # a fixed order: the same bits from any record order
    shared = [c[0] / c[1] if c[1] else math.nan for c in cells]
    other = [c[2] / c[3] if c[3] else math.nan for c in cells]
    diffs = [s - o for s, o in zip(shared, other, strict=True) if math.isfinite(s) and math.isfinite(o)]
    row = {"n_speakers": len(per_speaker), "n_shared": sum(c[1] for c in per_speaker.values()),
           "n_other": sum(c[3] for c in per_speaker.values())}
    row["shared_mean"], row["shared_ci95"], _ = t_interval(shared)
    row["other_mean"], row["other_ci95"], _ = t_interval(other)
    test = paired_test(diffs)
    half = (test.high - test.low) / 2 if math.isfinite(test.high) else math.nan
    return row | {"n_paired": test.n, "diff_mean": test.mean, "diff_ci95": half, "p_value": test.p_value}


def content_rows(records: Sequence[dict], queries: Sequence[dict]) -> list[dict]:
    """One :data:`CONTENT_FIELDS` row per (pretune, algorithm, protocol, k) with per-query records, sorted;
    protocol, k and speaker come from the trial record of the same key (queries without one are ignored)."""
    by_key = {trial_key(r): r for r in records}
    counts: dict[tuple, dict[str, list[int]]] = defaultdict(dict)
    trials: dict[tuple, int] = defaultdict(int)
    for q in queries:
        r = by_key.get(trial_key(q))
        if r is None:
            continue
        cell = (r["pretune"], r["algorithm"], r["protocol"], int(r["k"]))
        c = counts[cell].setdefault(str(r["speaker"]), [0, 0, 0, 0])
        for ok, shared in zip(q["correct"], q["shared"], strict=True):
            c[0 if shared == "1" else 2] += ok == "1"
            c[1 if shared == "1" else 3] += 1
        trials[cell] += 1
    return [dict(zip(CONTENT_FIELDS[:4], cell, strict=True)) | {"n_trials": trials[cell]} | _cell(counts[cell])
            for cell in sorted(counts)]


def _pct(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{100 * value:.1f}"


def _with_ci(mean: float, half: float) -> str:
    return _pct(mean) if not math.isfinite(half) else f"{_pct(mean)} ± {_pct(half)}"


def content_markdown(rows: Sequence[dict], title: str) -> str:
    """The ``content.md`` text: per protocol, one line per (pretune, algorithm, k)."""
    lines = [f"# {title}", "", "Support and query of these episodes may share a sentence (episodes.disjoint=none). "
             "Accuracy (%) of the queries whose sentence the support set holds (said with other emotions) against "
             "the queries whose sentence it lacks: mean over speakers ± 95% t-interval of per-speaker accuracies "
             "(queries pooled over a speaker's episodes); difference = shared − other, paired per speaker, in "
             "points. A large negative difference means the features match the words, not the emotion: draw "
             "text-disjoint episodes (episodes.disjoint=text, the default).", ""]
    for protocol in sorted({r["protocol"] for r in rows}):
        body = [[r["pretune"], r["algorithm"], r["k"], _with_ci(r["shared_mean"], r["shared_ci95"]),
                 _with_ci(r["other_mean"], r["other_ci95"]), _with_ci(r["diff_mean"], r["diff_ci95"]), r["n_speakers"],
                 f"{r['n_shared']} / {r['n_other']}"] for r in rows if r["protocol"] == protocol]
        header = ["Pretune", "Algorithm", "k", "shared-sentence queries", "other queries", "difference (points)",
                  "speakers", "queries (shared / other)"]
        align = [markdown.LEFT] * 2 + [markdown.RIGHT] * 6
        lines += [f"## {protocol} protocol", "", *markdown.table(header, body, align), ""]
    return "\n".join(lines)
