"""Command line: ``python -m metalearn <command>``. User errors print one line and exit 2.

Building the parser imports nothing heavy (no torch, transformers, scipy, matplotlib, wandb): every command
imports what it needs inside its ``_cmd_*`` function, so ``--help`` and ``manifest`` start in well under a
second. tests/test_cli.py fails when a module-level import brings one of them back.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import math
import os
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from metalearn.demo.cli import add_parser as add_episode_parser
from metalearn.features.backbone_args import add_backbone_args
from metalearn.pretune.cli import add_parser as add_pretune_parser
from metalearn.util.errors import MetalearnError

log = logging.getLogger("metalearn")


def _cmd_manifest(args: argparse.Namespace) -> int:
    from metalearn.data.corpora import load_corpus
    from metalearn.data.manifest import count_table, write_manifest

    classes = tuple(c.strip() for c in args.classes.split(",")) if args.classes else None
    result = load_corpus(args.corpus, args.root, strict=args.strict,
                         check_audio=not args.headers_only, classes=classes)
    out = write_manifest(result.utterances, args.out)
    rows = result.utterances
    print(f"{args.corpus}: {len(rows)} utterances, {len({u.speaker for u in rows})} speakers, "
          f"{sum(u.duration_s for u in rows) / 3600:.2f} h -> {out}")
    print(count_table(rows, "speaker", "emotion"))
    print()
    print(count_table(rows, "gender", "emotion"))
    for reason, n in sorted(result.excluded.items()):
        print(f"excluded: {n} x {reason}")
    print(f"skipped: {result.problems.summary()}")
    if result.problems.problems:
        problems_path = out.with_name(out.stem + ".problems.tsv")
        result.problems.write(problems_path)
        print(f"problems listed in {problems_path}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from metalearn.data.synth.generate import generate

    out = Path(args.out)
    summary = generate(args.preset, out, seed=args.seed, force=args.force, workers=args.workers)
    print(f"{'corpus':<12} {'speakers':>8} {'utterances':>10} {'hours':>6}  status")
    for name, c in summary["corpora"].items():
        status = "already complete" if c["skipped"] else "generated"
        print(f"{name:<12} {c['speakers']:>8} {c['utterances']:>10} {c['audio_seconds'] / 3600:>6.2f}  "
              f"{status}: {out / name}")
    print(f"done in {summary['seconds']:.0f} s (rendering {summary['render_seconds']:.0f} s); "
          f"calibration report: {out / 'calibration.md'}")
    print((out / "calibration.md").read_text())
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from metalearn.data.manifest import read_manifest
    from metalearn.features.backbones import backbone_config, build_backbone
    from metalearn.features.embeddings import EmbeddingConfig, extract
    from metalearn.pretune.subsets import backbone_for_variant

    rows = [u for m in args.manifest for u in read_manifest(m)]
    backbone = backbone_for_variant(args.variant) if args.variant else build_backbone(backbone_config(args))
    cfg = EmbeddingConfig(cache_dir=args.cache_dir, batch_seconds=args.batch_seconds,
                          max_seconds=args.max_seconds, device=args.device, precision=args.precision)
    emb = extract(rows, backbone, cfg)
    s, (_, n_states, dim) = emb.stats, emb.values.shape
    print(f"{backbone.name}: {len(emb.rows)} embeddings [{n_states} states x {dim}]: "
          f"{s['cached']} from cache, {s['extracted']} extracted in {s['batches']} batches, "
          f"{s['shards_rebuilt']} damaged shards rebuilt; skipped: {emb.problems.summary()}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from metalearn.api import run_main
    from metalearn.configs.load import load_config

    tuned = [f"tuned.file={args.tuned}"] if args.tuned else []
    cfg = load_config(args.config, [*args.overrides, *tuned])
    if args.print_config:
        from metalearn.run.run_folder import to_yaml

        print(to_yaml(cfg), end="")
        return 0
    return run_main(cfg, args.shard, args.prepare)


def _cmd_merge(args: argparse.Namespace) -> int:
    from metalearn.report.records import merge_runs
    from metalearn.report.tables import write_report
    from metalearn.util.lock import run_lock

    with run_lock(args.out):  # OUT_DIR checked for writability, and never merged into while a run writes there
        path = merge_runs(args.sources, args.out)
        written = write_report(args.out)
    print(f"merged {len(args.sources)} run folder(s) into {path}")
    for name, written_path in written.items():
        print(f"  {name}: {written_path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """Write the report of ``args.run_dir``; print the accuracy table and the files written."""
    from metalearn.report.records import read_trials
    from metalearn.report.summary import summarize
    from metalearn.report.tables import reference_of_run, summary_table, write_report

    records = read_trials(args.run_dir)
    methods = sorted({r["algorithm"] for r in records})
    if args.reference and args.reference not in methods:
        raise MetalearnError(f"--reference {args.reference!r} is not a method of {args.run_dir} (its methods: "
                             f"{', '.join(methods)})")
    written = write_report(args.run_dir, records, reference=args.reference or reference_of_run(args.run_dir))
    print(summary_table(summarize(records), "accuracy"))
    print()
    print("wrote:")
    for path in written.values():
        print(f"  {path}")
    return 0


def _add_manifest(sub: argparse._SubParsersAction) -> None:
    from metalearn.data.corpora import CORPORA  # numpy and soundfile, no scipy

    p = sub.add_parser("manifest", help="parse a corpus in its own layout into a manifest CSV")
    p.add_argument("--corpus", required=True, metavar="NAME", help=f"one of: {', '.join(CORPORA)}")
    p.add_argument("--root", required=True, metavar="DIR", help="the corpus's top folder")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="where to write the manifest")
    p.add_argument("--classes", metavar="E1,E2,..",
                   help="keep only these canonical emotions (IEMOCAP 4-class: neutral,happy,angry,sad)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad file")
    p.add_argument("--headers-only", action="store_true",
                   help="read file headers only (faster; misses NaN, silent and truncated audio)")
    p.set_defaults(func=_cmd_manifest)


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate the offline synthetic emotional speech corpora")
    p.add_argument("--preset", default="demo", help="tiny (tests, seconds) or demo (the embedded default)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the corpora")
    p.add_argument("--seed", type=int, default=0, help="same seed, byte-identical files")
    p.add_argument("--force", action="store_true", help="regenerate even when the corpora exist")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.set_defaults(func=_cmd_synth)


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="extract (or reuse) cached utterance embeddings for manifests")
    p.add_argument("--manifest", required=True, nargs="+", metavar="FILE.csv", help="one or more manifests")
    add_backbone_args(p)
    p.add_argument("--variant", metavar="DIR", help="a pretune variant folder: its backbone, with its weights")
    p.add_argument("--cache-dir", default="cache/embeddings", metavar="DIR", help="embedding cache root")
    p.add_argument("--batch-seconds", type=positive(float), default=160.0, help="padded audio seconds per batch")
    p.add_argument("--max-seconds", type=positive(float), default=None, help="crop utterances to this duration")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast on CUDA")
    p.set_defaults(func=_cmd_embed)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run an experiment grid (pretune x algorithm x k x speaker x seed), resumable")
    p.add_argument("--config", default="demo", metavar="PRESET|FILE.yaml",
                   help="a preset name (demo, compare, paper_a, paper_b, ...; more folders: $METALEARN_PRESETS) "
                        "or a YAML file (default: %(default)s)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. episodes.ks=[1,5] algorithms.maml.inner_lr=0.1 tracking.wandb=false")
    p.add_argument("--shard", metavar="I/N", help="run the I-th of N deterministic parts of the grid (1-based); "
                   "the variants must be trained already (--prepare)")
    p.add_argument("--prepare", action="store_true",
                   help="only train the variants, draw the episodes and fill the embedding caches (before shards)")
    p.add_argument("--tuned", metavar="FILE.yaml", help="a tune overlay (tuning/tuned.yaml of `metalearn tune`)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (defaults, preset, tuned overlay, overrides) and exit")
    p.set_defaults(func=_cmd_run)


def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge the trial logs of run folders (shards run apart) and report")
    p.add_argument("out", metavar="OUT_DIR", help="the merged run folder")
    p.add_argument("sources", nargs="+", metavar="RUN_DIR", help="run folders to merge")
    p.set_defaults(func=_cmd_merge)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="tables (CSV, Markdown) and figures of a run's trial records")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder holding trials*.jsonl or trials.csv")
    p.add_argument("--reference", metavar="ALGORITHM",
                   help="the method every other is compared with (default: the run's report.reference, finetune)")
    p.set_defaults(func=_cmd_report)


def _add_export_variant(sub: argparse._SubParsersAction) -> None:
    """``export-variant VARIANT_DIR OUT_DIR [--push-to-hub REPO]``: a pretune variant as a transformers folder."""

    def run(args: argparse.Namespace) -> int:
        import shlex

        from metalearn.pretune.export import export_variant, push_to_hub

        command = shlex.join(["python", "-m", "metalearn", "export-variant", args.variant_dir, args.out_dir,
                              *(["--push-to-hub", args.push_to_hub] if args.push_to_hub else [])])
        out = export_variant(args.variant_dir, args.out_dir, command, repo=args.push_to_hub)
        print(f"exported {args.variant_dir} -> {out} (transformers folder, model card {out / 'README.md'})")
        if args.push_to_hub:
            print(f"pushed to {push_to_hub(out, args.push_to_hub, private=args.private, timeout=args.timeout)}")
        return 0

    p = sub.add_parser("export-variant", help="a pretune variant as a transformers folder with a model card "
                                              "(AutoModel.from_pretrained loads it); optionally pushed to the Hub")
    p.add_argument("variant_dir", metavar="VARIANT_DIR", help="a finished pretune variant folder (done.json)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write (new, or an earlier export: replaced)")
    p.add_argument("--push-to-hub", metavar="REPO", help="then upload it to this Hugging Face model repo "
                                                        "(user/name; needs network and a token: hf auth login)")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the Hub before giving up")
    p.set_defaults(func=run)


def _add_folds(sub: argparse._SubParsersAction) -> None:
    """``folds --emobox DIR --manifest M.csv --out folds.json``: EmoBox's splits as speaker folds."""

    def run(args: argparse.Namespace) -> int:
        from metalearn.run import emobox
        from metalearn.run.config import SpeakersConfig

        d = SpeakersConfig()  # unset flags take the config's defaults
        exclude = d.exclude if args.exclude is None else [s for s in args.exclude.split(",") if s]
        return emobox.main(args.emobox, args.manifest, args.out, d.validation if args.validation is None
                           else args.validation, d.seed if args.seed is None else args.seed, exclude)

    p = sub.add_parser("folds", help="import EmoBox's published splits as speaker folds (folds.json) for "
                                     "speakers.folds_file; a fold that is not speaker-disjoint is refused")
    p.add_argument("--emobox", required=True, metavar="DIR", help="an EmoBox dataset folder, e.g. EmoBox/data/esd "
                                                                  "(fold_<n>/<dataset>_{train,test}_fold_<n>.jsonl)")
    p.add_argument("--manifest", required=True, metavar="M.csv", help="the target corpus's manifest")
    p.add_argument("--out", required=True, metavar="FILE.json", help="the folds.json to write")
    p.add_argument("--validation", type=int, metavar="N", help="validation speakers drawn per fold from its train "
                   "speakers where EmoBox has no valid file (default: speakers.validation's, 1)")
    p.add_argument("--seed", type=int, help="the validation draw's seed (default: speakers.seed's, 0)")
    p.add_argument("--exclude", metavar="A,B", help="speakers never in a fold (default: speakers.exclude's, Unknown)")
    p.set_defaults(func=run)


