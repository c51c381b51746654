"""The pre-finetuning record: each trained variant's source accuracy beside its frozen-probe ceiling.

Identity: a variant's ``config.json`` stores the fingerprint of what made it (:func:`variant_fingerprint`): its
recipe (the :class:`PretuneConfig` fields that shape the weights or the record: all but the speed and placement
knobs in :data:`NOT_IDENTITY`), its backbone config, its corpora and a content hash of each corpus's manifest
rows (every column but the audio path, which moves with a checkout); the untouched backbone's ("none") is its
backbone config alone. A finished folder is reused only on a match (:func:`check_fingerprint`), else one line
names the first differing key.

Accuracy: a supervised variant folder holds ``record.json`` (:func:`build_record`, format in docs/formats.md,
"pretune.json, pretune.md"): the fields of :data:`FIELDS` (variant, kind, head_layer, trainable_layers, corpora,
steps, passes, seconds, dev_accuracy, test_accuracy, probe_dev_accuracy, probe_test_accuracy: means over corpora)
and ``per_corpus``, the same per corpus with split sizes and the probe's L2 strength. A run collects them
(:func:`variant_record`) and writes ``pretune.json`` and ``pretune.md`` into its folder
(:func:`write_pretune_report`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from metalearn.data.manifest import Utterance
from metalearn.features.backbones import BackboneConfig
from metalearn.pretune.config import PretuneConfig
from metalearn.pretune.data import CorpusSplits
from metalearn.pretune.train import TrainResult, jsonable, mean_accuracy, steps_per_epoch
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import write_atomic, write_json
from metalearn.util.markdown import LEFT, RIGHT, table

RECORD = "record.json"
FIELDS = ("variant", "kind", "head_layer", "trainable_layers", "corpora", "steps", "passes", "seconds",
          "dev_accuracy", "test_accuracy", "probe_dev_accuracy", "probe_test_accuracy")


def build_record(variant: str, head_layer: int | str, cfg: PretuneConfig, splits: Mapping[str, CorpusSplits],
                 result: TrainResult, probes: Mapping[str, Mapping[str, float]], seconds: float) -> dict:
    """The record of a trained supervised variant; ``steps`` = epochs x the recipe's steps per epoch, ``passes`` =
    steps x batch x accumulation / train clips;
    ``seconds``: the whole variant (untouched pass for the probe and the trunk cache, training, probe);
    ``probes``: corpus -> the probe's {"dev", "test", "l2"}."""
    n_train = sum(len(s.train) for s in splits.values())
    steps = result.epochs * steps_per_epoch(cfg, splits)
    per_corpus = {c: {"dev_accuracy": result.dev_accuracy.get(c, math.nan),
                      "test_accuracy": result.test_accuracy.get(c, math.nan),
                      "probe_dev_accuracy": probes[c]["dev"], "probe_test_accuracy": probes[c]["test"],
                      "probe_l2": probes[c]["l2"], "sizes": s.sizes(), "dropped": dict(s.dropped)}
                  for c, s in sorted(splits.items())}
    return {"variant": variant, "kind": "supervised", "head_layer": head_layer,
            "trainable_layers": cfg.trainable_layers, "corpora": sorted(splits), "steps": steps,
            "passes": steps * cfg.batch_size * cfg.grad_accum / max(1, n_train), "seconds": seconds,
            "dev_accuracy": result.dev_mean, "test_accuracy": result.test_mean,
            "probe_dev_accuracy": mean_accuracy({c: p["dev"] for c, p in probes.items()}),
            "probe_test_accuracy": mean_accuracy({c: p["test"] for c, p in probes.items()}),
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
    """``pretune.json`` (the records, :data:`FIELDS` first, then ``per_corpus``) and ``pretune.md`` in
    ``out_dir``; returns both paths. Records of None (no record) are skipped."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kept = [{**{k: r.get(k) for k in FIELDS}, **{k: v for k, v in r.items() if k not in FIELDS}}
            for r in records if r is not None]
    write_json(out / "pretune.json", jsonable(kept), indent=2)
    write_atomic(out / "pretune.md", "\n".join(report_lines(kept)))
    return [out / "pretune.json", out / "pretune.md"]


# Knobs that change how fast or where a variant trains, not what it learns or records.
NOT_IDENTITY = ("device", "num_workers", "cache_trunk", "trunk_cache_mb", "pack_clips", "eval_batch_size")
_ROW_FIELDS = ("utterance_id", "corpus", "speaker", "gender", "emotion", "raw_label", "split", "duration_s",
               "sample_rate", "text")


def rows_digest(rows: Sequence[Utterance]) -> str:
    """SHA-256 of ``rows`` (sorted by utterance id; every manifest column but ``path``), hex."""
    h = hashlib.sha256()
    for u in sorted(rows, key=lambda u: u.utterance_id):
        h.update(json.dumps([getattr(u, f) for f in _ROW_FIELDS], default=str).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def recipe_identity(cfg: PretuneConfig) -> dict:
    """The recipe fields that shape a variant (JSON-ready)."""
    return {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(cfg))).items() if k not in NOT_IDENTITY}


def variant_fingerprint(subset: Sequence[str], cfg: PretuneConfig | None, backbone: BackboneConfig,
                        utterances: Sequence[Utterance]) -> dict:
    """The fingerprint of the variant trained on ``subset`` (empty: "none", which needs no recipe or rows)."""
    if not subset:
        return {"backbone": dataclasses.asdict(backbone)}
    assert cfg is not None, "a supervised variant's fingerprint needs its recipe"
    rows = {c: rows_digest([u for u in utterances if u.corpus == c]) for c in sorted(subset)}
    return {"recipe": recipe_identity(cfg), "backbone": dataclasses.asdict(backbone), "corpora": sorted(subset),
            "rows": rows}


def first_difference(saved: object, wanted: object, key: str = "") -> tuple[str, object, object] | None:
    """The first (dotted key, saved value, wanted value) where two JSON-like values differ; None when equal.
    Keys are visited in sorted order; a key missing on one side reads as None."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        for k in sorted(set(saved) | set(wanted), key=str):
            found = first_difference(saved.get(k), wanted.get(k), f"{key}.{k}" if key else str(k))
            if found:
                return found
        return None
    if isinstance(saved, list) and isinstance(wanted, list) and len(saved) == len(wanted):
        for i, (a, b) in enumerate(zip(saved, wanted, strict=True)):
            found = first_difference(a, b, f"{key}[{i}]")
            if found:
                return found
        return None
    if saved != wanted and not (_number(saved) and _number(wanted) and float(saved) == float(wanted)):
        return key or "fingerprint", saved, wanted
    return None


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def check_fingerprint(folder: Path, wanted: dict) -> None:
    """Nothing when the finished variant in ``folder`` was made as ``wanted`` says; else one line naming the
    folder, the first differing key with both values, and what to do."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MetalearnError(f"{folder / 'config.json'}: unreadable ({type(e).__name__}); delete {folder} to "
                             f"retrain the variant") from None
    saved = config.get("fingerprint") if isinstance(config, dict) else None
    if saved is None:
        raise MetalearnError(f"pretune variant {folder} records no fingerprint of what made it (made before they "
                             f"were recorded), so it cannot be matched to this config: delete the folder to "
                             f"retrain it, or set pretune.out elsewhere")
    diff = first_difference(saved, wanted)
    if diff:
        key, a, b = diff
        raise MetalearnError(f"pretune variant {folder} was made differently from this config: {key}: folder "
                             f"{_short(a)}, config {_short(b)}; delete the folder to retrain it, or set "
                             f"pretune.out elsewhere")


def _short(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."
