"""Experiment tracking: local metrics.jsonl always, mirrored to Weights & Biases when enabled.

The runner writes its results to local files first; a :class:`Tracker` mirrors them to W&B. W&B is offline by
default (no network needed; upload later with ``wandb sync``) and any W&B failure becomes one warning, after which
the tracker keeps writing local files only. The runner never branches on whether W&B is on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from metalearn.util.errors import MetalearnError

logger = logging.getLogger(__name__)

MODES = ("online", "offline", "shared", "disabled", "dryrun", "run")
CURVE_METRICS = ("accuracy", "macro_f1", "uar")


@dataclasses.dataclass
class TrackingConfig:
    """Where and how a run is tracked (OmegaConf structured-config compatible)."""

    wandb: bool = True  # False: no W&B at all (local files only)
    project: str = "metalearn"
    entity: str | None = None
    mode: str | None = None  # None: $WANDB_MODE if the user set it, else "offline"
    group: str | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    init_timeout: float = 30.0  # seconds; an online init that cannot reach the server gives up and warns


def resolve_mode(cfg: TrackingConfig) -> str:
    """W&B mode: ``cfg.mode``, else ``$WANDB_MODE`` if set, else ``"offline"`` (never needs the network).

    A blank ``$WANDB_MODE`` (``WANDB_MODE=`` in a shell or a job file) counts as unset.
    """
    mode = cfg.mode or os.environ.get("WANDB_MODE", "").strip() or "offline"
    if mode not in MODES:
        raise MetalearnError(f"unknown W&B mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


def _jsonable(value: Any) -> Any:
    """A value that json.dumps writes as strict JSON (NaN/inf become null, numpy scalars plain numbers)."""
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def curve_points(summary_rows: list[dict], metrics: Sequence[str] = CURVE_METRICS) -> list[dict]:
    """One dict per k (ascending): ``{"k": k, "<metric>/<protocol>/<pretune>/<algorithm>": mean, ...}``.

    ``<metric>_ci95/...`` keys carry the 95% confidence half-widths; metrics a row lacks are skipped.
    """
    points: dict[Any, dict] = {}
    for row in summary_rows:
        point = points.setdefault(row["k"], {"k": row["k"]})
        series = f"{row['protocol']}/{row['pretune']}/{row['algorithm']}"
        for metric in metrics:
            if f"{metric}_mean" in row:
                point[f"{metric}/{series}"] = row[f"{metric}_mean"]
            if f"{metric}_ci95" in row:
                point[f"{metric}_ci95/{series}"] = row[f"{metric}_ci95"]
    return [points[k] for k in sorted(points)]


class Tracker:
    """Writes ``run_dir/metrics.jsonl`` and mirrors everything to a W&B run (files under ``run_dir/wandb/``)."""

    def __init__(self, run_dir: Path, name: str, config: dict, cfg: TrackingConfig) -> None:
        """Open the local metrics file and, when ``cfg.wandb``, start the W&B run (failures only warn)."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.cfg = cfg
        self.mode = resolve_mode(cfg) if cfg.wandb else None
        self.hint: str | None = None
        self._run: Any = None
        self._wandb: Any = None
        self._mirror = False
        self._finished = False
        self._warned = False
        self._curve_metrics: set[str] = set()
        if cfg.wandb:
            self._init_wandb(name, config)

    def _init_wandb(self, name: str, config: dict) -> None:
        """Start the W&B run; on any error warn once and carry on with local files only."""
        try:
            import wandb

            if "WANDB_MODE" in os.environ and not os.environ["WANDB_MODE"].strip():
                del os.environ["WANDB_MODE"]  # blank is unset (wandb itself refuses a blank mode, whatever we pass)
            settings = wandb.Settings(init_timeout=self.cfg.init_timeout, silent=True, console="off")
            self._run = wandb.init(
                project=self.cfg.project, entity=self.cfg.entity, name=name, group=self.cfg.group,
                tags=list(self.cfg.tags) or None, config=config, dir=str(self.run_dir), mode=self.mode,
                settings=settings,
            )
            self._wandb = wandb
            self._mirror = True
        except Exception as exc:  # W&B must never stop the experiment
            self._run = None
            self._warn("init", exc)

    def _warn(self, what: str, exc: BaseException) -> None:
        """Log the one W&B warning and stop mirroring."""
        if not self._warned:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            name = type(exc).__name__
            logger.warning("W&B %s failed (%s: %s); continuing with local files only", what, name, first_line)
        self._warned = True
        self._mirror = False

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Run one W&B call if still mirroring; an error turns mirroring off with a single warning."""
        if not self._mirror:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # W&B must never stop the experiment
            self._warn(what, exc)

    @property
    def wandb_enabled(self) -> bool:
        """Whether results are still being mirrored to W&B."""
        return self._mirror

    def _write_local(self, record: dict) -> None:
        """Append one JSON line (with a ``time`` field) to metrics.jsonl."""
        line = json.dumps(_jsonable({"time": time.time(), **record}))
        with self.metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def log(self, metrics: dict, step: int | None = None) -> None:
        """Log a dict of metrics locally and to W&B (W&B drops steps lower than ones already logged)."""
        self._write_local(metrics if step is None else {"step": step, **metrics})
        self._call("log", lambda: self._run.log(dict(metrics), step=step))

    def log_curves(self, summary_rows: list[dict], metrics: Sequence[str] = CURVE_METRICS) -> None:
        """Log per-k curves (k on the x axis): one log per k, ascending, each method one series over k."""
        points = curve_points(summary_rows, metrics)
        self._call("define_metric", self._define_curve_metrics, metrics)
        for point in points:
            self._write_local(point)
            self._call("log", lambda p=point: self._run.log(dict(p)))

    def _define_curve_metrics(self, metrics: Sequence[str]) -> None:
        """Declare ``k`` as the x axis of ``<metric>/*`` and ``<metric>_ci95/*`` (once per metric)."""
        if not self._curve_metrics:
            self._run.define_metric("k")
        for metric in metrics:
            if metric not in self._curve_metrics:
                self._run.define_metric(f"{metric}/*", step_metric="k")
                self._run.define_metric(f"{metric}_ci95/*", step_metric="k")
                self._curve_metrics.add(metric)

    def log_table(self, key: str, rows: list[dict], columns: Sequence[str], file: Path | None = None) -> None:
        """Log rows (e.g. all trial records) as a W&B Artifact of type ``key`` holding every row as a table
        (and ``file``, e.g. trials.csv, beside it); a history table of ``key`` too while the rows fit W&B's
        history limit (``wandb.Table.MAX_ROWS``, 10,000: Paper A's 33,600 trials would be cut there)."""

        def _log() -> None:
            data = [[_jsonable(row.get(col)) for col in columns] for row in rows]
            table = self._wandb.Table
            if len(data) > table.MAX_ARTIFACT_ROWS:
                raise MetalearnError(f"{len(data)} rows exceed W&B's artifact table limit {table.MAX_ARTIFACT_ROWS}")
            # one Table for both: W&B checks every cell's type as it is added (2.7 s for the demo's 6,880 trials)
            rows_table = table(columns=list(columns), data=data)
            artifact = self._wandb.Artifact(_artifact_name(f"{self._run.name or 'run'}-{key}"), type=key)
            artifact.add(rows_table, key)
            if file is not None and Path(file).is_file():
                artifact.add_file(str(file), name=Path(file).name)
            self._run.log_artifact(artifact)
            if len(data) <= table.MAX_ROWS:
                self._run.log({key: rows_table})

        self._call("log_table", _log)

    def log_line_charts(self, summary_rows: list[dict], metrics: Sequence[str] = CURVE_METRICS) -> None:
        """One line chart per (metric, protocol, pretune variant) with every algorithm as a line over k
        (``wandb.plot.line_series``), besides the per-key history curves; nothing locally (summary.csv has it)."""

        def _log() -> None:
            charts = {}
            for (protocol, pretune), rows in sorted(_by_variant(summary_rows).items()):
                by_algorithm: dict[str, list[dict]] = {}
                for r in sorted(rows, key=lambda r: (r["algorithm"], r["k"])):
                    by_algorithm.setdefault(r["algorithm"], []).append(r)
                names = sorted(by_algorithm)
                for metric in metrics:
                    charts[f"charts/{metric}/{protocol}/{pretune}"] = self._wandb.plot.line_series(
                        [[r["k"] for r in by_algorithm[a]] for a in names],
                        [[r[f"{metric}_mean"] for r in by_algorithm[a]] for a in names], keys=names,
                        title=f"{metric} vs k: {pretune} ({protocol})", xname=_k_label(protocol))
            self._run.log(charts)

        self._call("log_line_charts", _log)

    def log_images(self, images: dict[str, Path]) -> None:
        """Log image files (e.g. PNG plots) to W&B, one wandb.Image per key."""
        if images:
            self._call("log_images", lambda: self._run.log({k: self._wandb.Image(str(p)) for k, p in images.items()}))

    def log_summary(self, values: dict) -> None:
        """Update the W&B run summary (the run's headline numbers)."""
        self._call("log_summary", lambda: self._run.summary.update(dict(values)))

    def finish(self) -> str | None:
        """Finish the W&B run; return the line to print (offline: where it is and how to upload it), else None."""
        return self._finish(exit_code=0)

    def _finish(self, exit_code: int) -> str | None:
        """Finish once; later calls return the same hint."""
        if self._finished:
            return self.hint
        self._finished = True
        if self._run is None:
            return None
        run, self._run, self._mirror = self._run, None, False
        try:
            sync_dir = run.settings.sync_dir
            url = None if self.mode in ("offline", "dryrun", "disabled") else run.url
            run.finish(exit_code=exit_code)
        except Exception as exc:  # W&B must never stop the experiment
            self._warn("finish", exc)
            return None
        self.hint = self._hint(sync_dir, url)
        return self.hint

    def _hint(self, sync_dir: str, url: str | None) -> str | None:
        """The line telling the user where the W&B run went."""
        if self.mode in ("offline", "dryrun"):
            shown = _display_path(Path(sync_dir))
            return f"W&B offline run saved in {shown}; upload it with: wandb sync {shown}"
        if self.mode == "disabled":
            return None
        return f"W&B run: {url}" if url else None

    def __enter__(self) -> Tracker:
        """Use as ``with Tracker(...) as tracker:``."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Finish the run, marking it failed if the block raised."""
        self._finish(exit_code=0 if exc_type is None else 1)


def _by_variant(summary_rows: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in summary_rows:
        out.setdefault((str(r["protocol"]), str(r["pretune"])), []).append(r)
    return out


def _k_label(protocol: str) -> str:
    """The k axis as the protocol defines k: the support size in the binary protocol, shots per class in N-way."""
    return "k (support size)" if protocol == "binary" else "k (shots per class)"


def _artifact_name(text: str) -> str:
    """A W&B artifact name: letters, digits, dashes, underscores and dots only."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:128]


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
