"""Learning-rate schedule and early stopping, as the Hugging Face Trainer the paper used does them."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable


@dataclasses.dataclass
class EarlyStopping:
    """Early stopping as the Hugging Face Trainer does it (EarlyStoppingCallback + load_best_model_at_end).

    An epoch counts as "bad" unless its value beats the best so far by more than ``min_delta``; training
    stops after ``patience`` bad epochs in a row (0 disables stopping). The best state is the strict
    maximum, so a small improvement is kept as the best state while still counting as bad.
    """

    patience: int
    min_delta: float
    best: float = -math.inf
    bad_epochs: int = 0

    def update(self, value: float) -> bool:
        """Record one epoch's value; True when it is the new best (the state to keep)."""
        self.bad_epochs = 0 if value > self.best + self.min_delta else self.bad_epochs + 1
        if value > self.best:
            self.best = value
            return True
        return False

    @property
    def stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience


def linear_warmup_decay(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier: 0 -> 1 over ``warmup_steps``, then 1 -> 0 at ``total_steps`` (transformers' linear)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor
