"""Rows of a feature table taken per episode by index, read by their reader as it needs them.

An episode batch's validation and query rows are a few hundred rows per episode, the same rows for every
episode of one speaker; gathered for the whole batch up front they are the batch's largest tensors (written
once, read once, from memory). A method that reads them itself (fine-tuning's fast path, which scores each
distinct row set once for every episode that reads it: :mod:`.shared_rows`) declares ``reads_rows`` and
receives a :class:`RowIndex` instead: the same values, by index.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class RowIndex:
    """Episode rows ``table[index[e]]`` [E, R, D], padding (``mask`` False) read as zeros.

    table [N, D]; index [E, R] long; mask [E, R] bool."""

    table: Tensor
    index: Tensor
    mask: Tensor

    @property
    def shape(self) -> torch.Size:
        """[E, R, D], as the gathered tensor's."""
        return torch.Size((*self.index.shape, self.table.shape[-1]))

    def dense(self) -> Tensor:
        """Every episode's rows [E, R, D] in one tensor, padding as zeros."""
        rows = torch.index_select(self.table, 0, self.index.reshape(-1)).view(self.shape)
        return rows if bool(self.mask.all()) else rows.masked_fill_(~self.mask[..., None], 0)

    def to(self, device: torch.device | str) -> RowIndex | Tensor:
        """Itself on its own device; elsewhere the gathered rows moved there (the table stays where it is)."""
        return self if torch.device(device) == self.table.device else self.dense().to(device)


def dense(x: Tensor | RowIndex | None) -> Tensor | None:
    """``x`` as a tensor: a RowIndex gathered, a tensor (or None) as it is."""
    return x.dense() if isinstance(x, RowIndex) else x
