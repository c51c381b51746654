"""The feature layer chosen on validation speakers (``features.choose_layer``), per (pretune variant, fold).

For each supervised variant (the untouched backbone included; CLAP variants have one embedding and are skipped)
and each fold, every candidate hidden state (``features.candidates``, None: all of them) is scored by a fixed
probe on the fold's validation speakers' episodes: the run's own evaluation episodes, planned exactly as
``tune`` plans them (:func:`metalearn.run.planning.plan` with ``scored="validation"``) and scored by the
run's own code (:func:`metalearn.run.scoring.score_group`: standardisation fitted on the fold's
meta-training speakers only). The fold's test speakers are never read.

The probe is SimpleShot (nearest class centroid on centred, L2-normalised features) with the config's hand-set
``algorithms.simpleshot`` options (the tuned overlay is not applied, so a choice never depends on tuning): it
trains nothing per episode, draws nothing at random and has no learning rate or step count that suits one
layer's scale better than another's, and with its default ``center: support`` it learns nothing across speakers.
It costs one centroid computation per episode, so every layer of every variant is scored in about a second.

The score of a layer is the mean over the fold's validation speakers of each speaker's mean accuracy over its
episodes (all seeds and ks). The best score wins; exact ties go to the LATER layer (nearer the last layer, the
fixed default, and the layers pre-finetuning trains). Choices are written to ``<out>/layers.json`` (a list of
``{variant, fold, layer, scores: {layer: accuracy}, ...}``, with what they were chosen with) and
``<out>/layers.md``; a run that finds them reads them back, and refuses them when they came from other settings.
An entry whose layer is not the best of its own recorded scores (an edited or damaged file) is not used: one
warning names the file, the variant, the fold and both layers, and that variant's layers are chosen again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from metalearn.data.manifest import Utterance
from metalearn.features.table import FeatureTable
from metalearn.fewshot.episodes import Episode
from metalearn.pretune.variant import PretuneVariant
from metalearn.report.stats import exact_mean
from metalearn.report.summary import speaker_means
from metalearn.run.config import ExperimentConfig, TunedConfig
from metalearn.run.grid import Fold
from metalearn.run.planning import plan
from metalearn.run.run_folder import as_dict
from metalearn.run.scoring import score_group
from metalearn.run.stages import variant_embeddings
from metalearn.util import markdown
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import write_atomic, write_json

log = logging.getLogger(__name__)
PROBE = "simpleshot"
FILE = "layers.json"
CHOOSES = ("none", "supervised")  # variant kinds whose features are one of the backbone's hidden states
SETTINGS = ("probe", "options", "candidates", "standardize", "seeds", "validation", "meta_train", "states")

Choices = dict[tuple[str, int], int]  # (variant, fold) -> the hidden state it uses


def choose_layers(cfg: ExperimentConfig, variants: dict[str, PretuneVariant], rows: list[Utterance],
                  folds: list[Fold], episodes: dict[int, list[Episode]], out: Path) -> Choices:
    """(variant, fold) -> chosen hidden state, for every supervised variant (empty without
    ``features.choose_layer``); read from ``out/layers.json`` when there, else chosen and written there."""
    if not cfg.features.choose_layer:
        return {}
    _check(cfg, folds)
    path = out / FILE
    saved = _read(path)
    entries = []
    for variant in variants.values():
        if variant.kind not in CHOOSES:
            continue
        mine = [saved.get((variant.name, f.fold)) for f in folds]
        if any(e is None for e in mine):
            mine = _choose(cfg, variant, rows, folds, episodes)
        for entry, fresh in zip(mine, _settings(cfg, folds, mine), strict=True):
            _match(path, entry, fresh)
        entries += mine
    chosen = {e["variant"] for e in entries}
    everything = [e for key, e in saved.items() if key[0] not in chosen] + entries  # others' choices are kept
    if everything != list(saved.values()) or not (out / "layers.md").is_file():
        write_json(path, everything, indent=1)
        write_atomic(out / "layers.md", layers_table(everything, variants))
    return {(e["variant"], e["fold"]): e["layer"] for e in entries}


def _check(cfg: ExperimentConfig, folds: list[Fold]) -> None:
    if cfg.features.mean_layers:
        raise MetalearnError("config key 'features.choose_layer': true with features.mean_layers=true; expected one "
                             "of them (a chosen hidden state, or the mean of all)")
    empty = [f.fold for f in folds if not f.validation]
    if empty:
        raise MetalearnError(f"config key 'features.choose_layer': folds {empty} have no validation speakers to "
                             f"choose on; set speakers.validation >= 1 (with speakers.folds >= 2)")


def _read(path: Path) -> dict[tuple[str, int], dict]:
    """The saved choices by (variant, fold), each checked against its own scores: an entry whose layer is not the
    best of them (edited or damaged) is one warning and is left out, so its variant's layers are chosen again."""
    if not path.is_file():
        return {}
    try:
        saved = {(e["variant"], e["fold"]): e for e in json.loads(path.read_text(encoding="utf-8"))}
        best = {key: best_recorded(e) for key, e in saved.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise MetalearnError(f"{path}: not a list of layer choices ({type(e).__name__}: {e}); delete it to choose "
                             f"again") from None
    for (variant, fold), layer in best.items():
        if layer != saved[variant, fold]["layer"]:
            log.warning("%s: %s fold %s records layer %r, but the best of its own recorded scores is layer %d "
                        "(ties: the later); choosing the layers of %s again", path, variant, fold,
                        saved[variant, fold]["layer"], layer, variant)
    return {key: e for key, e in saved.items() if best[key] == e["layer"]}


def best_recorded(entry: dict) -> int:
    """The layer that :func:`pick` chooses from ``entry``'s own recorded scores (ValueError: none recorded)."""
    scores = {int(k): float(v) for k, v in entry["scores"].items()}
    if not scores:
        raise ValueError(f"{entry['variant']} fold {entry['fold']} records no scores")
    return pick(scores)


def _settings(cfg: ExperimentConfig, folds: list[Fold], entries: list[dict]) -> list[dict]:
    """What each fold's choice depends on, under this config (the backbone's ``states`` as the entry says)."""
    out = []
    for f, e in zip(folds, entries, strict=True):
        states = e.get("states")
        out.append({"probe": PROBE, "options": as_dict(getattr(cfg.algorithms, PROBE)),
                    "candidates": candidates(cfg, states) if isinstance(states, int) else None,
                    "standardize": cfg.features.standardize, "seeds": list(cfg.seeds),
                    "validation": list(f.validation), "meta_train": list(f.meta_train), "states": states})
    return out


def _match(path: Path, entry: dict, fresh: dict) -> None:
    for key in SETTINGS:
        if entry.get(key) != fresh[key]:
            raise MetalearnError(f"{path}: the layer of {entry['variant']} fold {entry['fold']} was chosen with "
                                 f"{key}={entry.get(key)!r}, this run has {fresh[key]!r}; delete {path.name} to "
                                 f"choose again (or use another out=...)")


def candidates(cfg: ExperimentConfig, states: int) -> list[int]:
    """``features.candidates`` as sorted distinct indices in 0..states-1 (None: every hidden state)."""
    chosen = list(range(states)) if cfg.features.candidates is None else cfg.features.candidates
    bad = [c for c in chosen if not -states <= c < states]
    if bad or not chosen:
        raise MetalearnError(f"config key 'features.candidates': {cfg.features.candidates} must name hidden states "
                             f"of this backbone's {states} (0..{states - 1}, or negative from the end)")
    return sorted({c % states for c in chosen})


def pick(scores: dict[int, float]) -> int:
    """The layer with the best score; exact ties go to the later layer."""
    return max(scores, key=lambda layer: (scores[layer], layer))


def _choose(cfg: ExperimentConfig, variant: PretuneVariant, rows: list[Utterance], folds: list[Fold],
            episodes: dict[int, list[Episode]]) -> list[dict]:
    """Every fold's entry for one variant: each candidate layer scored on the fold's validation speakers."""
    start = time.perf_counter()
    kept, values = variant_embeddings(cfg, variant, rows)
    states = int(values.shape[1])
    layers = candidates(cfg, states)
    probe = dataclasses.replace(cfg, algorithms=dataclasses.replace(cfg.algorithms, run=[PROBE], only={}),
                                tuned=TunedConfig())
    units = plan(probe, {variant.name: variant}, folds, episodes, "validation")
    scores: dict[int, dict[int, float]] = {f.fold: {} for f in folds}
    for layer in layers:
        table = FeatureTable(kept, variant.features(values, layer), str(layer), variant.name)
        for f in folds:
            mine = [u for u in units if u.fold == f.fold]
            records = [r for _, scored in score_group(probe, mine, variant, table, folds) for r in scored]
            if not records:
                raise MetalearnError(f"features.choose_layer: no validation episode of {variant.name} in fold "
                                     f"{f.fold} (speakers {list(f.validation)})")
            scores[f.fold][layer] = speaker_mean(records)
    entries = [{"variant": variant.name, "fold": f.fold, "layer": pick(scores[f.fold]),
                "scores": {str(k): v for k, v in scores[f.fold].items()}} for f in folds]
    for entry in entries:
        entry["unchanged_by_pretuning"] = unchanged(variant, entry["layer"], states)
        entry["states"] = states
    for entry, fresh in zip(entries, _settings(cfg, folds, entries), strict=True):
        entry.update({k: v for k, v in fresh.items() if k not in entry})
    log.info("%s: layers %s chosen on validation speakers in %.1f s", variant.name,
             [e["layer"] for e in entries], time.perf_counter() - start)
    return entries


def speaker_mean(records: list[dict]) -> float:
    """Mean over speakers of each speaker's mean accuracy (the report's per-speaker means, exactly rounded)."""
    return exact_mean(list(speaker_means(records, "accuracy").values()))


def trainable_layers(variant: PretuneVariant) -> int | None:
    """How many top transformer layers pre-finetuning trained (None: all, or nothing for the untouched backbone)."""
    return (variant.config.get("pretune") or {}).get("trainable_layers") if variant.kind == "supervised" else None


def first_changed(variant: PretuneVariant, states: int) -> int | None:
    """The lowest hidden state (of ``states``) pre-finetuning changed: its n trainable layers end at the state its
    head read (the top state for a "mix" or a variant from before heads chose one), so states h - n + 1 and up
    differ; 0 when every layer trained; None for the untouched backbone."""
    if variant.kind != "supervised":
        return None
    n = trainable_layers(variant)
    head = variant.head_layer
    top = states - 1 if head is None or head == "mix" else int(head) % states
    return 0 if n is None else max(0, top - n + 1)


def unchanged(variant: PretuneVariant, layer: int, states: int) -> bool:
    """Whether hidden state ``layer`` (of ``states``: the input and one per transformer layer) is one that
    pre-finetuning did not change (:func:`first_changed`; the untouched backbone is not "unchanged by" anything)."""
    first = first_changed(variant, states)
    return first is not None and layer < first


def layers_table(entries: list[dict], variants: dict[str, PretuneVariant]) -> str:
    """``layers.md``: per variant, the hidden state each fold used and its validation accuracy, then every score."""
    folds = sorted({e["fold"] for e in entries})
    lines = ["# Feature layers chosen on validation speakers", "",
             f"Per fold, the hidden state (0: the input to the first transformer layer) whose {PROBE} accuracy on "
             "the fold's validation speakers' episodes was best (ties: the later); the fold's test speakers are "
             "scored on it. CLAP variants use their own embedding and choose nothing.", ""]
    by_variant: dict[str, dict[int, dict]] = {}
    for e in entries:
        by_variant.setdefault(e["variant"], {})[e["fold"]] = e
    chosen = []
    for name, mine in by_variant.items():
        variant = variants.get(name)
        first = first_changed(variant, mine[folds[0]]["states"]) if variant else None
        trained = "none (untouched)" if first is None else \
            (f"{trainable_layers(variant) or 'all'} ending at the head's state (states {first}+ changed)")
        chosen.append([name, trained, *(_cell(mine[f]) if f in mine else "–" for f in folds)])
    L, R, every = markdown.LEFT, markdown.RIGHT, _all_layers(entries)
    lines += markdown.table(["variant", "pre-finetuned layers", *(f"fold {f}" for f in folds)], chosen,
                            [L, L] + [R] * len(folds))
    scores = [[e["variant"], e["fold"], *(f"{100 * e['scores'][str(k)]:.1f}" if str(k) in e["scores"] else "–"
                                          for k in every)] for e in entries]
    lines += ["", "Validation accuracy (%) of every candidate layer:", "",
              *markdown.table(["variant", "fold", *(f"layer {k}" for k in every)], scores, [L, R] + [R] * len(every))]
    skipped = [v.name for v in variants.values() if v.kind not in CHOOSES]
    if skipped:
        lines += ["", f"Not chosen (their own embedding): {', '.join(skipped)}."]
    return "\n".join(lines) + "\n"


def _cell(entry: dict) -> str:
    note = ", unchanged by pre-finetuning" if entry.get("unchanged_by_pretuning") else ""
    return f"layer {entry['layer']} ({100 * entry['scores'][str(entry['layer'])]:.1f}%{note})"


def _all_layers(entries: list[dict]) -> list[int]:
    return sorted({int(k) for e in entries for k in e["scores"]})
