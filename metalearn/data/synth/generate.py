"""Generate the synthetic corpora of a preset: plan, render in worker processes, write labels.

A corpus whose folder holds a matching ``.synth.json`` is complete and skipped; any other
existing folder (a killed run, another seed) is removed and generated again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

from metalearn.data.corpora import load_corpus
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import write_atomic
from metalearn.util.progress import progress
from metalearn.data.synth.calibration import calibrate_manifest, write_report
from metalearn.data.synth.layouts import cremad, esd, iemocap, msp_podcast, ravdess
from metalearn.data.synth.plan import CorpusPlan, SpeakerPlan
from metalearn.data.synth.presets import PRESETS, Preset
from metalearn.data.synth.styles import StyleConfig
from metalearn.data.synth.worker import render_speaker

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
MARKER = ".synth.json"
TARGET = "esd"
SOURCES = ("iemocap", "msp_podcast", "cremad", "ravdess")


def plan_corpora(preset: Preset, seed: int) -> list[CorpusPlan]:
    """The five corpora of ``preset``: the ESD-layout target first, then the sources."""
    s = preset.style
    return [esd.plan(seed, *preset.esd, s), iemocap.plan(seed, *preset.iemocap, s),
            msp_podcast.plan(seed, *preset.msp_podcast, s), cremad.plan(seed, *preset.cremad, s),
            ravdess.plan(seed, *preset.ravdess, s)]


def _marker(preset_name: str, preset: Preset, seed: int, plan: CorpusPlan) -> dict:
    return {"format": FORMAT_VERSION, "preset": preset_name, "seed": seed, "corpus": plan.name,
            "speakers": len(plan.speakers), "utterances": plan.n_utterances,
            "sizes": dataclasses.asdict(preset)}


def _existing_marker(root: Path, marker: dict) -> dict | None:
    """The marker in ``root`` when it describes this very corpus (a complete folder), else None."""
    try:
        found = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    same = {k: v for k, v in found.items() if k != "audio_seconds"} == json.loads(json.dumps(marker))
    return found if same else None


def _render(job: tuple[str, Path, SpeakerPlan, StyleConfig]) -> tuple[str, str, float]:
    corpus, root, speaker, style = job
    return corpus, speaker.speaker, render_speaker(root, speaker, style)


def _context() -> mp.context.BaseContext:
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _pending(plans: list[CorpusPlan], out: Path, preset: str, cfg: Preset, seed: int, force: bool
             ) -> tuple[list[tuple[CorpusPlan, Path, dict]], dict]:
    """Corpora to (re)generate, their folders emptied, and the summary of all of them."""
    todo, summary = [], {}
    for plan in plans:
        root = out / plan.name
        marker = _marker(preset, cfg, seed, plan)
        found = None if force else _existing_marker(root, marker)
        summary[plan.name] = {"speakers": len(plan.speakers), "utterances": plan.n_utterances,
                              "skipped": found is not None,
                              "audio_seconds": found.get("audio_seconds", 0.0) if found else 0.0}
        if found:
            log.info("%s: complete in %s, skipped", plan.name, root)
            continue
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        todo.append((plan, root, marker))
    return todo, summary


def _render_all(todo: list[tuple[CorpusPlan, Path, dict]], style: StyleConfig, workers: int | None,
                summary: dict) -> None:
    """Render every speaker of ``todo`` in worker processes, with a progress bar."""
    jobs = [(plan.name, root, sp, style) for plan, root, _ in todo for sp in plan.speakers]
    if not jobs:
        return
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    total = sum(len(j[2].utterances) for j in jobs)
    log.info("rendering %d utterances of %d speakers with %d workers", total, len(jobs), n_workers)
    sizes = {(plan.name, sp.speaker): len(sp.utterances) for plan, _, _ in todo for sp in plan.speakers}
    # Each speaker gets a new engine (a private copy of libespeak-ng) in a new process, so files
    # are byte-identical for a seed whatever the number of workers or what ran before.
    with _context().Pool(n_workers, maxtasksperchild=1) as pool, \
            progress(total, "synth", "utt") as bar:
        for corpus, name, seconds in pool.imap(_render, jobs, chunksize=1):
            summary[corpus]["audio_seconds"] += seconds
            bar.update(sizes[(corpus, name)])


def _write_labels(todo: list[tuple[CorpusPlan, Path, dict]], summary: dict) -> None:
    """Label files, then the marker that declares a corpus complete (written last)."""
    for plan, root, marker in todo:
        for rel, text in plan.label_files.items():
            write_atomic(root / rel, text)
        done = {**marker, "audio_seconds": round(summary[plan.name]["audio_seconds"], 3)}
        write_atomic(root / MARKER, json.dumps(done, indent=1, sort_keys=True))


def generate(preset: str, out: Path, seed: int = 0, force: bool = False, workers: int | None = None) -> dict:
    """Write the corpora of ``preset`` under ``out`` and the calibration report beside them.

    Returns:
        {"preset", "seed", "corpora": {name: {"speakers", "utterances", "skipped", "audio_seconds"}},
         "render_seconds", "seconds"} (wall times)
    """
    if preset not in PRESETS:
        raise MetalearnError(f"unknown synth preset {preset!r}; expected one of: {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    plans = plan_corpora(cfg, seed)
    todo, summary = _pending(plans, out, preset, cfg, seed, force)
    _render_all(todo, cfg.style, workers, summary)
    _write_labels(todo, summary)
    render_seconds = time.perf_counter() - start
    target = next(p for p in plans if p.name == TARGET)
    if len(target.speakers) < 2:
        log.warning("calibration skipped: it needs at least two %s speakers", TARGET)
    elif any(plan.name == TARGET for plan, _, _ in todo) or not (out / "calibration.json").is_file():
        log.info("calibration: plain acoustic statistics on %s (about 5 ms per utterance)", TARGET)
        rows = load_corpus(TARGET, out / TARGET).utterances
        report = {"preset": preset, "seed": seed, **calibrate_manifest(rows, seed=seed)}
        write_report(report, out, f"python -m metalearn synth --preset {preset} --out DIR --seed {seed}")
    return {"preset": preset, "seed": seed, "corpora": summary, "render_seconds": round(render_seconds, 1),
            "seconds": round(time.perf_counter() - start, 1)}
