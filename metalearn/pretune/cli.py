"""``python -m metalearn pretune``: pre-finetune the backbone on every requested subset of source corpora.

Also runnable alone (``python -m metalearn.pretune.cli pretune ...``) and under torchrun:
``torchrun --nproc_per_node 2 -m metalearn pretune ...`` (the process group is initialised here when
WORLD_SIZE > 1; batch_size stays the global batch).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from metalearn.util.errors import MetalearnError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``pretune`` subcommand on ``subparsers``."""
    from metalearn.features.backbone_args import add_backbone_args  # torch-free, unlike features.backbones

    p = subparsers.add_parser("pretune",
                              help="supervised multi-corpus pre-finetuning (Paper A's PFT variants)")
    p.add_argument("--manifests", nargs="+", required=True, metavar="FILE.csv",
                   help="manifests of the source corpora (the corpus column names them)")
    p.add_argument("--out", required=True, metavar="DIR", help="one folder per variant is written here")
    p.add_argument("--subsets", default="all", metavar="SPEC",
                   help="all (every subset, plus none) or a comma list: iemocap+msp_podcast,cremad,none")
    p.add_argument("--preset", default="paper", help="paper (Paper A's recipe) or cpu-small (demo on CPU)")
    add_backbone_args(p)
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override PretuneConfig fields, e.g. --set lr=1e-4 trainable_layers=none")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Resolve the config, read the manifests, train the missing variants, print a summary (rank 0)."""
    from metalearn.data.manifest import read_manifest
    from metalearn.features.backbones import backbone_config
    from metalearn.pretune import distributed
    from metalearn.pretune.config import apply_overrides, preset
    from metalearn.pretune.subsets import Training, parse_subsets, run_variants
    from metalearn.util.fileio import make_folder

    cfg = apply_overrides(preset(args.preset), args.overrides)
    backbone_cfg = backbone_config(args)
    make_folder(args.out, "pretune --out")  # a place nothing can be written is one line, before any work
    utterances = [u for path in args.manifests for u in read_manifest(path)]
    subsets = parse_subsets(args.subsets, sorted({u.corpus for u in utterances}))
    device = distributed.init_from_env(cfg.device)
    try:
        world_size, rank = distributed.world()
        if rank > 0:  # rank 0 speaks for all
            logging.getLogger().setLevel(logging.ERROR)
        log.info("pretune: %d variant(s), device %s, world size %d", len(subsets), device, world_size)
        status = run_variants(utterances, subsets, args.out, Training(cfg, backbone_cfg, device))
    finally:
        distributed.shutdown()
    if rank == 0:
        print(summary_table(Path(args.out), status))
    return 0


def summary_table(out: Path, status: dict[str, str]) -> str:
    """One line per variant (status, best epoch, passes) and per corpus: dev and test accuracy beside the frozen
    probe's (from record.json; summary.json for a variant without one)."""
    from metalearn.pretune.records import variant_record

    head = f"{'variant':<40} {'corpus':<14} {'status':<15} {'best':>4} {'passes':>6} {'dev':>6} {'probe':>6} " \
           f"{'test':>6} {'probe':>6}"
    lines = [head]
    for name, state in status.items():
        record = variant_record(out / name) or {}
        path = out / name / "summary.json"
        summary = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        rows = [("mean", record.get("dev_accuracy", summary.get("dev_mean")), record.get("probe_dev_accuracy"),
                 record.get("test_accuracy", summary.get("test_mean")), record.get("probe_test_accuracy"))]
        rows += [(c, p["dev_accuracy"], p["probe_dev_accuracy"], p["test_accuracy"], p["probe_test_accuracy"])
                 for c, p in sorted(record.get("per_corpus", {}).items())]
        for i, (corpus, *values) in enumerate(rows):
            cells = [_fmt(v) for v in values]
            first = (name, state, _fmt(summary.get("best_epoch")), _fmt(record.get("passes"), 2)) if i == 0 \
                else ("", "", "", "")
            lines.append(f"{first[0]:<40} {corpus:<14} {first[1]:<15} {first[2]:>4} {first[3]:>6} "
                         + " ".join(f"{c:>6}" for c in cells))
    return "\n".join(lines)


def _fmt(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (same behaviour as ``python -m metalearn pretune``)."""
    parser = argparse.ArgumentParser(prog="python -m metalearn.pretune.cli")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except MetalearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
