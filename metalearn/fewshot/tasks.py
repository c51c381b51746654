"""Episodes as tensors: batching fixed episodes, and the meta-training task sampler.

``episode_tensors`` gathers features late for a list of fixed episodes (padded, with masks);
``SpeakerTaskSampler`` draws random training tasks from the meta-training speakers only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from metalearn.fewshot.episodes import PROTOCOLS, Episode
from metalearn.util.errors import MetalearnError


def _pad(groups: list[tuple[str, ...]], labels: list[tuple[int, ...]], index_of: dict[str, int], ids: list[str]
         ) -> tuple[Tensor, Tensor, Tensor]:
    """(row index [E, M], labels [E, M] with -1 padding, mask [E, M]) for ragged key lists."""
    m = max((len(g) for g in groups), default=0)
    idx = torch.zeros(len(groups), m, dtype=torch.long)
    y = torch.full((len(groups), m), -1, dtype=torch.long)
    for e, (keys, ys) in enumerate(zip(groups, labels, strict=True)):
        try:
            idx[e, :len(keys)] = torch.tensor([index_of[key] for key in keys], dtype=torch.long)
        except KeyError as err:
            raise MetalearnError(f"episode {ids[e]}: utterance {err.args[0]} has no row in the feature table") from None
        y[e, :len(ys)] = torch.tensor(ys, dtype=torch.long)
    return idx, y, y >= 0


def episode_tensors(episodes: Sequence[Episode], index_of: dict[str, int], x: Tensor) -> dict[str, Tensor]:
    """Batch tensors for episodes of one shape (same support size and number of classes), on ``x``'s device.

    Returns support_x [E, S, D], support_y [E, S]; query_x [E, Qmax, D], query_y [E, Qmax] (-1 = padding),
    query_mask [E, Qmax] bool; val_x [E, Vmax, D], val_y, val_mask likewise (Vmax may be 0). Padded rows are 0.
    """
    if not episodes:
        raise MetalearnError("episode_tensors: no episodes")
    shapes = {(len(e.support), len(e.classes)) for e in episodes}
    if len(shapes) > 1:
        raise MetalearnError(f"episode_tensors: episodes mix (support size, classes) shapes {sorted(shapes)}")
    ids = [e.episode_id for e in episodes]
    out: dict[str, Tensor] = {}
    for name, attr in (("support", "support"), ("query", "query"), ("val", "validation")):
        idx, y, mask = _pad([getattr(e, attr) for e in episodes], [getattr(e, f"{attr}_labels") for e in episodes],
                            index_of, ids)
        idx, y, mask = idx.to(x.device), y.to(x.device), mask.to(x.device)
        out[f"{name}_x"] = torch.where(mask[..., None], x[idx], torch.zeros((), dtype=x.dtype, device=x.device))
        out[f"{name}_y"] = y
        if name != "support":
            out[f"{name}_mask"] = mask
    return out


class SpeakerTaskSampler:
    """Random meta-training tasks, one speaker each, drawn only from ``train_speakers``' rows of ``x``.

    nway: ``ways`` emotions drawn among the speaker's emotions with >= shots + queries rows;
    S = ways * shots, Q = ways * queries. binary: ways = 2 and a random target emotion; S = shots
    (shots/2 of the target, label 1, and shots/2 of the other emotions pooled, label 0), Q = queries
    likewise. Labels are positions in the episode's drawn class list. Support and query never share a row.
    """

    def __init__(self, x: Tensor, labels: Sequence[str], speakers: Sequence[str], train_speakers: Sequence[str],
                 ways: int, shots: int, queries: int, seed: int, protocol: str = "nway",
                 device: str | torch.device = "cpu") -> None:
        if not len(labels) == len(speakers) == x.shape[0]:
            raise MetalearnError(f"x has {x.shape[0]} rows but {len(labels)} labels and {len(speakers)} speakers")
        binary = protocol == "binary"
        if protocol not in PROTOCOLS or ways < 2 or shots < 1 or queries < 1 or binary and (
                ways != 2 or shots % 2 or queries % 2):
            raise MetalearnError(f"bad task shape: protocol {protocol!r}, ways={ways}, shots={shots}, queries="
                                 f"{queries} (need ways >= 2; binary: ways = 2, even shots and queries)")
        unknown = sorted(set(train_speakers) - set(speakers))
        if unknown:
            raise MetalearnError(f"train speakers {unknown} have no rows")
        self.ways, self.shots, self.queries, self.protocol = ways, shots, queries, protocol
        self._per = (shots // 2, queries // 2) if binary else (shots, queries)
        self._x = x.to(device)
        self._rng = np.random.default_rng(seed)
        self._build(labels, speakers, set(train_speakers), binary)

    def _build(self, labels: Sequence[str], speakers: Sequence[str], train: set[str], binary: bool) -> None:
        """Row groups as one flat array [sum of sizes] with start [G] and count [G]; options [n_spk, Omax, W']."""
        rows: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, (s, e) in enumerate(zip(speakers, labels, strict=True)):
            if s in train:
                rows[s][e].append(i)
        need, groups, options = sum(self._per), [], {}
        for s, by_e in sorted(rows.items()):
            if binary:  # a choice = (the other emotions pooled, the target)
                pairs = [([i for e, idx in by_e.items() if e != t for i in idx], by_e[t]) for t in sorted(by_e)]
                choices = [list(p) for p in pairs if min(map(len, p)) >= need]
            else:  # a choice = one emotion
                choices = [[by_e[e]] for e in sorted(by_e) if len(by_e[e]) >= need]
            if len(choices) >= (1 if binary else self.ways):
                options[s] = [list(range(len(groups) + j * len(c), len(groups) + (j + 1) * len(c)))
                              for j, c in enumerate(choices)]
                groups += [g for c in choices for g in c]
        if not options:
            raise MetalearnError(f"no train speaker has enough rows for {self.protocol} tasks "
                                 f"(ways={self.ways}, shots={self.shots}, queries={self.queries})")
        self.speakers = list(options)
        self._count = np.array([len(g) for g in groups])
        self._start = np.concatenate([[0], np.cumsum(self._count)[:-1]])
        self._flat = np.array([i for g in groups for i in g], dtype=np.int64)
        self._n_opt = np.array([len(o) for o in options.values()])
        self._opts = np.zeros((len(options), self._n_opt.max(), 2 if binary else 1), dtype=np.int64)
        for j, o in enumerate(options.values()):
            self._opts[j, :len(o)] = o

    def _distinct(self, counts: np.ndarray, m: int) -> np.ndarray:
        """``m`` distinct ints in [0, counts) per entry, in random order: [..., m] (Floyd's algorithm)."""
        out = np.empty((*counts.shape, m), dtype=np.int64)
        for i in range(m):
            top = counts - m + i
            t = self._rng.integers(0, top + 1)
            out[..., i] = np.where((out[..., :i] == t[..., None]).any(-1), top, t)
        return np.take_along_axis(out, np.argsort(self._rng.random(out.shape), axis=-1), -1)

    def sample(self, n_episodes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(support_x [E, S, D], support_y [E, S], query_x [E, Q, D], query_y [E, Q]); labels 0..ways-1."""
        spk = self._rng.integers(len(self.speakers), size=n_episodes)
        chosen = self._distinct(self._n_opt[spk], 1 if self.protocol == "binary" else self.ways)
        groups = self._opts[spk[:, None], chosen].reshape(n_episodes, self.ways)    # [E, W]
        s_per, q_per = self._per
        pick = self._distinct(self._count[groups], s_per + q_per)                  # [E, W, s_per + q_per]
        rows = self._flat[self._start[groups][..., None] + pick]
        sup, qry = rows[..., :s_per].reshape(n_episodes, -1), rows[..., s_per:].reshape(n_episodes, -1)
        feats = self._x[torch.from_numpy(np.concatenate([sup, qry], axis=1)).to(self._x.device)]  # [E, S + Q, D]
        cls = torch.arange(self.ways, device=self._x.device)
        s_y = cls.repeat_interleave(s_per).expand(n_episodes, -1).contiguous()
        q_y = cls.repeat_interleave(q_per).expand(n_episodes, -1).contiguous()
        return feats[:, :sup.shape[1]], s_y, feats[:, sup.shape[1]:], q_y
