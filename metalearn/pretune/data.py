"""Per-corpus train/dev/test splits with their own label sets, and the audio batches training reads.

``split="speaker"`` (the default): a corpus with its own split (MSP-Podcast: Train / Development / Test1 ...;
ESD: train / evaluation / test) keeps it: ``development``/``evaluation``/``validation`` become dev, ``test*``
become test; a speaker found in two parts is one warning with the count (the split is kept, not mended). A
corpus without one is split by whole groups (:mod:`metalearn.pretune.grouping`: IEMOCAP by session, every
other corpus by speaker; by speaker when a corpus has fewer than 3 sessions; by utterance, with a warning, when
it has one speaker), about 80/10/10 of the clips, seeded; then train clips whose text is said in dev or
test are dropped and counted (``sentence_disjoint``). No speaker is in two parts, no sentence in train and
dev/test.

``split="utterance"`` is Paper A's split for exact reproduction: a corpus without its own split is split
80/10/10 by utterance, seeded. It LEAKS: every speaker is in train, dev and test, and dev clips repeat training
sentences, so dev accuracy rewards remembering speakers and sentences.

Each corpus keeps its own label set: the canonical emotions present in its train split (in the
canonical order); dev/test utterances with any other emotion are dropped and counted. With
``labels="raw"`` the label set is the corpus's raw labels present in train (the manifest's ``raw_label``,
sorted), e.g. IEMOCAP's hap and exc as two classes.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from metalearn.data.audio import AudioError, load_audio
from metalearn.data.emotions import CANONICAL
from metalearn.data.manifest import Utterance, utterance_key
from metalearn.features.backbones.base import pad_batch
from metalearn.pretune.grouping import drop_shared_sentences, group_parts, grouping_for, speakers_in_several
from metalearn.pretune.schedule import KeyedBatches, ProportionalCorpusSampler
from metalearn.util.errors import MetalearnError

log = logging.getLogger(__name__)

__all__ = ["CorpusSplits", "build_splits", "split_corpus", "SplitAudio", "collate",
           "ProportionalCorpusSampler", "KeyedBatches", "PARTS"]

PARTS = ("train", "dev", "test")
LABEL_FIELDS = {"canonical": "emotion", "raw": "raw_label"}   # labels option -> Utterance attribute
SPLITS = ("speaker", "utterance")
DEV_NAMES = frozenset({"dev", "development", "evaluation", "validation", "valid", "val"})


@dataclasses.dataclass
class CorpusSplits:
    """One corpus's splits. ``labels[y]`` is the label of class index y (a canonical emotion, or a raw label
    when ``label_field`` is ``raw_label``); ``dropped`` counts removals."""

    corpus: str
    labels: tuple[str, ...]
    train: list[Utterance]
    dev: list[Utterance]
    test: list[Utterance]
    own_split: bool
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    label_field: str = "emotion"

    def part(self, name: str) -> list[Utterance]:
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {p: len(self.part(p)) for p in PARTS}


def part_of(split: str) -> str | None:
    """The corpus's own split name mapped to train/dev/test (None for anything else)."""
    s = split.strip().lower()
    if s == "train":
        return "train"
    if s in DEV_NAMES:
        return "dev"
    if s.startswith("test"):
        return "test"
    return None


def _corpus_rng(corpus: str, seed: int) -> np.random.Generator:
    """A generator that depends on the corpus name, so one corpus's split ignores the others."""
    return np.random.default_rng([seed, zlib.crc32(corpus.encode("utf-8"))])


def _random_parts(rows: list[Utterance], rng: np.random.Generator,
                  fractions: tuple[float, float] = (0.1, 0.1)) -> tuple[list, list, list]:
    """Seeded (train, dev, test) of ``rows`` (ordered by utterance id first), dev/test fractions as given."""
    rows = sorted(rows, key=lambda u: u.utterance_id)
    order = rng.permutation(len(rows))
    n_dev, n_test = (int(round(f * len(rows))) for f in fractions)
    if len(rows) >= 3:
        n_dev, n_test = max(n_dev, 1 if fractions[0] else 0), max(n_test, 1 if fractions[1] else 0)
    pick = [rows[i] for i in order]
    return pick[n_dev + n_test :], pick[:n_dev], pick[n_dev : n_dev + n_test]


def _label_field(labels: str) -> str:
    """The Utterance attribute the ``labels`` option reads (emotion or raw_label)."""
    if labels not in LABEL_FIELDS:
        raise MetalearnError(f"pretune labels {labels!r}: expected one of {', '.join(LABEL_FIELDS)}")
    return LABEL_FIELDS[labels]


def _label_set(corpus: str, train: list[Utterance], field: str) -> tuple[str, ...]:
    """The labels present in ``train``: canonical order for emotions, sorted for raw labels."""
    present = {getattr(u, field) for u in train}
    labels = tuple(e for e in CANONICAL if e in present) if field == "emotion" else tuple(sorted(present))
    if len(labels) < 2:
        raise MetalearnError(f"corpus {corpus}: its train split has {len(labels)} emotion(s) {labels}; "
                             "a classification head needs at least 2")
    return labels


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise MetalearnError(f"pretune split {split!r}: expected one of {', '.join(SPLITS)}")


