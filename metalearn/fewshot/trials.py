"""The trial engine: every algorithm on the same saved episodes, many episodes per call.

A trial is one episode adapted and scored by one algorithm. Episodes of one shape (support size,
classes) are stacked into batches of up to ``chunk`` episodes, each batch is one ``score`` call
(vectorised inside the algorithm), and every episode gives one record with the trial record's fields
(docs/architecture.md, "Contracts"), built in one place (:func:`trial_record`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from metalearn.fewshot.episodes import Episode
from metalearn.util.errors import MetalearnError

if TYPE_CHECKING:  # torch only where trials are scored: keys and record fields import without it (status)
    from torch import Tensor

    from metalearn.fewshot.algorithms.base import Adapter, EpisodeBatch

RECORD_FIELDS = ("run", "pretune", "algorithm", "protocol", "k", "speaker", "target_emotion", "seed", "meta_seed",
                 "layer", "features_of", "accuracy", "macro_f1", "weighted_f1", "uar", "n_support", "n_query",
                 "seconds", "episode_id", "repetition", "ways")


TrialKey = tuple[str, str, str, int, int]


def make_trial_key(pretune: str, algorithm: str, episode_id: str, seed: int, meta_seed: int = 0) -> TrialKey:
    """The one builder of a trial's key: (pretune, algorithm, episode_id, seed, meta_seed)."""
    return pretune, algorithm, episode_id, int(seed), int(meta_seed)


@dataclass(frozen=True)
class TrialTags:
    """What a trial record says of where it came from, beside its episode and its scores.

    ``meta_seed``: which meta-training of the method scored it (0 for a method that learns nothing across
    speakers). ``layer``: the feature it read (a hidden state index, "mean" or "clap"; "" when unknown).
    ``features_of``: the variant whose features were scored ("": ``pretune`` itself).
    """

    run: str
    pretune: str
    seed: int
    meta_seed: int = 0
    layer: str = ""
    features_of: str = ""


def group_by_shape(episodes: Iterable[Episode], chunk: int) -> list[list[Episode]]:
    """Batches of episodes sharing (protocol, support size, classes), at most ``chunk`` each, in a stable order."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise MetalearnError(f"chunk: {chunk!r} must be an integer >= 1 (episodes per batch)")
    groups: dict[tuple, list[Episode]] = defaultdict(list)
    for e in episodes:
        groups[(e.protocol, len(e.support), len(e.classes))].append(e)
    return [g[i : i + chunk] for key in sorted(groups) for g in [groups[key]] for i in range(0, len(g), chunk)]


def episode_batch(episodes: Sequence[Episode], index_of: dict[str, int], x: Tensor, reads_rows: bool = False
                  ) -> EpisodeBatch:
    """The batch an adapter scores: episodes of one shape with their tensors gathered from ``x`` [N, D];
    ``reads_rows``: the validation and query rows as :class:`~metalearn.fewshot.algorithms.rows.RowIndex` es
    (for an adapter that declares it gathers them itself)."""
    from metalearn.fewshot.algorithms.base import EpisodeBatch
    from metalearn.fewshot.tasks import episode_tensors

    t = episode_tensors(episodes, index_of, x, lazy=("query", "val") if reads_rows else ())
    has_val = t["val_x"].shape[1] > 0
    return EpisodeBatch(episodes, len(episodes[0].classes), t["support_y"], t["query_y"], t["query_mask"],
                        t["support_x"], t["query_x"], t["val_x"] if has_val else None,
                        t["val_y"] if has_val else None)


def trial_record(e: Episode, adapter: Adapter, scores: dict[str, float], tags: TrialTags, seconds: float) -> dict:
    """The one place a trial record is built (fields :data:`RECORD_FIELDS`, in order).

    A method that does not use the support set (zero-shot) is the k = 0 point: k and n_support are 0.
    """
    uses_support = getattr(adapter, "uses_support", True)
    values = {"run": tags.run, "pretune": tags.pretune, "algorithm": adapter.name, "protocol": e.protocol,
              "k": e.k if uses_support else 0, "speaker": e.speaker, "target_emotion": e.target_emotion,
              "seed": tags.seed, "meta_seed": tags.meta_seed, "layer": tags.layer,
              "features_of": tags.features_of or tags.pretune, **scores,
              "n_support": len(e.support) if uses_support else 0, "n_query": len(e.query), "seconds": seconds,
              "episode_id": e.episode_id, "repetition": e.repetition, "ways": len(e.classes)}
    return {f: values[f] for f in RECORD_FIELDS}


def run_trials(adapter: Adapter, episodes: Sequence[Episode], x: Tensor, index_of: dict[str, int], tags: TrialTags,
               *, chunk: int = 512, per_query: bool = False) -> list[dict]:
    """Score ``adapter`` on ``episodes``; one record per episode (same order as the batches).

    ``x`` [N, D] holds the features of every utterance key in ``index_of`` (methods whose inputs are audio
    read the episodes' clips instead). ``seconds`` is the wall time of the batch an episode was in, divided
    by the batch's size. ``per_query``: each record also carries ``query_correct`` (not a record field), one
    "1" (predicted right) or "0" per query item of its episode, in query order: what the content check's side
    log keeps (:mod:`metalearn.report.content`).
    """
    from metalearn.util.metrics import episode_metrics

    records = []
    for group in group_by_shape(episodes, chunk):
        start = time.perf_counter()
        batch = episode_batch(group, index_of, x, reads_rows=getattr(adapter, "reads_rows", False))
        logits = adapter.score(batch).detach()
        scores = episode_metrics(logits, batch.query_y, batch.query_mask)
        hits = (logits.argmax(-1) == batch.query_y).tolist() if per_query else None  # [E][Qmax], padding False
        seconds = (time.perf_counter() - start) / len(group)
        columns = {m: v.tolist() for m, v in scores.items()}  # Python floats, the same values as float(v[i])
        for i, e in enumerate(group):
            record = trial_record(e, adapter, {m: c[i] for m, c in columns.items()}, tags, seconds)
            if hits is not None:
                record["query_correct"] = "".join("1" if h else "0" for h in hits[i][:len(e.query)])
            records.append(record)
    return records