def _add_launch(sub: argparse._SubParsersAction) -> None:
    """``launch --config X --shards N [--executor E] [KEY=VALUE ...]``: prepare, shards, report as submitit jobs."""

    def run(args: argparse.Namespace) -> int:
        from metalearn.configs.load import load_config
        from metalearn.launch import jobs as launch

        cfg = load_config(args.config, [o for o in args.overrides if not o.startswith("launcher.")])
        return launch.main(cfg, launch.launcher_from(cfg, args.overrides, args.executor), args.shards)

    p = sub.add_parser("launch", help="run a grid as jobs: prepare, then N shards (a SLURM array), then the report; "
                                      "through submitit (SLURM, or this machine)")
    p.add_argument("--config", default="demo", metavar="PRESET|FILE.yaml",
                   help="a preset name or a YAML file (default: %(default)s)")
    p.add_argument("--shards", type=int, default=1, metavar="N", help="split the grid into N shard jobs")
    p.add_argument("--executor", choices=["auto", "slurm", "local", "debug"],
                   help="slurm (submit and return), local (subprocesses here, wait), debug (in this process); "
                        "default: launcher.executor (auto: slurm where srun exists, else local)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides; launcher.* set the jobs' resources, e.g. launcher.partition=gpu "
                        "launcher.gpus_per_task=1 launcher.timeout_min=600 launcher.sbatch.constraint=a100")
    p.set_defaults(func=run)


