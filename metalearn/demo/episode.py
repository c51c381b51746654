"""``python -m metalearn episode``: one speaker's N-way k-shot episode, every chosen algorithm on it, for students.

The episode is drawn exactly as in the experiments (``nway_episodes``: k support clips per emotion from the
speaker's train split, queries from its test split). Features are z-scored with the statistics of the OTHER
speakers' rows, and meta-learning algorithms are meta-trained on the other speakers only, so nothing about
the episode's speaker is seen before its support set. The report shows the support set, every query with each
algorithm's prediction, accuracies and confusion matrices; ``plot.plot_episode`` draws the picture and
``page.write_episode_page`` makes the page students listen to (``--html``).
"""

from __future__ import annotations

import argparse
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from metalearn.data.manifest import Utterance, utterance_key
from metalearn.demo.layer import LayerChoice
from metalearn.demo.result import AlgorithmResult, EpisodeResult, setup_lines
from metalearn.features.featurize import standardize
from metalearn.fewshot.algorithms import ALGORITHMS, AdapterBase, AdapterSpec, adapter_class, build_adapter
from metalearn.fewshot.episodes import Episode, NwayRule, nway_episodes
from metalearn.fewshot.tasks import SpeakerTaskSampler, TaskRows, TaskSpec
from metalearn.util.errors import MetalearnError
from metalearn.util.metrics import confusion

# Smaller meta-batches than the experiments' defaults, so 100 meta-steps of an MLP-head meta-learner take seconds.
DEMO_OPTIONS: dict[str, dict[str, object]] = {name: {"meta_batch": 8}
                                              for name in ("maml", "fomaml", "anil", "metasgd", "reptile")}
META_QUERIES = 5  # query clips per class of each meta-training task (fewer when the other speakers lack data)
WIDTH = 100  # report columns


@dataclass(frozen=True)
class DemoSettings:
    """What the episode demo draws and runs: ``k`` support clips per emotion, ``queries`` query clips per emotion
    (None: the speaker's whole test split), ``meta_steps`` meta-training steps of the algorithms that meta-learn
    (others have none), and the ``seed`` of the episode, the heads and the meta-training."""

    k: int
    queries: int | None
    meta_steps: int
    seed: int


def check_speaker(rows: Sequence[Utterance], speaker: str) -> list[str]:
    """All speakers of ``rows`` (sorted); an error naming the valid ones when ``speaker`` is not among them."""
    speakers = sorted({u.speaker for u in rows})
    if speaker not in speakers:
        raise MetalearnError(f"speaker {speaker!r} is not in the manifest; expected one of: {', '.join(speakers)}")
    return speakers


def demo_algorithms() -> list[str]:
    """The registered methods the episode demo can run: those on embeddings that need no prompt prior."""
    return [a for a in ALGORITHMS if adapter_class(a).inputs == "embeddings" and not adapter_class(a).needs_prior]


def check_algorithms(algorithms: Sequence[str]) -> list[str]:
    """The names, checked: known and distinct."""
    names = list(algorithms)
    unknown = [a for a in names if a not in ALGORITHMS]
    if unknown or not names or len(set(names)) != len(names):
        raise MetalearnError(f"algorithms {names}: expected distinct names among {', '.join(ALGORITHMS)}")
    other = [a for a in names if a not in demo_algorithms()]
    if other:
        raise MetalearnError(f"algorithms {other} need audio or a CLAP prompt prior; the episode demo runs methods "
                             f"on embeddings (run them with `python -m metalearn run`)")
    return names


