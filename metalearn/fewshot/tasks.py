"""Episodes as tensors: batching fixed episodes, and the meta-training task sampler.

``episode_tensors`` gathers features late for a list of fixed episodes (padded, with masks);
``SpeakerTaskSampler`` draws random training tasks (shaped by a ``TaskSpec``) from the meta-training speakers
only, over rows described by a ``TaskRows``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch
from torch import Tensor

from metalearn.fewshot.algorithms.rows import RowIndex
from metalearn.fewshot.episodes import DISJOINT, PROTOCOLS, Episode
from metalearn.util.errors import MetalearnError


def _pad(groups: list[tuple[str, ...]], labels: list[tuple[int, ...]], index_of: dict[str, int], ids: list[str]
         ) -> tuple[Tensor, Tensor, Tensor]:
    """(row index [E, M], labels [E, M] with -1 padding, mask [E, M]) for ragged key lists (one label per key),
    filled through flat arrays (a tensor per episode took 4.4x as long: 463 against 105 ms for one grid variant's
    2,100 episodes)."""
    lengths = np.fromiter(map(len, groups), dtype=np.int64, count=len(groups))
    mask = np.arange(lengths.max(initial=0)) < lengths[:, None]  # [E, M], row-major: the flat order
    counts = np.fromiter(map(len, labels), dtype=np.int64, count=len(labels))
    if (wrong := np.flatnonzero(counts != lengths)).size:
        e = wrong[0]
        raise MetalearnError(f"episode {ids[e]}: {counts[e]} labels for {lengths[e]} utterances")
    try:
        flat = _flat(groups, lambda keys: map(index_of.__getitem__, keys))
    except KeyError as err:
        e = next(i for i, g in enumerate(groups) if err.args[0] in g)
        raise MetalearnError(f"episode {ids[e]}: utterance {err.args[0]} has no row in the feature table") from None
    idx, y = np.zeros(mask.shape, dtype=np.int64), np.full(mask.shape, -1, dtype=np.int64)
    idx[mask] = flat
    y[mask] = _flat(labels, iter)
    return torch.from_numpy(idx), torch.from_numpy(y), torch.from_numpy(mask)


def _flat(groups: list[tuple], values: Callable[[Iterable], Iterable[int]]) -> np.ndarray:
    """``values`` of every group's items, the groups end to end [sum of lengths], each group object read once: a
    grid's episodes share their validation and query tuples (a speaker's 105 binary episodes hold the same two),
    so one variant's 2,100 episodes look up 40 of them, not 4,200 (query and validation 33 -> 9 ms of _pad)."""
    first: dict[int, int] = {}  # id(group) -> its position among the distinct groups (all alive in ``groups``)
    distinct = []
    for g in groups:
        if id(g) not in first:
            first[id(g)] = len(distinct)
            distinct.append(g)
    lengths = np.fromiter(map(len, distinct), dtype=np.int64, count=len(distinct))
    flat = np.fromiter(values(chain.from_iterable(distinct)), dtype=np.int64, count=int(lengths.sum()))
    if len(distinct) == len(groups):
        return flat
    which = np.fromiter((first[id(g)] for g in groups), dtype=np.int64, count=len(groups))
    starts, sizes = (np.cumsum(lengths) - lengths)[which], lengths[which]  # each group's slice of ``flat``
    return flat[np.repeat(starts - (np.cumsum(sizes) - sizes), sizes) + np.arange(int(sizes.sum()))]


