"""The trial engine: every algorithm on the same saved episodes, many episodes per call.

A trial is one episode adapted and scored by one algorithm. Episodes of one shape (support size,
classes) are stacked into batches of up to ``chunk`` episodes, each batch is one ``predict`` call
(vectorised inside the algorithm), and every episode gives one record with the DESIGN.md fields.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence

from torch import Tensor

from metalearn.fewshot.algorithms.base import Adapter
from metalearn.fewshot.episodes import Episode
from metalearn.fewshot.tasks import episode_tensors
from metalearn.util.metrics import episode_metrics

RECORD_FIELDS = ("run", "pretune", "algorithm", "protocol", "k", "speaker", "target_emotion", "seed", "accuracy",
                 "macro_f1", "weighted_f1", "uar", "n_support", "n_query", "seconds", "episode_id", "repetition",
                 "ways")

def group_by_shape(episodes: Iterable[Episode], chunk: int) -> list[list[Episode]]:
    """Batches of episodes sharing (protocol, support size, classes), at most ``chunk`` each, in a stable order."""
    groups: dict[tuple, list[Episode]] = defaultdict(list)
    for e in episodes:
        groups[(e.protocol, len(e.support), len(e.classes))].append(e)
    return [g[i : i + chunk] for key in sorted(groups) for g in [groups[key]] for i in range(0, len(g), chunk)]


def run_trials(adapter: Adapter, episodes: Sequence[Episode], x: Tensor, index_of: dict[str, int], *,
               run: str, pretune: str, seed: int, chunk: int = 512) -> list[dict]:
    """Score ``adapter`` on ``episodes``; one record per episode (same order as the batches).

    ``x`` [N, D] holds the features of every utterance key in ``index_of``. ``seconds`` is the wall time
    of the batch an episode was in, divided by the batch's size.
    """
    records = []
    for batch in group_by_shape(episodes, chunk):
        start = time.perf_counter()
        t = episode_tensors(batch, index_of, x)
        has_val = t["val_x"].shape[1] > 0
        logits = adapter.predict(t["support_x"], t["support_y"], t["query_x"], len(batch[0].classes),
                                 t["val_x"] if has_val else None, t["val_y"] if has_val else None)
        scores = episode_metrics(logits.detach(), t["query_y"], t["query_mask"])
        seconds = (time.perf_counter() - start) / len(batch)
        for i, e in enumerate(batch):
            records.append({
                "run": run, "pretune": pretune, "algorithm": adapter.name, "protocol": e.protocol, "k": e.k,
                "speaker": e.speaker, "target_emotion": e.target_emotion, "seed": seed,
                **{m: float(v[i]) for m, v in scores.items()},
                "n_support": len(e.support), "n_query": len(e.query), "seconds": seconds,
                "episode_id": e.episode_id, "repetition": e.repetition, "ways": len(e.classes)})
    return records
