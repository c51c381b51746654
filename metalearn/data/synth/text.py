"""Sentences to speak: a small grammar, so every corpus has as many distinct sentences as it needs."""

from __future__ import annotations

import numpy as np

_SUBJECTS = ("The old man", "A young girl", "My neighbour", "The teacher", "Our driver", "The little dog",
             "Her brother", "The doctor", "A stranger", "The pilot", "His mother", "The baker")
_VERBS = ("painted", "carried", "found", "opened", "watched", "cleaned", "bought", "moved", "fixed",
          "dropped", "counted", "followed")
_OBJECTS = ("the red door", "a heavy box", "the garden gate", "an empty glass", "the morning paper",
            "a wooden chair", "the kitchen window", "a small boat", "the blue car", "an old letter")
_TAILS = ("before noon", "in the rain", "near the station", "after dinner", "by the river", "last night",
          "at the market", "on the hill", "without a word", "for the second time", "", "")


def sentences(n: int, seed: int) -> list[str]:
    """``n`` distinct sentences (same ``seed``, same list)."""
    rng = np.random.default_rng([seed, 7919])
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        parts = [_SUBJECTS[rng.integers(len(_SUBJECTS))], _VERBS[rng.integers(len(_VERBS))],
                 _OBJECTS[rng.integers(len(_OBJECTS))], _TAILS[rng.integers(len(_TAILS))]]
        s = " ".join(p for p in parts if p) + "."
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out