def episode_tensors(episodes: Sequence[Episode], index_of: dict[str, int], x: Tensor, lazy: Collection[str] = ()
                    ) -> dict[str, Tensor | RowIndex]:
    """Batch tensors for episodes of one shape (same support size and number of classes), on ``x``'s device.

    Returns support_x [E, S, D], support_y [E, S]; query_x [E, Qmax, D], query_y [E, Qmax] (-1 = padding),
    query_mask [E, Qmax] bool; val_x [E, Vmax, D], val_y, val_mask likewise (Vmax may be 0). Padded rows are 0.
    ``lazy``: the parts ("query", "val") whose rows are returned as a :class:`RowIndex` into ``x`` instead
    (the same values, gathered by the reader).
    """
    if not episodes:
        raise MetalearnError("episode_tensors: no episodes")
    shapes = {(len(e.support), len(e.classes)) for e in episodes}
    if len(shapes) > 1:
        raise MetalearnError(f"episode_tensors: episodes mix (support size, classes) shapes {sorted(shapes)}")
    ids = [e.episode_id for e in episodes]
    out: dict[str, Tensor | RowIndex] = {}
    for name, attr in (("support", "support"), ("query", "query"), ("val", "validation")):
        idx, y, mask = _pad([getattr(e, attr) for e in episodes], [getattr(e, f"{attr}_labels") for e in episodes],
                            index_of, ids)
        rows = RowIndex(x, idx.to(x.device), mask.to(x.device))
        out[f"{name}_x"] = rows if name in lazy else rows.dense()  # dense: one pass, one buffer (2x faster)
        out[f"{name}_y"] = y.to(x.device)
        if name != "support":
            out[f"{name}_mask"] = rows.mask
    return out


@dataclass(frozen=True)
class TaskSpec:
    """The shape of a meta-training task and the rule that draws it.

    ``ways`` classes; nway: ``shots`` support and ``queries`` query rows per class; binary: ways = 2 and
    ``shots``, ``queries`` are totals (half of the target, half of the other emotions). ``disjoint`` ("text" or
    "none") and ``halvings``: the text-disjoint rule of :class:`SpeakerTaskSampler`.
    """

    ways: int
    shots: int
    queries: int
    protocol: str = "nway"
    disjoint: str = "text"
    halvings: int = 32


@dataclass(frozen=True)
class TaskRows:
    """One entry per row of the feature matrix x [N, D]: its emotion label and speaker; optionally its sentence key
    (:func:`metalearn.data.sentences.sentence_key`) and its official split ("" = none; ``splits=None``: no row has
    one)."""

    labels: Sequence[str]
    speakers: Sequence[str]
    sentences: Sequence[str] | None = None
    splits: Sequence[str] | None = None