def _own_parts(corpus: str, rows: Sequence[Utterance], rng: np.random.Generator, split: str,
               dropped: Counter[str]) -> tuple[list, list, list]:
    """The corpus's own split (train, dev, test); a missing dev comes from train (by group in speaker mode)."""
    parts: dict[str, list[Utterance]] = defaultdict(list)
    for u in rows:
        p = part_of(u.split)
        if p is None:
            dropped[f"split {u.split!r}"] += 1
        else:
            parts[p].append(u)
    train, dev, test = parts["train"], parts["dev"], parts["test"]
    if not dev and train:
        log.warning("%s: its own split has no dev part; 10%% of train becomes dev", corpus)
        cut = group_parts if split == "speaker" else _random_parts
        train, dev, _ = cut(train, rng, (0.1, 0.0))
    if split == "speaker":
        shared = speakers_in_several({"train": train, "dev": dev, "test": test})
        if shared:
            log.warning("%s: its own split puts %d speaker(s) in more than one of train/dev/test (kept as the "
                        "corpus defines it; its dev and test are not speaker-independent)", corpus, shared)
    return train, dev, test


def split_corpus(corpus: str, rows: Sequence[Utterance], seed: int = 0, labels: str = "canonical",
                 split: str = "speaker", sentence_disjoint: bool = True) -> CorpusSplits:
    """Train/dev/test of one corpus and its label set (see the module docstring)."""
    field = _label_field(labels)
    _check_split(split)
    rng = _corpus_rng(corpus, seed)
    dropped: Counter[str] = Counter()
    own = any(u.split for u in rows)
    if own:
        train, dev, test = _own_parts(corpus, rows, rng, split, dropped)
    elif split == "utterance":
        train, dev, test = _random_parts(list(rows), rng)
    else:
        key, unit = grouping_for(rows)
        if key is None:
            log.warning("%s: one speaker, so no split keeps speakers apart; split 80/10/10 by utterance", corpus)
            train, dev, test = _random_parts(list(rows), rng)
        else:
            if unit == "speaker" and corpus == "iemocap":
                log.warning("%s: fewer than 3 sessions; split by speaker instead", corpus)
            train, dev, test = group_parts(rows, rng, key=key)
        if sentence_disjoint:
            train, n = drop_shared_sentences(train, dev + test)
            if n:
                dropped["train sentence said in dev/test"] += n
    label_set = _label_set(corpus, train, field)
    what = "emotion" if field == "emotion" else "raw label"
    kept = {}
    for name, part in (("dev", dev), ("test", test)):
        kept[name] = [u for u in part if getattr(u, field) in label_set]
        if len(kept[name]) < len(part):
            dropped[f"{name} {what} not in train labels"] += len(part) - len(kept[name])
    for reason, n in sorted(dropped.items()):
        log.warning("%s: dropped %d utterance(s): %s", corpus, n, reason)
    return CorpusSplits(corpus, label_set, train, kept["dev"], kept["test"], own, dict(dropped), field)


def build_splits(utterances: Sequence[Utterance], seed: int = 0, corpora: Sequence[str] | None = None,
                 labels: str = "canonical", split: str = "speaker",
                 sentence_disjoint: bool = True) -> dict[str, CorpusSplits]:
    """corpus -> its splits, for every corpus in ``utterances`` (or only ``corpora``), sorted by name.

    ``labels``: ``canonical`` (emotion) or ``raw`` (raw_label) label sets; ``split``: ``speaker`` (independent
    groups) or ``utterance`` (Paper A's, leaking speakers); see the module docstring.
    """
    _label_field(labels)
    _check_split(split)
    by_corpus: dict[str, list[Utterance]] = defaultdict(list)
    for u in utterances:
        by_corpus[u.corpus].append(u)
    wanted = sorted(by_corpus) if corpora is None else sorted(corpora)
    missing = [c for c in wanted if c not in by_corpus]
    if missing:
        raise MetalearnError(f"corpora {missing} are not in the manifests (present: {sorted(by_corpus)})")
    splits = {c: split_corpus(c, by_corpus[c], seed, labels, split, sentence_disjoint) for c in wanted}
    for c, s in splits.items():
        if not s.train:
            raise MetalearnError(f"corpus {c}: no training utterances after splitting")
        log.info("%s: %s split, train/dev/test %s, labels %s", c, "own" if s.own_split else f"{split} 80/10/10",
                 "/".join(str(n) for n in s.sizes().values()), ",".join(s.labels))
    return splits


class SplitAudio(Dataset):
    """Audio of one part of every corpus, keyed by ``(corpus, index)``.

    ``dataset[(corpus, i)]`` -> (wave [T] float32 at 16 kHz, cropped to ``max_seconds``; class index; corpus;
    the clip's key ``corpus/utterance_id``).
    """

    def __init__(self, splits: dict[str, CorpusSplits], part: str, max_seconds: float | None) -> None:
        self.rows = {c: s.part(part) for c, s in splits.items()}
        self.index = {c: {e: i for i, e in enumerate(s.labels)} for c, s in splits.items()}
        self.field = {c: s.label_field for c, s in splits.items()}
        self.max_seconds = max_seconds

    def __getitem__(self, key: tuple[str, int]) -> tuple[Tensor, int, str, str]:
        corpus, i = key
        u = self.rows[corpus][i]
        try:
            wave = load_audio(u.path, max_seconds=self.max_seconds)
        except AudioError as e:
            raise MetalearnError(f"{u.path}: {e}") from None
        return torch.from_numpy(wave), self.index[corpus][getattr(u, self.field[corpus])], corpus, utterance_key(u)

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows.values())


def collate(items: list[tuple[Tensor, int, str, str]]) -> tuple[Tensor, Tensor, Tensor, str, list[str]]:
    """Items of ONE corpus -> (waves [B, T] zero-padded, lengths [B], labels [B], corpus, clip keys [B])."""
    corpora = {item[2] for item in items}
    if len(corpora) != 1:
        raise ValueError(f"a batch mixes corpora {sorted(corpora)}")
    waves, lengths = pad_batch([item[0] for item in items])
    return (waves, lengths, torch.tensor([item[1] for item in items], dtype=torch.long), corpora.pop(),
            [item[3] for item in items])
