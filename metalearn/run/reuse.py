"""Trials of pretune variants whose features are identical, computed once.

A variant pre-finetuned on its top layers leaves the lower hidden states bit-identical to the untouched
backbone; when the layer chosen on validation speakers (or ``features.layer``) is one of those, two variants
hand the runner the very same features [N, D]. Every method on embeddings is a deterministic function of the
features, the episodes, the fold's speakers, its options and its seed, none of which depends on the variant's
name, so its records are the same too. :class:`Reuse` scores such a group once and gives the other variant
a copy of each record with its own ``pretune`` (``seconds`` stays the cost of the trial as it was computed).
Methods that read more of the variant than its features (audio, a prompt prior) are always scored.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence

from torch import Tensor

from metalearn.data.manifest import Utterance, utterance_key
from metalearn.fewshot.algorithms import adapter_class
from metalearn.fewshot.episodes import Skipped
from metalearn.run.grid import OnSkip, Unit


def features_digest(rows: Sequence[Utterance], x: Tensor) -> str:
    """SHA-256 of the utterance keys of ``rows`` and the bytes of their features ``x`` [N, D]."""
    h = hashlib.sha256("\n".join(utterance_key(u) for u in rows).encode())
    h.update(str((tuple(x.shape), x.dtype)).encode())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Reuse:
    """Remembers the records of every unit of a reusable algorithm by (features digest, unit but its variant)."""

    def __init__(self, algorithms: Iterable[str]) -> None:
        self.reusable = {a for a in algorithms
                         if adapter_class(a).inputs == "embeddings" and not adapter_class(a).needs_prior}
        self.records: dict[tuple, list[dict]] = {}
        self.lost: dict[tuple, list[Skipped]] = {}

    def copies(self, units: list[Unit], digest: str) -> bool:
        """Whether :meth:`scored` gives this group copies (every unit was scored on the same features before)."""
        return bool(units) and units[0].algorithm in self.reusable and all(
            (digest, dataclasses.replace(u, variant="")) in self.records for u in units)

    def scored(self, units: list[Unit], digest: str, score: Callable[[OnSkip], Iterable[tuple[Unit, list[dict]]]],
               skip: OnSkip) -> Iterator[tuple[Unit, list[dict]]]:
        """(unit, records) of one group: copies when every unit was scored on the same features before, else
        ``score(on_skip)`` (remembered when the algorithm is reusable)."""
        keys = [(digest, dataclasses.replace(u, variant="")) for u in units]
        if not units or units[0].algorithm not in self.reusable:
            yield from score(skip)
            return
        if self.copies(units, digest):
            for unit, key in zip(units, keys, strict=True):
                if key in self.lost:
                    skip(unit, self.lost[key])
                yield unit, [dict(r, pretune=unit.variant) for r in self.records[key]]
            return

        def remember(unit: Unit, lost: list[Skipped]) -> None:
            self.lost[(digest, dataclasses.replace(unit, variant=""))] = lost
            skip(unit, lost)

        for unit, records in score(remember):
            self.records[(digest, dataclasses.replace(unit, variant=""))] = [dict(r) for r in records]
            yield unit, records
