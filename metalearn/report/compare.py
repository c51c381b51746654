"""Paired comparisons of methods on the same episodes, the speaker as the independent unit.

For each protocol, k and metric, :func:`comparisons` compares every algorithm with the reference algorithm
on the same pretune variant, and every pretune variant with ``none`` for the same algorithm. Trials pair on
the same (episode_id, seed), and on the same ``meta_seed`` when both cells hold the same set of meta seeds;
otherwise (a method meta-trained with 3 meta seeds against a reference with 1, or records without one) each
side's records are first averaged per (episode_id, seed), so every meta seed counts. Pairs exist only within
one k: zero-shot records (k = 0) pair only with k = 0 records. Per speaker: the exact mean of the paired
differences (method - reference, in the metric's own unit); then :func:`metalearn.report.stats.paired_test`
over speakers and Holm's adjustment over every comparison of one metric. Rows come in a fixed order; the
records' order changes no bit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from metalearn.report.stats import PairedTest, exact_mean, holm, paired_tests
from metalearn.report.summary import METRIC_LABELS, METRICS, cell_key
from metalearn.util import markdown

BASE_PRETUNE = "none"
COMPARISON_FIELDS = ("pretune", "algorithm", "reference_pretune", "reference", "protocol", "k", "metric",
                     "n_speakers", "n_trials", "diff_mean", "diff_ci_low", "diff_ci_high", "p_value", "p_holm",
                     "better", "equal", "worse")

Cell = tuple[str, str, str, int]  # (pretune, algorithm, protocol, k)


def pair_key(r: dict, with_meta_seed: bool) -> tuple:
    """What pairs two trials: (episode_id, seed[, meta_seed as text])."""
    key = (str(r["episode_id"]), int(r["seed"]))
    return (*key, str(r.get("meta_seed"))) if with_meta_seed else key


def meta_seed_set(records: Sequence[dict]) -> frozenset[str]:
    """The meta seeds of a cell's records, as text (a record without one counts as ``"None"``)."""
    return frozenset(str(r.get("meta_seed")) for r in records)


@dataclass(frozen=True)
class CellIndex:
    """The trials of one cell by pair key: keys [K] sorted, their speakers [K], metric values [K, M]."""

    keys: dict[tuple, int]
    speakers: list[str]
    values: np.ndarray


def index_cell(records: Sequence[dict], with_meta_seed: bool) -> CellIndex:
    """Records sharing a pair key are averaged exactly (``math.fsum``), so their order changes no bit."""
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        grouped[pair_key(r, with_meta_seed)].append(r)
    keys = sorted(grouped)
    values = np.array([[float(rs[0][m]) if len(rs) == 1 else exact_mean(float(r[m]) for r in rs) for m in METRICS]
                       for rs in (grouped[k] for k in keys)])
    return CellIndex({k: i for i, k in enumerate(keys)}, [str(grouped[k][0]["speaker"]) for k in keys],
                     values.reshape(len(keys), len(METRICS)))


