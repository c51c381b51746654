"""Speaker tasks as index lists: the fixed evaluation episodes of the two protocols (files: ``episode_io``).

An episode names utterances by key (``corpus/utterance_id``); features are gathered late
(``episode_tensors``). Every episode draws from its own RNG, derived from (seed, protocol, speaker,
target, k, repetition), so adding speakers, targets or k values never changes existing episodes.
Sampling is always without replacement; a speaker with too little data gives a ``Skipped`` record.

Emotional corpora record the same sentences in every emotion. Where a speaker's rows have no official
split, ``disjoint="text"`` (the default) splits the speaker's sentences
(:func:`metalearn.data.sentences.sentence_key`) at random, per episode, into a support-side and a query-side
half, so a query never shares its sentence with the support; speakers with an official split draw exactly as
without it (the corpus's splits hold different sentences).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metalearn.data.emotions import CANONICAL
from metalearn.data.manifest import Utterance, utterance_key
from metalearn.data.sentences import sentence_id, sentence_key
from metalearn.util.errors import MetalearnError

PROTOCOLS = ("nway", "binary")
DISJOINT = ("text", "none")
TRAIN, EVALUATION, TEST = "train", "evaluation", "test"
Pools = dict[str, dict[str, list[str]]]  # split -> emotion -> sorted utterance keys


@dataclass(frozen=True)
class Episode:
    """One sampled task instance; label i means ``classes[i]``."""

    episode_id: str            # deterministic and unique, e.g. "nway/k4/0011/r0" or "binary/k8/0011/angry/r2"
    protocol: str              # "nway" or "binary"
    speaker: str
    k: int                     # nway: shots per class; binary: TOTAL support size (k/2 target + k/2 others)
    repetition: int
    seed: int
    classes: tuple[str, ...]   # label i means classes[i]; binary: (f"not_{target}", target) so 1 = target
    target_emotion: str        # binary only, "" for nway
    support: tuple[str, ...]   # utterance keys
    support_labels: tuple[int, ...]
    query: tuple[str, ...]
    query_labels: tuple[int, ...]
    validation: tuple[str, ...] = ()        # binary protocol: the model-selection set
    validation_labels: tuple[int, ...] = ()
    disjoint: str = "none"                  # the drawing rule; "none" also for files saved before it existed
    support_sentences: tuple[str, ...] = ()  # sentence_id of each support item ((): file saved before)
    query_sentences: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"field 'protocol': {self.protocol!r} is not one of {PROTOCOLS}")
        if self.disjoint not in DISJOINT:
            raise ValueError(f"field 'disjoint': {self.disjoint!r} is not one of {DISJOINT}")
        for name in ("support", "query"):
            if len(getattr(self, f"{name}_sentences")) not in (0, len(getattr(self, name))):
                raise ValueError(f"field '{name}_sentences': not one per {name} item")
        for name in ("support", "query", "validation"):
            items, labels = getattr(self, name), getattr(self, f"{name}_labels")
            if len(items) != len(labels):
                raise ValueError(f"field '{name}_labels': {len(labels)} labels for {len(items)} items")
            if labels and (min(labels) < 0 or max(labels) >= len(self.classes)):
                raise ValueError(f"field '{name}_labels': labels outside 0..{len(self.classes) - 1}")

    @property
    def query_in_support(self) -> tuple[bool, ...]:
        """Per query item: does its sentence occur in the support set? (Content the features could match.)"""
        if self.query and not self.query_sentences:
            raise MetalearnError(f"episode {self.episode_id} was saved without sentence ids; draw it again")
        seen = set(self.support_sentences)
        return tuple(s in seen for s in self.query_sentences)


@dataclass(frozen=True)
class Skipped:
    """A skip record: an episode that could not be drawn, or a drawn one that could not be scored, with the
    reason (who lacks which data)."""

    episode_id: str
    protocol: str
    speaker: str
    k: int
    repetition: int
    target_emotion: str
    reason: str

    @classmethod
    def of(cls, episode: Episode, reason: str) -> Skipped:
        """The skip record of a drawn ``episode`` that cannot be scored."""
        return cls(episode.episode_id, episode.protocol, episode.speaker, episode.k, episode.repetition,
                   episode.target_emotion or "", reason)


@dataclass(frozen=True)
class NwayRule:
    """What N-way episodes hold besides their support size: ``classes`` (the label set; None: the emotions every
    requested speaker has, in canonical order), ``queries`` per class (None: all of the query pool) and the
    drawing rule ``disjoint`` ("text" or "none", see the module docstring)."""

    classes: Sequence[str] | None = None
    queries: int | None = None
    disjoint: str = "text"


@dataclass(frozen=True)
class _Draw:
    """What every episode of one call shares: the seed, each key's sentence key, the drawing rule."""

    seed: int
    sentence_of: dict[str, str]
    disjoint: str


