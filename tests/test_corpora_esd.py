"""ESD loader on tiny trees in both real layouts (split folders, flat + transcript file)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from metalearn.cli import main
from metalearn.data.corpora import load_corpus
from metalearn.data.corpora.esd import gender_of, split_of
from metalearn.data.manifest import COLUMNS, read_manifest
from metalearn.util.errors import MetalearnError
from tests.fixtures import write_junk, write_wav


def by_id(result) -> dict:
    return {u.utterance_id: u for u in result.utterances}


def split_tree(root: Path, spk: str, files: list[tuple[str, str, int]]) -> Path:
    """``root/{spk}/{Emotion}/{split}/{spk}_{idx:06d}.wav`` for each (Emotion, split, idx)."""
    for emotion, split, idx in files:
        write_wav(root / spk / emotion / split / f"{spk}_{idx:06d}.wav")
    return root / spk


def flat_tree(root: Path, spk: str, files: list[tuple[str, int]], txt: str | None = None,
              encoding: str = "utf-8-sig") -> Path:
    """``root/{spk}/{Emotion}/{spk}_{idx:06d}.wav`` for each (Emotion, idx), and ``{spk}/{spk}.txt``."""
    for emotion, idx in files:
        write_wav(root / spk / emotion / f"{spk}_{idx:06d}.wav")
    if txt is not None:
        (root / spk / f"{spk}.txt").write_bytes(txt.encode(encoding))
    return root / spk


def test_split_of_boundaries():
    assert [split_of(i) for i in (1, 20, 21, 50, 51, 350)] == [
        "evaluation", "evaluation", "test", "test", "train", "train"]
    assert [split_of(i) for i in (351, 370, 371, 400, 401, 700, 701, 1750)] == [
        "evaluation", "evaluation", "test", "test", "train", "train", "evaluation", "train"]


def test_gender_table():
    assert [gender_of(s) for s in ("0001", "0004", "0015", "0020", "0021", "9999")] == [
        "female", "male", "female", "male", "unknown", "unknown"]
    assert Counter(gender_of(f"{i:04d}") for i in range(1, 21)) == {"female": 10, "male": 10}


def test_split_folder_layout_in_wrapper(tmp_path):
    root = tmp_path / "esd"
    wrapper = root / "Emotion Speech Dataset"
    split_tree(wrapper, "0011", [
        ("Angry", "evaluation", 351), ("Angry", "evaluation", 370), ("Angry", "test", 371),
        ("Angry", "test", 400), ("Angry", "train", 401), ("Angry", "train", 700),
        ("Neutral", "train", 5),  # the index says evaluation: the folder wins
    ])
    split_tree(wrapper, "0015", [("Happy", "evaluation", 701), ("Sad", "test", 1071),
                                 ("Surprise", "train", 1750)])
    (wrapper / "0011" / "0011.txt").write_text(
        "0011_000351\tThe nine the eggs, I keep.\tAngry\n0011_000005\tI am going to the shop.\tNeutral\n",
        encoding="utf-8")
    write_junk(wrapper)
    (root / "readme.txt").write_text("ESD\n")

    result = load_corpus("esd", root)
    rows = by_id(result)
    assert len(rows) == 10 and not result.problems.problems and not result.excluded
    assert Counter(u.speaker for u in rows.values()) == {"0011": 7, "0015": 3}
    assert {u.speaker: u.gender for u in rows.values()} == {"0011": "male", "0015": "female"}
    assert {k: u.split for k, u in rows.items()} == {
        "0011_000351": "evaluation", "0011_000370": "evaluation", "0011_000371": "test",
        "0011_000400": "test", "0011_000401": "train", "0011_000700": "train", "0011_000005": "train",
        "0015_000701": "evaluation", "0015_001071": "test", "0015_001750": "train"}
    assert (rows["0015_001071"].raw_label, rows["0015_001071"].emotion) == ("Sad", "sad")
    assert (rows["0011_000005"].raw_label, rows["0011_000005"].emotion) == ("Neutral", "neutral")
    assert Counter(u.emotion for u in rows.values()) == {
        "angry": 6, "neutral": 1, "happy": 1, "sad": 1, "surprise": 1}
    assert rows["0011_000351"].text == "The nine the eggs, I keep."
    assert rows["0011_000370"].text == ""
    u = rows["0015_000701"]
    assert (u.corpus, u.sample_rate, round(u.duration_s, 3)) == ("esd", 16000, 0.1)
    assert Path(u.path).is_absolute() and Path(u.path).name == "0015_000701.wav"


def test_flat_layout_with_chinese_transcripts(tmp_path):
    root = tmp_path / "esd"
    flat_tree(root, "0001", [("Neutral", 20), ("Neutral", 21), ("Neutral", 50), ("Neutral", 51),
                             ("Neutral", 350), ("Angry", 351), ("Sad", 1400), ("Surprise", 1401)],
              txt="0001_000020\t打远一看，它们的确很是美丽，\t中立\n"
                  "\n"
                  "this line does not parse\n"
                  "0001_000351\t  他们生气了。 \t快乐\n"  # the folder (Angry) wins over the txt
                  "0001_001401\t真是惊喜！\t惊喜\r\n")
    flat_tree(root, "0004", [("Happy", 701), ("Happy", 750), ("Happy", 751)],
              txt="0004_000701\t快乐的一天\t快乐\n", encoding="gb18030")
    flat_tree(root, "0013", [("Sad", 1051)], txt="0013_001051\tA sad line.\tSad\n", encoding="utf-16")

    result = load_corpus("esd", root)
    rows = by_id(result)
    assert len(rows) == 12 and not result.problems.problems
    assert Counter(u.speaker for u in rows.values()) == {"0001": 8, "0004": 3, "0013": 1}
    assert {u.speaker: u.gender for u in rows.values()} == {"0001": "female", "0004": "male", "0013": "male"}
    assert {k: u.split for k, u in rows.items() if u.speaker == "0001"} == {
        "0001_000020": "evaluation", "0001_000021": "test", "0001_000050": "test", "0001_000051": "train",
        "0001_000350": "train", "0001_000351": "evaluation", "0001_001400": "train",
        "0001_001401": "evaluation"}
    assert [rows[f"0004_{i:06d}"].split for i in (701, 750, 751)] == ["evaluation", "test", "train"]
    assert rows["0001_000020"].text == "打远一看，它们的确很是美丽，"
    assert (rows["0001_000351"].text, rows["0001_000351"].raw_label, rows["0001_000351"].emotion) == (
        "他们生气了。", "Angry", "angry")
    assert rows["0001_001401"].text == "真是惊喜！" and rows["0001_001401"].emotion == "surprise"
    assert rows["0001_000021"].text == ""
    assert rows["0004_000701"].text == "快乐的一天"
    assert rows["0013_001051"].text == "A sad line."


def test_problems_are_reported_and_the_rest_loads(tmp_path):
    root = tmp_path / "esd"
    flat_tree(root, "0021", [("Neutral", 1), ("Happy", 750)])  # not in the official table
    flat_tree(root, "0011", [("Bored", 3), ("Angry", 352)])
    write_wav(root / "0011" / "Angry" / "0011_1.wav")  # bad name
    write_wav(root / "0011" / "Angry" / "0012_000353.wav")  # another speaker's file
    write_wav(root / "0011" / "Angry" / "extra" / "deeper" / "0011_000354.wav")  # bad depth
    write_wav(root / "0011" / "Angry" / "notes" / "0011_000355.wav")  # not a split folder
    (root / "0011" / "Angry" / "0011_000356.mp3").write_bytes(b"not a wav")  # ignored: not .wav
    write_junk(root)
    write_junk(root / "0011" / "Angry", names=("Thumbs.db",))

    result = load_corpus("esd", root)
    rows = by_id(result)
    assert sorted(rows) == ["0011_000352", "0021_000001", "0021_000750"]
    assert {u.speaker: u.gender for u in rows.values()} == {"0011": "male", "0021": "unknown"}
    assert rows["0021_000750"].split == "test"
    reasons = {Path(p.path).name: p.reason for p in result.problems.problems}
    assert set(reasons) == {"0011_000003.wav", "0011_1.wav", "0012_000353.wav", "0011_000354.wav",
                            "0011_000355.wav"}
    assert "unknown esd label 'Bored'" in reasons["0011_000003.wav"]
    assert reasons["0011_1.wav"].startswith("unexpected file name (expected 0011_NNNNNN.wav")
    assert reasons["0012_000353.wav"].startswith("unexpected file name")
    assert reasons["0011_000354.wav"].startswith("unexpected location")
    assert reasons["0011_000355.wav"].startswith("unexpected location")


def test_strict_and_empty_roots(tmp_path):
    root = tmp_path / "esd"
    flat_tree(root, "0011", [("Angry", 351), ("Bored", 3)])
    with pytest.raises(MetalearnError, match="Bored"):
        load_corpus("esd", root, strict=True)
    empty = tmp_path / "empty"
    (empty / "not_a_speaker").mkdir(parents=True)
    with pytest.raises(MetalearnError, match="no usable esd utterances"):
        load_corpus("esd", empty)


def test_cli_manifest(tmp_path, capsys):
    root = tmp_path / "esd"
    flat_tree(root, "0001", [("Neutral", 1), ("Angry", 351), ("Angry", 352)])
    split_tree(root, "0020", [("Sad", "train", 1100), ("Bored", "train", 1101)])
    out = tmp_path / "out" / "esd.csv"

    assert main(["manifest", "--corpus", "esd", "--root", str(root), "--out", str(out)]) == 0
    with open(out, newline="", encoding="utf-8") as f:
        assert tuple(next(csv.reader(f))) == COLUMNS
    rows = read_manifest(out)
    assert sorted(u.utterance_id for u in rows) == ["0001_000001", "0001_000351", "0001_000352",
                                                    "0020_001100"]
    text = capsys.readouterr().out
    assert "esd: 4 utterances, 2 speakers" in text
    table = text.splitlines()
    header = next(line for line in table if line.startswith("speaker"))
    assert header.split() == ["speaker", "neutral", "angry", "sad", "total"]
    assert "0001 1 2 0 3" in [" ".join(line.split()) for line in table]
    assert "0020 0 0 1 1" in [" ".join(line.split()) for line in table]
    assert "skipped: 1 problem" in text
    assert (out.parent / "esd.problems.tsv").is_file()


def test_duplicate_speaker_folder_is_reported_once(tmp_path):
    root = tmp_path / "esd"
    flat_tree(root, "0002", [("Sad", 1051)])
    flat_tree(root / "copy", "0002", [("Sad", 1051), ("Sad", 1052)])
    result = load_corpus("esd", root)
    assert [u.utterance_id for u in result.utterances] == ["0002_001051"]
    assert [Path(p.path) for p in result.problems.problems] == [root / "copy" / "0002"]
    assert result.problems.problems[0].reason.startswith("duplicate speaker folder")
