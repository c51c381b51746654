"""Speaker-independent pre-finetuning splits, one test per corpus layout: sessions (IEMOCAP), speakers (the
other corpora), a corpus's own split (MSP-Podcast), and Paper A's leaking split by utterance."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pytest

from metalearn.data.manifest import Utterance
from metalearn.data.sentences import sentence_key
from metalearn.pretune.config import PretuneConfig
from metalearn.pretune.data import PARTS, CorpusSplits, build_splits, split_corpus
from metalearn.pretune.grouping import group_of, group_parts
from metalearn.util.errors import MetalearnError

EMOTIONS = ("neutral", "happy", "angry", "sad")


def _rows(corpus: str, speakers: Sequence[str], per_speaker: int, texts: int = 0, split: str = "") -> list[Utterance]:
    """``per_speaker`` clips per speaker, emotions cycling; with ``texts`` > 0 the clips say one of ``texts``
    sentences (shared across speakers), else they have no text."""
    rows = []
    for s, spk in enumerate(speakers):
        for i in range(per_speaker):
            text = f"Sentence number {(s * 7 + i) % texts}." if texts else ""
            rows.append(Utterance(f"{spk}_{i:03d}", f"/nowhere/{spk}_{i:03d}.wav", corpus, spk, "female",
                                  EMOTIONS[(i + s) % 4], EMOTIONS[(i + s) % 4], split, 1.0, 16_000, text))
    return rows


def _assert_independent(s: CorpusSplits, unit=lambda u: u.speaker) -> None:  # noqa: ANN001
    where: dict[str, set[str]] = {}
    for part in PARTS:
        for u in s.part(part):
            where.setdefault(unit(u), set()).add(part)
    assert all(len(parts) == 1 for parts in where.values()), {k: v for k, v in where.items() if len(v) > 1}


def _assert_sentence_disjoint(s: CorpusSplits) -> None:
    held = {sentence_key(u) for u in s.dev + s.test if u.text}
    assert not [u for u in s.train if u.text and sentence_key(u) in held]


def test_iemocap_splits_by_session_and_drops_shared_sentences() -> None:
    speakers = [f"Ses0{k}{g}" for k in range(1, 6) for g in "FM"]
    rows = _rows("iemocap", speakers, 20, texts=60)
    s = split_corpus("iemocap", rows, seed=0)
    assert {group_of(u) for u in rows} == {f"Ses0{k}" for k in range(1, 6)}
    _assert_independent(s, group_of)  # no session (so no speaker) in two parts
    _assert_independent(s)
    _assert_sentence_disjoint(s)
    assert all(s.part(p) for p in PARTS)
    dropped = s.dropped["train sentence said in dev/test"]
    assert dropped > 0 and len(s.train) + len(s.dev) + len(s.test) + dropped == len(rows)
    # deterministic and seeded
    again = split_corpus("iemocap", rows, seed=0)
    assert [u.utterance_id for u in again.dev] == [u.utterance_id for u in s.dev]
    assert any([u.utterance_id for u in split_corpus("iemocap", rows, seed=k).dev] != [u.utterance_id for u in s.dev]
               for k in range(1, 5))
    kept = split_corpus("iemocap", rows, seed=0, sentence_disjoint=False)
    assert "train sentence said in dev/test" not in kept.dropped and len(kept.train) == len(s.train) + dropped


@pytest.mark.parametrize("corpus", ["cremad", "ravdess", "msp_improv", "mandarin_affective"])
def test_corpora_without_a_split_split_by_speaker(corpus: str) -> None:
    rows = _rows(corpus, [f"{corpus[:3]}{k:02d}" for k in range(20)], 10)
    s = split_corpus(corpus, rows, seed=3)
    _assert_independent(s)
    sizes = s.sizes()
    assert sizes["dev"] >= 0.1 * len(rows) and sizes["test"] >= 0.1 * len(rows) and sizes["train"] >= 0.7 * len(rows)
    assert sum(sizes.values()) == len(rows) and not s.dropped  # no text: nothing to drop


@pytest.mark.parametrize("n_groups", [1, 2, 3, 4, 7])
def test_group_parts_gives_each_part_a_group_when_it_can(n_groups: int) -> None:
    rows = _rows("cremad", [f"s{k}" for k in range(n_groups)], 5)
    for seed in range(5):
        train, dev, test = group_parts(rows, np.random.default_rng(seed))
        groups = [{u.speaker for u in part} for part in (train, dev, test)]
        assert sum(len(g) for g in groups) == n_groups and not (groups[0] & groups[1] or groups[0] & groups[2])
        assert groups[0], "train always gets a group"
        if n_groups >= 2:
            assert groups[1], "dev comes before test"
        if n_groups >= 3:
            assert all(groups)


def test_own_split_is_kept_and_a_shared_speaker_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    rows = (_rows("msp_podcast", ["1", "2", "3"], 8, split="train")
            + _rows("msp_podcast", ["4"], 4, split="development") + _rows("msp_podcast", ["5"], 4, split="test1"))
    s = split_corpus("msp_podcast", rows)
    assert s.own_split and s.sizes() == {"train": 24, "dev": 4, "test": 4}
    _assert_independent(s)
    leaky = rows + [Utterance("x_1", "/nowhere/x.wav", "msp_podcast", "1", "female", "sad", "sad", "test2", 1.0,
                              16_000), Utterance("x_2", "/nowhere/y.wav", "msp_podcast", "2", "female", "sad",
                                                 "sad", "development", 1.0, 16_000)]
    with caplog.at_level(logging.WARNING):
        s = split_corpus("msp_podcast", leaky)
    assert s.sizes() == {"train": 24, "dev": 5, "test": 5}  # kept as the corpus defines it
    warnings = [r.getMessage() for r in caplog.records if "more than one" in r.getMessage()]
    assert warnings == ["msp_podcast: its own split puts 2 speaker(s) in more than one of train/dev/test (kept as "
                        "the corpus defines it; its dev and test are not speaker-independent)"]


def test_utterance_mode_is_paper_a_split_and_leaks_speakers() -> None:
    rows = _rows("iemocap", [f"Ses0{k}{g}" for k in range(1, 6) for g in "FM"], 20, texts=60)
    s = split_corpus("iemocap", rows, seed=0, split="utterance")
    assert s.sizes() == {"train": 160, "dev": 20, "test": 20} and not s.dropped
    speakers = [{u.speaker for u in s.part(p)} for p in PARTS]
    assert speakers[0] & speakers[1], "by utterance, speakers are shared (this is why it is not the default)"
    assert PretuneConfig().split == "speaker" and PretuneConfig(split="utterance").split == "utterance"
    with pytest.raises(MetalearnError, match="pretune split 'session'"):
        PretuneConfig(split="session")
    with pytest.raises(MetalearnError, match="pretune split 'x'"):
        build_splits(rows, split="x")


def test_too_few_sessions_split_by_speaker_and_one_speaker_by_utterance(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        one_session = split_corpus("iemocap", _rows("iemocap", ["Ses01F", "Ses01M"], 10), seed=0)
    _assert_independent(one_session)
    assert one_session.train and one_session.dev and "fewer than 3 sessions" in caplog.text
    with caplog.at_level(logging.WARNING):
        alone = split_corpus("cremad", _rows("cremad", ["1001"], 20), seed=0)
    assert alone.sizes() == {"train": 16, "dev": 2, "test": 2} and "one speaker" in caplog.text
