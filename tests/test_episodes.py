"""Episode and sampler invariants on a synthetic manifest whose feature row i encodes (i, class, speaker, split)."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter

import pytest
import torch

from metalearn.data.manifest import Utterance, utterance_key
from metalearn.fewshot.algorithms.base import TaskSampler
from metalearn.fewshot.episode_io import load_episodes, save_episodes
from metalearn.fewshot.episodes import Episode, NwayRule, Skipped, binary_episodes, nway_episodes
from metalearn.fewshot.tasks import SpeakerTaskSampler, TaskRows, TaskSpec, episode_tensors
from metalearn.util.errors import MetalearnError
from tests.fixtures import EMOTIONS, SPEAKERS, SPLITS, make_rows


def make_unsplit(speakers=("Ses01F", "Ses01M"), n=8) -> list[Utterance]:
    return [Utterance(f"{s}_{e}_{j}", f"/fake/{s}_{e}_{j}.wav", "iemocap", s, "male", e, e, "", 1.0, 16000)
            for s in speakers for e in EMOTIONS[:4] for j in range(n)]


def table(rows: list[Utterance]) -> tuple[torch.Tensor, dict[str, int], list[str]]:
    """x [N, 4]: row i = (i, emotion index, speaker index, split index); also key -> row, speaker list."""
    spk = sorted({u.speaker for u in rows})
    x = torch.tensor([[i, EMOTIONS.index(u.emotion), spk.index(u.speaker), SPLITS.index(u.split)]
                      for i, u in enumerate(rows)], dtype=torch.float32)
    return x, {utterance_key(u): i for i, u in enumerate(rows)}, spk


def by_key(rows: list[Utterance]) -> dict[str, Utterance]:
    return {utterance_key(u): u for u in rows}


def check_episode(ep: Episode, rows: list[Utterance]) -> None:
    """Invariants common to both protocols."""
    u = by_key(rows)
    sets = [set(ep.support), set(ep.query), set(ep.validation)]
    assert sum(map(len, sets)) == len(ep.support) + len(ep.query) + len(ep.validation)  # no repeats anywhere
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    all_keys = ep.support + ep.query + ep.validation
    assert {u[key].speaker for key in all_keys} == {ep.speaker}
    for keys, labels in ((ep.support, ep.support_labels), (ep.query, ep.query_labels),
                         (ep.validation, ep.validation_labels)):
        for key, y in zip(keys, labels, strict=True):
            if ep.protocol == "nway":
                assert u[key].emotion == ep.classes[y]
            else:
                assert y == int(u[key].emotion == ep.target_emotion)


def test_utterance_key():
    assert utterance_key(make_rows(counts=(1, 0, 0))[0]) == "esd/0011_neutral_train_0"


def test_nway_support_k_per_class_from_train_and_query_is_the_test_split():
    rows = make_rows()
    episodes, skipped = nway_episodes(rows, SPEAKERS, k=4, repetitions=2, seed=0)
    assert not skipped and len(episodes) == 6
    u = by_key(rows)
    for ep in episodes:
        check_episode(ep, rows)
        assert ep.classes == EMOTIONS and ep.target_emotion == "" and ep.validation == ()
        assert Counter(ep.support_labels) == {i: 4 for i in range(5)}
        assert {u[key].split for key in ep.support} == {"train"}
        test_keys = {utterance_key(r) for r in rows if r.speaker == ep.speaker and r.split == "test"}
        assert set(ep.query) == test_keys
    assert len({ep.episode_id for ep in episodes}) == 6 and episodes[0].episode_id == "nway/k4/0011/r0"
    assert episodes[0].support != episodes[1].support  # repetitions differ


def test_nway_queries_per_class_and_explicit_classes():
    rows = make_rows()
    episodes, _ = nway_episodes(rows, SPEAKERS, k=2, repetitions=1, seed=0,
                                rule=NwayRule(classes=("sad", "angry"), queries=3))
    u = by_key(rows)
    for ep in episodes:
        check_episode(ep, rows)
        assert ep.classes == ("sad", "angry")
        assert Counter(ep.query_labels) == {0: 3, 1: 3} and {u[key].split for key in ep.query} == {"test"}
    _, skipped = nway_episodes(rows, SPEAKERS, k=2, repetitions=1, seed=0, rule=NwayRule(queries=5))
    assert skipped[0].reason == "speaker 0011 has 4 test 'neutral' utterances, needs 5"


def test_nway_default_classes_are_the_intersection():
    rows = make_rows(("0011",)) + make_rows(("0012",), emotions=EMOTIONS[:3])
    episodes, _ = nway_episodes(rows, ["0011", "0012"], k=2, repetitions=1, seed=0)
    assert all(ep.classes == ("neutral", "happy", "angry") for ep in episodes)  # canonical order


def test_nway_without_split_queries_are_the_remaining_utterances():
    """disjoint="none": the rule before text-disjoint episodes (tests/test_text_disjoint.py has the default)."""
    rows = make_unsplit()
    episodes, skipped = nway_episodes(rows, ["Ses01F", "Ses01M"], k=3, repetitions=2, seed=1,
                                      rule=NwayRule(disjoint="none"))
    assert not skipped
    for ep in episodes:
        check_episode(ep, rows)
        assert Counter(ep.support_labels) == {i: 3 for i in range(4)} and ep.disjoint == "none"
        assert set(ep.support) | set(ep.query) == {utterance_key(r) for r in rows if r.speaker == ep.speaker}
    episodes, _ = binary_episodes(rows, ["Ses01F"], ["sad"], ks=[4], repetitions=1, seed=1, disjoint="none")
    check_episode(episodes[0], rows)
    assert episodes[0].validation == () and len(episodes[0].query) == 32 - 4 and sum(episodes[0].query_labels) == 6
    _, skipped = nway_episodes(rows, ["Ses01F"], k=7, repetitions=1, seed=1, rule=NwayRule(queries=2, disjoint="none"))
    assert skipped[0].reason == "speaker Ses01F has 8 'neutral' utterances, needs 9"


def test_binary_half_target_half_others_with_validation_and_query():
    rows = make_rows()
    episodes, skipped = binary_episodes(rows, SPEAKERS, EMOTIONS, ks=[2, 4, 8], repetitions=2, seed=0)
    assert not skipped and len(episodes) == 3 * 5 * 3 * 2
    u = by_key(rows)
    for ep in episodes:
        check_episode(ep, rows)
        t = ep.target_emotion
        assert ep.classes == (f"not_{t}", t) and len(ep.support) == ep.k
        assert Counter(ep.support_labels) == {0: ep.k // 2, 1: ep.k // 2}
        assert {u[key].split for key in ep.support} == {"train"}
        spk = [r for r in rows if r.speaker == ep.speaker]
        assert set(ep.validation) == {utterance_key(r) for r in spk if r.split == "evaluation"}
        assert set(ep.query) == {utterance_key(r) for r in spk if r.split == "test"}
        assert sum(ep.query_labels) == 4 and sum(ep.validation_labels) == 3  # 1 target : 4 others
    assert episodes[0].episode_id == "binary/k2/0011/neutral/r0"


def test_binary_needs_even_k():
    with pytest.raises(MetalearnError, match="even"):
        binary_episodes(make_rows(), SPEAKERS, ["sad"], ks=[3], repetitions=1, seed=0)


def test_too_few_utterances_are_skipped_never_resampled():
    rows = make_rows(short={("0013", "sad"): 3})
    episodes, skipped = nway_episodes(rows, SPEAKERS, k=4, repetitions=2, seed=0)
    assert len(episodes) == 4 and [s.episode_id for s in skipped] == ["nway/k4/0013/r0", "nway/k4/0013/r1"]
    assert skipped[0].reason == "speaker 0013 has 3 train 'sad' utterances, needs 4"
    episodes, skipped = binary_episodes(rows, ["0013"], ["sad", "angry"], ks=[6, 8], repetitions=1, seed=0)
    assert [s.episode_id for s in skipped] == ["binary/k8/0013/sad/r0"]
    assert skipped[0].reason == "speaker 0013 has 3 train 'sad' utterances, needs 4"
    assert isinstance(skipped[0], Skipped) and skipped[0].target_emotion == "sad"
    few = make_rows(("0014",), counts=(2, 1, 1), emotions=("sad", "angry"))
    _, skipped = binary_episodes(few, ["0014"], ["sad"], ks=[6], repetitions=1, seed=0)
    assert skipped[0].reason == "speaker 0014 has 2 train 'sad' utterances, needs 3"
    _, skipped = binary_episodes(make_rows(("0014",), counts=(2, 1, 1), emotions=("sad",)) + make_rows(
        ("0014",), counts=(1, 1, 1), emotions=("angry",)), ["0014"], ["sad"], ks=[4], repetitions=1, seed=0)
    assert skipped[0].reason == "speaker 0014 has 1 train non-'sad' utterances, needs 2"
    episodes, _ = nway_episodes(rows, ["0013"], k=3, repetitions=5, seed=0)  # exactly 3 sad: all of them, each once
    for ep in episodes:
        sad = [key for key, y in zip(ep.support, ep.support_labels, strict=True) if ep.classes[y] == "sad"]
        assert sorted(sad) == [f"esd/0013_sad_train_{j}" for j in range(3)]


def test_unknown_speaker_is_an_error():
    with pytest.raises(MetalearnError, match="9999"):
        nway_episodes(make_rows(), ["9999"], k=1, repetitions=1, seed=0)


def test_determinism_and_independence_of_existing_episodes():
    rows = make_rows(counts=(12, 3, 4))
    a, _ = binary_episodes(rows, ["0011"], ["sad"], ks=[4], repetitions=2, seed=3)
    b, _ = binary_episodes(rows, ["0011"], ["sad"], ks=[4], repetitions=2, seed=3)
    assert a == b
    c, _ = binary_episodes(rows, ["0011"], ["sad"], ks=[4], repetitions=2, seed=4)
    assert [e.support for e in a] != [e.support for e in c]
    more, _ = binary_episodes(rows, ["0013", "0011", "0012"], ["angry", "sad"], ks=[8, 4, 2], repetitions=3, seed=3)
    by_id = {e.episode_id: e for e in more}
    assert all(by_id[e.episode_id] == e for e in a)
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert binary_episodes(shuffled, ["0011"], ["sad"], ks=[4], repetitions=2, seed=3)[0] == a
    n1, _ = nway_episodes(rows, ["0011"], k=2, repetitions=2, seed=5)
    n2, _ = nway_episodes(rows, ["0012", "0011"], k=2, repetitions=3, seed=5)
    assert all(e in n2 for e in n1)


def test_save_load_replays_identical_episodes(tmp_path):
    rows = make_rows(short={("0013", "sad"): 3})
    episodes, skipped = binary_episodes(rows, SPEAKERS, ["sad", "happy"], ks=[2, 8], repetitions=2, seed=0)
    nway, nskip = nway_episodes(rows, SPEAKERS, k=4, repetitions=1, seed=0)
    path = save_episodes(tmp_path / "episodes.jsonl", episodes + nway, skipped + nskip)
    assert load_episodes(path) == (episodes + nway, skipped + nskip)
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["skipped"] == "speaker 0013 has 3 train 'sad' utterances, needs 4"
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r.pop("query_labels"), "missing field 'query_labels'"),
    (lambda r: r.update(k="four"), "field 'k': bad value"),
    (lambda r: r.update(support=[1, 2]), "field 'support': bad value"),
    (lambda r: r.update(protocol="ternary"), "field 'protocol'"),
    (lambda r: r.update(support_labels=[7] * len(r["support"])), "field 'support_labels'"),
    (lambda r: r.update(query_labels=[0]), "field 'query_labels'"),
    (lambda r: r.update(colour="red"), "unknown field 'colour'"),
    (lambda r: r.update(disjoint="words"), "field 'disjoint'"),
    (lambda r: r.update(query_sentences=["abc"]), "field 'query_sentences'"),
])
def test_load_names_file_line_and_field(tmp_path, edit, message):
    episodes, _ = binary_episodes(make_rows(), ["0011"], ["sad"], ks=[2], repetitions=2, seed=0)
    path = save_episodes(tmp_path / "e.jsonl", episodes)
    lines = path.read_text().splitlines()
    rec = json.loads(lines[1])
    edit(rec)
    path.write_text(lines[0] + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(MetalearnError, match="line 2") as err:
        load_episodes(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_load_rejects_bad_json_and_missing_file(tmp_path):
    (tmp_path / "bad.jsonl").write_text("{}\n{not json\n")
    with pytest.raises(MetalearnError, match="line 1: missing field 'episode_id'"):
        load_episodes(tmp_path / "bad.jsonl")
    (tmp_path / "bad.jsonl").write_text("\n{not json\n")
    with pytest.raises(MetalearnError, match="line 2: not valid JSON"):
        load_episodes(tmp_path / "bad.jsonl")
    with pytest.raises(MetalearnError, match="does not exist"):
        load_episodes(tmp_path / "none.jsonl")


def decode(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row index, class, speaker index, split index) from features [..., 4]."""
    return tuple(feats[..., j].long() for j in range(4))


