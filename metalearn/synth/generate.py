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

from metalearn.corpora import load_corpus
from metalearn.errors import MetalearnError
from metalearn.synth.calibration import calibrate_manifest, write_report
from metalearn.synth.layouts import cremad, esd, iemocap, msp_podcast, ravdess
from metalearn.synth.plan import CorpusPlan, SpeakerPlan
from metalearn.synth.presets import PRESETS, Preset
from metalearn.synth.styles import StyleConfig
from metalearn.synth.worker import render_speaker

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


def _is_complete(root: Path, marker: dict) -> bool:
    try:
        return json.loads((root / MARKER).read_text()) == json.loads(json.dumps(marker))
    except (OSError, ValueError):
        return False


def _render(job: tuple[str, Path, SpeakerPlan, StyleConfig]) -> tuple[str, str, float]:
    corpus, root, speaker, style = job
    return corpus, speaker.speaker, render_speaker(root, speaker, style)


def _context() -> mp.context.BaseContext:
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


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
    todo, summary = [], {}
    for plan in plans:
        root = out / plan.name
        marker = _marker(preset, cfg, seed, plan)
        done = not force and _is_complete(root, marker)
        summary[plan.name] = {"speakers": len(plan.speakers), "utterances": plan.n_utterances,
                              "skipped": done, "audio_seconds": 0.0}
        if done:
            log.info("%s: complete in %s, skipped", plan.name, root)
            continue
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        todo.append((plan, root, marker))
    jobs = [(plan.name, root, sp, cfg.style) for plan, root, _ in todo for sp in plan.speakers]
    if jobs:
        n_workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
        log.info("rendering %d utterances of %d speakers with %d workers",
                 sum(len(j[2].utterances) for j in jobs), len(jobs), n_workers)
        # Each speaker gets a new engine (a private copy of libespeak-ng) in a new process, so files
        # are byte-identical for a seed whatever the number of workers or what ran before.
        with _context().Pool(n_workers, maxtasksperchild=1) as pool:
            for i, (corpus, name, seconds) in enumerate(pool.imap(_render, jobs, chunksize=1), start=1):
                summary[corpus]["audio_seconds"] += seconds
                log.info("[%d/%d] %s speaker %s: %.0f s of audio", i, len(jobs), corpus, name, seconds)
    for plan, root, marker in todo:
        for rel, text in plan.label_files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        (root / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))
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