def run_episode_demo(x: Tensor, rows: Sequence[Utterance], speaker: str, algorithms: Sequence[str],
                     settings: DemoSettings, feature: LayerChoice | None = None) -> EpisodeResult:
    """Draw ``speaker``'s episode, meta-train on the other speakers where needed, score every algorithm.

    Args:
        x: [N, D] features aligned with ``rows``.
        settings: k, queries per class, meta-training steps and seed (:class:`DemoSettings`).
        feature: which hidden state ``x`` is and why (:mod:`metalearn.demo.layer`), for the report and page.
    """
    k, queries, meta_steps, seed = settings.k, settings.queries, settings.meta_steps, settings.seed
    if x.ndim != 2 or x.shape[0] != len(rows):
        raise MetalearnError(f"features of shape {tuple(x.shape)}: expected [{len(rows)}, D], one row per utterance")
    check_speaker(rows, speaker)
    names = check_algorithms(algorithms)
    if meta_steps < 0:
        raise MetalearnError(f"meta_steps {meta_steps}: expected an integer >= 0")
    episode = _draw_episode(rows, speaker, k, queries, seed)
    others = [i for i, u in enumerate(rows) if u.speaker != speaker]
    x = standardize(x.float(), np.array(others)) if len(others) > 1 else x.float()
    index_of = {utterance_key(u): i for i, u in enumerate(rows)}
    sup = torch.tensor([index_of[key] for key in episode.support])
    qry = torch.tensor([index_of[key] for key in episode.query])
    result = EpisodeResult(episode, [rows[i] for i in sup], [rows[i] for i in qry], x[sup],
                           torch.tensor(episode.support_labels), x[qry], torch.tensor(episode.query_labels),
                           tuple(sorted({rows[i].speaker for i in others})), {}, feature)
    ways = len(episode.classes)
    adapters = {name: build_adapter(name, AdapterSpec(x.shape[1], ways, seed), DEMO_OPTIONS.get(name))
                for name in names}
    sampler = None
    if meta_steps > 0 and any(a.meta_learns for a in adapters.values()):
        sampler = _meta_sampler(x, rows, others, ways, k, seed)
    for name, adapter in adapters.items():
        result.algorithms[name] = _run_one(adapter, result, sampler, meta_steps)
    return result


def _draw_episode(rows: Sequence[Utterance], speaker: str, k: int, queries: int | None, seed: int) -> Episode:
    """The speaker's first N-way episode (repetition 0), or a one-line error saying what it lacks."""
    episodes, skipped = nway_episodes(rows, [speaker], k, 1, seed, rule=NwayRule(queries=queries))
    if skipped:
        raise MetalearnError(f"k={k}, queries={queries}: {skipped[0].reason}")
    return episodes[0]


def _meta_sampler(x: Tensor, rows: Sequence[Utterance], others: list[int], ways: int, k: int,
                  seed: int) -> SpeakerTaskSampler:
    """Meta-training tasks (ways x k support, ways x q query) drawn from the other speakers' rows only."""
    counts: dict[str, dict[str, int]] = {}
    for i in others:
        by_emotion = counts.setdefault(rows[i].speaker, {})
        by_emotion[rows[i].emotion] = by_emotion.get(rows[i].emotion, 0) + 1
    capacity = max((sorted(c.values(), reverse=True)[ways - 1] for c in counts.values() if len(c) >= ways),
                   default=0)
    if capacity < k + 1:
        raise MetalearnError(f"k={k}: meta-training needs another speaker with at least {k + 1} utterances in each "
                             f"of {ways} emotions; the most any has is {capacity}")
    labels, speakers = [rows[i].emotion for i in others], [rows[i].speaker for i in others]
    return SpeakerTaskSampler(x[others], TaskRows(labels, speakers), sorted(counts),
                              TaskSpec(ways, k, min(META_QUERIES, capacity - k)), seed)


def _run_one(adapter: AdapterBase, result: EpisodeResult, sampler: SpeakerTaskSampler | None,
             steps: int) -> AlgorithmResult:
    """Meta-train ``adapter`` ``steps`` steps (when > 0 and it meta-learns), predict the episode's queries."""
    start = time.perf_counter()
    ways = len(result.episode.classes)
    steps = steps if sampler is not None and adapter.meta_learns else 0
    if steps:
        adapter.meta_train(sampler, steps)
    logits = adapter.predict(result.support_x[None], result.support_y[None], result.query_x[None], ways)[0].detach()
    pred = logits.argmax(-1)
    conf = confusion(pred[None], result.query_y[None], None, ways)[0].long()
    return AlgorithmResult(adapter.name, logits, pred, conf, int(conf.trace()), int(conf.sum()), steps,
                           time.perf_counter() - start)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def _rows_table(headers: Sequence[str], cells: list[list[str]], text: list[str] | None,
                numbers: bool = False) -> list[str]:
    """Columns two spaces apart, left-aligned (``numbers``: right-aligned but the first); ``text`` (one per row)
    fills what is left of ``WIDTH`` when at least 12 columns are left."""
    widths = [max([len(h), *(len(r[j]) for r in cells)]) for j, h in enumerate(headers)]
    used = sum(widths) + 2 * len(widths) + 2
    show_text = text is not None and any(text) and WIDTH - used >= 12
    out = []
    for r, t in zip([list(headers), *cells], ["text", *(text or [""] * len(cells))], strict=True):
        line = "  " + "  ".join(c.rjust(w) if numbers and j else c.ljust(w)
                                for j, (c, w) in enumerate(zip(r, widths, strict=True)))
        out.append((line + "  " + _clip(t, WIDTH - used) if show_text else line).rstrip())
    return out