def _add_status(sub: argparse._SubParsersAction) -> None:
    """``status RUN_DIR [--shards N]``: done / planned trials per shard and what runs in the folder now."""

    def run(args: argparse.Namespace) -> int:
        from metalearn.launch import status

        found = status.folder_status(args.run_dir, args.shards)  # the saved plan: no torch, under a second
        if found is None:  # none yet (or stale): plan from the saved config, and save the plan
            from metalearn.configs.load import saved_config

            return status.main(saved_config(args.run_dir), args.shards)
        print(status.format_status(found))
        return 0

    p = sub.add_parser("status", help="done / planned trials of a run folder per shard, and what is running in it")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (the out= of a run or a launch)")
    p.add_argument("--shards", type=positive(int), metavar="N",
                   help="count shards of N parts (default: as launched)")
    p.set_defaults(func=run)


def _add_tune(sub: argparse._SubParsersAction) -> None:
    """``tune --config X [--algorithms a,b] [--trials N] [KEY=VALUE ...]``: Optuna studies on validation speakers."""

    def run(args: argparse.Namespace) -> int:
        from metalearn.configs.load import load_config
        from metalearn.tune import study as tune

        extra = [f"tune.algorithms=[{args.algorithms}]"] if args.algorithms else []
        extra += [f"tune.trials={args.trials}"] if args.trials is not None else []
        return tune.main(load_config(args.config, [*args.overrides, *extra]))

    p = sub.add_parser("tune", help="tune every method with the same number of Optuna trials on validation speakers; "
                                    "writes tuning/<method>.csv, tuning.md and the overlay tuning/tuned.yaml")
    p.add_argument("--config", default="demo", metavar="PRESET|FILE.yaml",
                   help="a preset name or a YAML file (default: %(default)s)")
    p.add_argument("--algorithms", metavar="A,B,..", help="methods to tune (default: every method of "
                   "algorithms.run with a search space; tune.algorithms)")
    p.add_argument("--trials", type=int, metavar="N", help="trials per method and fold, the first the hand-set "
                   "config (default: tune.trials). Run the same command in several shells to share the studies; "
                   "rerun it after a kill to resume")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, as for run")
    p.set_defaults(func=run)


