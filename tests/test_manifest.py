"""The manifest contract: columns, round trip, validation, count tables; the emotion maps."""

from __future__ import annotations

import dataclasses

import pytest

from metalearn.data.emotions import CANONICAL, LABEL_MAPS, UnknownLabel, canonical_emotion
from metalearn.data.manifest import COLUMNS, Utterance, count_table, read_manifest, write_manifest
from metalearn.util.errors import MetalearnError


def _utt(i: int, speaker: str = "s1", emotion: str = "happy", gender: str = "female") -> Utterance:
    return Utterance(f"u{i}", f"/x/u{i}.wav", "esd", speaker, gender, emotion, "Happy", "train",
                     1.25, 16000, "a, \"quoted\" text")


def test_columns_are_the_contract():
    assert COLUMNS == ("utterance_id", "path", "corpus", "speaker", "gender", "emotion", "raw_label",
                       "split", "duration_s", "sample_rate", "text")


def test_round_trip(tmp_path):
    rows = [_utt(0), _utt(1, "s2", "sad", "male")]
    out = write_manifest(rows, tmp_path / "sub" / "m.csv")
    assert read_manifest(out) == rows
    assert not list(tmp_path.glob("**/*.tmp"))


def test_invalid_rows_are_rejected():
    with pytest.raises(ValueError, match="canonical"):
        _utt(0, emotion="joy")
    with pytest.raises(ValueError, match="gender"):
        _utt(0, gender="f")


def test_read_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(MetalearnError, match="does not exist"):
        read_manifest(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("utterance_id,path\nu0,/x.wav\n")
    with pytest.raises(MetalearnError, match=r"bad.csv: missing columns \['corpus'"):
        read_manifest(bad)
    rows = write_manifest([_utt(0)], tmp_path / "m.csv").read_text().replace("happy", "joy")
    (tmp_path / "m2.csv").write_text(rows)
    with pytest.raises(MetalearnError, match="m2.csv, line 2"):
        read_manifest(tmp_path / "m2.csv")


def test_count_table_totals():
    rows = [_utt(0), _utt(1), _utt(2, "s2", "sad")]
    table = count_table(rows).splitlines()
    assert table[0].split() == ["speaker", "happy", "sad", "total"]
    assert table[1].split() == ["s1", "2", "0", "2"]
    assert table[-1].split() == ["total", "2", "1", "3"]
    assert count_table(rows, "gender", "emotion").splitlines()[1].split()[0] == "female"


def test_every_label_maps_to_a_canonical_emotion_or_none():
    for corpus, table in LABEL_MAPS.items():
        for raw, emotion in table.items():
            assert emotion is None or emotion in CANONICAL, (corpus, raw)


def test_canonical_mapping_examples():
    assert canonical_emotion("iemocap", "exc") == "happy"
    assert canonical_emotion("iemocap", "xxx") is None
    assert canonical_emotion("esd", "惊喜") == "surprise"
    assert canonical_emotion("ravdess", "02") == "calm"
    with pytest.raises(UnknownLabel, match="unknown cremad label 'XYZ'"):
        canonical_emotion("cremad", "XYZ")


def test_utterance_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _utt(0).speaker = "other"  # type: ignore[misc]


def test_write_manifest_into_a_file_is_one_line(tmp_path):
    from metalearn.data.manifest import write_manifest
    from metalearn.util.errors import MetalearnError

    (tmp_path / "afile").write_text("x")
    with pytest.raises(MetalearnError, match="manifest folder .*afile is a file; expected a folder"):
        write_manifest([], tmp_path / "afile" / "m.csv")
