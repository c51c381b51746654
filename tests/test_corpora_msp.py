"""MSP-Podcast and MSP-IMPROV loaders on tiny trees in each corpus's real layout."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import pytest

from metalearn.cli import main
from metalearn.data.corpora import load_corpus
from metalearn.data.corpora.msp_improv import parse_name
from metalearn.data.corpora.msp_podcast import UNKNOWN_NOTE, UNKNOWN_SPEAKER
from metalearn.data.manifest import COLUMNS, read_manifest, write_manifest
from metalearn.run.config import SpeakersConfig
from metalearn.util.errors import MetalearnError
from tests.fixtures import write_junk, write_wav

CSV_HEADER = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"


def by_id(result) -> dict:
    return {u.utterance_id: u for u in result.utterances}


# ---------------------------------------------------------------- MSP-Podcast

PODCAST_ROWS = [  # FileName, EmoClass, SpkrID, Gender, Split_Set
    ("MSP-PODCAST_0001_0008.wav", "N", "127", "Female", "Train"),
    ("MSP-PODCAST_0001_0019.wav", "A", "127", "Female", "Development"),
    ("MSP-PODCAST_0002_0033.wav", "H", "Unknown", "Unknown", "Test1"),
    ("MSP-PODCAST_0002_0039.wav", "X", "Unknown", "Unknown", "Test2"),
    ("MSP-PODCAST_0003_0001.wav", "S", "1002", "Male", "Test2"),
    ("MSP-PODCAST_0003_0002.wav", "Q", "1002", "Male", "Train"),  # unknown class letter
    ("MSP-PODCAST_0004_0001.wav", "C", "88", "Male", "Train"),  # no audio
]


def podcast_tree(root: Path, rows=PODCAST_ROWS, audio: str = "Audios", header: str = CSV_HEADER) -> Path:
    for name, *_ in rows:
        if name != "MSP-PODCAST_0004_0001.wav":
            write_wav(root / audio / name)
    write_wav(root / audio / "MSP-PODCAST_0005_0001.wav")  # no row
    labels = root / "Labels"
    labels.mkdir(parents=True)
    lines = [header] + [f"{n},{c},4.2,3.8,4.0,{s},{g},{sp}" for n, c, s, g, sp in rows]
    (labels / "labels_consensus.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "Transcripts").mkdir()
    (root / "Transcripts" / "MSP-PODCAST_0001_0008.txt").write_text("  So what do you think?\n")
    write_junk(root / audio)
    write_junk(root, names=("README.txt", ".DS_Store", "Partitions.txt"))
    return root


def test_podcast(tmp_path):
    result = load_corpus("msp_podcast", podcast_tree(tmp_path / "MSP-Podcast"))
    rows = by_id(result)
    assert sorted(rows) == ["MSP-PODCAST_0001_0008", "MSP-PODCAST_0001_0019", "MSP-PODCAST_0002_0033",
                            "MSP-PODCAST_0003_0001"]
    assert {k: (u.speaker, u.gender, u.split, u.raw_label, u.emotion) for k, u in rows.items()} == {
        "MSP-PODCAST_0001_0008": ("127", "female", "train", "N", "neutral"),
        "MSP-PODCAST_0001_0019": ("127", "female", "development", "A", "angry"),
        "MSP-PODCAST_0002_0033": ("Unknown", "unknown", "test1", "H", "happy"),
        "MSP-PODCAST_0003_0001": ("1002", "male", "test2", "S", "sad"),
    }
    assert rows["MSP-PODCAST_0001_0008"].text == "So what do you think?"
    assert rows["MSP-PODCAST_0001_0019"].text == ""
    assert result.excluded == {"label X (no agreement)": 1, "label without audio": 1}
    assert result.notes == {UNKNOWN_NOTE: 1}
    reasons = {Path(p.path).name: p.reason for p in result.problems.problems}
    assert reasons.keys() == {"MSP-PODCAST_0003_0002.wav", "MSP-PODCAST_0005_0001.wav"}
    assert reasons["MSP-PODCAST_0003_0002.wav"].startswith("unknown msp_podcast label 'Q'")
    assert reasons["MSP-PODCAST_0005_0001.wav"] == "no row in labels_consensus.csv"


def test_podcast_audio_folder_variant_and_bom(tmp_path):
    root = podcast_tree(tmp_path / "podcast", audio="Audio", header="\ufeff" + CSV_HEADER)
    result = load_corpus("msp_podcast", root, classes=("neutral", "sad"))
    assert Counter(u.emotion for u in result.utterances) == {"neutral": 1, "sad": 1}
    assert result.excluded["emotion angry (not in classes)"] == 1


def test_podcast_errors(tmp_path):
    root = tmp_path / "podcast"
    write_wav(root / "Audios" / "MSP-PODCAST_0001_0008.wav")
    with pytest.raises(MetalearnError, match=r"expected .*Labels/labels_consensus\.csv"):
        load_corpus("msp_podcast", root)
    (root / "Labels").mkdir()
    (root / "Labels" / "labels_consensus.csv").write_text(
        "FileName,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\nMSP-PODCAST_0001_0008.wav,1,2,3,4,Male,Train\n")
    with pytest.raises(MetalearnError, match="missing column EmoClass; expected columns: FileName, EmoClass"):
        load_corpus("msp_podcast", root)
    other = podcast_tree(tmp_path / "no_audio", audio="wavs")
    with pytest.raises(MetalearnError, match="audio not found: expected a folder .*Audios"):
        load_corpus("msp_podcast", other)


def test_podcast_cli(tmp_path, capsys):
    root = podcast_tree(tmp_path / "podcast")
    out = tmp_path / "podcast.csv"
    assert main(["manifest", "--corpus", "msp_podcast", "--root", str(root), "--out", str(out)]) == 0
    with open(out, newline="", encoding="utf-8") as f:
        assert tuple(next(csv.reader(f))) == COLUMNS
    assert {u.split for u in read_manifest(out)} == {"train", "development", "test1", "test2"}
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert "msp_podcast: 4 utterances, 3 speakers, 0.00 h -> " + str(out) in lines
    assert "speaker neutral happy angry sad total" in lines
    assert "127 1 0 1 0 2" in lines and "Unknown 0 1 0 0 1" in lines and "1002 0 0 0 1 1" in lines
    assert "excluded: 1 x label X (no agreement)" in lines


def test_podcast_unknown_speakers_are_kept_flagged_and_dropped_by_the_speaker_exclusion(tmp_path, caplog):
    rows = PODCAST_ROWS + [("MSP-PODCAST_0006_0001.wav", "N", "unknown", "Female", "Train"),
                           ("MSP-PODCAST_0006_0002.wav", "S", "", "Male", "Development"),
                           ("MSP-PODCAST_0006_0003.wav", "A", "UNKNOWN", "Unknown", "Test1")]
    with caplog.at_level(logging.INFO, logger="metalearn.data.corpora.msp_podcast"):
        result = load_corpus("msp_podcast", podcast_tree(tmp_path / "podcast", rows=rows))
    unknown = sorted(u.utterance_id for u in result.utterances if u.speaker == UNKNOWN_SPEAKER)
    assert unknown == ["MSP-PODCAST_0002_0033", "MSP-PODCAST_0006_0001", "MSP-PODCAST_0006_0002",
                       "MSP-PODCAST_0006_0003"]
    assert len(result.utterances) == 7 and result.notes == {UNKNOWN_NOTE: 4}
    assert "4 utterance(s) with SpkrID Unknown kept as speaker 'Unknown'" in caplog.text
    # The manifest keeps them (pre-finetuning reads them) with the speaker the config's exclusion matches.
    back = read_manifest(write_manifest(result.utterances, tmp_path / "podcast.csv"))
    assert Counter(u.speaker for u in back) == {"Unknown": 4, "127": 2, "1002": 1}
    tasks = [u for u in back if u.speaker not in set(SpeakersConfig().exclude)]
    assert sorted({u.speaker for u in tasks}) == ["1002", "127"] and len(tasks) == 3


def test_podcast_takes_no_options(tmp_path):
    with pytest.raises(MetalearnError, match="unknown msp_podcast option 'labels'; valid options: none"):
        load_corpus("msp_podcast", podcast_tree(tmp_path / "podcast"), options={"labels": "target"})


# ---------------------------------------------------------------- MSP-IMPROV

IMPROV_FILES = [  # wav under the root -> (target letter in the name, perceived letter in Evalution.txt)
    "session1/S01A/P/MSP-IMPROV-S01A-F01-P-FM01.wav",  # target A, perceived N
    "session1/S01A/P/MSP-IMPROV-S01A-F01-P-MF01.wav",  # same fourth field, other pair order: still F01
    "session1/S01H/R/MSP-IMPROV-S01H-M01-R-MF01.wav",
    "session1/S01N/T/MSP-IMPROV-S01N-M01-T-MF02.wav",  # perceived O (other)
    "session2/S02S/T/MSP-IMPROV-S02S-F02-T-FM01.wav",  # two summary lines (the first counts)
    "session3/S03N/S/MSP-IMPROV-S03N-M03-S-MF01.wav",  # perceived X (no agreement)
    "extra/deeper/session6/S05A/S/MSP-IMPROV-S05A-M06-S-FM01.wav",
    "session4/S04H/P/MSP-IMPROV-S04H-F04-P-FM03.wav",  # perceived letter Q (unknown)
    "session1/S01A/P/take1.wav",  # bad name
    "session1/S01A/P/MSP-IMPROV-S01X-F01-P-FM01.wav",  # unknown target letter, no summary line
]
# Summary lines as the corpus writes them (video names, "D:... ;" spacing), each followed by rater lines.
EVALUTION = [
    ("S01A-F01-P-FM01", "N"), ("S01A-F01-P-MF01", "H"), ("S01H-M01-R-MF01", "H"), ("S01N-M01-T-MF02", "O"),
    ("S02S-F02-T-FM01", "S"), ("S02S-F02-T-FM01", "A"), ("S03N-M03-S-MF01", "X"), ("S05A-M06-S-FM01", "A"),
    ("S04H-F04-P-FM03", "Q"), ("S06S-F06-R-FM01", "S"),  # the last one has no audio
]


def evalution_text(lines=EVALUTION, newline: str = "\n") -> str:
    out = []
    for key, letter in lines:
        out += [f"UTD-IMPROV-{key}.avi; {letter}; A:2.833333; V:3.000000; D:2.833333 ; N:3.500000;",
                "u0012; Neutral; Neutral; A:3.0; V:3.0; D:3.0; N:4.0;",
                "u0207; Happy; Happy,Excited; A:3.0; V:4.0; D:3.0; N:3.0;", ""]
    return newline.join(out)


def improv_tree(root: Path, evalution: str | None = "Evalution.txt", newline: str = "\n") -> Path:
    for rel in IMPROV_FILES:
        write_wav(root / rel)
    write_junk(root, names=("README.txt", ".DS_Store"))
    if evalution:
        (root / evalution).write_text(evalution_text(newline=newline), encoding="utf-8")
    (root / "Video" / "session1").mkdir(parents=True)
    (root / "Video" / "session1" / "MSP-IMPROV-S01A-F01-P-FM01.avi").write_bytes(b"video")
    return root


def test_parse_name_fourth_field_is_the_speaker():
    assert parse_name("MSP-IMPROV-S01A-F01-P-FM01") == {
        "sentence": "01", "emotion": "A", "speaker": "F01", "gender": "F", "scenario": "P", "other": "FM01"}
    assert parse_name("MSP-IMPROV-S01A-F01-P-MF01")["speaker"] == "F01"
    assert parse_name("MSP-IMPROV-S03H-M01-S-FM03")["speaker"] == "M01"
    assert parse_name("MSP-IMPROV-S01A-F01") is None
    assert parse_name("UTD-IMPROV-S01A-F01-P-FM01") is None


def test_improv_perceived_labels_by_default(tmp_path):
    result = load_corpus("msp_improv", improv_tree(tmp_path / "MSP-IMPROV"))
    rows = by_id(result)
    assert {k: (u.speaker, u.gender, u.raw_label, u.emotion) for k, u in rows.items()} == {
        "MSP-IMPROV-S01A-F01-P-FM01": ("F01", "female", "N", "neutral"),
        "MSP-IMPROV-S01A-F01-P-MF01": ("F01", "female", "H", "happy"),
        "MSP-IMPROV-S01H-M01-R-MF01": ("M01", "male", "H", "happy"),
        "MSP-IMPROV-S01N-M01-T-MF02": ("M01", "male", "O", "other"),
        "MSP-IMPROV-S02S-F02-T-FM01": ("F02", "female", "S", "sad"),
        "MSP-IMPROV-S05A-M06-S-FM01": ("M06", "male", "A", "angry"),
    }
    assert {(u.split, u.text) for u in rows.values()} == {("", "")}
    assert result.excluded == {"label X (no agreement)": 1, "label without audio": 1}
    reasons = {Path(p.path).name: p.reason for p in result.problems.problems}
    assert reasons.keys() == {"take1.wav", "MSP-IMPROV-S01X-F01-P-FM01.wav", "MSP-IMPROV-S04H-F04-P-FM03.wav",
                              "Evalution.txt"}
    assert reasons["MSP-IMPROV-S01X-F01-P-FM01.wav"] == "no line in Evalution.txt"
    assert reasons["MSP-IMPROV-S04H-F04-P-FM03.wav"].startswith("unknown msp_improv label 'Q'")
    assert reasons["Evalution.txt"] == "duplicate line for S02S-F02-T-FM01 (the first one is used)"


def test_improv_target_labels_option(tmp_path):
    result = load_corpus("msp_improv", improv_tree(tmp_path / "MSP-IMPROV", evalution=None),
                         options={"labels": "target"})
    rows = by_id(result)
    assert {k: (u.speaker, u.raw_label, u.emotion) for k, u in rows.items()} == {
        "MSP-IMPROV-S01A-F01-P-FM01": ("F01", "A", "angry"),
        "MSP-IMPROV-S01A-F01-P-MF01": ("F01", "A", "angry"),
        "MSP-IMPROV-S01H-M01-R-MF01": ("M01", "H", "happy"),
        "MSP-IMPROV-S01N-M01-T-MF02": ("M01", "N", "neutral"),
        "MSP-IMPROV-S02S-F02-T-FM01": ("F02", "S", "sad"),
        "MSP-IMPROV-S03N-M03-S-MF01": ("M03", "N", "neutral"),
        "MSP-IMPROV-S05A-M06-S-FM01": ("M06", "A", "angry"),
        "MSP-IMPROV-S04H-F04-P-FM03": ("F04", "H", "happy"),
    }
    reasons = {Path(p.path).name: p.reason for p in result.problems.problems}
    assert reasons.keys() == {"take1.wav", "MSP-IMPROV-S01X-F01-P-FM01.wav"}
    assert "expected MSP-IMPROV-S{NN}{A|H|S|N}-{F|M}{NN}-{P|R|S|T}-{pair}.wav" in reasons["take1.wav"]
    assert reasons["MSP-IMPROV-S01X-F01-P-FM01.wav"].startswith("unknown msp_improv label 'X'")
    assert not result.excluded


def test_improv_the_two_label_sources_differ_on_s01a_f01_p_fm01(tmp_path):
    root = improv_tree(tmp_path / "improv")
    perceived = by_id(load_corpus("msp_improv", root, options={"labels": "perceived"}))
    target = by_id(load_corpus("msp_improv", root, options={"labels": "target"}))
    utt = "MSP-IMPROV-S01A-F01-P-FM01"
    assert (perceived[utt].emotion, target[utt].emotion) == ("neutral", "angry")
    same = sorted(k for k in perceived.keys() & target.keys() if perceived[k].emotion == target[k].emotion)
    assert same == ["MSP-IMPROV-S01H-M01-R-MF01", "MSP-IMPROV-S02S-F02-T-FM01", "MSP-IMPROV-S05A-M06-S-FM01"]


def test_improv_evaluation_spelling_one_folder_down_and_crlf(tmp_path):
    improv_tree(tmp_path / "MSP-IMPROV", evalution="Evaluation.txt", newline="\r\n")
    result = load_corpus("msp_improv", tmp_path)
    assert by_id(result)["MSP-IMPROV-S01A-F01-P-FM01"].raw_label == "N"
    assert len(result.utterances) == 6


def test_improv_errors(tmp_path):
    root = improv_tree(tmp_path / "improv", evalution=None)
    with pytest.raises(MetalearnError, match=r"perceived labels not found: expected .*Evalution\.txt.*labels=target"):
        load_corpus("msp_improv", root)
    with pytest.raises(MetalearnError, match="msp_improv option labels='both': expected one of perceived, target"):
        load_corpus("msp_improv", root, options={"labels": "both"})
    with pytest.raises(MetalearnError, match=r"unknown msp_improv option 'label'; valid options: labels \(default "
                                             r"perceived\)"):
        load_corpus("msp_improv", root, options={"label": "target"})


def test_improv_cli(tmp_path, capsys):
    root = improv_tree(tmp_path / "improv")
    out = tmp_path / "improv.csv"
    assert main(["manifest", "--corpus", "msp_improv", "--root", str(root), "--out", str(out)]) == 0
    with open(out, newline="", encoding="utf-8") as f:
        assert tuple(next(csv.reader(f))) == COLUMNS
    assert len(read_manifest(out)) == 6
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert "speaker neutral happy angry sad other total" in lines
    assert "F01 1 1 0 0 0 2" in lines and "M01 0 1 0 0 1 2" in lines and "total 1 2 1 1 1 6" in lines
    assert "excluded: 1 x label X (no agreement)" in lines
