"""The ``loso`` experiment kind on a tiny synthetic IEMOCAP tree: folds, resume after a kill, outputs, errors.

The corpus has two sessions (one female and one male actor each) whose classes are tones of their own
pitch; the backbone is the tiny random Whisper and the text tower the tiny BERT, so a fold takes a
fraction of a second. One frozen-encoder reference run is compared with interrupted and repeated runs.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from metalearn.cli import main
from metalearn.configs.load import load_config
from metalearn.data.manifest import Utterance
from metalearn.loso import runner as loso
from metalearn.loso.folds import dialogs_text, session, shared_sentences
from metalearn.loso.runner import RECORD_FIELDS, VOLATILE, LosoExperimentConfig, fold_key, run_loso_experiment
from metalearn.util.errors import MetalearnError
from metalearn.util.jsonl_log import JsonlLog
from tests.conftest import kill_and_resume, overrides
from tests.fixtures import write_wav

# label code -> tone (Hz); "exc" is merged into happy, "fru" is outside the 4 classes
TONES = {"neu": 220.0, "hap": 440.0, "exc": 460.0, "ang": 880.0, "sad": 1760.0, "fru": 330.0}
PER_LABEL = 3          # utterances per (session, gender, label code)
SESSIONS = (1, 2)
N_PER_SESSION = 2 * PER_LABEL * 5  # the 4-class utterances of one session (happy = hap + exc)


def iemocap_tree(root: Path) -> Path:
    """``Session{n}/sentences/wav/{dialog}/{utt}.wav`` and ``dialog/EmoEvaluation/{dialog}.txt`` per session."""
    rng = np.random.default_rng(0)
    for n in SESSIONS:
        dialog = f"Ses0{n}F_impro01"
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        i = 0
        for gender, pitch in (("F", 1.0), ("M", 0.8)):
            for code, freq in TONES.items():
                for _ in range(PER_LABEL):
                    utt = f"{dialog}_{gender}{i:03d}"
                    t = np.arange(int(0.3 * 16_000)) / 16_000
                    x = 0.3 * np.sin(2 * np.pi * freq * pitch * t) + 0.01 * rng.standard_normal(t.size)
                    write_wav(root / f"Session{n}" / "sentences" / "wav" / dialog / f"{utt}.wav",
                              data=x.astype(np.float32))
                    lines.append(f"[{3.0 * i:.4f} - {3.0 * i + 2.5:.4f}]\t{utt}\t{code}\t[2.5000, 3.0000, 3.5000]")
                    i += 1
        labels = root / f"Session{n}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        labels.parent.mkdir(parents=True, exist_ok=True)
        labels.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loso")
    iemocap_tree(root / "iemocap")
    return root


TINY = {"kind": "loso", "seeds": (0, 1)}  # the tiny run's options (tests/conftest.py)


def config(base: Path, out: str, *extra: str) -> LosoExperimentConfig:
    return load_config(None, overrides(base, out, *extra, **TINY), kind="loso")


def run(base: Path, out: str, *extra: str):
    return run_loso_experiment(config(base, out, *extra))


def stable(path: Path) -> list[dict]:
    """records.csv rows without the wall-time and run-name columns."""
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def reference(base: Path):
    return run(base, "ref")


def test_one_record_per_loss_session_and_seed(reference) -> None:
    out = reference.out
    assert reference.complete and reference.planned == reference.done == reference.ran == 3 * 2 * 2
    for name in ("config.yaml", "run.json", "records.jsonl", "records.csv", "table.md", "table.csv"):
        assert (out / name).is_file(), name
    assert json.loads((out / "run.json").read_text())["git_commit"]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    keys = [fold_key(r) for r in records]
    assert sorted(keys) == sorted((v, f"Ses0{s}", seed) for v in ("emo", "ml", "sl") for s in SESSIONS
                                  for seed in (0, 1))
    for r in records:
        assert r["n_test"] == N_PER_SESSION and r["n_train"] + r["n_dev"] == N_PER_SESSION  # 'fru' is dropped
        assert r["train_sessions"] == ({"Ses01", "Ses02"} - {r["session"]}).pop()
        assert 0 <= r["wa"] <= 1 and 0 <= r["ua"] <= 1 and r["best_step"] in (10, 20) and r["best_epoch"] is None
        assert r["encoder"] == "frozen" and set(r) == set(RECORD_FIELDS)
    # the manifest keeps every emotion; the task keeps the 4 classes
    manifest = (out.parent / "manifests" / "iemocap.csv").read_text()
    assert ",frustrated,fru," in manifest and ",happy,exc," in manifest


def test_table_has_the_papers_layout(reference) -> None:
    text = (reference.out / "table.md").read_text()
    assert text.startswith("# loso: GEmo-CLAP, IEMOCAP leave-one-session-out, 4 classes")
    assert "60 utterances (neutral 12, happy 24, angry 12, sad 12) of the improvised and scripted dialogs " \
           "(data.target.options.type=all); 0 of them say a sentence another session says too;" in text
    table = text.strip().split("\n\n")[-1].splitlines()
    assert table == reference.table.splitlines()
    assert table[0] == "| method | Ses01 WA | Ses01 UA | Ses02 WA | Ses02 UA | mean WA | mean UA | folds |"
    assert [line.split(" | ")[0] for line in table[2:]] == ["| Emo-CLAP", "| ML-GEmo-CLAP", "| SL-GEmo-CLAP"]
    for line in table[2:]:
        cells = line.strip("| ").split(" | ")
        assert all("± " in c and c.endswith("(n=2)") for c in cells[1:5])  # two seeds per session
        assert "± " in cells[5] and "± " in cells[6] and cells[7] == "2"
    with open(reference.out / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["loss"] for r in rows] == ["emo", "ml", "sl"]
    assert list(rows[0]) == ["method", "loss", "Ses01_wa", "Ses01_ua", "Ses02_wa", "Ses02_ua", "wa_mean",
                             "wa_ci95", "ua_mean", "ua_ci95", "folds", "seeds"]
    assert {r["folds"] for r in rows} == {"2"} and {r["seeds"] for r in rows} == {"2"}


def test_held_out_session_is_never_trained_or_selected_on(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def spy(rows, held_out, dev_fraction, seed):
        fold = real(rows, held_out, dev_fraction, seed)
        seen.append(({session(rows[i]) for i in (*fold.train, *fold.dev)}, {session(rows[i]) for i in fold.test},
                     held_out, set(fold.train) | set(fold.dev) | set(fold.test) == set(range(len(rows)))))
        return fold

    real = loso.loso_fold
    monkeypatch.setattr(loso, "loso_fold", spy)
    run(base, "spied", "seeds=[0]", "losses=[emo]", "workers=1")  # the folds in this process, where the spy is
    assert len(seen) == 2
    for trained, tested, held_out, covers in seen:
        assert held_out not in trained and tested == {held_out} and covers


def test_same_config_same_records(base: Path, reference) -> None:
    again = run(base, "again")
    assert stable(again.out / "records.csv") == stable(reference.out / "records.csv")
    assert again.table == reference.table


def test_resume_after_kill_gives_the_same_table_without_duplicates(base: Path, reference,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # killed between two folds (the 6th record is never logged), then in the middle of a write
    killed = kill_and_resume(lambda: run(base, "killed"), base / "killed" / "records.jsonl", JsonlLog, "append", 5,
                             monkeypatch)
    kept, resumed, lines = killed.kept, killed.resumed, killed.lines
    assert len(kept) == len(killed.calls) == 5
    assert resumed.complete and resumed.ran == reference.planned - 5
    assert len(lines) == reference.planned and len({fold_key(json.loads(x)) for x in lines}) == len(lines)
    assert stable(base / "killed" / "records.csv") == stable(reference.out / "records.csv")
    assert resumed.table == reference.table
    assert (base / "killed" / "table.csv").read_text() == (reference.out / "table.csv").read_text()
    assert run(base, "killed").ran == 0  # a finished protocol reruns nothing


def test_folder_of_another_config_is_refused(base: Path, reference) -> None:
    with pytest.raises(MetalearnError, match="another config .*'heads.steps': 20 in its config.yaml, 30 now"):
        run(base, "ref", "heads.steps=30")
    assert run(base, "ref", "tracking.project=elsewhere").ran == 0  # tracking settings do not change numbers


def test_conflicting_records_of_one_fold_are_refused(tmp_path: Path) -> None:
    record = {f: 0 for f in RECORD_FIELDS} | {"loss": "emo", "session": "Ses01", "wa": 0.5}
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps(record | {"wa": 0.6}) + "\n")
    with pytest.raises(MetalearnError, match=r"\('emo', 'Ses01', 0\) appears twice with different results"):
        JsonlLog(path, fold_key, RECORD_FIELDS, VOLATILE)
    path.write_text('{"loss": "emo"}\nnot json\n')
    with pytest.raises(MetalearnError, match=r"records.jsonl:1: record lacks field"):
        JsonlLog(path, fold_key, RECORD_FIELDS, VOLATILE)


@pytest.mark.parametrize(("extra", "expected"), [
    ("encoder=partial", "config key 'encoder': 'partial' is not one of frozen, finetune"),
    ("losses=[emo,xl]", "config key 'losses': ['emo', 'xl'], expected distinct CLAP losses"),
    ("losses=[]", "config key 'losses': []"),
    ("alphas.ml=1.5", "config key 'alphas.ml': 1.5, expected an emotion weight in [0, 1]"),
    ("data.target.corpus=esd", "config key 'data.target.corpus': 'esd', expected iemocap"),
    ("data.target.classes=[neutral]", "config key 'data.target.classes': ['neutral'], expected >= 2"),
    ("data.target.classes=[neutral,joy]", "unknown: ['joy']"),
    ("heads.dev_fraction=1.0", "clap heads dev_fraction must be in (0, 1)"),
    ("heads.seed=3", "config key 'heads.seed': 3; a loso experiment seeds every fold from 'seeds'"),
    ("train.seed=1", "config key 'train.seed': 1"),
    ("seeds=[0,0]", "config key 'seeds': [0, 0] must be distinct"),
    ("model.train_text=true", "config key 'model.train_text': the frozen encoder"),
    ("model.prompt=hello", "config key 'model': CLAP prompt 'hello'"),
    ("heads.steps=0", "clap heads steps must be > 0"),
    ("train.batch_size=1", "clap training batch_size must be >= 2"),
    ("encoderr=frozen", "config key 'encoderr' is not a valid key; closest valid keys: encoder"),
    ("episodes.ks=[1]", "config key 'episodes' is not a valid key"),
    ("data.target.options.type=impro", "config key 'data.target.options.type': 'impro', expected one of all, "
                                       "improvised, scripted"),
    ("data.target.options.dialogs=improvised", "config key 'data.target.options.dialogs': not an iemocap option"),
])
def test_bad_values_are_one_line_naming_the_key(base: Path, extra: str, expected: str) -> None:
    with pytest.raises(MetalearnError) as err:
        config(base, "bad", extra)
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("extra", "expected"), [
    (("data.target.root=/no/such/iemocap", "data.manifests_dir=/no/such/manifests"),
     "config key 'data.target.root': /no/such/iemocap is not a folder"),
    (("data.target.classes=[neutral,happy,angry,surprise]",),
     "config key 'data.target.classes': ['surprise'] have no utterance in"),
    (("encoder=finetune", "device=nonsense"), "config key 'device': device 'nonsense'"),
])
def test_run_refuses_before_any_fold(base: Path, extra: tuple[str, ...], expected: str) -> None:
    with pytest.raises(MetalearnError) as err:
        run(base, "refused", *extra)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert not (base / "refused" / "records.jsonl").exists()


def test_finetune_trains_the_encoder_per_fold_from_audio(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def spy(model, parts, classes, cfg, device, curve_path=None):
        seen.append(({session(u) for u in [*parts.train, *parts.dev]}, {session(u) for u in parts.test},
                     model.backbone))
        texts.append(model.text)
        return real(model, parts, classes, cfg, device, curve_path)

    real, texts = loso.train_clap, []
    monkeypatch.setattr(loso, "train_clap", spy)
    extra = ("encoder=finetune", "model.train_text=true", "losses=[emo,sl]", "seeds=[0]", "train.batch_size=4",
             "train.steps_per_epoch=2", "train.max_epochs=2", "train.patience=1", "train.max_seconds=0.3",
             "train.trainable_layers=1", "train.eval_batch_size=32")
    result = run(base, "finetune", *extra)
    assert result.complete and result.ran == 4
    assert all(not trained & tested and len(tested) == 1 for trained, tested, _ in seen)
    assert len({id(backbone) for *_, backbone in seen}) == 4  # a fresh backbone per fold (all still alive)
    assert len({id(text) for text in texts}) == 4  # and a fresh text tower, trained with it
    assert all(p.requires_grad for text in texts for p in text.parameters())
    records = [json.loads(line) for line in (result.out / "records.jsonl").read_text().splitlines()]
    assert [(r["loss"], r["session"]) for r in records] == [("emo", "Ses01"), ("emo", "Ses02"),
                                                               ("sl", "Ses01"), ("sl", "Ses02")]
    for r in records:
        assert r["encoder"] == "finetune" and r["best_epoch"] in (1, 2) and r["best_step"] is None
        assert r["n_test"] == N_PER_SESSION and 0 <= r["ua"] <= 1
        assert (result.out / "curves" / f"{r['loss']}-{r['session']}-seed0.jsonl").is_file()
    assert result.table.splitlines()[2].startswith("| Emo-CLAP |")
    assert run(base, "finetune", *extra).ran == 0


def test_cli_runs_a_loso_preset_and_refuses_shards(base: Path, reference, capsys: pytest.CaptureFixture) -> None:
    folder = base / "cli"
    shutil.copytree(reference.out, folder)
    preset = base / "loso.yaml"
    preset.write_text("kind: loso\nname: ref\n")
    assert main(["run", "--config", str(preset), *overrides(base, "cli", **TINY)]) == 0
    printed = capsys.readouterr().out
    assert reference.table in printed and "12/12 folds (0 run now" in printed and "table.md" in printed
    assert main(["run", "--config", str(preset), "--shard", "1/2", *overrides(base, "cli", **TINY)]) == 2
    err = capsys.readouterr().err
    assert "--shard/--prepare split a few-shot grid" in err and err.count("\n") == 1


def test_tracking_mirrors_the_table_to_wandb_offline(base: Path, reference) -> None:
    folder = base / "tracked"
    shutil.copytree(reference.out, folder)
    result = run(base, "tracked", "tracking.wandb=true", "tracking.mode=offline")
    assert result.ran == 0 and result.tracking_hint.startswith("W&B offline run saved in")
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert {"emo/wa_mean", "sl/ua_ci95", "ml/folds"} <= set(metrics[-1])


def test_shared_sentences_counts_the_scripts_said_in_another_session() -> None:
    def row(uid: str, text: str = "") -> Utterance:
        return Utterance(uid, f"/x/{uid}.wav", "iemocap", uid[:5] + uid.split("_")[-1][0], "female", "sad", "sad", "",
                         1.0, 16000, text)

    scripted = [row("Ses01F_script01_1_F000"), row("Ses01F_script01_2_M003"), row("Ses02M_script01_1_F001"),
                row("Ses02M_script02_1_F002")]
    improvised = [row("Ses01F_impro01_F000"), row("Ses02F_impro01_F000"), row("Ses01F_impro02_F001", "Yeah."),
                  row("Ses02F_impro02_M001", "yeah")]
    assert shared_sentences(scripted) == 3  # script01 in both sessions; script02 in one
    assert shared_sentences(improvised) == 2  # the same words count too, whatever the dialog
    assert shared_sentences(improvised[:2]) == 0
    assert dialogs_text({}, scripted).startswith("the improvised and scripted dialogs (data.target.options.type=all); "
                                                 "3 of them say a sentence another session says too (the scripts")
    assert dialogs_text({"type": "improvised"}, improvised[:2]) == (
        "the improvised dialogs only (data.target.options.type=improvised); 0 of them say a sentence another "
        "session says too")
