"""Which feature the student episode reads: the demo run's own choice, or one chosen the same way.

The experiments read one hidden state per (pretune variant, fold), chosen on the fold's validation speakers by
SimpleShot (:mod:`metalearn.run.layer_choice`, written to ``<run>/layers.json``). The episode must read the same
state, or its accuracies are not the demo's. Three ways, in order:

- ``--layer N`` (or ``mean``): the state given, said so on the page;
- ``--run DIR``: the state the run used for this variant in the fold whose TEST speakers hold the episode's
  speaker (``layers.json`` with ``folds.json``; a run that chose nothing read its config's ``features.layer``);
- otherwise chosen as the run chooses: every state scored by SimpleShot (nearest centred, L2-normalised class
  mean) on the OTHER speakers' episodes of the same shape (k, seed), features z-scored with the other speakers'
  statistics; the best mean over speakers of each speaker's accuracy wins, exact ties go to the later state.
  The episode's speaker is never read.

This module reads the run folder's files itself (``demo`` and ``run`` are siblings that never import each other).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from metalearn.data.manifest import Utterance, utterance_key
from metalearn.features.featurize import select_features, standardize
from metalearn.fewshot.algorithms import AdapterSpec, build_adapter
from metalearn.fewshot.episodes import nway_episodes
from metalearn.util.errors import MetalearnError

PROBE = "simpleshot"


@dataclass(frozen=True)
class LayerChoice:
    """The state read (an index, or "mean"), how it was found (``given`` | ``run`` | ``validation``), one sentence
    saying why, and the validation accuracy of every candidate state when they were scored."""

    layer: int | str
    source: str
    reason: str
    scores: dict[int, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "the mean of all hidden states" if self.layer == "mean" else f"hidden state {self.layer}"


def parse_layer(text: str, states: int) -> int | str:
    """``mean`` or a state index in ``-states..states-1`` (negative: from the end), as a non-negative index."""
    if text == "mean":
        return text
    try:
        layer = int(text)
    except ValueError:
        raise MetalearnError(f"--layer {text!r}: expected an integer (-1 = last hidden state) or 'mean'") from None
    if not -states <= layer < states:
        raise MetalearnError(f"--layer {layer}: expected 'mean' or an integer in {-states}..{states - 1}")
    return layer % states


def given_layer(text: str, states: int) -> LayerChoice:
    layer = parse_layer(text, states)
    return LayerChoice(layer, "given", f"{'the mean of all states' if layer == 'mean' else f'state {layer}'} was "
                                       f"asked for (--layer {text}); the demo run may have read another")


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MetalearnError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None


def run_layer(run_dir: str | Path, variant: str, speaker: str, states: int) -> LayerChoice:
    """The state ``run_dir`` read for ``variant`` in the fold that tested ``speaker``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MetalearnError(f"--run {run_dir}: not a folder (a run folder such as results/demo)")
    folds = _read_json(run_dir / "folds.json")
    fold = next((f["fold"] for f in folds if speaker in f.get("test", [])), None) if isinstance(folds, list) else None
    if fold is None:
        raise MetalearnError(f"--run {run_dir}: speaker {speaker!r} is a test speaker of no fold in folds.json")
    path = run_dir / "layers.json"
    if not path.is_file():
        layer = _config_layer(run_dir)
        return LayerChoice(parse_layer(str(layer), states), "run",
                           f"the run {run_dir} read {layer} for every variant (features.layer; it chose none)")
    entries = _read_json(path)
    entry = next((e for e in entries if e.get("variant") == variant and e.get("fold") == fold), None)
    if entry is None:
        have = sorted({str(e.get("variant")) for e in entries})
        raise MetalearnError(f"{path}: no layer of variant {variant!r} in fold {fold} (variants: {', '.join(have)})")
    if entry.get("states") not in (None, states):
        raise MetalearnError(f"{path}: chosen among {entry['states']} hidden states, this backbone has {states}; "
                             f"use the run's backbone (see {run_dir / 'config.yaml'})")
    scores = {int(k): float(v) for k, v in entry.get("scores", {}).items()}
    best = scores.get(int(entry["layer"]))
    score = f" ({100 * best:.1f}% on {', '.join(entry.get('validation', []))})" if best else ""
    return LayerChoice(int(entry["layer"]), "run",
                       f"the demo run {run_dir} read it for {variant} in fold {fold}, whose test speakers include "
                       f"{speaker}: SimpleShot chose it on that fold's validation speakers{score}", scores)


def check_run_backbone(run_dir: str | Path, family: str, source: str, whisper_mode: str) -> None:
    """A one-line error when the run folder's config names another backbone than the episode's options."""
    path = Path(run_dir) / "config.yaml"
    try:
        backbone = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("backbone") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return  # nothing to compare with; the layer count is still checked
    run = {"family": backbone.get("family"), "source": backbone.get("source")}
    if backbone.get("family") == "whisper":
        run["whisper_mode"] = backbone.get("whisper_mode", "trimmed")
    mine = {"family": family, "source": source, "whisper_mode": whisper_mode}
    differ = [f"{k}={v!r} (here {mine[k]!r})" for k, v in run.items() if v is not None and v != mine[k]]
    if differ:
        raise MetalearnError(f"--run {run_dir}: its backbone has {', '.join(differ)}; pass the run's --backbone-* "
                             f"options so the layer means the same state")


def _config_layer(run_dir: Path) -> int | str:
    path = run_dir / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        features = config["features"]
        return "mean" if features.get("mean_layers") else features["layer"]
    except (OSError, yaml.YAMLError, TypeError, KeyError) as e:
        raise MetalearnError(f"--run {run_dir}: no layers.json and no features.layer in config.yaml "
                             f"({type(e).__name__})") from None


def validation_layer(values: np.ndarray, rows: list[Utterance], speaker: str, k: int, seed: int) -> LayerChoice:
    """Every state of ``values`` [N, L, D] scored by SimpleShot on the other speakers' k-shot episodes."""
    others = sorted({u.speaker for u in rows} - {speaker})
    episodes, _ = nway_episodes(rows, others, k, 1, seed)
    if not episodes:
        raise MetalearnError(f"k={k}: no other speaker has a {k}-shot episode to choose the layer on; pass --layer "
                             f"or --run")
    fit = np.array([i for i, u in enumerate(rows) if u.speaker != speaker])
    index_of = {utterance_key(u): i for i, u in enumerate(rows)}
    scores = {}
    for layer in range(values.shape[1]):
        x = standardize(select_features(values, layer), fit)
        per_speaker: dict[str, list[float]] = {}
        for e in episodes:
            probe = build_adapter(PROBE, AdapterSpec(x.shape[1], len(e.classes), seed))
            sup = torch.tensor([index_of[key] for key in e.support])
            qry = torch.tensor([index_of[key] for key in e.query])
            logits = probe.predict(x[sup][None], torch.tensor(e.support_labels)[None], x[qry][None],
                                   len(e.classes))[0]
            correct = (logits.argmax(-1) == torch.tensor(e.query_labels)).float().mean().item()
            per_speaker.setdefault(e.speaker, []).append(correct)
        scores[layer] = float(np.mean([np.mean(v) for v in per_speaker.values()]))
    best = max(scores, key=lambda layer: (scores[layer], layer))
    speakers = sorted({e.speaker for e in episodes})
    return LayerChoice(best, "validation",
                       f"no run folder was given, so it was chosen as the demo run chooses: SimpleShot scored every "
                       f"state on the {len(speakers)} other speakers' {k}-shot episodes and state {best} did best "
                       f"({100 * scores[best]:.1f}%); speaker {speaker} was not read", scores)
