"""Damage is found, never used (issue 24, case 3): what the project promises about files that were edited or
damaged after it wrote them.

- A trial record carries the SHA-256 of its content: an edited digit or a torn line in ``trials.jsonl`` is one
  warning naming the file and line, the record is left out of every report, and a resumed run scores the
  trial again (the damaged line is moved aside once); a log written before the checksum existed reads as before.
- ``layers.json`` is checked against its own scores: a chosen layer that is not the best of them is one warning
  naming the file, the variant, the fold and both layers, and the layer is chosen again.
- An exported variant carries a manifest of its files' SHA-256 sums, which ``pretune.extra`` verifies: a flipped
  byte or a truncated file is one line naming the file, and no damaged hash is recorded as the reference;
  ``--push-to-hub`` with a bad repo id is refused before anything is written.

Every case runs on the tiny synthetic corpus with the tiny random Whisper (tests/conftest.py).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import pytest

from metalearn.configs.load import load_config
from metalearn.report.records import CHECKSUM, VOLATILE, read_trials
from metalearn.run.runner import run_experiment
from tests.conftest import overrides, tiny_corpora

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("damage")
    tiny_corpora(root / "data")
    return root


def run(base: Path, out: str, *extra: str):
    """A tiny run of SimpleShot (no meta-training) into ``base / out``."""
    return run_experiment(load_config(None, overrides(base, out, *extra, algorithms=("simpleshot",),
                                                      meta_train=False)))


def stable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


@pytest.fixture(scope="module")
def reference(base: Path):
    return run(base, "ref")


def copy_run(reference, folder: Path) -> Path:
    """A copy of the reference run's folder (its trial log and what a resumed run reads) at ``folder``."""
    import shutil

    shutil.copytree(reference.out, folder)
    return folder


def edit_line(log: Path, index: int, change) -> str:
    """Replace line ``index`` of ``log`` with ``change(line)``; returns the old line."""
    lines = log.read_text().splitlines(keepends=True)
    old = lines[index]
    lines[index] = change(old)
    log.write_text("".join(lines))
    return old


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


# -- trial records -------------------------------------------------------------------------------------------


def test_each_trial_record_carries_the_checksum_of_its_content(reference) -> None:
    from metalearn.report.records import checksum

    lines = [json.loads(x) for x in (reference.out / "trials.jsonl").read_text().splitlines()]
    assert lines and all(r[CHECKSUM] == checksum(r) for r in lines)
    assert all(CHECKSUM not in r for r in read_trials(reference.out))  # readers see the record fields only


def _edit_accuracy(line: str) -> str:
    """An edited digit: the accuracy changed, the checksum left as it was (still valid JSON)."""
    record = json.loads(line)
    record["accuracy"] = round(1.0 - record["accuracy"], 6) if record["accuracy"] != 0.5 else 0.25
    return json.dumps(record) + "\n"