@dataclass(frozen=True)
class _BinaryPools:
    """One (speaker, target)'s keys: ``unsplit`` (no official split), target keys ``pos`` and the other emotions'
    pooled keys ``neg`` to draw support from, and ``fixed`` = (validation, labels, query, labels)."""

    unsplit: bool
    pos: list[str]
    neg: list[str]
    fixed: tuple


def episode_rng(seed: int, protocol: str, speaker: str, target: str, k: int, repetition: int) -> np.random.Generator:
    """A generator that depends only on its arguments (SHA-256, not Python's salted ``hash``); seed >= 0."""
    text = "\x1f".join(str(v) for v in (protocol, speaker, target, k, repetition))
    words = np.frombuffer(hashlib.sha256(text.encode("utf-8")).digest(), dtype=np.uint32).tolist()
    return np.random.default_rng(np.random.SeedSequence([seed, *words]))


def _pools(rows: Sequence[Utterance], speakers: Sequence[str]) -> tuple[dict[str, Pools], dict[str, str]]:
    """(speaker -> split -> emotion -> keys, key -> sentence_key); keys sorted so row order never matters;
    unknown speakers are errors."""
    wanted, out, corpus_of, sentence_of = set(speakers), {}, {}, {}
    if len(wanted) != len(speakers):
        raise MetalearnError(f"duplicate speakers in {list(speakers)}")
    for u in rows:
        if u.speaker in wanted:
            if corpus_of.setdefault(u.speaker, u.corpus) != u.corpus:
                raise MetalearnError(f"speaker {u.speaker} appears in corpora {corpus_of[u.speaker]} and {u.corpus}")
            out.setdefault(u.speaker, {}).setdefault(u.split, {}).setdefault(u.emotion, []).append(utterance_key(u))
            sentence_of[utterance_key(u)] = sentence_key(u)
    missing = [s for s in speakers if s not in out]
    if missing:
        raise MetalearnError(f"speakers {missing} have no utterances in the manifest")
    for keys in (keys for p in out.values() for by_emotion in p.values() for keys in by_emotion.values()):
        keys.sort()
    return out, sentence_of


