"""The one interface every adaptation method implements, so one loop scores them all.

Shapes: E episodes, S support items, Q query items, V validation items, D embedding size,
W ways (classes). Labels are ints in 0..W-1; an episode's class order is ``Episode.classes``.
Query (and validation) sets may be padded to a common size across a batch of episodes: every
method here scores query items independently, so padded rows are simply ignored by the caller.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


class TaskSampler(Protocol):
    """Random training tasks for meta-training, drawn from the meta-training speakers only."""

    ways: int
    shots: int
    queries: int

    def sample(self, n_episodes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(support_x [E, S, D], support_y [E, S], query_x [E, Q, D], query_y [E, Q]).

        S = ways * shots for N-way tasks; for the binary protocol S = shots, Paper A's total k.
        Methods read S and Q from the shapes.
        """
        ...


@runtime_checkable
class Adapter(Protocol):
    """An adaptation method. ``meta_train`` is a no-op for methods that do not meta-learn."""

    name: str
    meta_learns: bool  # False when meta_train learns nothing (the runner then skips building a task sampler)

    def meta_train(self, sampler: TaskSampler, steps: int) -> None:
        """Learn the meta-parameters on ``steps`` batches of tasks from ``sampler``."""
        ...

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int,
                val_x: Tensor | None = None, val_y: Tensor | None = None) -> Tensor:
        """Adapt to each episode's support set and score its queries.

        Args:
            support_x: [E, S, D]; support_y: [E, S] ints; query_x: [E, Q, D].
            ways: W, the number of classes of every episode in the batch.
            val_x, val_y: [E, V, D], [E, V]: optional model-selection data (Paper A selects the number
                of fine-tuning steps by macro-F1 on the speaker's evaluation split); methods with no
                choice to make ignore them.
        Returns:
            logits [E, Q, W].
        """
        ...