def speaker_differences(method: CellIndex, reference: CellIndex) -> tuple[list[str], np.ndarray, int]:
    """(speakers [S] sorted, mean paired difference method - reference [S, M], paired episodes).

    Episodes without a partner are left out; per speaker and metric, NaN differences are dropped (NaN when
    none is left). The pairs are summed in sorted key order, so the result does not depend on record order.
    """
    common = sorted(method.keys.keys() & reference.keys.keys())
    ia = np.array([method.keys[k] for k in common], dtype=np.int64)
    ib = np.array([reference.keys[k] for k in common], dtype=np.int64)
    diffs = method.values[ia] - reference.values[ib]  # [P, M]
    speakers = sorted({method.speakers[i] for i in ia})
    position = {s: i for i, s in enumerate(speakers)}
    group = np.array([position[method.speakers[i]] for i in ia], dtype=np.int64)  # [P]
    finite = np.isfinite(diffs)
    sums = np.zeros((len(speakers), len(METRICS)))
    counts = np.zeros((len(speakers), len(METRICS)))
    np.add.at(sums, group, np.where(finite, diffs, 0.0))
    np.add.at(counts, group, finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        return speakers, np.where(counts > 0, sums / counts, np.nan), len(common)


def planned_pairs(cells: Iterable[Cell], reference: str) -> list[tuple[Cell, Cell]]:
    """(method cell, reference cell) pairs: algorithms vs ``reference`` per variant, variants vs ``none``."""
    present = set(cells)
    pairs = []
    for cell in sorted(present):
        pretune, algorithm, protocol, k = cell
        if algorithm != reference and (pretune, reference, protocol, k) in present:
            pairs.append((cell, (pretune, reference, protocol, k)))
        if pretune != BASE_PRETUNE and (BASE_PRETUNE, algorithm, protocol, k) in present:
            pairs.append((cell, (BASE_PRETUNE, algorithm, protocol, k)))
    return pairs


def is_copy(records: Sequence[dict], reference: Cell) -> bool:
    """Whether a variant cell's records are copies of the reference variant's (every ``features_of`` names it)."""
    return reference[0] != records[0]["pretune"] and all(r.get("features_of") == reference[0] for r in records)


def identical_pairs(records: Iterable[dict]) -> list[tuple[str, str, str]]:
    """(pretune, reference pretune, algorithm) of the variant comparisons left out because the variant's rows
    are copies of the reference variant's identical features, sorted."""
    cells: dict[Cell, list[dict]] = defaultdict(list)
    for r in records:
        cells[cell_key(r)].append(r)
    return sorted({(c[0], ref[0], c[1]) for c, ref in planned_pairs(cells, "") if is_copy(cells[c], ref)})


def _statistics(t: PairedTest, n_pairs: int) -> dict:
    return {"n_speakers": t.n, "n_trials": n_pairs, "diff_mean": t.mean, "diff_ci_low": t.low,
            "diff_ci_high": t.high, "p_value": t.p_value, "better": t.better, "equal": t.equal, "worse": t.worse}


def comparisons(records: Iterable[dict], reference: str = "finetune") -> list[dict]:
    """Every comparison row (:data:`COMPARISON_FIELDS`), by metric, then method cell, then reference cell.

    Algorithms are compared with ``reference`` on the same variant (none when it is absent), and variants
    with ``none`` on the same algorithm (none when no ``none`` variant is present). Comparisons without a
    paired episode are left out. ``p_holm`` adjusts over all rows of the same metric.
    """
    cells: dict[Cell, list[dict]] = defaultdict(list)
    for r in records:
        cells[cell_key(r)].append(r)
    meta = {cell: meta_seed_set(rs) for cell, rs in cells.items()}
    indexes: dict[tuple[Cell, bool], CellIndex] = {}
    found = []  # (method cell, reference cell, paired episodes, per-speaker differences [S, M])
    for cell, ref in planned_pairs(cells, reference):
        if is_copy(cells[cell], ref):
            continue  # the variant's rows are the reference variant's, copied: no finding (identical_pairs)
        with_meta = meta[cell] == meta[ref]  # pair on meta seeds only when both sides have the same ones
        for c in (cell, ref):
            if (c, with_meta) not in indexes:
                indexes[(c, with_meta)] = index_cell(cells[c], with_meta)
        _, diffs, n_pairs = speaker_differences(indexes[(cell, with_meta)], indexes[(ref, with_meta)])
        if n_pairs:
            found.append((cell, ref, n_pairs, diffs))
    rows = []
    for j, metric in enumerate(METRICS):
        tests = paired_tests([diffs[:, j] for *_, diffs in found])
        adjusted = holm([t.p_value for t in tests])
        for (cell, ref, n_pairs, _), t, p in zip(found, tests, adjusted, strict=True):
            rows.append({"pretune": cell[0], "algorithm": cell[1], "reference_pretune": ref[0], "reference": ref[1],
                         "protocol": cell[2], "k": cell[3], "metric": metric} | _statistics(t, n_pairs)
                        | {"p_holm": float(p)})
    return [{f: row[f] for f in COMPARISON_FIELDS} for row in rows]


def _points(value: float) -> str:
    return "–" if value != value else f"{100 * value:+.1f}"


def _p_text(p: float) -> str:
    if p != p:
        return "–"
    text = "<0.001" if p < 0.001 else f"{p:.3f}"
    return f"**{text}**" if p < 0.05 else text


def _table(rows: Sequence[dict]) -> list[str]:
    body = []
    for r in sorted(rows, key=lambda r: (r["pretune"], r["algorithm"], r["reference_pretune"], r["reference"],
                                         r["k"])):
        versus = r["reference"] if r["reference_pretune"] == r["pretune"] else r["reference_pretune"]
        diff = f"{_points(r['diff_mean'])} [{_points(r['diff_ci_low'])}, {_points(r['diff_ci_high'])}]"
        body.append([r["pretune"], r["algorithm"], versus, r["k"], diff, _p_text(r["p_holm"]),
                     f"{r['better']} / {r['equal']} / {r['worse']}"])
    L, R = markdown.LEFT, markdown.RIGHT
    header = ["Pretune", "Algorithm", "vs", "k", "Δ points [95% CI]", "p (Holm)", "better / equal / worse"]
    return markdown.table(header, body, [L, L, L, R, R, R, markdown.CENTRE])


def comparisons_markdown(rows: Sequence[dict], title: str, metrics: Sequence[str] = METRICS[:3],
                         identical: Sequence[tuple[str, str, str]] = ()) -> str:
    """The ``comparisons.md`` text: per protocol and metric, the algorithm table and the variant table;
    ``identical``: (variant, reference variant, algorithm) left out as copies (:func:`identical_pairs`)."""
    lines = [f"# {title}", "", "Δ = method − reference in percentage points: the mean over speakers of each "
             "speaker's mean paired difference (same episode and seed), with its 95% t-interval; p from the "
             "paired t-test over speakers, Holm-adjusted over all comparisons of the metric (bold: < 0.05); "
             "speakers better / equal / worse than the reference.", ""]
    by_pair: dict[tuple[str, str], list[str]] = defaultdict(list)
    for variant, ref, algorithm in identical:
        by_pair[(variant, ref)].append(algorithm)
    for (variant, ref), algorithms in sorted(by_pair.items()):
        lines += [f"Not compared, identical features: {variant} vs {ref} for {', '.join(sorted(algorithms))} (its "
                  f"rows are copies of {ref}'s: no finding).", ""]
    if not rows:
        return "\n".join([*lines, "No comparison has a paired episode.", ""])
    for protocol in sorted({r["protocol"] for r in rows}):
        lines += [f"## {protocol} protocol", ""]
        for metric in metrics:
            chosen = [r for r in rows if r["protocol"] == protocol and r["metric"] == metric]
            algorithms = [r for r in chosen if r["reference_pretune"] == r["pretune"]]
            variants = [r for r in chosen if r["reference_pretune"] != r["pretune"]]
            for kind, part in ((f"algorithm vs {algorithms[0]['reference']}" if algorithms else "", algorithms),
                               (f"pretune variant vs {BASE_PRETUNE}", variants)):
                if part:
                    lines += [f"### {METRIC_LABELS[metric]}: {kind}", "", *_table(part), ""]
    return "\n".join(lines)
