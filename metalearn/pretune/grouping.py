"""Speaker-independent train/dev/test of one corpus: whole groups to each part, then sentence-disjoint train.

A group is what must not straddle two parts: an IEMOCAP session (its two actors improvise and read to each
other, so a session's speakers share dialogues; ``Ses01M`` -> ``Ses01``), every other corpus's speaker.
:func:`group_parts` deals whole groups to dev and test until each holds about ``fractions`` of the clips, the
rest to train (seeded, deterministic; with three or more groups each part gets at least one).
:func:`drop_shared_sentences` then removes train clips whose words (the manifest's ``text``) are said in dev or
test, so model selection never rewards remembering a sentence. Pure functions over :class:`Utterance` lists.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from metalearn.data.manifest import Utterance
from metalearn.data.sentences import sentence_key

_SESSION = re.compile(r"^(Ses\d\d)", re.I)


def group_of(u: Utterance) -> str:
    """The unit a speaker-independent split keeps whole: IEMOCAP's session (from the speaker id, else the
    utterance id), every other corpus's speaker."""
    if u.corpus == "iemocap":
        m = _SESSION.match(u.speaker) or _SESSION.match(u.utterance_id)
        if m:
            return m.group(1)
    return u.speaker


def group_parts(rows: Sequence[Utterance], rng: np.random.Generator, fractions: tuple[float, float] = (0.1, 0.1),
                key: Callable[[Utterance], str] = group_of
                ) -> tuple[list[Utterance], list[Utterance], list[Utterance]]:
    """(train, dev, test) of ``rows`` with every group (``key``: :func:`group_of`) in exactly one part.

    Groups, sorted by name then permuted by ``rng``, go to dev until it holds ``fractions[0]`` of the clips,
    then to test until ``fractions[1]``, the rest to train; a part is never given a group that train (or, with
    >= 3 groups, a later empty part) needs, so with >= 3 groups each part has at least one, with 2 train and dev
    have one each. A zero fraction leaves that part empty. Rows keep
    their utterance-id order inside each part.
    """
    by_group: dict[str, list[Utterance]] = defaultdict(list)
    for u in sorted(rows, key=lambda u: u.utterance_id):
        by_group[key(u)].append(u)
    names = sorted(by_group)
    order = [names[i] for i in rng.permutation(len(names))]
    targets = [f * len(rows) for f in fractions]
    held: list[list[Utterance]] = [[], []]
    train: list[Utterance] = []
    for i, name in enumerate(order):
        left = len(order) - i - 1  # groups still to deal after this one
        for part in (0, 1):
            later = sum(1 for p in range(part + 1, 2) if targets[p] > 0 and not held[p]) if len(order) >= 3 else 0
            if targets[part] > 0 and len(held[part]) < targets[part] and left >= later + (1 if not train else 0):
                held[part] += by_group[name]
                break
        else:
            train += by_group[name]
    return train, held[0], held[1]


def drop_shared_sentences(train: list[Utterance], held: Sequence[Utterance]) -> tuple[list[Utterance], int]:
    """``train`` without the clips whose text is said in ``held`` (dev + test), and how many were dropped.

    Only transcribed clips are compared (:func:`sentence_key` on the ``text`` column); clips without text stay.
    """
    said = {k for k in (sentence_key(u) for u in held) if k.startswith("text:")}
    kept = [u for u in train if sentence_key(u) not in said]
    return kept, len(train) - len(kept)


def speakers_in_several(parts: dict[str, Sequence[Utterance]]) -> int:
    """How many speakers appear in more than one of ``parts`` (a corpus's own split that is not
    speaker-independent)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for name, rows in parts.items():
        for u in rows:
            seen[u.speaker].add(name)
    return sum(1 for where in seen.values() if len(where) > 1)


def grouping_for(rows: Sequence[Utterance]) -> tuple[Callable[[Utterance], str] | None, str]:
    """How to split ``rows`` speaker-independently: (group key, what it is); sessions (or speakers) when there
    are at least 3, else speakers when there are more of them than sessions, else None (one speaker: no split
    keeps a speaker out of dev)."""
    groups, speakers = {group_of(u) for u in rows}, {u.speaker for u in rows}
    if len(groups) >= 3 or (len(groups) >= len(speakers) and len(groups) > 1):
        return group_of, "session" if len(groups) < len(speakers) else "speaker"
    if len(speakers) > 1:
        return (lambda u: u.speaker), "speaker"
    return None, "utterance"
