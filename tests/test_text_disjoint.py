"""Text-disjoint episodes and tasks: support and query never share a sentence where a corpus has no split.

Synthetic manifests in the CREMA-D, RAVDESS and IEMOCAP layouts (ids as the loaders write them) carry, beside
each row, the sentence it really says (``truth``), so every check is independent of ``sentence_key``.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from metalearn.data.emotions import LABEL_MAPS
from metalearn.data.manifest import Utterance, utterance_key
from metalearn.data.sentences import sentence_key
from metalearn.fewshot.episode_io import load_episodes, save_episodes
from metalearn.fewshot.episodes import Episode, NwayRule, binary_episodes, nway_episodes
from metalearn.fewshot.tasks import SpeakerTaskSampler, TaskRows, TaskSpec
from metalearn.util.errors import MetalearnError

Layout = tuple[list[Utterance], dict[str, str]]  # rows, utterance key -> the sentence it says


def _row(corpus: str, uid: str, speaker: str, emotion: str, raw: str, text: str = "", split: str = "") -> Utterance:
    return Utterance(uid, f"/fake/{uid}.wav", corpus, speaker, "female", emotion, raw, split, 1.0, 16000, text)


def cremad(actors=("1001", "1002"), with_text: bool = False) -> Layout:
    """12 sentences x 6 emotions (XX), plus LO/MD/HI of the 5 non-neutral emotions for sentence IEO."""
    rows, truth = [], {}
    codes = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
    for actor in actors:
        for code in codes:
            for emo, emotion in LABEL_MAPS["cremad"].items():
                levels = ("LO", "MD", "HI", "XX") if code == "IEO" and emo != "NEU" else ("XX",)
                for level in levels:
                    u = _row("cremad", f"{actor}_{code}_{emo}_{level}", actor, emotion, emo,
                             f"Sentence {code.lower()}." if with_text else "")
                    rows.append(u)
                    truth[utterance_key(u)] = code
    return rows, truth


def ravdess(actors=("01", "02")) -> Layout:
    """2 statements x 2 repetitions x 2 intensities (neutral: 1) x 8 emotions, speech only, no text."""
    rows, truth = [], {}
    for actor in actors:
        for ee, emotion in LABEL_MAPS["ravdess"].items():
            for ii in ("01",) if ee == "01" else ("01", "02"):
                for ss in ("01", "02"):
                    for rr in ("01", "02"):
                        u = _row("ravdess", f"03-01-{ee}-{ii}-{ss}-{rr}-{actor}", f"Actor_{actor}", emotion, ee)
                        rows.append(u)
                        truth[utterance_key(u)] = ss
    return rows, truth


def iemocap(with_text: bool = True) -> Layout:
    """Scripted takes (each script line said once per take, one emotion per take) and improvised turns."""
    rows, truth = [], {}
    takes = {"1": ("ang", "angry"), "2": ("hap", "happy"), "3": ("sad", "sad")}
    for gender in "FM":
        speaker = f"Ses01{gender}"
        for script in ("script01", "script02"):
            for take, (raw, emotion) in takes.items():
                for line in range(6):
                    u = _row("iemocap", f"Ses01F_{script}_{take}_{gender}{line:03d}", speaker, emotion, raw,
                             f"{script} line {line}!" if with_text else "")
                    rows.append(u)
                    truth[utterance_key(u)] = f"{script}/{line}"
        for j, (raw, emotion) in enumerate(list(takes.values()) * 8):
            u = _row("iemocap", f"Ses01F_impro0{j % 3 + 1}_{gender}{j:03d}", speaker, emotion, raw,
                     f"Improvised words number {j}." if with_text else "")
            rows.append(u)
            truth[utterance_key(u)] = f"impro/{j}"
    return rows, truth


LAYOUTS = {"cremad": cremad, "cremad-text": lambda: cremad(with_text=True), "ravdess": ravdess,
           "iemocap": iemocap, "iemocap-no-text": lambda: iemocap(with_text=False)}


def speakers_of(rows: list[Utterance]) -> list[str]:
    return sorted({u.speaker for u in rows})


def draw(name: str, protocol: str, disjoint: str = "text", k: int = 2) -> tuple[list[Episode], dict[str, str]]:
    rows, truth = LAYOUTS[name]()
    spk = speakers_of(rows)
    if protocol == "nway":
        episodes, _ = nway_episodes(rows, spk, k, 6, seed=3, rule=NwayRule(disjoint=disjoint))
    else:
        targets = sorted({u.emotion for u in rows})[:3]
        episodes, _ = binary_episodes(rows, spk, targets, [k], 6, seed=3, disjoint=disjoint)
    assert episodes
    return episodes, truth


def shared(ep: Episode, truth: dict[str, str]) -> list[bool]:
    seen = {truth[key] for key in ep.support}
    return [truth[key] in seen for key in ep.query]


def test_sentence_key_reads_text_then_the_corpus_sentence_id():
    def key(corpus: str, uid: str, text: str = "") -> str:
        return sentence_key(_row(corpus, uid, "s", "angry", "x", text))

    assert key("cremad", "1001_DFA_ANG_XX") == key("cremad", "1002_DFA_SAD_XX") != key("cremad", "1001_TIE_ANG_XX")
    assert key("ravdess", "03-01-05-01-02-01-12") == key("ravdess", "03-01-03-02-02-02-12") == "ravdess:02"
    assert key("msp_improv", "MSP-IMPROV-S01A-F01-P-FM01") == key("msp_improv", "MSP-IMPROV-S01H-F01-T-FM01")
    assert key("msp_improv", "MSP-IMPROV-S01A-F01-P-FM01") != key("msp_improv", "MSP-IMPROV-S02A-F01-P-FM01")
    assert key("iemocap", "Ses01F_script01_1_F000") == key("iemocap", "Ses01F_script01_3_M012")
    assert key("iemocap", "Ses01F_impro01_F000") != key("iemocap", "Ses01F_impro01_F001")
    assert key("esd", "0011_000001", "It's eleven o'clock.") == key("esd", "0011_000351", "its ELEVEN oclock")
    assert key("cremad", "1001_DFA_ANG_XX", "Don't forget") != key("cremad", "1001_DFA_SAD_XX")  # text first
    anger = _row("mandarin_affective", "F01_anger_sentence_03", "F01", "angry", "anger")
    sadness = _row("mandarin_affective", "F01_sadness_sentence_03", "F01", "sad", "sadness")
    assert sentence_key(anger) == sentence_key(sadness) == "mandarin_affective:sentence_03"
    assert key("mandarin_affective", "F01_anger_word_03") != key("esd", "0011_000001") != key("esd", "0011_000002")


@pytest.mark.parametrize("protocol", ["nway", "binary"])
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_support_and_query_never_share_a_sentence(name, protocol):
    episodes, truth = draw(name, protocol)
    for ep in episodes:
        assert ep.disjoint == "text" and not any(shared(ep, truth)), ep.episode_id
        assert ep.query_in_support == (False,) * len(ep.query) and ep.validation == ()
    halves = {ep.speaker: set() for ep in episodes}
    for ep in episodes:
        halves[ep.speaker].add(frozenset(truth[key] for key in ep.support))
    assert max(map(len, halves.values())) > 1  # a new split of the sentences per episode
    old, truth = draw(name, protocol, disjoint="none")
    assert any(any(shared(ep, truth)) for ep in old)  # the check can fail: without the rule they do share
    assert [any(ep.query_in_support) for ep in old] == [any(shared(ep, truth)) for ep in old]


def test_binary_query_is_the_whole_query_side():
    episodes, truth = draw("cremad", "binary", k=4)
    assert len(episodes) == 2 * 3 * 6  # every speaker x target emotion x repetition was drawn
    rows, _ = cremad()
    for ep in episodes:
        assert sorted(ep.support_labels) == [0, 0, 1, 1]
        support_side = {truth[key] for key in ep.support}
        rest = {utterance_key(u) for u in rows if u.speaker == ep.speaker}
        assert set(ep.query) <= rest - set(ep.support)
        assert not support_side & {truth[key] for key in ep.query}
        assert len({truth[key] for key in ep.query}) == 6  # half of the 12 sentences, all their clips
        assert len(ep.query) == 6 * 6 + 15 * ("IEO" in {truth[key] for key in ep.query})


def test_too_few_sentences_for_k_is_a_skip_with_the_reason():
    rows, _ = ravdess(("01",))
    episodes, skipped = nway_episodes(rows, ["Actor_01"], k=3, repetitions=2, seed=0,
                                      rule=NwayRule(classes=("happy", "sad")))
    assert len(episodes) == 2 and not skipped
    episodes, skipped = nway_episodes(rows, ["Actor_01"], k=5, repetitions=2, seed=0,
                                      rule=NwayRule(classes=("happy", "sad")))
    assert not episodes and skipped[0].reason == ("speaker Actor_01 has 4 support-side 'happy' utterances, needs 5 "
                                                  "(support and query take disjoint halves of its 2 sentences)")
    _, skipped = nway_episodes(rows, ["Actor_01"], k=2, repetitions=1, seed=0, rule=NwayRule(queries=5))
    assert skipped[0].reason.startswith("speaker Actor_01 has 2 query-side 'neutral' utterances, needs 5 (")
    _, skipped = binary_episodes(rows, ["Actor_01"], ["neutral"], [6], 1, seed=0)
    assert skipped[0].reason.startswith("speaker Actor_01 has 2 support-side 'neutral' utterances, needs 3")
    with pytest.raises(MetalearnError, match="disjoint"):
        nway_episodes(rows, ["Actor_01"], k=1, repetitions=1, seed=0, rule=NwayRule(disjoint="words"))


def nearest_mean_accuracy(ep: Episode, truth: dict[str, str], rng: np.random.Generator) -> float:
    """Accuracy of nearest class mean on a content-only feature, the one-hot of the utterance's sentence
    (ties, e.g. a query sentence absent from every class, broken at random)."""
    sentences = sorted(set(truth.values()))
    onehot = np.eye(len(sentences))
    sx = onehot[[sentences.index(truth[key]) for key in ep.support]]               # [S, V]
    qx = onehot[[sentences.index(truth[key]) for key in ep.query]]                 # [Q, V]
    means = np.stack([sx[np.array(ep.support_labels) == c].mean(0) for c in range(len(ep.classes))])  # [C, V]
    distance = ((qx[:, None, :] - means[None]) ** 2).sum(-1) + 1e-9 * rng.random((len(qx), len(means)))  # [Q, C]
    return float((distance.argmin(1) == np.array(ep.query_labels)).mean())


@pytest.mark.parametrize(("name", "k", "bound"), [("cremad", 6, 0.5), ("ravdess", 4, 0.75), ("iemocap", 6, 0.75)])
def test_a_content_only_feature_is_at_chance_only_on_text_disjoint_episodes(name, k, bound):
    """Shared sentences: the feature matches a query to the OTHER classes that said its sentence (the query's
    own class cannot have said it again), so it scores below chance; text-disjoint, it carries no signal.
    RAVDESS and IEMOCAP leak less (2 statements; improvised turns never repeat), hence their looser bounds."""
    rows, truth = LAYOUTS[name]()
    classes = sorted({u.emotion for u in rows})[:3]
    chance = 1 / len(classes)
    accuracy = {}
    for disjoint in ("text", "none"):
        episodes, _ = nway_episodes(rows, speakers_of(rows), k, 20, seed=0,
                                    rule=NwayRule(classes=classes, disjoint=disjoint))
        rng = np.random.default_rng(0)
        accuracy[disjoint] = np.mean([nearest_mean_accuracy(ep, truth, rng) for ep in episodes])
        assert len(episodes) == 40
    assert abs(accuracy["text"] - chance) < 0.12 * chance, accuracy
    assert accuracy["none"] < bound * chance, accuracy


def test_old_episode_files_still_load_and_new_ones_keep_their_sentences(tmp_path):
    rows, truth = cremad(("1001",))
    episodes, _ = nway_episodes(rows, ["1001"], 2, 2, seed=0, rule=NwayRule(classes=("angry", "sad"), disjoint="none"))
    path = save_episodes(tmp_path / "new.jsonl", episodes)
    assert load_episodes(path)[0] == episodes
    assert [ep.query_in_support for ep in load_episodes(path)[0]] == [tuple(shared(ep, truth)) for ep in episodes]
    old = [{k: v for k, v in json.loads(line).items() if k not in ("disjoint", "support_sentences",
                                                                    "query_sentences")}
           for line in path.read_text().splitlines()]
    (tmp_path / "old.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in old))
    loaded, _ = load_episodes(tmp_path / "old.jsonl")
    assert [ep.support for ep in loaded] == [ep.support for ep in episodes] and loaded[0].disjoint == "none"
    with pytest.raises(MetalearnError, match="without sentence ids"):
        _ = loaded[0].query_in_support


# --- tasks for meta-training ------------------------------------------------------------------------------------


def row_of(feats: torch.Tensor) -> np.ndarray:
    """Row indices [...] of features [..., 2] made by ``task_sampler``."""
    return (feats[..., 0].long() // 2).numpy()


def task_sampler(rows: list[Utterance], protocol: str = "nway", disjoint: str = "text", seed: int = 11,
                 keys: bool = True, **kw) -> SpeakerTaskSampler:
    """A sampler over x [N, 2] whose row i is (2i, 2i + 1): ``row_of`` decodes features."""
    x = torch.arange(2 * len(rows), dtype=torch.float32).view(-1, 2)
    spk = [u.speaker for u in rows]
    args = dict(ways=3, shots=2, queries=3) if protocol == "nway" else dict(ways=2, shots=4, queries=6)
    args.update(kw)
    extra = dict(sentences=[sentence_key(u) for u in rows], splits=[u.split for u in rows]) if keys else {}
    return SpeakerTaskSampler(x, TaskRows([u.emotion for u in rows], spk, **extra), sorted(set(spk)),
                              TaskSpec(protocol=protocol, disjoint=disjoint, **args), seed=seed)


@pytest.mark.parametrize("protocol", ["nway", "binary"])
@pytest.mark.parametrize("name", ["cremad", "ravdess", "iemocap", "iemocap-no-text"])
def test_meta_training_tasks_never_share_a_sentence(name, protocol):
    rows, truth = LAYOUTS[name]()
    kw = {"shots": 2, "queries": 2} if protocol == "binary" else {"shots": 1, "queries": 1}
    sx, sy, qx, qy = task_sampler(rows, protocol, **kw).sample(200)
    said = np.array([truth[utterance_key(u)] for u in rows])
    s_sent, q_sent = said[row_of(sx)], said[row_of(qx)]   # [E, S], [E, Q]
    assert not any(set(s) & set(q) for s, q in zip(s_sent, q_sent, strict=True))
    assert len({frozenset(s) for s in s_sent}) > 1
    emotion = np.array([u.emotion for u in rows])
    for feats, y in ((sx, sy), (qx, qy)):  # labels still name one emotion (binary: the target) per task
        e = emotion[row_of(feats)]
        assert all(len(set(e[t][y[t].numpy() == 1])) == 1 for t in range(len(e)))
    sx, _, qx, _ = task_sampler(rows, protocol, disjoint="none", **kw).sample(200)
    s_sent, q_sent = said[row_of(sx)], said[row_of(qx)]
    assert any(set(s) & set(q) for s, q in zip(s_sent, q_sent, strict=True))


def test_sampler_text_rule_skips_speakers_that_cannot_fill_both_halves():
    rows, _ = ravdess()  # per emotion: 4 clips of each of 2 statements (neutral: 2)
    sampler = task_sampler(rows, ways=2, shots=4, queries=4)
    assert sampler.speakers == ["Actor_01", "Actor_02"]
    with pytest.raises(MetalearnError, match="disjoint sentences"):
        task_sampler(rows, ways=2, shots=5, queries=1)
    task_sampler(rows, ways=2, shots=5, queries=1, disjoint="none")  # 6 rows per emotion: fine without the rule
    with pytest.raises(MetalearnError, match="sentences"):
        SpeakerTaskSampler(torch.zeros(len(rows), 2), TaskRows([u.emotion for u in rows], [u.speaker for u in rows],
                                                               sentences=["a"]), ["Actor_01"], TaskSpec(2, 1, 1), 0)


# --- ESD and every corpus with an official split: drawn exactly as before the text rule -----------------------

EMOTIONS = ("neutral", "happy", "angry", "sad", "surprise")


def esd_like(speakers=("0011", "0012", "0013"), n_train: int = 10, n_eval: int = 2, n_test: int = 3) -> list[Utterance]:
    """ESD's layout: every sentence in every emotion, the official split by sentence."""
    splits = ["train"] * n_train + ["evaluation"] * n_eval + ["test"] * n_test
    return [_row("esd", f"{s}_{e * len(splits) + j + 1:06d}", s, emotion, emotion.title(), f"Sentence number {j}.",
                 split) for s in speakers for e, emotion in enumerate(EMOTIONS) for j, split in enumerate(splits)]