def sampler_setup(protocol: str, seed: int = 7, **kw) -> tuple[SpeakerTaskSampler, torch.Tensor, list[str]]:
    rows = make_rows(("0011", "0012", "0014", "0015")) + make_rows(("0013",), emotions=("neutral", "happy", "angry"))
    rows += make_rows(("0013",), counts=(2, 1, 1), emotions=("sad",))  # 4 < shots + queries: never drawn (nway)
    x, _, spk = table(rows)
    args = dict(ways=3, shots=2, queries=3) if protocol == "nway" else dict(ways=2, shots=4, queries=6)
    args.update(kw)
    sampler = SpeakerTaskSampler(x, TaskRows([r.emotion for r in rows], [r.speaker for r in rows]),
                                 ["0011", "0012", "0013"], TaskSpec(protocol=protocol, **args), seed=seed)
    return sampler, x, spk


def check_sampler_batch(batch, x: torch.Tensor, spk: list[str], s: int, q: int, ways: int) -> None:
    sx, sy, qx, qy = batch
    assert sx.shape == (16, s, 4) and sy.shape == (16, s) and qx.shape == (16, q, 4) and qy.shape == (16, q)
    assert sy.dtype == torch.long and set(sy.unique().tolist()) == set(range(ways))
    s_idx, s_cls, s_spk, _ = decode(sx)
    q_idx, q_cls, q_spk, _ = decode(qx)
    assert torch.equal(x[s_idx], sx) and torch.equal(x[q_idx], qx)
    all_spk = torch.cat([s_spk, q_spk], 1)
    assert (all_spk == all_spk[:, :1]).all()  # one speaker per task
    assert set(all_spk.unique().tolist()) <= {spk.index(s) for s in ("0011", "0012", "0013")}  # train rows only
    for e in range(16):
        both = torch.cat([s_idx[e], q_idx[e]])
        assert both.unique().numel() == both.numel()  # disjoint, no replacement


