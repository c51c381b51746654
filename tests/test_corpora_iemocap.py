"""IEMOCAP loader on a tiny tree in the real release layout (wavs, EmoEvaluation, transcriptions)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from metalearn.cli import main
from metalearn.data.corpora import load_corpus
from metalearn.data.corpora.iemocap import speaker_of
from metalearn.data.manifest import COLUMNS, read_manifest
from metalearn.util.errors import MetalearnError
from tests.fixtures import write_junk, write_wav

HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def label_block(utt: str, label: str, start: float) -> str:
    """One EmoEvaluation entry as the release writes it: summary line, annotator lines, blank line."""
    return (f"[{start:.4f} - {start + 2.5:.4f}]\t{utt}\t{label}\t[2.5000, 3.0000, 3.5000]\n"
            "C-E2:\tNeutral;\t()\nC-E3:\tFrustration; Anger;\t(annoyed)\n"
            "A-E3:\tval 3; act 2; dom  2;\t()\n\n")


def session(root: Path, n: int, dialogs: dict[str, list[tuple[str, str | None, str | None]]]) -> Path:
    """``Session{n}`` with, per dialog, (utterance id, label or None, transcript or None) entries.

    An entry whose id starts with "!" has a label line but no wav.
    """
    ses = root / f"Session{n}"
    for dialog, entries in dialogs.items():
        labels, lines = HEADER, []
        for i, (utt, label, text) in enumerate(entries):
            utt_id = utt.lstrip("!")
            if not utt.startswith("!"):
                write_wav(ses / "sentences" / "wav" / dialog / f"{utt_id}.wav")
            if label is not None:
                labels += label_block(utt_id, label, 3.0 * i)
            if text is not None:
                lines.append(f"{utt_id} [{3.0 * i:07.4f}-{3.0 * i + 2.5:07.4f}]: {text}")
        evaluation = ses / "dialog" / "EmoEvaluation"
        evaluation.mkdir(parents=True, exist_ok=True)
        (evaluation / f"{dialog}.txt").write_text(labels, encoding="utf-8")
        transcripts = ses / "dialog" / "transcriptions"
        transcripts.mkdir(parents=True, exist_ok=True)
        (transcripts / f"{dialog}.txt").write_text("\n".join(lines + ["M: [BREATHING]"]) + "\n")
    return ses


def iemocap_tree(root: Path) -> Path:
    s1 = session(root, 1, {
        "Ses01F_impro01": [
            ("Ses01F_impro01_F000", "neu", "Excuse me."),
            ("Ses01F_impro01_M003", "exc", "Yeah, sure."),
            ("Ses01F_impro01_M004", "xxx", None),
            ("Ses01F_impro01_F001", "fru", "I've been waiting for hours."),
            ("Ses01F_impro01_F002", None, "no label for me"),
        ],
        "Ses01M_script01_1": [
            ("Ses01M_script01_1_F005", "ang", "What is that supposed to mean?"),
            ("Ses01M_script01_1_M010", "sad", None),
            ("!Ses01M_script01_1_M099", "neu", None),
        ],
    })
    session(root, 2, {"Ses02F_impro02": [
        ("Ses02F_impro02_F000", "hap", "Oh wow."), ("Ses02F_impro02_M001", "sur", "Really?"),
        ("Ses02F_impro02_M002", "zzz", None),
    ]})
    # Junk a real copy carries: AppleDouble twins, a hidden dialog folder, subfolders of EmoEvaluation
    # whose lines must not be read, an oddly named wav.
    write_junk(root)
    write_wav(s1 / "sentences" / "wav" / ".hidden" / "Ses01F_impro01_F009.wav")
    cat = s1 / "dialog" / "EmoEvaluation" / "Categorical"
    cat.mkdir()
    (cat / "Ses01F_impro01_e1_cat.txt").write_text("Ses01F_impro01_F002 :Neutral state; ()\n")
    (s1 / "dialog" / "EmoEvaluation" / "._Ses01F_impro01.txt").write_bytes(b"\x00\x05\x16\x07\xff\xfe")
    write_wav(s1 / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01.wav")
    return root


def by_id(result) -> dict:
    return {u.utterance_id: u for u in result.utterances}


def test_speaker_is_the_last_segment():
    assert speaker_of("Ses01F_impro01_M003") == ("Ses01M", "male")
    assert speaker_of("Ses01M_script01_1_F005") == ("Ses01F", "female")
    assert speaker_of("Ses05F_impro03b_F012") == ("Ses05F", "female")
    assert speaker_of("Ses01F_impro01") is None


def test_load_all_labels(tmp_path):
    result = load_corpus("iemocap", iemocap_tree(tmp_path / "IEMOCAP_full_release"))
    rows = by_id(result)
    assert sorted(rows) == [
        "Ses01F_impro01_F000", "Ses01F_impro01_F001", "Ses01F_impro01_M003", "Ses01M_script01_1_F005",
        "Ses01M_script01_1_M010", "Ses02F_impro02_F000", "Ses02F_impro02_M001"]
    assert Counter(u.speaker for u in rows.values()) == {"Ses01F": 3, "Ses01M": 2, "Ses02F": 1, "Ses02M": 1}
    assert {u.speaker: u.gender for u in rows.values()} == {
        "Ses01F": "female", "Ses01M": "male", "Ses02F": "female", "Ses02M": "male"}
    m003 = rows["Ses01F_impro01_M003"]
    assert (m003.speaker, m003.gender, m003.raw_label, m003.emotion) == ("Ses01M", "male", "exc", "happy")
    assert {k: (u.raw_label, u.emotion) for k, u in rows.items()} == {
        "Ses01F_impro01_F000": ("neu", "neutral"), "Ses01F_impro01_F001": ("fru", "frustrated"),
        "Ses01F_impro01_M003": ("exc", "happy"), "Ses01M_script01_1_F005": ("ang", "angry"),
        "Ses01M_script01_1_M010": ("sad", "sad"), "Ses02F_impro02_F000": ("hap", "happy"),
        "Ses02F_impro02_M001": ("sur", "surprise")}
    assert rows["Ses01M_script01_1_F005"].speaker == "Ses01F"
    assert {u.split for u in rows.values()} == {""}
    assert rows["Ses01F_impro01_F000"].text == "Excuse me."
    assert rows["Ses01F_impro01_F001"].text == "I've been waiting for hours."
    assert rows["Ses01M_script01_1_M010"].text == ""
    assert result.excluded == {"label xxx (no agreement)": 1, "label without audio": 1}
    reasons = {Path(p.path).name: p.reason for p in result.problems.problems}
    assert set(reasons) == {"Ses01F_impro01_F002.wav", "Ses02F_impro02_M002.wav", "Ses01F_impro01.wav"}
    assert reasons["Ses01F_impro01_F002.wav"] == "no label in EmoEvaluation"
    assert reasons["Ses02F_impro02_M002.wav"].startswith("unknown iemocap label 'zzz'")
    assert reasons["Ses01F_impro01.wav"].startswith("unexpected file name")


def test_four_classes_and_wrapper_folder(tmp_path):
    root = tmp_path / "iemocap"
    iemocap_tree(root / "IEMOCAP_full_release")
    result = load_corpus("iemocap", root, classes=("neutral", "happy", "angry", "sad"))
    assert Counter(u.emotion for u in result.utterances) == {"neutral": 1, "happy": 2, "angry": 1, "sad": 1}
    assert Counter(u.speaker for u in result.utterances) == {"Ses01F": 2, "Ses01M": 2, "Ses02F": 1}
    assert result.excluded == {"label xxx (no agreement)": 1, "label without audio": 1,
                               "emotion frustrated (not in classes)": 1,
                               "emotion surprise (not in classes)": 1}
    assert len(result.problems) == 3


def test_cli_manifest(tmp_path, capsys):
    root = iemocap_tree(tmp_path / "iemocap")
    out = tmp_path / "iemocap.csv"
    assert main(["manifest", "--corpus", "iemocap", "--root", str(root), "--out", str(out),
                 "--classes", "neutral,happy,angry,sad"]) == 0
    with open(out, newline="", encoding="utf-8") as f:
        assert tuple(next(csv.reader(f))) == COLUMNS
    assert len(read_manifest(out)) == 5
    text = capsys.readouterr().out
    assert "iemocap: 5 utterances, 3 speakers" in text
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "speaker neutral happy angry sad total" in lines
    assert "Ses01F 1 0 1 0 2" in lines and "Ses01M 0 1 0 1 2" in lines and "Ses02F 0 1 0 0 1" in lines
    assert "excluded: 1 x label without audio" in lines
    assert "excluded: 1 x emotion frustrated (not in classes)" in lines
    assert (tmp_path / "iemocap.problems.tsv").is_file()


def test_type_selects_improvised_or_scripted_dialogs(tmp_path):
    root = iemocap_tree(tmp_path / "iemocap")
    every = by_id(load_corpus("iemocap", root))
    improvised = load_corpus("iemocap", root, options={"type": "improvised"})
    scripted = load_corpus("iemocap", root, options={"type": "scripted"})
    assert sorted(by_id(improvised)) == sorted(u for u in every if "_impro" in u)
    assert sorted(by_id(scripted)) == ["Ses01M_script01_1_F005", "Ses01M_script01_1_M010"]
    assert by_id(load_corpus("iemocap", root, options={"type": "all"})) == every
    # what the selection leaves out is counted, never reported as a problem or as a label without audio
    assert improvised.excluded == {"label xxx (no agreement)": 1, "scripted dialog (type=improvised)": 2}
    assert scripted.excluded == {"label without audio": 1, "improvised dialog (type=scripted)": 8}
    assert len(scripted.problems) == 1  # the oddly named wav; the improvised ones are not read


def test_unknown_type_is_one_line(tmp_path):
    root = iemocap_tree(tmp_path / "iemocap")
    with pytest.raises(MetalearnError, match=r"^iemocap option type='impro': expected one of all, improvised, "
                                             r"scripted$"):
        load_corpus("iemocap", root, options={"type": "impro"})
    with pytest.raises(MetalearnError, match="unknown iemocap option 'dialogs'; valid options: type"):
        load_corpus("iemocap", root, options={"dialogs": "improvised"})