def unsplit_like() -> list[Utterance]:
    return [_row("iemocap", f"{s}_{e}_{j}", s, e, e, f"line {j % 5}") for s in ("Ses01F", "Ses01M")
            for e in EMOTIONS[:4] for j in range(8)]


def digest_episodes(result) -> str:
    episodes, skipped = result
    draws = [[e.episode_id, e.support, e.support_labels, e.query, e.query_labels, e.validation, e.validation_labels]
             for e in episodes] + [[s.episode_id, s.reason] for s in skipped]
    return hashlib.sha256(json.dumps(draws).encode()).hexdigest()[:16]


def digest_tasks(sampler: SpeakerTaskSampler) -> str:
    batches = [t for _ in range(3) for t in sampler.sample(16)]
    return hashlib.sha256(b"".join(t.numpy().tobytes() for t in batches)).hexdigest()[:16]


# Computed with the code before the text rule existed (commit cf8ca35): these draws must never change.
PINNED = {
    "nway_k2": "169a66a103cc1687", "nway_k4_q2": "8f5326a646bf8a59", "nway_k11_skip": "9caf34ba34582fd1",
    "binary": "12e32c05f6a69bf2", "unsplit_nway_none": "2bf8bc8e6c6e64bf", "unsplit_binary_none": "1e35a60b1cd3fdef",
    "sampler_nway": "d120efb40c358a23", "sampler_binary": "bd5f94549b64971a",
    "sampler_unsplit_nway": "c9cf4a3462029e13",
}


