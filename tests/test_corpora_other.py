"""Mandarin Affective Speech, CREMA-D and RAVDESS loaders on tiny trees in each corpus's real layout."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from metalearn.cli import main
from metalearn.data.corpora import load_corpus
from metalearn.data.manifest import COLUMNS, read_manifest
from metalearn.util.errors import MetalearnError
from tests.fixtures import cremad_tree, ravdess_tree, write_junk, write_wav


def by_id(result) -> dict:
    return {u.utterance_id: u for u in result.utterances}


# ---------------------------------------------------------------- Mandarin Affective Speech

def mandarin_tree(root: Path, files: list[tuple[str, str, str, str]]) -> Path:
    """``root/data/{speaker}/{emotion}/{type}/{stem}.wav`` for each (speaker, emotion, type, stem)."""
    for speaker, emotion, kind, stem in files:
        write_wav(root / "data" / speaker / emotion / kind / f"{stem}.wav")
    return root


MANDARIN_FILES = [
    ("F01", "neutral", "phrase", "01"), ("F01", "anger", "phrase", "01"),
    ("F01", "elation", "phrase", "01"), ("F01", "panic", "phrase", "01"),
    ("F01", "sadness", "phrase", "01"), ("F01", "sadness", "phrase", "02"),
    ("M03", "anger", "phrase", "01"), ("M03", "anger", "sentence", "01"), ("M03", "panic", "word", "07"),
]


@pytest.mark.parametrize("point_at_data", [False, True])
def test_mandarin_layout(tmp_path: Path, point_at_data: bool) -> None:
    root = mandarin_tree(tmp_path / "ldc2007s09", MANDARIN_FILES)
    write_junk(root / "data" / "F01" / "anger" / "phrase")
    write_junk(root, names=("README.txt", ".DS_Store", "index.html"))
    result = load_corpus("mandarin_affective", root / "data" if point_at_data else root)
    rows = by_id(result)
    assert len(rows) == 9 and len(result.problems) == 0
    assert Counter(u.speaker for u in rows.values()) == {"F01": 6, "M03": 3}
    assert Counter(u.emotion for u in rows.values()) == {
        "neutral": 1, "angry": 3, "happy": 1, "fear": 2, "sad": 2}
    u = rows["M03_panic_word_07"]
    assert (u.raw_label, u.emotion, u.gender, u.split, u.text) == ("panic", "fear", "unknown", "", "")
    assert {"M03_anger_phrase_01", "M03_anger_sentence_01", "F01_sadness_phrase_02"} <= set(rows)
    assert {u.gender for u in rows.values()} == {"unknown"}
    assert all(u.sample_rate == 16_000 and abs(u.duration_s - 0.1) < 1e-3 for u in rows.values())


def test_mandarin_unknown_emotion_folder_and_wrong_depth_are_problems(tmp_path: Path) -> None:
    mandarin_tree(tmp_path, [("S1", "anger", "phrase", "1"), ("S1", "boredom", "phrase", "1"),
                             ("S2", "neutral", "phrase", "3")])
    write_wav(tmp_path / "data" / "stray.wav")
    result = load_corpus("mandarin_affective", tmp_path)
    assert sorted(by_id(result)) == ["S1_anger_phrase_1", "S2_neutral_phrase_3"]
    reasons = {Path(p.path).name: p.reason for p in result.problems.problems}
    assert set(reasons) == {"1.wav", "stray.wav"}
    assert "boredom" in reasons["1.wav"]
    assert "data/{speaker}/{emotion}/{type}/*.wav" in reasons["stray.wav"]


@pytest.mark.parametrize(("types", "n_rows", "excluded"), [
    ("all", 10, {}),
    ("phrase", 7, {"type sentence (not in types)": 1, "type word (not in types)": 1, "type (none) (not in types)": 1}),
    ("PHRASE+sentence", 8, {"type word (not in types)": 1, "type (none) (not in types)": 1}),
])
def test_mandarin_types_option(tmp_path: Path, types: str, n_rows: int, excluded: dict) -> None:
    root = mandarin_tree(tmp_path / "ldc2007s09", MANDARIN_FILES)
    write_wav(root / "data" / "F01" / "neutral" / "loose.wav")  # no type folder
    result = load_corpus("mandarin_affective", root, options={"types": types})
    assert len(result.utterances) == n_rows and result.excluded == excluded and len(result.problems) == 0


def test_mandarin_phrase_only_counts(tmp_path: Path) -> None:
    root = mandarin_tree(tmp_path, MANDARIN_FILES)
    rows = by_id(load_corpus("mandarin_affective", root, options={"types": "phrase"}))
    assert {u.utterance_id.split("_")[2] for u in rows.values()} == {"phrase"}
    assert Counter(u.speaker for u in rows.values()) == {"F01": 6, "M03": 1}
    assert Counter(u.emotion for u in rows.values()) == {"neutral": 1, "angry": 2, "happy": 1, "fear": 1, "sad": 2}


@pytest.mark.parametrize("types", ["", "+", "all+phrase"])
def test_mandarin_bad_types_option(tmp_path: Path, types: str) -> None:
    root = mandarin_tree(tmp_path, MANDARIN_FILES)
    with pytest.raises(MetalearnError, match=r"mandarin_affective option types=.*: expected all, or type folder"):
        load_corpus("mandarin_affective", root, options={"types": types})


# ---------------------------------------------------------------- CREMA-D

CREMAD_NAMES = ["1001_DFA_ANG_XX.wav", "1001_IEO_HAP_HI.wav", "1001_IEO_SAD_LO.wav",
                "1002_TSI_NEU_XX.wav", "1002_WSI_FEA_MD.wav", "1091_ITH_DIS_XX.wav"]


def test_cremad_layout(tmp_path: Path) -> None:
    root = cremad_tree(tmp_path, CREMAD_NAMES, {"1001": "Male", "1002": "Female", "1091": "Female"})
    write_junk(root / "AudioWAV")
    result = load_corpus("cremad", root)
    rows = by_id(result)
    assert len(rows) == 6 and len(result.problems) == 0
    assert Counter(u.speaker for u in rows.values()) == {"1001": 3, "1002": 2, "1091": 1}
    genders = {u.speaker: u.gender for u in rows.values()}
    assert genders == {"1001": "male", "1002": "female", "1091": "female"}
    u = rows["1001_DFA_ANG_XX"]
    assert (u.raw_label, u.emotion, u.text, u.split) == ("ANG", "angry", "Don't forget a jacket", "")
    assert (rows["1002_WSI_FEA_MD"].emotion, rows["1002_WSI_FEA_MD"].text) == (
        "fear", "We'll stop in a couple of minutes")
    assert rows["1091_ITH_DIS_XX"].text == "I think I have a doctor's appointment"
    assert [rows[n[:-4]].emotion for n in CREMAD_NAMES] == [
        "angry", "happy", "sad", "neutral", "fear", "disgust"]


def test_cremad_missing_demographics_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = cremad_tree(tmp_path, CREMAD_NAMES[:3] + ["1050_XXX_NEU_XX.wav"], demographics=None)
    with caplog.at_level(logging.WARNING):
        result = load_corpus("cremad", root)
    assert {u.gender for u in result.utterances} == {"unknown"}
    warnings = [r for r in caplog.records if "VideoDemographics.csv" in r.getMessage()]
    assert len(warnings) == 1
    assert by_id(result)["1050_XXX_NEU_XX"].text == ""  # unknown sentence code


def test_cremad_actor_missing_from_csv_and_root_at_audiowav(tmp_path: Path) -> None:
    root = cremad_tree(tmp_path, ["1003_IWW_ANG_HI.wav", "1004_IWW_ANG_HI.wav"], {"1003": "Female"})
    rows = by_id(load_corpus("cremad", root / "AudioWAV"))
    assert rows["1003_IWW_ANG_HI"].gender == "female" and rows["1004_IWW_ANG_HI"].gender == "unknown"


def test_cremad_unparseable_and_unknown_label_are_problems(tmp_path: Path) -> None:
    root = cremad_tree(tmp_path, CREMAD_NAMES[:2] + ["1001_DFA_ANG.wav", "actor_DFA_ANG_XX.wav",
                                                     "1001_DFA_BOR_XX.wav"], {"1001": "Male"})
    result = load_corpus("cremad", root)
    assert sorted(by_id(result)) == ["1001_DFA_ANG_XX", "1001_IEO_HAP_HI"]
    reasons = {Path(p.path).name: p.reason for p in result.problems.problems}
    assert set(reasons) == {"1001_DFA_ANG.wav", "actor_DFA_ANG_XX.wav", "1001_DFA_BOR_XX.wav"}
    assert "{actor}_{sentence}_{EMO}_{level}.wav" in reasons["1001_DFA_ANG.wav"]
    assert "{actor}_{sentence}_{EMO}_{level}.wav" in reasons["actor_DFA_ANG_XX.wav"]
    assert "BOR" in reasons["1001_DFA_BOR_XX.wav"]


# ---------------------------------------------------------------- RAVDESS

RAVDESS_SPEECH = ["03-01-01-01-01-01-01.wav", "03-01-02-02-02-01-01.wav", "03-01-05-02-01-02-01.wav",
                  "03-01-03-01-02-01-02.wav", "03-01-04-02-01-01-02.wav",
                  "03-01-06-01-01-01-24.wav", "03-01-07-01-02-02-24.wav", "03-01-08-02-01-01-24.wav",
                  "03-01-05-01-01-01-11.wav"]
RAVDESS_SONG = ["03-02-03-01-01-01-01.wav", "03-02-04-02-02-01-24.wav"]


@pytest.mark.parametrize("wrapper", ["", "Audio_Speech_Actors_01-24"])
def test_ravdess_layout(tmp_path: Path, wrapper: str) -> None:
    root = ravdess_tree(tmp_path / wrapper, RAVDESS_SPEECH + RAVDESS_SONG, sr=48_000)
    write_junk(root / "Actor_01")
    result = load_corpus("ravdess", tmp_path)
    rows = by_id(result)
    assert len(rows) == 9 and len(result.problems) == 0
    assert result.excluded == {"song (vocal channel 02)": 2}
    assert Counter(u.speaker for u in rows.values()) == {"Actor_01": 3, "Actor_02": 2, "Actor_24": 3,
                                                         "Actor_11": 1}
    assert {u.speaker: u.gender for u in rows.values()} == {
        "Actor_01": "male", "Actor_02": "female", "Actor_24": "female", "Actor_11": "male"}
    assert [rows[n[:-4]].raw_label for n in RAVDESS_SPEECH] == [
        "01", "02", "05", "03", "04", "06", "07", "08", "05"]
    assert [rows[n[:-4]].emotion for n in RAVDESS_SPEECH] == [
        "neutral", "calm", "angry", "happy", "sad", "fear", "disgust", "surprise", "angry"]
    assert rows["03-01-01-01-01-01-01"].text == "Kids are talking by the door"
    assert rows["03-01-02-02-02-01-01"].text == "Dogs are sitting by the door"
    assert {u.sample_rate for u in rows.values()} == {48_000}
    assert {u.split for u in rows.values()} == {""}


def test_ravdess_stereo_48k_and_bad_names(tmp_path: Path) -> None:
    ravdess_tree(tmp_path, RAVDESS_SPEECH[:2])
    write_wav(tmp_path / "Actor_03" / "03-01-05-01-01-01-03.wav", sr=48_000, channels=2, seconds=0.25)
    for bad in ("03-01-05-01-01-01.wav", "03-01-xx-01-01-01-03.wav", "03-01-5-01-01-01-03.wav"):
        write_wav(tmp_path / "Actor_03" / bad)
    result = load_corpus("ravdess", tmp_path)
    rows = by_id(result)
    assert sorted(rows) == ["03-01-01-01-01-01-01", "03-01-02-02-02-01-01", "03-01-05-01-01-01-03"]
    stereo = rows["03-01-05-01-01-01-03"]
    assert (stereo.sample_rate, stereo.speaker, stereo.gender) == (48_000, "Actor_03", "male")
    assert abs(stereo.duration_s - 0.25) < 1e-3
    reasons = [p.reason for p in result.problems.problems]
    assert len(reasons) == 3 and all("MM-VV-EE-II-SS-RR-AA.wav" in r for r in reasons)


def test_ravdess_unknown_emotion_code_is_a_problem(tmp_path: Path) -> None:
    ravdess_tree(tmp_path, ["03-01-01-01-01-01-05.wav", "03-01-09-01-01-01-05.wav"])
    result = load_corpus("ravdess", tmp_path)
    assert [u.utterance_id for u in result.utterances] == ["03-01-01-01-01-01-05"]
    assert len(result.problems) == 1 and "'09'" in result.problems.problems[0].reason


# ---------------------------------------------------------------- CLI, one per corpus

def _run_manifest(corpus: str, root: Path, out: Path, capsys: pytest.CaptureFixture) -> tuple[list, str]:
    assert main(["manifest", "--corpus", corpus, "--root", str(root), "--out", str(out)]) == 0
    header = out.read_text(encoding="utf-8").splitlines()[0]
    assert tuple(header.split(",")) == COLUMNS
    return read_manifest(out), capsys.readouterr().out


def test_cli_manifest_mandarin(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = mandarin_tree(tmp_path / "corpus", MANDARIN_FILES)
    rows, out = _run_manifest("mandarin_affective", root, tmp_path / "m.csv", capsys)
    assert len(rows) == 9 and {u.corpus for u in rows} == {"mandarin_affective"}
    assert "mandarin_affective: 9 utterances, 2 speakers" in out
    assert any(line.split()[:1] == ["F01"] and line.split()[-1] == "6" for line in out.splitlines())


def test_cli_manifest_cremad(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = cremad_tree(tmp_path / "CREMA-D", CREMAD_NAMES, {"1001": "Male", "1002": "Female"})
    rows, out = _run_manifest("cremad", root, tmp_path / "out" / "cremad.csv", capsys)
    assert len(rows) == 6 and rows[0].text and {u.corpus for u in rows} == {"cremad"}
    assert "cremad: 6 utterances, 3 speakers" in out and "skipped: 0 problems" in out
    assert any(line.split()[:1] == ["1001"] and line.split()[-1] == "3" for line in out.splitlines())


def test_cli_manifest_ravdess(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = ravdess_tree(tmp_path / "ravdess", RAVDESS_SPEECH + RAVDESS_SONG)
    rows, out = _run_manifest("ravdess", root, tmp_path / "ravdess.csv", capsys)
    assert len(rows) == 9 and {u.sample_rate for u in rows} == {48_000}
    assert "ravdess: 9 utterances, 4 speakers" in out
    assert "excluded: 2 x song (vocal channel 02)" in out
    assert any(line.split()[:1] == ["Actor_24"] and line.split()[-1] == "3" for line in out.splitlines())
