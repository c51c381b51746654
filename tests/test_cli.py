"""CLI errors are one line on stderr with exit code 2; a bad file among good ones is skipped and listed;
building the parser and the manifest command import no heavy package (torch, transformers, scipy, ...)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
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


# --- fast start: building the parser and the manifest command import no heavy package ------------------------

HEAVY = {"torch", "transformers", "scipy", "matplotlib", "wandb"}
REPO = Path(__file__).resolve().parents[1]
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", re.M)


def run_metalearn(*argv: str) -> tuple[str, set[str]]:
    """stdout of ``python -X importtime -m metalearn *argv`` and the top-level packages it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "metalearn", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = {name.split(".")[0] for name in IMPORTED.findall(proc.stderr)}
    assert {"metalearn", "argparse"} <= imported  # the importtime lines were read
    return proc.stdout, imported


def test_help_and_manifest_import_nothing_heavy(tmp_path: Path) -> None:
    help_text, imported = run_metalearn("--help")
    assert "manifest" in help_text and not HEAVY & imported
    root = ravdess_tree(tmp_path / "ravdess", GOOD)
    out, imported = run_metalearn("manifest", "--corpus", "ravdess", "--root", str(root),
                                  "--out", str(tmp_path / "m.csv"))
    assert "ravdess: 3 utterances" in out and len(read_manifest(tmp_path / "m.csv")) == 3
    assert not HEAVY & imported


def test_every_command_help_imports_nothing_heavy() -> None:
    help_text, _ = run_metalearn("--help")
    commands = re.search(r"\{([\w,-]+)\}", help_text).group(1).split(",")
    assert {"manifest", "pretune", "embed", "run", "report", "episode"} <= set(commands)
    script = ("import contextlib, io, sys\n"
              "from metalearn.cli import build_parser\n"
              "for cmd in sys.argv[1:]:\n"
              "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
              "        build_parser().parse_args([cmd, '--help'])\n"
              "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n")
    proc = subprocess.run([sys.executable, "-c", script, *commands], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "metalearn" in proc.stdout.split() and not HEAVY & set(proc.stdout.split())


def test_print_config_imports_no_model_code() -> None:
    """Reading a config needs torch (the schema's tensors) but neither transformers (the backbones, imported on
    first use) nor scipy (the intervals): both cost seconds in every config-only command and CLI test."""
    out, imported = run_metalearn("run", "--config", "demo", "--print-config")
    assert "name: demo" in out and "torch" in imported
    assert not {"transformers", "scipy"} & imported


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings")
def test_process_settings_keep_freed_memory_for_the_next_step() -> None:
    """``process_settings`` (called by the CLI) makes glibc's malloc (torch's CPU allocator) serve multi-MiB
    blocks from its heap and keep them there once freed, for the next step to reuse without page faults.
    Three 16 MiB blocks (Reptile's [32, 256, 512] per-episode weights and Adam moments) get fresh mmapped
    pages by default, handed back on free; after the call they come from the heap and stay in it (mallinfo2).
    Fresh processes without the Makefile's MALLOC_* variables (which set the same from the start)."""
    script = ("import ctypes, sys\n"
              "from metalearn.cli import process_settings\n"
              "class Info(ctypes.Structure):\n"
              "    _fields_ = [(n, ctypes.c_size_t) for n in 'arena ordblks smblks hblks hblkhd usmblks fsmblks "
              "uordblks fordblks keepcost'.split()]\n"
              "libc = ctypes.CDLL(None)\n"
              "libc.mallinfo2.restype, libc.malloc.restype = Info, ctypes.c_void_p\n"
              "if sys.argv[1] == 'settings':\n"
              "    process_settings()\n"
              "before = libc.mallinfo2()\n"
              "blocks = [libc.malloc(16 << 20) for _ in range(3)]\n"
              "for b in blocks:\n"
              "    ctypes.memset(b, 1, 16 << 20)\n"
              "during = libc.mallinfo2()\n"
              "for b in blocks:\n"
              "    libc.free(ctypes.c_void_p(b))\n"
              "after = libc.mallinfo2()\n"
              "print((during.hblkhd - before.hblkhd) >> 20, (after.fordblks - before.fordblks) >> 20)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    steps = {}
    for mode in ("default", "settings"):
        proc = subprocess.run([sys.executable, "-c", script, mode], cwd=REPO, capture_output=True, text=True,
                              timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        steps[mode] = tuple(map(int, proc.stdout.split()[-2:]))  # (MiB mmapped while alive, MiB kept after)
    assert steps["default"][0] >= 48 and steps["default"][1] < 16, steps  # fresh pages, handed back
    assert steps["settings"][0] == 0 and steps["settings"][1] >= 40, steps  # from the heap, kept


def test_report_command_prints_the_table_and_the_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from metalearn.report.records import TrialLog
    from tests.test_report import make_records

    TrialLog(tmp_path / "trials.jsonl").extend(make_records(pretunes=("none",), algorithms=("maml",)))
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "none / maml" in out and "summary.md" in out and "per_speaker.png" in out
    assert main(["report", str(tmp_path / "absent")]) == 2
    assert "absent" in one_line_error(capsys)


def test_episode_command_reaches_its_handler(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["episode", "--manifest", str(tmp_path / "nowhere.csv")]) == 2
    assert "nowhere.csv" in one_line_error(capsys)