@pytest.mark.parametrize("disjoint", ["text", "none"])
def test_official_split_episodes_are_drawn_exactly_as_before(disjoint):
    rows, spk = esd_like(), ["0011", "0012", "0013"]
    assert digest_episodes(nway_episodes(rows, spk, 2, 3, 0, rule=NwayRule(disjoint=disjoint))) == PINNED["nway_k2"]
    assert digest_episodes(nway_episodes(rows, spk, 4, 2, 5,
                                         rule=NwayRule(queries=2, disjoint=disjoint))) == PINNED["nway_k4_q2"]
    assert digest_episodes(nway_episodes(rows, spk, 11, 1, 0,
                                         rule=NwayRule(disjoint=disjoint))) == PINNED["nway_k11_skip"]
    assert digest_episodes(binary_episodes(rows, spk, ["sad", "happy"], [2, 4, 8], 2, 1, disjoint=disjoint)) == \
        PINNED["binary"]
    episodes, _ = nway_episodes(rows, spk, 2, 3, 0, rule=NwayRule(disjoint=disjoint))
    assert all(ep.disjoint == disjoint and not any(ep.query_in_support) for ep in episodes)  # ESD: split sentences


def test_unsplit_episodes_without_the_rule_are_drawn_exactly_as_before():
    rows, spk = unsplit_like(), ["Ses01F", "Ses01M"]
    assert digest_episodes(nway_episodes(rows, spk, 3, 2, 1,
                                         rule=NwayRule(disjoint="none"))) == PINNED["unsplit_nway_none"]
    assert digest_episodes(binary_episodes(rows, spk, ["sad"], [2, 4], 2, 1, disjoint="none")) == \
        PINNED["unsplit_binary_none"]
    assert digest_episodes(nway_episodes(rows, spk, 3, 2, 1)) != PINNED["unsplit_nway_none"]


@pytest.mark.parametrize("keys", [True, False])
def test_official_split_tasks_are_drawn_exactly_as_before(keys):
    assert digest_tasks(task_sampler(esd_like(), "nway", keys=keys)) == PINNED["sampler_nway"]
    assert digest_tasks(task_sampler(esd_like(), "binary", keys=keys)) == PINNED["sampler_binary"]
    assert digest_tasks(task_sampler(unsplit_like(), "nway", disjoint="none", keys=keys)) == \
        PINNED["sampler_unsplit_nway"]
    assert digest_tasks(task_sampler(unsplit_like(), "nway", keys=False)) == PINNED["sampler_unsplit_nway"]
    if keys:
        assert digest_tasks(task_sampler(unsplit_like(), "nway")) != PINNED["sampler_unsplit_nway"]
