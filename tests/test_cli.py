"""CLI errors are one line on stderr with exit code 2; a bad file among good ones is skipped and listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalearn.cli import main
from metalearn.data.corpora import CORPORA
from metalearn.data.manifest import read_manifest
from tests.fixtures import cremad_tree, ravdess_tree, write_nan_wav

GOOD = ["03-01-01-01-01-01-01.wav", "03-01-05-02-01-01-01.wav", "03-01-04-01-02-01-02.wav"]
BAD = "03-01-03-01-01-01-02.wav"


def manifest(*extra: str, root: Path, out: Path, corpus: str = "ravdess") -> int:
    return main(["manifest", "--corpus", corpus, "--root", str(root), "--out", str(out), *extra])


def one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: ")
    return err


def test_unknown_corpus_lists_valid_names(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert manifest(corpus="timit", root=tmp_path, out=tmp_path / "m.csv") == 2
    err = one_line_error(capsys)
    assert "timit" in err and all(name in err for name in CORPORA)


def test_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert manifest(root=tmp_path / "nowhere", out=tmp_path / "m.csv") == 2
    assert "nowhere" in one_line_error(capsys)
    assert not (tmp_path / "m.csv").exists()


def test_empty_root_has_no_usable_utterances(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "ravdess").mkdir()
    (tmp_path / "ravdess" / "README.txt").write_text("nothing here\n")
    assert manifest(root=tmp_path / "ravdess", out=tmp_path / "m.csv") == 2
    assert "no usable ravdess utterances" in one_line_error(capsys)


def test_unknown_class(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = ravdess_tree(tmp_path / "ravdess", GOOD)
    assert manifest("--classes", "angry,joy", root=root, out=tmp_path / "m.csv") == 2
    assert "joy" in one_line_error(capsys)


def test_classes_filter_counts_excluded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = ravdess_tree(tmp_path / "ravdess", GOOD)
    assert manifest("--classes", "angry,sad", root=root, out=tmp_path / "m.csv") == 0
    assert sorted(u.emotion for u in read_manifest(tmp_path / "m.csv")) == ["angry", "sad"]
    assert "excluded: 1 x emotion neutral (not in classes)" in capsys.readouterr().out


def test_bad_file_is_skipped_and_listed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = ravdess_tree(tmp_path / "ravdess", GOOD)
    bad = write_nan_wav(root / "Actor_02" / BAD)
    out = tmp_path / "out" / "ravdess.csv"
    assert manifest(root=root, out=out) == 0
    assert len(read_manifest(out)) == 3
    problems = (tmp_path / "out" / "ravdess.problems.tsv").read_text(encoding="utf-8").splitlines()
    assert problems[0] == "path\treason" and len(problems) == 2
    assert problems[1].startswith(f"{bad}\tnon-finite")
    printed = capsys.readouterr().out
    assert "skipped: 1 problem: 1 non-finite samples" in printed
    assert "ravdess.problems.tsv" in printed


def test_strict_stops_at_the_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = cremad_tree(tmp_path / "cremad", ["1001_DFA_ANG_XX.wav", "1002_DFA_SAD_XX.wav"],
                       {"1001": "Male", "1002": "Female"})
    write_nan_wav(root / "AudioWAV" / "1001_IEO_NEU_XX.wav")
    out = tmp_path / "m.csv"
    assert manifest("--strict", corpus="cremad", root=root, out=out) == 2
    err = one_line_error(capsys)
    assert "1001_IEO_NEU_XX.wav" in err and "non-finite" in err
    assert not out.exists()