def positive(kind: type) -> Callable[[str], float]:
    """An argparse type: a finite number of ``kind`` > 0, else argparse's one-line error naming the flag."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"{text}: expected a number > 0")
        return value
    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; imports no heavy module (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m metalearn",
        description="metalearn: few-shot speech emotion recognition in which every speaker is a task.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_manifest, _add_synth, add_pretune_parser, _add_embed, _add_run, _add_merge, _add_report,
                add_episode_parser):
        add(sub)
    _add_export_variant(sub)
    _add_folds(sub)
    _add_launch(sub)
    _add_status(sub)
    _add_tune(sub)
    return parser


MMAP_THRESHOLD, TRIM_THRESHOLD = 32 << 20, 256 << 20  # bytes; glibc's defaults: 128 KiB (adapting), 128 KiB


def process_settings() -> None:
    """Settings of the process that torch and glibc read once; call before torch is imported (the CLI does).

    - Idle OpenMP threads spin only briefly at barriers before they sleep: libgomp's long default spin made
      small tensor ops up to 50x slower beside another busy process (MAML meta-training: 110 s against 2 s,
      load 4), and never spinning made them 2x slower on a quiet machine (results/bench_threads.md). Read
      when torch loads its OpenMP runtime; a policy the user set is kept.
    - glibc's malloc serves blocks above its mmap threshold with fresh pages and gives freed heap back to the
      kernel, so a loop that allocates a multi-MiB tensor per step page-faults on it every time (Reptile's
      per-episode [32, 256, 512] weights: zero-filling ran at page-fault speed, 2 GB/s). Blocks up to 32 MiB
      come from the heap and up to 256 MiB of freed heap are kept instead (``mallopt``, the same as the
      ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` variables, which the Makefile exports);
      Reptile's meta-step 187 -> 106 ms side by side (docs/performance.md). Values the user set are kept, and other
      C libraries are left alone.
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    if platform.libc_ver()[0] == "glibc" and not {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD (malloc.h)
        libc.mallopt(-1, TRIM_THRESHOLD)  # M_TRIM_THRESHOLD


def main(argv: Sequence[str] | None = None) -> int:
    process_settings()
    if not sys.stderr.isatty():  # a redirected log: no library progress bars either (transformers' weights bar)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except MetalearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