def test_sampler_nway_shapes_labels_and_train_speakers_only():
    sampler, x, spk = sampler_setup("nway")
    assert isinstance(sampler, SpeakerTaskSampler) and sampler.speakers == ["0011", "0012", "0013"]
    batch = sampler.sample(16)
    check_sampler_batch(batch, x, spk, 6, 9, 3)
    sx, sy, qx, qy = batch
    s_cls, q_cls = decode(sx)[1], decode(qx)[1]
    for e in range(16):
        classes = [s_cls[e][sy[e] == j].unique().tolist() for j in range(3)]
        assert all(len(c) == 1 for c in classes) and len({c[0] for c in classes}) == 3
        assert all(q_cls[e][qy[e] == j].unique().tolist() == classes[j] for j in range(3))
        assert Counter(sy[e].tolist()) == {0: 2, 1: 2, 2: 2}
    s13 = spk.index("0013")
    assert not ((decode(sx)[2] == s13) & (s_cls == EMOTIONS.index("sad"))).any()  # 2 < shots + queries


def test_sampler_binary_half_target_half_others():
    sampler, x, spk = sampler_setup("binary")
    sx, sy, qx, qy = batch = sampler.sample(16)
    check_sampler_batch(batch, x, spk, 4, 6, 2)
    for cls, y in ((decode(sx)[1], sy), (decode(qx)[1], qy)):
        assert (y.sum(1) == y.shape[1] // 2).all()
        target = decode(sx)[1][sy == 1].view(16, -1)[:, :1]
        assert (cls[y == 1].view(16, -1) == target).all() and (cls[y == 0].view(16, -1) != target).all()


def test_sampler_is_deterministic_by_seed():
    a = sampler_setup("nway")[0].sample(8)
    b = sampler_setup("nway")[0].sample(8)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(sampler_setup("nway", seed=8)[0].sample(8)[0], a[0])


def test_sampler_draws_every_row_uniformly():
    rows = make_rows(("0011",), counts=(6, 0, 0), emotions=("sad", "angry"))
    x, _, _ = table(rows)
    sampler = SpeakerTaskSampler(x, TaskRows([r.emotion for r in rows], ["0011"] * 12), ["0011"], TaskSpec(2, 1, 2),
                                 seed=0)
    sx, _, qx, _ = sampler.sample(6000)
    for feats, expected in ((sx, 1000), (qx, 2000)):
        counts = torch.bincount(decode(feats)[0].flatten(), minlength=12)
        assert ((counts - expected).abs() < 0.1 * expected).all(), counts


def test_sampler_rejects_impossible_settings():
    with pytest.raises(MetalearnError, match="no train speaker"):
        sampler_setup("nway", shots=20)
    with pytest.raises(MetalearnError, match="binary"):
        sampler_setup("binary", shots=3)
    x, _, _ = table(make_rows(("0011",)))
    with pytest.raises(MetalearnError, match="rows"):
        SpeakerTaskSampler(x, TaskRows(["sad"], ["0011"]), ["0011"], TaskSpec(2, 1, 1), 0)


def test_sampler_matches_task_sampler_protocol():
    sampler = sampler_setup("nway")[0]
    assert all(hasattr(sampler, name) for name in TaskSampler.__annotations__)


def test_episode_tensors_pads_queries_and_validation():
    rows = make_rows(("0011",), counts=(6, 2, 3)) + make_rows(("0012",), counts=(6, 1, 5))
    x, index_of, _ = table(rows)
    episodes, _ = binary_episodes(rows, ["0011", "0012"], ["sad"], ks=[4], repetitions=1, seed=0)
    t = episode_tensors(episodes, index_of, x)
    assert t["support_x"].shape == (2, 4, 4) and t["query_x"].shape == (2, 25, 4) and t["val_x"].shape == (2, 10, 4)
    assert t["query_mask"].sum(1).tolist() == [15, 25] and t["val_mask"].sum(1).tolist() == [10, 5]
    for e, ep in enumerate(episodes):
        for name, keys, labels in (("support", ep.support, ep.support_labels), ("query", ep.query, ep.query_labels),
                                   ("val", ep.validation, ep.validation_labels)):
            n = len(keys)
            assert decode(t[f"{name}_x"][e, :n])[0].tolist() == [index_of[key] for key in keys]
            assert t[f"{name}_y"][e, :n].tolist() == list(labels)
            assert (t[f"{name}_y"][e, n:] == -1).all() and (t[f"{name}_x"][e, n:] == 0).all()
    nway, _ = nway_episodes(rows, ["0011"], k=2, repetitions=2, seed=0)
    t = episode_tensors(nway, index_of, x)
    assert t["val_x"].shape == (2, 0, 4) and t["query_mask"].all()
    with pytest.raises(MetalearnError, match="shapes"):
        episode_tensors(episodes + nway, index_of, x)
    with pytest.raises(MetalearnError, match="no row"):
        episode_tensors(nway, {}, x)


def test_paper_a_full_grid():
    speakers = [f"{i:04d}" for i in range(1, 21)]
    rows = make_rows(speakers, counts=(300, 20, 30))
    episodes, skipped = binary_episodes(rows, speakers, EMOTIONS, ks=[2, 4, 8, 16, 24, 32, 64], repetitions=3, seed=0)
    assert len(episodes) == 2100 and not skipped and len({e.episode_id for e in episodes}) == 2100
    assert {len(e.query) for e in episodes} == {150} and {len(e.validation) for e in episodes} == {100}
    assert len(episodes) * 16 == 33_600
    check_episode(episodes[-1], rows)


def test_episode_is_frozen():
    ep = nway_episodes(make_rows(), ["0011"], k=1, repetitions=1, seed=0)[0][0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ep.k = 2


def test_pad_fills_ragged_episodes_and_names_what_is_wrong() -> None:
    """Row indices and labels left-aligned, -1 and mask False after each episode's end; an unknown utterance
    names its episode; a label count that does not match the utterances is refused."""
    from metalearn.fewshot.tasks import _pad

    index_of = {"a": 4, "b": 7, "c": 1}
    idx, y, mask = _pad([("a", "b", "c"), ("c",), ()], [(0, 1, 1), (2,), ()], index_of, ["e0", "e1", "e2"])
    assert idx.tolist() == [[4, 7, 1], [1, 0, 0], [0, 0, 0]]
    assert y.tolist() == [[0, 1, 1], [2, -1, -1], [-1, -1, -1]]
    assert torch.equal(mask, y >= 0)
    with pytest.raises(MetalearnError, match="episode e1: utterance d has no row"):
        _pad([("a",), ("d",)], [(0,), (1,)], index_of, ["e0", "e1"])
    with pytest.raises(MetalearnError, match="episode e0: 1 labels for 2 utterances"):
        _pad([("a", "b")], [(0,)], index_of, ["e0"])
    with pytest.raises(MetalearnError, match="episode e0: 1 labels for 2 utterances"):  # totals agree, episodes not
        _pad([("a", "b"), ("c",)], [(0,), (1, 2)], index_of, ["e0", "e1"])


def test_pad_places_shared_key_tuples_for_every_episode() -> None:
    """Episodes sharing one key tuple (a speaker's query keys) get its rows in their own places, with their own
    labels, as equal tuples that are separate objects do."""
    from metalearn.fewshot.tasks import _pad

    index_of = {"a": 4, "b": 7, "c": 1, "d": 9}
    shared = ("c", "a", "d")
    groups = [shared, ("b",), shared, ("c", "a", "d"), (), shared]
    labels = [(0, 1, 0), (1,), (1, 1, 0), (0, 0, 1), (), (2, 2, 2)]
    idx, y, _ = _pad(groups, labels, index_of, [f"e{i}" for i in range(6)])
    assert idx.tolist() == [[1, 4, 9], [7, 0, 0], [1, 4, 9], [1, 4, 9], [0, 0, 0], [1, 4, 9]]
    assert y.tolist() == [[0, 1, 0], [1, -1, -1], [1, 1, 0], [0, 0, 1], [-1, -1, -1], [2, 2, 2]]
    with pytest.raises(MetalearnError, match="episode e1: utterance x has no row"):
        _pad([("a",), ("x",), ("x",)], [(0,), (1,), (1,)], index_of, ["e0", "e1", "e2"])