@pytest.mark.parametrize(("damage", "expected"), [
    (_edit_accuracy, f"does not match its {CHECKSUM}"),
    (lambda line: line[: len(line) // 2] + "\n", "is not JSON"),  # a torn line in the middle of the log
])
def test_an_edited_or_torn_trial_record_is_reported_left_out_and_rescored(base: Path, reference, caplog, damage,
                                                                          expected: str) -> None:
    folder = copy_run(reference, base / f"damaged-{expected.split()[0]}")
    log = folder / "trials.jsonl"
    old = edit_line(log, 2, damage)
    gone = {k: v for k, v in json.loads(old).items() if k != CHECKSUM}
    with caplog.at_level(logging.WARNING):
        records = read_trials(folder)  # what report reads: the damaged record is never reported
    said = warnings_about(caplog, f"{log}:3: trial record {expected}")
    assert len(said) == 1 and "\n" not in said[0]
    assert gone not in records and len(records) == len(read_trials(reference.out)) - 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        resumed = run(base, folder.name)  # the resumed run scores that trial again, and says so once
    said = warnings_about(caplog, "trial record")
    assert len(said) == 1 and said[0].startswith(f"{log}:3: trial record {expected}")
    assert said[0].endswith("moved to trials.jsonl.damaged, the trial is scored again")
    assert resumed.complete and stable(read_trials(folder)) == stable(read_trials(reference.out))
    assert (folder / "trials.jsonl.damaged").read_text() == damage(old)


def test_a_trial_log_from_before_the_checksum_reads_as_before(base: Path, reference) -> None:
    folder = copy_run(reference, base / "unsealed")
    log = folder / "trials.jsonl"
    log.write_text("".join(json.dumps({k: v for k, v in json.loads(x).items() if k != CHECKSUM}) + "\n"
                           for x in log.read_text().splitlines()))
    assert CHECKSUM not in log.read_text()
    assert read_trials(folder) == read_trials(reference.out)


# -- layers.json ---------------------------------------------------------------------------------------------


def test_a_chosen_layer_that_is_not_the_best_of_its_own_scores_is_chosen_again(base: Path, caplog) -> None:
    from metalearn.data.corpus_config import prepare_manifest
    from metalearn.run.draw import build_episodes
    from metalearn.run.layer_choice import choose_layers
    from metalearn.run.runner import speaker_folds
    from metalearn.run.stages import prepare_variants

    cfg = load_config(None, overrides(base, "unused", "features.choose_layer=true", meta_train=False))
    rows = prepare_manifest(cfg.data.target, cfg.data.manifests_dir)
    speakers = sorted({u.speaker for u in rows})
    out = base / "layers"
    out.mkdir()
    episodes = {s: build_episodes(cfg, rows, speakers, s, out) for s in cfg.seeds}
    folds, variants = speaker_folds(cfg, speakers), prepare_variants(cfg)
    chosen = choose_layers(cfg, variants, rows, folds, episodes, out)
    path = out / "layers.json"
    entries = json.loads(path.read_text())
    edited = entries[1]
    right, wrong = edited["layer"], next(int(k) for k in edited["scores"] if int(k) != edited["layer"])
    path.write_text(json.dumps([*entries[:1], {**edited, "layer": wrong}, *entries[2:]], indent=1))
    with caplog.at_level(logging.WARNING):
        again = choose_layers(cfg, variants, rows, folds, episodes, out)
    said = warnings_about(caplog, "layers.json")
    assert said == [f"{path}: {edited['variant']} fold {edited['fold']} records layer {wrong}, but the best of its "
                    f"own recorded scores is layer {right} (ties: the later); choosing the layers of "
                    f"{edited['variant']} again"]
    assert again == chosen and json.loads(path.read_text()) == entries  # chosen again, and written back whole


# -- exported variants ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny Whisper variant folder (pft-alpha: test_export's 12 tones of two emotions, one step)."""
    import torch

    from metalearn.features.backbones import BackboneConfig
    from metalearn.pretune.subsets import Training, parse_subsets, run_variants
    from tests.test_export import RECIPE, _rows

    root = tmp_path_factory.mktemp("export")
    run_variants(_rows(root), parse_subsets("alpha", ["alpha"]), root / "trained",
                 Training(RECIPE, BackboneConfig(family="whisper", source="tiny"), torch.device("cpu")))
    return root / "trained" / "pft-alpha"


@pytest.fixture(scope="module")
def exported(trained: Path) -> Path:
    from metalearn.pretune.export import export_variant

    return export_variant(trained, trained.parent.parent / "exported")


def test_an_export_carries_the_sha256_of_every_file(exported: Path) -> None:
    from metalearn.pretune.extra import MANIFEST, source_config
    from metalearn.util.fileio import sha256_file

    saved = json.loads((exported / MANIFEST).read_text())
    files = sorted(p.name for p in exported.iterdir() if p.name != MANIFEST)
    assert "model.safetensors" in files and sorted(saved["sha256"]) == files
    assert all(saved["sha256"][n] == sha256_file(exported / n) for n in files)
    assert all(saved["bytes"][n] == (exported / n).stat().st_size for n in files)
    recorded = source_config(exported, "pretune.extra.shared", "window")["extra"]["sha256"]
    assert recorded["model.safetensors"] == saved["sha256"]["model.safetensors"]


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(("damage", "expected"), [
    (_flip_byte, "model.safetensors is damaged: its SHA-256 is "),
    (_truncate, "model.safetensors is truncated or damaged: "),
])
def test_a_damaged_export_is_refused_on_import_and_its_hash_never_recorded(exported: Path, tmp_path: Path, damage,
                                                                           expected: str) -> None:
    import shutil

    from metalearn.pretune.extra import extra_variants
    from metalearn.util.errors import MetalearnError

    copy = tmp_path / "exported"
    shutil.copytree(exported, copy)
    damage(copy / "model.safetensors")
    with pytest.raises(MetalearnError) as err:
        extra_variants({"shared": str(copy)}, tmp_path / "extra", "window")
    message = str(err.value)
    assert message.startswith(f"config key 'pretune.extra.shared': {copy / 'model.safetensors'}")
    assert expected in message and "sha256.json" in message and "\n" not in message
    assert not (tmp_path / "extra" / "shared" / "config.json").exists()  # no reference recorded from it


def test_push_to_hub_checks_the_repo_id_before_writing_the_export(trained: Path, tmp_path: Path, capsys) -> None:
    from metalearn.cli import main

    out = tmp_path / "out"
    assert main(["export-variant", str(trained), str(out), "--push-to-hub", "not a repo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --push-to-hub 'not a repo' is not a Hub repo id") and "\n" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing written, not even a temporary folder


# -- found by experiments/adversarial.py -----------------------------------------------------------------------


@pytest.mark.parametrize("damage", [_flip_byte, _truncate])
def test_a_damaged_checkpoint_of_a_finished_variant_is_not_done(trained: Path, tmp_path: Path, damage) -> None:
    """``pretune`` again over a finished variant verifies its checkpoints: damage is one line, never "skipped"."""
    import shutil

    import torch

    from metalearn.features.backbones import BackboneConfig
    from metalearn.pretune.subsets import Training, parse_subsets, run_variants
    from metalearn.util.errors import MetalearnError
    from tests.test_export import RECIPE, _rows

    root = trained.parent.parent
    copy = tmp_path / "trained"
    shutil.copytree(trained.parent, copy)
    again = functools.partial(run_variants, _rows(root), parse_subsets("alpha", ["alpha"]), copy,
                              Training(RECIPE, BackboneConfig(family="whisper", source="tiny"), torch.device("cpu")))
    assert again() == {"pft-alpha": "skipped (done)"}  # intact: skipped
    damage(copy / "pft-alpha" / "heads.safetensors")
    with pytest.raises(MetalearnError) as err:
        again()
    assert str(err.value).startswith(f"{copy / 'pft-alpha' / 'heads.safetensors'} is damaged")
    assert "\n" not in str(err.value)


def test_a_record_whose_numbers_are_not_numbers_is_left_out(base: Path, reference, caplog) -> None:
    from metalearn.report.records import checksum

    folder = copy_run(reference, base / "wrong-type")
    log = folder / "trials.jsonl"

    def wrong(line: str) -> str:
        record = {k: v for k, v in json.loads(line).items() if k != CHECKSUM}
        record["accuracy"] = "high"
        return json.dumps({**record, CHECKSUM: checksum(record)}) + "\n"

    edit_line(log, 1, wrong)
    with caplog.at_level(logging.WARNING):
        records = read_trials(folder)
    said = warnings_about(caplog, f"{log}:2: trial record has accuracy 'high', expected a number")
    assert len(said) == 1 and len(records) == len(read_trials(reference.out)) - 1


@pytest.mark.parametrize("damage", [b"\xff\xfe{\n", b"[1, 2]\n{}\n"])
def test_a_damaged_skip_log_is_one_line(base: Path, reference, damage: bytes) -> None:
    from metalearn.report.records import read_skips
    from metalearn.util.errors import MetalearnError

    folder = copy_run(reference, base / f"skips-{len(damage)}")
    (folder / "skipped.jsonl").write_bytes(damage)
    with pytest.raises(MetalearnError, match=r"skipped.jsonl:1: not a JSON skip record") as err:
        read_skips(folder)
    assert "\n" not in str(err.value)


def test_a_truncated_or_foreign_manifest_is_one_line(base: Path, reference, tmp_path: Path) -> None:
    import shutil

    from metalearn.data.corpus_config import CorpusConfig, prepare_manifest
    from metalearn.util.errors import MetalearnError

    shutil.copy(base / "manifests" / "esd.csv", tmp_path / "esd.csv")
    corpus = CorpusConfig(corpus="esd", root=str(base / "data" / "esd"))
    assert prepare_manifest(corpus, str(tmp_path))  # intact, from this root
    with pytest.raises(MetalearnError, match="written from another esd root") as err:
        prepare_manifest(CorpusConfig(corpus="esd", root="/elsewhere/esd"), str(tmp_path))
    assert "delete the manifest" in str(err.value)
    _truncate(tmp_path / "esd.csv")
    with pytest.raises(MetalearnError, match=r"esd.csv, line \d+: no value for .*truncated or damaged"):
        prepare_manifest(corpus, str(tmp_path))
