"""The pre-finetuning record: each trained variant's source accuracy beside its frozen-probe ceiling.

A supervised variant folder holds ``record.json`` (:func:`build_record`): the DESIGN.md "Pre-finetuning record"
fields (variant, kind, head_layer, trainable_layers, corpora, steps, passes, seconds, dev_accuracy,
test_accuracy, probe_dev_accuracy, probe_test_accuracy: means over corpora) and ``per_corpus``, the same per
corpus with split sizes and the probe's L2 strength. A run collects them (:func:`variant_record`) and writes
``pretune.json`` and ``pretune.md`` into its folder (:func:`write_pretune_report`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from metalearn.pretune.config import PretuneConfig
from metalearn.pretune.data import CorpusSplits
from metalearn.pretune.evaluate import mean_accuracy
from metalearn.pretune.probe import ProbeScore
from metalearn.pretune.train import TrainResult, jsonable
from metalearn.util.fileio import write_atomic, write_json
from metalearn.util.markdown import LEFT, RIGHT, table

RECORD = "record.json"
FIELDS = ("variant", "kind", "head_layer", "trainable_layers", "corpora", "steps", "passes", "seconds",
          "dev_accuracy", "test_accuracy", "probe_dev_accuracy", "probe_test_accuracy")


def build_record(variant: str, head_layer: int | str, cfg: PretuneConfig, splits: Mapping[str, CorpusSplits],
                 result: TrainResult, steps: int, probes: Mapping[str, ProbeScore], seconds: float) -> dict:
    """The record of a trained supervised variant; ``passes`` = steps x batch x accumulation / train clips;
    ``seconds``: the whole variant (untouched pass for the probe and the trunk cache, training, probe)."""
    n_train = sum(len(s.train) for s in splits.values())
    per_corpus = {c: {"dev_accuracy": result.dev_accuracy.get(c, math.nan),
                      "test_accuracy": result.test_accuracy.get(c, math.nan),
                      "probe_dev_accuracy": probes[c].dev, "probe_test_accuracy": probes[c].test,
                      "probe_l2": probes[c].l2, "sizes": s.sizes(), "dropped": dict(s.dropped)}
                  for c, s in sorted(splits.items())}
    return {"variant": variant, "kind": "supervised", "head_layer": head_layer,
            "trainable_layers": cfg.trainable_layers, "corpora": sorted(splits), "steps": steps,
            "passes": steps * cfg.batch_size * cfg.grad_accum / max(1, n_train), "seconds": seconds,
            "dev_accuracy": result.dev_mean, "test_accuracy": result.test_mean,
            "probe_dev_accuracy": mean_accuracy({c: p.dev for c, p in probes.items()}),
            "probe_test_accuracy": mean_accuracy({c: p.test for c, p in probes.items()}),
            "best_epoch": result.best_epoch, "epochs": result.epochs, "per_corpus": per_corpus}


def write_record(folder: Path, record: dict) -> None:
    """``folder/record.json`` (strict JSON: NaN -> null)."""
    write_json(folder / RECORD, jsonable(record), indent=2)


def variant_record(folder: str | Path) -> dict | None:
    """The record in a finished variant folder; None when it has none (the untouched backbone, a CLAP
    variant, a variant trained before records were written)."""
    path = Path(folder) / RECORD
    if not path.is_file() or not (Path(folder) / "done.json").is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _num(value: object, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else (
        f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def report_lines(records: Sequence[dict]) -> list[str]:
    """pretune.md: one table of variants (means over corpora), one row per variant and corpus."""
    lines = ["# Pre-finetuning", "",
             "Source-corpus accuracy of each pre-finetuned variant (speaker-independent dev/test splits) beside a "
             "frozen linear probe: logistic regression on the untouched backbone's pooled state the head reads (a "
             "learned mix: the untouched states under the variant's mix weights), same splits. Passes = optimizer "
             "steps x batch x accumulation / training clips.", ""]
    lines += table(["variant", "head layer", "trainable layers", "corpora", "steps", "passes", "seconds", "dev",
                    "probe dev", "test", "probe test"],
                   [[r["variant"], r["head_layer"], _num(r["trainable_layers"]), "+".join(r["corpora"]), r["steps"],
                     _num(r["passes"], 2), _num(r["seconds"], 0), _num(r["dev_accuracy"]),
                     _num(r["probe_dev_accuracy"]), _num(r["test_accuracy"]), _num(r["probe_test_accuracy"])]
                    for r in records], [LEFT, RIGHT, RIGHT, LEFT] + [RIGHT] * 7)
    rows = [[r["variant"], c, f"{p['sizes']['train']}/{p['sizes']['dev']}/{p['sizes']['test']}",
             _num(p["dev_accuracy"]), _num(p["probe_dev_accuracy"]), _num(p["test_accuracy"]),
             _num(p["probe_test_accuracy"])]
            for r in records for c, p in sorted(r.get("per_corpus", {}).items())]
    lines += ["", "Per corpus (train/dev/test clips):", ""]
    lines += table(["variant", "corpus", "clips", "dev", "probe dev", "test", "probe test"], rows,
                   [LEFT, LEFT, RIGHT, RIGHT, RIGHT, RIGHT, RIGHT])
    return lines + [""]


def write_pretune_report(records: Sequence[dict], out_dir: str | Path) -> list[Path]:
    """``pretune.json`` (the records, DESIGN.md's fields first, then ``per_corpus``) and ``pretune.md`` in
    ``out_dir``; returns both paths. Records of None (no record) are skipped."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kept = [{**{k: r.get(k) for k in FIELDS}, **{k: v for k, v in r.items() if k not in FIELDS}}
            for r in records if r is not None]
    write_json(out / "pretune.json", jsonable(kept), indent=2)
    write_atomic(out / "pretune.md", "\n".join(report_lines(kept)))
    return [out / "pretune.json", out / "pretune.md"]
