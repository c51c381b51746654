"""EmoBox's split files (the real format: data/<dataset>/fold_<n>/<dataset>_{train,test}_fold_<n>.jsonl or .json)
imported as speaker folds, the folds.json exchange format, and the ``folds`` command (no audio, no models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metalearn.cli import main
from metalearn.data.manifest import Utterance, write_manifest
from metalearn.run.emobox import import_emobox, read_entries
from metalearn.run.folds_file import read_folds, write_folds
from metalearn.run.grid import Fold, three_way_folds
from metalearn.util.errors import MetalearnError

ESD_EMOTIONS = ("Neutral", "Angry", "Happy", "Sad", "Surprise")
ENGLISH = [f"00{i}" for i in range(11, 19)]          # 8 speakers in the manifest
MANDARIN = ["0001", "0002", "0003", "0004"]          # in EmoBox's files, not in the manifest


def _row(uid: str, path: str, corpus: str, speaker: str, emotion: str = "neutral") -> Utterance:
    return Utterance(uid, path, corpus, speaker, "female", emotion, emotion, "", 1.0, 16_000)


def _esd_rows() -> list[Utterance]:
    """10 utterances per English speaker (2 per emotion): ``{spk}_{idx:06d}``, as the ESD loader names them."""
    return [_row(f"{s}_{i:06d}", f"/corpora/ESD/{s}/{ESD_EMOTIONS[(i - 1) // 2]}/{s}_{i:06d}.wav", "esd", s)
            for s in ENGLISH for i in range(1, 11)]


def _esd_entry(spk: str, i: int) -> dict:
    """One line of EmoBox's esd jsonl, every field as EmoBox writes it (esd_test_fold_1.jsonl)."""
    emo = ESD_EMOTIONS[(i - 1) // 2]
    return {"key": f"esd-{spk}-{i:06d}", "dataset": "esd", "wav": f"downloads/esd/{spk}/{emo}/{spk}_{i:06d}.wav",
            "type": "raw", "sample_rate": 16000, "num_frame": 51776.0, "task": "category", "length": 3.236,
            "emo": emo, "channel": 1}


def write_split(folder: Path, dataset: str, n: int, split: str, entries: list[dict], fmt: str = "jsonl") -> Path:
    """``fold_<n>/<dataset>_<split>_fold_<n>.<fmt>`` as EmoBox writes it (jsonl lines, or one json object by key)."""
    path = folder / f"fold_{n}" / f"{dataset}_{split}_fold_{n}.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    else:
        keep = ("wav", "length", "emo", "dataset", "channel")
        path.write_text(json.dumps({e["key"]: {k: e[k] for k in keep} for e in entries}, indent=4), encoding="utf-8")
    return path


def esd_box(root: Path) -> Path:
    """EmoBox-style ESD: fold_1 tests 0005 0011 0016 0018 (as the real fold_1), fold_2 0012 0013 0014 0015,
    fold_3 only Mandarin speakers; every fold's train file holds the other speakers (10 utterances each)."""
    folder = root / "EmoBox" / "data" / "esd"
    tests = [["0005", "0011", "0016", "0018"], ["0012", "0013", "0014", "0015"], MANDARIN[:3]]
    everyone = sorted(ENGLISH + MANDARIN + ["0005"])
    for n, tested in enumerate(tests, start=1):
        for split, speakers in (("test", tested), ("train", [s for s in everyone if s not in tested])):
            write_split(folder, "esd", n, split, [_esd_entry(s, i) for s in speakers for i in range(1, 11)])
    return folder


def test_esd_folds_from_emobox(tmp_path: Path) -> None:
    folder = esd_box(tmp_path)
    rows = _esd_rows()
    result = import_emobox(folder, rows, validation=1, seed=0)
    assert [f.test for f in result.folds] == [("0011", "0016", "0018"), ("0012", "0013", "0014", "0015")]
    assert result.dropped == [3]  # EmoBox fold_3 tests only speakers the manifest does not have
    assert (result.entries, result.matched, len(result.unmatched)) == (130, 80, 50)  # 13 speakers x 10; 8 x 10
    assert result.unmatched[0] == "esd-0001-000001" and result.ambiguous == [] and result.outside == 0
    for f in result.folds:
        parts = [set(f.test), set(f.validation), set(f.meta_train)]
        assert len(f.validation) == 1 and set().union(*parts) == set(ENGLISH)
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    # the validation draw is three_way_folds' (fold position 0 has the same rng stream)
    (same,) = three_way_folds(ENGLISH, 1, 0, test=list(result.folds[0].test), validation=1)
    assert result.folds[0] == same
    assert import_emobox(folder, rows, validation=1, seed=0).folds == result.folds  # seeded
    two = import_emobox(folder, rows, validation=2, seed=0).folds
    assert [len(f.validation) for f in two] == [2, 2] and [f.test for f in two] == [f.test for f in result.folds]


def test_iemocap_speakers_come_from_the_manifest(tmp_path: Path) -> None:
    """EmoBox writes IEMOCAP keys with the stem kept and no speaker; its stm's spk (``Ses01F``) is the dialog's
    first segment, so ``Ses01F_impro04_M001`` is speaker Ses01M only by the manifest (the last-segment rule)."""
    folder = tmp_path / "iemocap"
    rows, entries = [], {}
    for session in (1, 2, 3):
        for i, who in enumerate("FMFM"):
            uid = f"Ses0{session}F_impro04_{who}{i:03d}"
            rows.append(_row(uid, f"/corpora/IEMOCAP/Session{session}/sentences/wav/Ses0{session}F_impro04/{uid}.wav",
                             "iemocap", f"Ses0{session}{who}"))
            entries.setdefault(session, []).append(
                {"key": f"iemocap-{uid}", "dataset": "iemocap", "type": "raw", "sample_rate": 16000,
                 "wav": f"downloads/iemocap/Session{session}/sentences/wav/Ses0{session}F_impro04/{uid}.wav",
                 "num_frame": 70312.0, "task": "category", "length": 4.3945, "emo": "neu", "channel": 1})
    rows.append(_row("Ses04F_script01_F000", "/corpora/IEMOCAP/Session4/x/Ses04F_script01_F000.wav", "iemocap",
                     "Ses04F"))  # not in EmoBox's 5531 (e.g. frustrated)
    for n in (1, 2, 3):
        write_split(folder, "iemocap", n, "test", entries[n], fmt="json")  # the .json files alone also read
        write_split(folder, "iemocap", n, "train", [e for s in (1, 2, 3) if s != n for e in entries[s]], fmt="json")
    result = import_emobox(folder, rows, validation=1, seed=3)
    assert [f.test for f in result.folds] == [("Ses01F", "Ses01M"), ("Ses02F", "Ses02M"), ("Ses03F", "Ses03M")]
    assert [len(f.meta_train) for f in result.folds] == [3, 3, 3]
    assert (result.entries, result.matched, len(result.unmatched), result.outside) == (12, 12, 0, 1)
    assert read_entries(folder / "fold_1" / "iemocap_test_fold_1.json")[0].key == "iemocap-Ses01F_impro04_F000"


def test_valid_file_names_the_validation_speakers(tmp_path: Path) -> None:
    folder = tmp_path / "esd"
    write_split(folder, "esd", 1, "test", [_esd_entry("0011", i) for i in range(1, 11)])
    write_split(folder, "esd", 1, "valid", [_esd_entry("0012", i) for i in range(1, 11)])
    write_split(folder, "esd", 1, "train", [_esd_entry(s, i) for s in ENGLISH[2:] for i in range(1, 11)])
    (fold,) = import_emobox(folder, _esd_rows(), validation=3).folds
    assert fold == Fold(0, ("0011",), ("0012",), tuple(ENGLISH[2:]))


def test_utterance_level_split_is_refused(tmp_path: Path) -> None:
    """CREMA-D's one EmoBox fold is a stratified 25% of utterances: its speakers are in both files."""
    folder = tmp_path / "cremad"
    names = [f"10{a:02d}_{s}_ANG_XX" for a in range(1, 5) for s in ("IEO", "TIE", "WSI", "DFA")]
    rows = [_row(n, f"/corpora/CREMA-D/AudioWAV/{n}.wav", "cremad", n[:4], "angry") for n in names]
    entry = [{"key": "cremad-" + n.replace("_", "-"), "dataset": "cremad", "wav": f"downloads/cremad/AudioWAV/{n}.wav",
              "type": "raw", "sample_rate": 16000, "num_frame": 36837.0, "task": "category", "length": 2.3,
              "emo": "ANG", "channel": 1} for n in names]
    write_split(folder, "cremad", 1, "test", entry[::4])
    write_split(folder, "cremad", 1, "train", [e for i, e in enumerate(entry) if i % 4])
    with pytest.raises(MetalearnError, match=r"EmoBox cremad fold_1 is not speaker-disjoint: 4 speakers "
                                             r"\(1001, 1002, 1003, \.\.\.\) are in both cremad_train_fold_1") as e:
        import_emobox(folder, rows)
    assert "\n" not in str(e.value)


def test_repeated_stems_match_by_their_folders(tmp_path: Path) -> None:
    """CASIA's files are 201.wav ... under each speaker's folder: the entry's path parts pick the row."""
    rows = [_row(f"{s}_{e}_{i}", f"/c/casia/{s}/{e}/{i}.wav", "casia", s)
            for s in ("liuchanhong", "wangzhe", "zhaozuoxiang") for e in ("angry", "happy") for i in (201, 202)]

    def entries(speakers: list[str]) -> list[dict]:
        return [{"key": f"casia-{i}-{s}-{e}", "dataset": "casia", "wav": f"downloads/casia/{s}/{e}/{i}.wav",
                 "emo": e} for s in speakers for e in ("angry", "happy") for i in (201, 202)]

    folder = tmp_path / "casia"
    write_split(folder, "casia", 1, "test", entries(["wangzhe"]))
    write_split(folder, "casia", 1, "train", entries(["liuchanhong", "zhaozuoxiang"]) + [
        {"key": "casia-999-nobody", "dataset": "casia", "wav": "downloads/casia/201.wav", "emo": "angry"}])
    result = import_emobox(folder, rows, validation=0)
    assert result.folds == [Fold(0, ("wangzhe",), (), ("liuchanhong", "zhaozuoxiang"))]
    assert (result.matched, result.ambiguous) == (12, ["casia-999-nobody"])  # 6 rows share its stem and 1 part


def test_bad_folders_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(MetalearnError, match="no fold_<n>/<dataset>_test_fold_<n>.jsonl"):
        import_emobox(tmp_path, _esd_rows())
    write_split(tmp_path / "x", "esd", 1, "test", [_esd_entry("0011", 1)])
    with pytest.raises(MetalearnError, match="fold_1 has no train file"):
        import_emobox(tmp_path / "x", _esd_rows())
    write_split(tmp_path / "y", "esd", 1, "test", [_esd_entry("0099", 1)])
    write_split(tmp_path / "y", "esd", 1, "train", [_esd_entry("0011", 1)])
    with pytest.raises(MetalearnError, match="no test utterance of any EmoBox fold matched"):
        import_emobox(tmp_path / "y", _esd_rows())
    (tmp_path / "y" / "fold_1" / "esd_train_fold_1.jsonl").write_text('{"key": "a"}\n')
    with pytest.raises(MetalearnError, match="not in EmoBox's format"):
        import_emobox(tmp_path / "y", _esd_rows())


def test_folds_file_round_trip_and_refusals(tmp_path: Path) -> None:
    folds = three_way_folds(ENGLISH, 2, 0, validation=1)
    path = write_folds(tmp_path / "folds.json", folds)
    assert read_folds(path, ENGLISH) == folds
    data = json.loads(path.read_text())
    assert list(data[0]) == ["fold", "test", "validation", "meta_train", "meta_train_sources"]
    cases = [
        ([{**data[0], "validation": data[0]["test"][:1]}], "in both 'test' and 'validation'"),
        ([data[1]], "field 'fold' is 1; expected 0"),
        ([{**data[0], "extra": 1}], "exactly fold, test, validation, meta_train"),
        ([{**data[0], "test": []}], "field 'test' is empty"),
        ([{**data[0], "meta_train_sources": {"iemocap": "Ses01F"}}], "must map a source corpus to a list"),
        ({"folds": data}, "expected a non-empty JSON list"),
    ]
    for bad, message in cases:
        path.write_text(json.dumps(bad))
        with pytest.raises(MetalearnError, match=message):
            read_folds(path, ENGLISH)
    path.write_text(json.dumps(data))
    with pytest.raises(MetalearnError, match=r"speakers \['0018'\] .*are not speakers of the target manifest"):
        read_folds(path, ENGLISH[:-1])
    with pytest.raises(MetalearnError, match="'speakers.folds_file': .* is not a file"):
        read_folds(tmp_path / "missing.json")


def test_folds_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = esd_box(tmp_path)
    manifest = write_manifest(_esd_rows(), tmp_path / "esd.csv")
    out = tmp_path / "folds.json"
    assert main(["folds", "--emobox", str(folder), "--manifest", str(manifest), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("EmoBox esd: 2 speaker folds; 130 utterances in its files, 80 matched to ")
    assert "50 unmatched (e.g. esd-0001-000001)" in lines[0] and "EmoBox folds [3] have no test speaker" in lines[0]
    assert "3/1/4 x1, 4/1/3 x1" in lines[1] and f"speakers.folds_file={out}" in lines[1]
    assert read_folds(out, ENGLISH) == import_emobox(folder, _esd_rows()).folds
    write_split(folder, "esd", 1, "train", [_esd_entry("0011", 9)])  # now fold_1 shares speaker 0011
    assert main(["folds", "--emobox", str(folder), "--manifest", str(manifest), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fold_1 is not speaker-disjoint" in err