def _halves(rng: np.random.Generator, by_group: dict[str, list[str]], sentence_of: dict[str, str]
            ) -> tuple[dict[str, list[str]], dict[str, list[str]], str]:
    """A random split of the sentences of ``by_group``'s keys: (support-side keys, query-side keys, both by
    group, in their order; a note for skip reasons). The support side takes ceil(n / 2) of the n sentences."""
    sentences = sorted({sentence_of[key] for keys in by_group.values() for key in keys})
    side = {sentences[i] for i in rng.permutation(len(sentences))[:(len(sentences) + 1) // 2]}
    support = {g: [key for key in keys if sentence_of[key] in side] for g, keys in by_group.items()}
    query = {g: [key for key in keys if sentence_of[key] not in side] for g, keys in by_group.items()}
    return support, query, f" (support and query take disjoint halves of its {len(sentences)} sentences)"


def _draw(rng: np.random.Generator, pool: list[str], n: int) -> list[str]:
    """``n`` keys of ``pool`` without replacement, in random order."""
    return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]


def _lacks(speaker: str, split: str, what: str, have: int, need: int) -> str:
    """The reason of a skipped episode, e.g. "speaker 0011 has 3 train 'sad' utterances, needs 4"."""
    return f"speaker {speaker} has {have} {split + ' ' if split else ''}{what} utterances, needs {need}"


def nway_episodes(rows: Sequence[Utterance], speakers: Sequence[str], k: int, repetitions: int, seed: int,
                  rule: NwayRule = NwayRule()) -> tuple[list[Episode], list[Skipped]]:
    """Protocol 1: per speaker and repetition, ``k`` support utterances per class from the train split.

    Query: the speaker's test split restricted to ``rule.classes`` (all of it, or ``rule.queries`` per class
    drawn without replacement). A speaker whose rows all have split "" (no official split) draws support from
    all its utterances and queries from the remaining ones; with ``rule.disjoint="text"`` (see the module
    docstring) support from its support-side sentences and queries from its query-side ones. ``rule.classes``
    defaults to the emotions EVERY requested speaker has (the intersection, in canonical order), so all
    episodes of a run share one label list; pass it explicitly to keep episodes unchanged when speakers are added.
    """
    classes, queries, disjoint = rule.classes, rule.queries, rule.disjoint
    if k < 1 or repetitions < 1 or seed < 0 or (queries is not None and queries < 1) or disjoint not in DISJOINT:
        raise MetalearnError(f"need k, repetitions, queries >= 1, seed >= 0, disjoint in {DISJOINT}; got {k}, "
                             f"{repetitions}, {queries}, {seed}, {disjoint!r}")
    pools, sentence_of = _pools(rows, speakers)
    if classes is None:
        have = [{e for by_emotion in pools[s].values() for e in by_emotion} for s in speakers]
        classes = [e for e in CANONICAL if all(e in h for h in have)]
    classes = tuple(classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise MetalearnError(f"nway episodes need at least 2 distinct classes shared by the speakers, got {classes}")
    draw = _Draw(seed, sentence_of, disjoint)
    out = [_nway_one(pools[s], s, classes, k, r, draw, queries) for s in speakers for r in range(repetitions)]
    return [e for e in out if isinstance(e, Episode)], [e for e in out if isinstance(e, Skipped)]


def _nway_one(pools: Pools, speaker: str, classes: tuple[str, ...], k: int, r: int, draw: _Draw,
              queries: int | None) -> Episode | Skipped:
    """One N-way episode of ``speaker``, or the reason it cannot be drawn."""
    seed, sentence_of, disjoint = draw.seed, draw.sentence_of, draw.disjoint
    episode_id = f"nway/k{k}/{speaker}/r{r}"
    rng = episode_rng(seed, "nway", speaker, "", k, r)
    unsplit = set(pools) == {""}
    train, test = pools.get("" if unsplit else TRAIN, {}), pools.get(TEST, {})
    names, note = ("", "") if unsplit else (TRAIN, TEST), ""
    if unsplit and disjoint == "text":
        train, test, note = _halves(rng, {e: train.get(e, []) for e in classes}, sentence_of)
        unsplit, names = False, ("support-side", "query-side")
    support, query, s_labels, q_labels = [], [], [], []
    for label, emotion in enumerate(classes):
        pool, tests = train.get(emotion, []), test.get(emotion, [])
        need = k + (queries or 0) * unsplit
        reason = _lacks(speaker, names[0], repr(emotion), len(pool), need) if len(pool) < need else ""
        if not reason and not unsplit and queries and len(tests) < queries:
            reason = _lacks(speaker, names[1], repr(emotion), len(tests), queries)
        if reason:
            return Skipped(episode_id, "nway", speaker, k, r, "", reason + note)
        chosen = _draw(rng, pool, k)
        if unsplit:
            used = set(chosen)
            tests = [key for key in pool if key not in used]
        picked = _draw(rng, tests, queries) if queries else tests
        support += chosen
        query += picked
        s_labels += [label] * len(chosen)
        q_labels += [label] * len(picked)
    if not query:
        return Skipped(episode_id, "nway", speaker, k, r, "", f"speaker {speaker} has no query utterances" + note)
    return Episode(episode_id, "nway", speaker, k, r, seed, classes, "", tuple(support), tuple(s_labels),
                   tuple(query), tuple(q_labels), disjoint=disjoint, **_sentence_ids(support, query, sentence_of))


def _sentence_ids(support: Sequence[str], query: Sequence[str], sentence_of: dict[str, str]) -> dict:
    """The Episode fields ``support_sentences`` and ``query_sentences`` for these keys."""
    return {f"{name}_sentences": tuple(sentence_id(sentence_of[key]) for key in keys)
            for name, keys in (("support", support), ("query", query))}


def _flatten(by_emotion: dict[str, list[str]], target: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """All keys of a split, sorted, with labels 1 for ``target`` and 0 otherwise."""
    pairs = sorted((key, int(e == target)) for e, keys in by_emotion.items() for key in keys)
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def binary_episodes(rows: Sequence[Utterance], speakers: Sequence[str], targets: Sequence[str], ks: Sequence[int],
                    repetitions: int, seed: int, disjoint: str = "text") -> tuple[list[Episode], list[Skipped]]:
    """Protocol 2 (Paper A): one-vs-rest tasks (speaker, target emotion); ``k`` = total support size.

    Support: k/2 target utterances and k/2 drawn uniformly from the speaker's pooled train utterances of
    all other emotions. Validation: the speaker's evaluation split; query: its test split (all of them,
    label 1 = target, 0 = other). A speaker with no split has no validation set and draws queries from its
    remaining utterances, or with ``disjoint="text"`` support from its support-side sentences and queries
    (all of them) from its query-side ones. Episodes come in the order speaker, target, k, repetition.
    """
    if not ks or not targets or any(k % 2 or k < 2 for k in ks) or repetitions < 1 or seed < 0 or (
            disjoint not in DISJOINT):
        raise MetalearnError(f"binary episodes need targets, even k >= 2, repetitions >= 1, seed >= 0, disjoint in "
                             f"{DISJOINT}; got targets={targets}, ks={ks}, {repetitions}, {seed}, {disjoint!r}")
    pools, sentence_of = _pools(rows, speakers)
    draw = _Draw(seed, sentence_of, disjoint)
    out = []
    for speaker in speakers:
        p = pools[speaker]
        unsplit = set(p) == {""}
        train = p.get("" if unsplit else TRAIN, {})
        for t in targets:
            neg = sorted(key for e, keys in train.items() if e != t for key in keys)
            fixed = ((), ()) if unsplit else _flatten(p.get(EVALUATION, {}), t) + _flatten(p.get(TEST, {}), t)
            keys = _BinaryPools(unsplit, train.get(t, []), neg, fixed)
            out += [_binary_one(speaker, t, k, r, draw, keys) for k in ks for r in range(repetitions)]
    return [e for e in out if isinstance(e, Episode)], [e for e in out if isinstance(e, Skipped)]


def _binary_one(speaker: str, target: str, k: int, r: int, draw: _Draw, keys: _BinaryPools) -> Episode | Skipped:
    """One binary episode; without a split, query is the rest of ``keys``' utterances."""
    seed, sentence_of, disjoint = draw.seed, draw.sentence_of, draw.disjoint
    unsplit, pos, neg, fixed = keys.unsplit, keys.pos, keys.neg, keys.fixed
    episode_id = f"binary/k{k}/{speaker}/{target}/r{r}"
    rng = episode_rng(seed, "binary", speaker, target, k, r)
    split, note = "" if unsplit else TRAIN, ""
    if unsplit and disjoint == "text":
        sides, rest, note = _halves(rng, {"pos": pos, "neg": neg}, sentence_of)
        pos, neg, unsplit, split = sides["pos"], sides["neg"], False, "support-side"
        fixed = ((), ()) + _flatten({target: rest["pos"], "": rest["neg"]}, target)
    for pool, what in ((pos, repr(target)), (neg, f"non-{target!r}")):
        if len(pool) < k // 2:
            return Skipped(episode_id, "binary", speaker, k, r, target, _lacks(speaker, split, what, len(pool), k // 2)
                           + note)
    pos_s, neg_s = _draw(rng, pos, k // 2), _draw(rng, neg, k // 2)
    if unsplit:
        used = set(pos_s + neg_s)
        fixed = ((), ()) + _flatten({target: [x for x in pos if x not in used], "": [x for x in neg if x not in used]},
                                    target)
    validation, v_labels, query, q_labels = fixed
    if not query:
        return Skipped(episode_id, "binary", speaker, k, r, target, f"speaker {speaker} has no query utterances" + note)
    return Episode(episode_id, "binary", speaker, k, r, seed, (f"not_{target}", target), target,
                   tuple(pos_s + neg_s), (1,) * len(pos_s) + (0,) * len(neg_s), query, q_labels,
                   validation, v_labels, disjoint, **_sentence_ids(pos_s + neg_s, query, sentence_of))
