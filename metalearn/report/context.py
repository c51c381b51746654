"""The lines of summary.md that say how the trials were set up, read from the run folder's own files: the feature
protocol (config.yaml), what each arm learned from (learned.json, pretune.json). Files that are absent (older
runs, runs without pre-finetuning) give no line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

log = logging.getLogger(__name__)


def _read_json(path: Path) -> object | None:
    """The file's JSON; None when it is absent, and a warning (not silence) when it is there but damaged."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable (%s); summary.md leaves its lines out", path, type(e).__name__)
        return None


def protocol_lines(run_dir: Path) -> list[str]:
    """Which feature protocol the run used: each variant at its validation-chosen feature, or one shared one."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        features = config["features"]
    except (OSError, yaml.YAMLError, TypeError, KeyError):
        return []
    if features.get("choose_layer"):
        text = ("each supervised variant reads the hidden state chosen for it per fold on the fold's validation "
                "speakers (layers.md)")
    elif features.get("mean_layers"):
        text = "every variant reads the mean of all hidden states"
    else:
        text = f"every supervised variant reads the same hidden state, features.layer = {features.get('layer')}"
    return [f"Feature protocol: {text}.", ""]


def learned_lines(run_dir: Path) -> list[str]:
    """What pre-finetuning and the methods that learn across speakers learned from, per fold."""
    lines = []
    pretune = _read_json(run_dir / "pretune.json")
    if isinstance(pretune, list) and pretune:
        lines += ["What each arm learned from:", ""]
        for r in pretune:
            sizes = [p.get("sizes", {}).get("train", 0) for p in (r.get("per_corpus") or {}).values()]
            lines.append(f"- pre-finetuning ({r.get('variant')}): the training splits of "
                         f"{', '.join(r.get('corpora') or [])} ({sum(sizes)} clips; pretune.md: source accuracy "
                         f"beside a frozen probe)")
    learned = _read_json(run_dir / "learned.json")
    if isinstance(learned, list) and learned:
        if not lines:
            lines += ["What each arm learned from:", ""]
        for f in learned:
            task = f.get("task", {})
            parts = [f"{f['meta_train']['speakers']} target speakers ({f['meta_train']['clips']} clips)"]
            parts += [f"{c}: {s['task_speakers']} of {s['speakers']} speakers with enough clips for a "
                      f"{task.get('ways')}-way {task.get('shots')}-shot task ({s['clips']} clips)"
                      for c, s in sorted(f.get("sources", {}).items())]
            total = f["meta_train"]["speakers"] + sum(s["task_speakers"] for s in f.get("sources", {}).values())
            lines.append(f"- methods that learn across speakers, fold {f['fold']}: {total} speakers give tasks: "
                         + "; ".join(parts))
    return [*lines, ""] if lines else []