class SpeakerTaskSampler:
    """Random meta-training tasks of shape ``task``, one speaker each, drawn only from ``train_speakers``' rows of
    ``x`` [N, D] (``rows`` describes its N rows).

    nway: ``ways`` emotions drawn among the speaker's emotions with >= shots + queries rows;
    S = ways * shots, Q = ways * queries. binary: ways = 2 and a random target emotion; S = shots
    (shots/2 of the target, label 1, and shots/2 of the other emotions pooled, label 0), Q = queries
    likewise. Labels are positions in the episode's drawn class list. Support and query never share a row.

    Text-disjoint speakers (``rows.sentences`` given, ``task.disjoint="text"`` and every row of the speaker has
    split "" in ``rows.splits``): support and query of a task come from the two halves of one of
    ``task.halvings`` random splits of the speaker's sentences (drawn once, duplicates dropped), so they never
    share a sentence; an emotion then needs shots rows on one half and queries on the other. Without
    text-disjoint speakers the draws are exactly those of the sampler without them.
    """

    def __init__(self, x: Tensor, rows: TaskRows, train_speakers: Sequence[str], task: TaskSpec, seed: int,
                 device: str | torch.device = "cpu") -> None:
        labels, speakers, sentences, splits = rows.labels, rows.speakers, rows.sentences, rows.splits
        ways, shots, queries, protocol = task.ways, task.shots, task.queries, task.protocol
        disjoint, halvings = task.disjoint, task.halvings
        if not len(labels) == len(speakers) == x.shape[0]:
            raise MetalearnError(f"x has {x.shape[0]} rows but {len(labels)} labels and {len(speakers)} speakers")
        for name, column in (("sentences", sentences), ("splits", splits)):
            if column is not None and len(column) != x.shape[0]:
                raise MetalearnError(f"x has {x.shape[0]} rows but {len(column)} {name}")
        binary = protocol == "binary"
        if protocol not in PROTOCOLS or ways < 2 or shots < 1 or queries < 1 or binary and (
                ways != 2 or shots % 2 or queries % 2):
            raise MetalearnError(f"bad task shape: protocol {protocol!r}, ways={ways}, shots={shots}, queries="
                                 f"{queries} (need ways >= 2; binary: ways = 2, even shots and queries)")
        if disjoint not in DISJOINT or halvings < 1:
            raise MetalearnError(f"disjoint must be one of {DISJOINT} and halvings >= 1, got {disjoint!r}, {halvings}")
        unknown = sorted(set(train_speakers) - set(speakers))
        if unknown:
            raise MetalearnError(f"train speakers {unknown} have no rows")
        self.ways, self.shots, self.queries, self.protocol = ways, shots, queries, protocol
        self._per = (shots // 2, queries // 2) if binary else (shots, queries)
        self._x = x.to(device)
        self._rng = np.random.default_rng(seed)
        text = set(train_speakers) if sentences is not None and disjoint == "text" else set()
        text -= {s for s, split in zip(speakers, splits or [""] * len(labels), strict=True) if split}
        self._halving = (np.random.default_rng([seed, 1]), halvings, sentences)  # never touches self._rng
        self._build(labels, speakers, set(train_speakers), binary, text)

    @staticmethod
    def _choices(by_e: dict[str, list[int]], binary: bool) -> list[list[list[int]]]:
        """Every choice of one speaker's rows, as a list of W' row lists (nway: one emotion; binary: the
        other emotions pooled, then the target)."""
        if binary:
            pairs = [([i for e, idx in by_e.items() if e != t for i in idx], by_e[t]) for t in sorted(by_e)]
            return [list(p) for p in pairs]
        return [[by_e[e]] for e in sorted(by_e)]

    def _variants(self, by_e: dict[str, list[int]], binary: bool, text: bool) -> list[list[list[tuple]]]:
        """Per variant (one per distinct halving; one for a speaker without the text rule), its choices, each a
        list of W' (support rows, query rows) pairs; a shared pair (rows, rows) means "draw both jointly"."""
        s_per, q_per = self._per
        if not text:
            need = s_per + q_per
            return [[[(g, g) for g in c] for c in self._choices(by_e, binary) if min(map(len, c)) >= need]]
        rng, n_halvings, sentences = self._halving
        own = sorted({sentences[i] for idx in by_e.values() for i in idx})
        halves = {frozenset(own[j] for j in rng.permutation(len(own))[:(len(own) + 1) // 2])
                  for _ in range(n_halvings)}
        out = []
        for side in sorted(halves, key=sorted):
            sup = self._choices({e: [i for i in idx if sentences[i] in side] for e, idx in by_e.items()}, binary)
            qry = self._choices({e: [i for i in idx if sentences[i] not in side] for e, idx in by_e.items()}, binary)
            out.append([list(zip(cs, cq, strict=True)) for cs, cq in zip(sup, qry, strict=True)
                        if min(map(len, cs)) >= s_per and min(map(len, cq)) >= q_per])
        return out

    def _build(self, labels: Sequence[str], speakers: Sequence[str], train: set[str], binary: bool,
               text: set[str]) -> None:
        """Row groups as one flat array [sum of sizes] with start [G] and count [G]; per variant (a speaker, or
        one halving of a text-disjoint speaker's sentences) options [n_variants, Omax, W', 2] (support, query)."""
        rows: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, (s, e) in enumerate(zip(speakers, labels, strict=True)):
            if s in train:
                rows[s][e].append(i)
        groups, options, n_var = [], [], {}
        for s, by_e in sorted(rows.items()):
            good = [v for v in self._variants(by_e, binary, s in text) if len(v) >= (1 if binary else self.ways)]
            if good:
                n_var[s] = len(good)
                options += [[[self._groups(groups, *pair) for pair in c] for c in choices] for choices in good]
        if not options:
            raise MetalearnError(f"no train speaker has enough rows for {self.protocol} tasks (ways={self.ways}, "
                                 f"shots={self.shots}, queries={self.queries}"
                                 f"{'; support and query from disjoint sentences' if text else ''})")
        self.speakers = list(n_var)
        self._text = bool(text & set(n_var))
        self._n_var = np.array(list(n_var.values()))
        self._first = np.concatenate([[0], np.cumsum(self._n_var)[:-1]])
        self._count = np.array([len(g) for g in groups])
        self._start = np.concatenate([[0], np.cumsum(self._count)[:-1]])
        self._flat = np.array([i for g in groups for i in g], dtype=np.int64)
        self._n_opt = np.array([len(o) for o in options])
        self._opts = np.zeros((len(options), self._n_opt.max(), 2 if binary else 1, 2), dtype=np.int64)
        for j, o in enumerate(options):
            self._opts[j, :len(o)] = o

    @staticmethod
    def _groups(groups: list[list[int]], support: list[int], query: list[int]) -> tuple[int, int]:
        """Append a (support rows, query rows) pair to ``groups``, once when both are the same list: their indices."""
        groups += [support] if support is query else [support, query]
        return len(groups) - 1 - (support is not query), len(groups) - 1

    def _distinct(self, counts: np.ndarray, m: int) -> np.ndarray:
        """``m`` distinct ints in [0, counts) per entry, in random order: [..., m] (Floyd's algorithm)."""
        out = np.empty((*counts.shape, m), dtype=np.int64)
        for i in range(m):
            top = counts - m + i
            t = self._rng.integers(0, top + 1)
            out[..., i] = np.where((out[..., :i] == t[..., None]).any(-1), top, t)
        return np.take_along_axis(out, np.argsort(self._rng.random(out.shape), axis=-1), -1)

    def _rows(self, groups: np.ndarray, n: int) -> np.ndarray:
        """``n`` distinct rows of each group [...]: [..., n]."""
        return self._flat[self._start[groups][..., None] + self._distinct(self._count[groups], n)]

    def sample(self, n_episodes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(support_x [E, S, D], support_y [E, S], query_x [E, Q, D], query_y [E, Q]); labels 0..ways-1."""
        spk = self._rng.integers(len(self.speakers), size=n_episodes)
        var = self._first[spk]
        if self._text:
            var = var + self._rng.integers(0, self._n_var[spk])
        chosen = self._distinct(self._n_opt[var], 1 if self.protocol == "binary" else self.ways)
        groups = self._opts[var[:, None], chosen].reshape(n_episodes, self.ways, 2)     # [E, W, (support, query)]
        s_per, q_per = self._per
        rows = np.empty((n_episodes, self.ways, s_per + q_per), dtype=np.int64)
        joint = groups[:, 0, 0] == groups[:, 0, 1]                                     # [E] one pool for both
        if joint.any():
            rows[joint] = self._rows(groups[joint][..., 0], s_per + q_per)
        if not joint.all():
            rows[~joint] = np.concatenate([self._rows(groups[~joint][..., 0], s_per),
                                           self._rows(groups[~joint][..., 1], q_per)], axis=-1)
        sup, qry = rows[..., :s_per].reshape(n_episodes, -1), rows[..., s_per:].reshape(n_episodes, -1)
        feats = self._x[torch.from_numpy(np.concatenate([sup, qry], axis=1)).to(self._x.device)]  # [E, S + Q, D]
        cls = torch.arange(self.ways, device=self._x.device)
        s_y = cls.repeat_interleave(s_per).expand(n_episodes, -1).contiguous()
        q_y = cls.repeat_interleave(q_per).expand(n_episodes, -1).contiguous()
        return feats[:, :sup.shape[1]], s_y, feats[:, sup.shape[1]:], q_y
