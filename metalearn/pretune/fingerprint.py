"""What made a pretune variant, as a comparable value: a finished folder is reused only when it matches.

A supervised variant's fingerprint holds its recipe (the :class:`PretuneConfig` fields that shape the weights or
the record: every field but the speed and placement knobs in :data:`NOT_IDENTITY`), its backbone config, its
corpora and a content hash of each corpus's manifest rows (every column but the audio path, which moves with a
checkout). The untouched backbone's ("none") is its backbone config alone. ``config.json`` stores it
(``"fingerprint"``); :func:`check_fingerprint` compares and names the first differing key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from metalearn.data.manifest import Utterance
from metalearn.features.backbones import BackboneConfig
from metalearn.pretune.config import PretuneConfig
from metalearn.util.errors import MetalearnError

# Knobs that change how fast or where a variant trains, not what it learns or records.
NOT_IDENTITY = ("device", "num_workers", "cache_trunk", "trunk_cache_mb", "eval_batch_size")
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