def _query_table(result: EpisodeResult) -> list[str]:
    """One line per query: id, true emotion, each algorithm's prediction (" x" when wrong), its text."""
    classes, cells = result.episode.classes, []
    for i, (u, y) in enumerate(zip(result.query_rows, result.episode.query_labels, strict=True)):
        preds = [int(a.predictions[i]) for a in result.algorithms.values()]
        cells.append([u.utterance_id, classes[y], *(classes[p] + ("" if p == y else " x") for p in preds)])
    return _rows_table(["utterance", "true", *result.algorithms], cells, [u.text for u in result.query_rows])


def format_report(result: EpisodeResult) -> str:
    """The episode as plain text (at most ``WIDTH`` columns but for long algorithm lists): sets, predictions,
    accuracies and a confusion matrix per algorithm."""
    e, classes = result.episode, result.episode.classes
    setup = [wrapped for line in setup_lines(result) for wrapped in textwrap.wrap(line, WIDTH)]
    lines = [f"Episode {e.episode_id}: speaker {e.speaker}, {len(classes)}-way {e.k}-shot, "
             f"{len(e.support)} support and {len(e.query)} query clips (seed {e.seed})",
             f"classes: {', '.join(classes)}", *setup, "",
             f"Support set ({len(e.support)} clips, from the train split)"]
    cells = [[u.utterance_id, classes[y]] for u, y in zip(result.support_rows, e.support_labels, strict=True)]
    lines += _rows_table(["utterance", "emotion"], cells, [u.text for u in result.support_rows])
    lines += ["", f"Query set ({len(e.query)} clips, from the test split): true emotion and predictions "
              "(x = wrong)"]
    lines += _query_table(result)
    lines += ["", "Accuracy"]
    width = max(len(n) for n in result.algorithms)
    lines += [f"  {a.name:<{width}}  {a.accuracy:6.1%}  ({a.correct}/{a.total})" for a in result.algorithms.values()]
    for a in result.algorithms.values():
        lines += ["", f"Confusion matrix: {a.name} (rows: true emotion, columns: predicted)"]
        lines += _rows_table(["", *classes], [[c, *(str(int(v)) for v in a.confusion[t])]
                                              for t, c in enumerate(classes)], None, numbers=True)
    return "\n".join(lines)


def choose_feature(args: argparse.Namespace, values: np.ndarray, rows: list[Utterance], speaker: str) -> LayerChoice:
    """The state to read (:mod:`metalearn.demo.layer`): ``--layer`` when given, else the ``--run`` folder's
    choice for this speaker and variant, else chosen on the other speakers as the run chooses."""
    from pathlib import Path

    from metalearn.demo.layer import check_run_backbone, given_layer, run_layer, validation_layer

    states = int(values.shape[1])
    if getattr(args, "layer", None) not in (None, "", "auto"):
        return given_layer(str(args.layer), states)
    run = getattr(args, "run", None)
    if run:
        if not args.variant:
            check_run_backbone(run, args.backbone_family, args.backbone_source, args.whisper_mode)
        return run_layer(run, Path(args.variant).name if args.variant else "none", speaker, states)
    return validation_layer(values, rows, speaker, args.k, args.seed)


def main(args: argparse.Namespace) -> int:
    """Read the manifest, embed (or read the cache), pick the feature, run the episode, print the report and the
    picture's path."""
    from metalearn.data.manifest import read_manifest
    from metalearn.demo.plot import plot_episode
    from metalearn.features.backbones import backbone_config, build_backbone
    from metalearn.features.embeddings import EmbeddingConfig, extract
    from metalearn.features.featurize import select_features
    from metalearn.pretune.subsets import backbone_for_variant

    rows = read_manifest(args.manifest)
    speaker = args.speaker or sorted({u.speaker for u in rows})[0]
    check_speaker(rows, speaker)
    algorithms = check_algorithms([a.strip() for a in args.algorithms.split(",") if a.strip()])
    backbone = backbone_for_variant(args.variant) if args.variant else build_backbone(backbone_config(args))
    emb = extract(rows, backbone, EmbeddingConfig(cache_dir=args.cache_dir))
    feature = choose_feature(args, emb.values, list(emb.rows), speaker)
    settings = DemoSettings(args.k, args.queries, args.meta_steps, args.seed)
    result = run_episode_demo(select_features(emb.values, feature.layer), emb.rows, speaker, algorithms, settings,
                              feature=feature)
    print(format_report(result))
    picture = plot_episode(result, args.out)
    print(f"\npicture: {picture}")
    if args.html:
        from metalearn.demo.page import write_episode_page

        print(f"page: {write_episode_page(result, args.html, picture.read_bytes())}")
    return 0
