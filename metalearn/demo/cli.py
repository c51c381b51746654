"""``python -m metalearn episode``'s options, importable without torch (parsers are built on every start).

:func:`add_parser` registers the subcommand; its function imports :mod:`metalearn.demo.episode` (torch) only
when the command runs.
"""

from __future__ import annotations

import argparse

# ``episode --algorithms`` default (the demo's usual four; each runs in seconds on CPU).
EPISODE_ALGORITHMS = ("simpleshot", "protonet", "finetune", "maml")


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from metalearn.demo.episode import main
    from metalearn.util.fileio import make_folder

    for flag, path in (("--out", args.out), ("--html", args.html)):  # before any work: a place it can write
        if path:
            make_folder(Path(path).parent, f"episode {flag}'s folder")
    return main(args)


def _at_least(low: int):
    """An argparse type: an integer >= ``low``, else argparse's one-line error naming the flag."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value}: expected an integer >= {low}")
        return value
    parse.__name__ = "int"
    return parse


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``episode`` on ``sub``: one speaker's few-shot episode, every algorithm on it."""
    from metalearn.features.backbone_args import add_backbone_args  # torch-free, unlike features.backbones

    p = sub.add_parser("episode", help="one speaker's few-shot episode, every algorithm on it (demo)")
    p.add_argument("--manifest", default="data/demo/manifests/esd.csv", metavar="FILE.csv", help="the corpus")
    p.add_argument("--speaker", metavar="ID", help="the episode's speaker (default: the first one)")
    p.add_argument("--k", type=_at_least(1), default=5,
                   help="support clips per emotion, from the speaker's train split")
    p.add_argument("--queries", type=_at_least(1), default=None, metavar="N",
                   help="query clips per emotion (default: all of the speaker's test split)")
    p.add_argument("--algorithms", default=",".join(EPISODE_ALGORITHMS), metavar="A,B,..",
                   help="comma list of registered algorithms (metalearn.fewshot.algorithms; "
                        "an unknown name lists them all)")
    p.add_argument("--run", metavar="DIR",
                   help="read the hidden state a run used (its layers.json: this variant, the fold that tested "
                        "the speaker), e.g. results/demo")
    p.add_argument("--layer", default=None,
                   help="hidden state: an index (-1 = the last) or 'mean' of all (default: the --run folder's "
                        "choice, else chosen as the run chooses: SimpleShot on the other speakers' episodes)")
    p.add_argument("--variant", metavar="DIR", help="a pretune variant's backbone instead of the default")
    p.add_argument("--meta-steps", type=_at_least(0), default=100, help="meta-training steps on the other speakers")
    p.add_argument("--seed", type=int, default=0, help="episode draw, initialisation and meta-training seed")
    p.add_argument("--cache-dir", default="cache/embeddings", metavar="DIR", help="embedding cache root")
    p.add_argument("--out", default="runs/episode/episode.png", metavar="FILE.png", help="where to draw the picture")
    p.add_argument("--html", metavar="FILE.html", help="also write one self-contained page: every clip playable, "
                                                       "each method's predictions, the matrices and the picture")
    add_backbone_args(p)
    p.set_defaults(func=_run)
    return p
