"""export-variant: a pretune variant round-trips through a transformers folder (same embeddings to 1e-6), its
model card states what made it, and a push to the Hub without network fails in one line, fast."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, WhisperModel

from metalearn.cli import main
from metalearn.data.manifest import Utterance
from metalearn.features.backbones import BackboneConfig, build_backbone
from metalearn.pretune.config import PretuneConfig
from metalearn.pretune.export import SIDECAR, export_variant, push_to_hub
from metalearn.pretune.subsets import Training, backbone_for_variant, parse_subsets, run_variants
from metalearn.util.errors import MetalearnError
from metalearn.util.hub import check_reachable
from tests.fixtures import write_wav

REPO = Path(__file__).resolve().parents[1]
RECIPE = PretuneConfig(lr=1e-3, batch_size=4, grad_accum=1, max_epochs=1, patience=1, max_seconds=0.5,
                       steps_per_epoch=1, eval_batch_size=8, num_workers=0, device="cpu", trainable_layers=1)


def _rows(root: Path) -> list[Utterance]:
    """12 tones of two emotions (alpha corpus, 3 speakers, no split)."""
    rng, rows = np.random.default_rng(0), []
    for i in range(12):
        emotion = ("neutral", "angry")[i % 2]
        t = np.arange(6000) / 16_000
        x = 0.3 * np.sin(2 * np.pi * (150.0 if emotion == "neutral" else 450.0) * t) + 0.02 * rng.standard_normal(6000)
        path = write_wav(root / "alpha" / f"a{i:02d}.wav", data=x.astype(np.float32))
        rows.append(Utterance(f"a{i:02d}", str(path), "alpha", f"s{i % 3}", "female", emotion, emotion, "", 0.375,
                              16_000))
    return rows


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """family -> a trained tiny variant folder (pft-alpha), for wav2vec2 and whisper."""
    root = tmp_path_factory.mktemp("export")
    rows = _rows(root)
    out = {}
    for family in ("wav2vec2", "whisper"):
        run_variants(rows, parse_subsets("alpha", ["alpha"]), root / family,
                     Training(RECIPE, BackboneConfig(family=family, source="tiny"), torch.device("cpu")))
        out[family] = root / family / "pft-alpha"
    return out


def _states(backbone: torch.nn.Module) -> torch.Tensor:
    """Every hidden state [L + 1, 2, F, D] of two fixed random clips (one padded)."""
    waves = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return backbone(waves, torch.tensor([8000, 5600])).hidden_states


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_round_trip_gives_the_same_embeddings(variants: dict[str, Path], family: str, tmp_path: Path) -> None:
    folder = export_variant(variants[family], tmp_path / "exported")
    original = _states(backbone_for_variant(variants[family]))
    untouched = _states(build_backbone(BackboneConfig(family=family, source="tiny")))
    assert (original - untouched).abs().max() > 1e-4  # the variant was trained: the test can tell them apart
    reloaded = _states(build_backbone(BackboneConfig(family=family, source=str(folder))))  # backbone.source=DIR
    assert reloaded.shape == original.shape and (reloaded - original).abs().max() <= 1e-6
    model = (AutoModel if family == "wav2vec2" else WhisperModel).from_pretrained(folder)
    assert model.config.model_type == family
    encoder = model if family == "wav2vec2" else model.get_encoder()
    mine = backbone_for_variant(variants[family])
    ref = mine.model if family == "wav2vec2" else mine.encoder
    state = encoder.state_dict()
    assert all(torch.equal(state[k], v) for k, v in ref.state_dict().items())
    assert (folder / "preprocessor_config.json").is_file() and (folder / "heads.safetensors").is_file()


def test_model_card_states_data_recipe_scores_and_commands(variants: dict[str, Path], tmp_path: Path) -> None:
    folder = export_variant(variants["wav2vec2"], tmp_path / "card", command="python -m metalearn export-variant A B")
    card = (folder / "README.md").read_text()
    summary = json.loads((variants["wav2vec2"] / "summary.json").read_text())
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "tiny randomly initialised wav2vec2" in card and "Corpora: alpha; subset `alpha`" in card
    assert "| lr | `0.001` |" in card and "| trainable_layers | `1` |" in card
    dev, test = summary["dev_accuracy"]["alpha"], summary["test_accuracy"]["alpha"]
    assert f"| alpha | {100 * dev:.1f} % | {100 * test:.1f} % |" in card
    assert "--subsets alpha --preset paper --backbone-family wav2vec2 --backbone-source tiny" in card
    assert "lr=0.001" in card and "trainable_layers=1" in card
    assert "Exported by: `python -m metalearn export-variant A B`" in card
    meta = json.loads((folder / SIDECAR).read_text())
    assert meta["summary"] == summary and meta["variant"] == "pft-alpha" and meta["kind"] == "supervised"


def test_refusals_are_one_line_and_reexport_replaces(variants: dict[str, Path], tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(MetalearnError, match="is not an earlier export"):
        export_variant(variants["whisper"], busy)
    assert (busy / "notes.txt").read_text() == "mine"
    with pytest.raises(MetalearnError, match="is not a pretune variant"):
        export_variant(tmp_path, tmp_path / "x")
    out = export_variant(variants["whisper"], tmp_path / "again")
    (out / "stale.bin").write_bytes(b"old")
    export_variant(variants["wav2vec2"], out)  # an earlier export is replaced whole
    assert not (out / "stale.bin").exists()
    assert json.loads((out / "config.json").read_text())["model_type"] == "wav2vec2"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_push_without_network_fails_in_one_line(variants: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    folder = export_variant(variants["whisper"], tmp_path / "push")
    with pytest.raises(MetalearnError, match="not an exported variant"):
        push_to_hub(tmp_path, "someone/model")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.perf_counter()
    with pytest.raises(MetalearnError, match="unreachable") as e:
        push_to_hub(folder, "someone/model", timeout=2.0)
    assert time.perf_counter() - start < 10 and "\n" not in str(e.value)
    with socket.socket() as silent:  # accepts connections (backlog) but never answers: the timeout must hold
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        start = time.perf_counter()
        with pytest.raises(MetalearnError, match="unreachable"):
            check_reachable(f"http://127.0.0.1:{silent.getsockname()[1]}", 1.0, "someone/model")
        assert time.perf_counter() - start < 5


def test_cli_push_offline_is_one_line(variants: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code = main(["export-variant", str(variants["whisper"]), str(tmp_path / "out"), "--push-to-hub", "someone/model"])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "HF_HUB_OFFLINE" in err
    assert "exported" in out and (tmp_path / "out" / "config.json").is_file()


@pytest.mark.slow
def test_cli_push_offline_subprocess_in_under_30_s(variants: dict[str, Path], tmp_path: Path) -> None:
    """A fresh process with HF_HUB_OFFLINE=1 in its environment: export, then one error line, in under 30 s
    (timed after the imports, which take as long as the machine's load makes them)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    timed = ("import sys, time; import metalearn.pretune.export; from metalearn.cli import main; "
             "t = time.perf_counter(); code = main(sys.argv[1:]); "
             "print(f'SECONDS {time.perf_counter() - t:.2f}'); sys.exit(code)")
    argv = [sys.executable, "-c", timed, "export-variant", str(variants["whisper"]), str(tmp_path / "out"),
            "--push-to-hub", "someone/model"]
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    seconds = float(done.stdout.split("SECONDS ")[1])
    assert done.returncode == 2 and seconds < 30, (done.returncode, seconds, done.stderr[-2000:])
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "HF_HUB_OFFLINE" in done.stderr
    assert "exported" in done.stdout and (tmp_path / "out" / "config.json").is_file()


def test_clap_variant_card_and_heads(tmp_path: Path) -> None:
    """A CLAP variant (frozen encoder: no backbone weights) exports its encoder, its projections and WA/UA."""
    from safetensors.torch import save_file

    folder = tmp_path / "clap-sl-alpha"
    folder.mkdir()
    config = {"variant": folder.name, "kind": "clap", "subset": ["alpha"], "corpora": ["alpha"], "weights": None,
              "backbone": {"family": "whisper", "source": "tiny", "whisper_mode": "trimmed"}, "audio_dim": 32,
              "clap": {"variant": "sl", "embed_dim": 8}, "stage": {"encoder": "frozen", "losses": ["sl"]},
              "classes": ["angry", "neutral"], "split_sizes": {"train": 8, "dev": 2, "test": 2}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "summary.json").write_text(json.dumps({"dev": {"wa": 0.5, "ua": 0.25, "n": 2},
                                                     "test": {"wa": 0.75, "ua": 0.625, "n": 2}}))
    (folder / "done.json").write_text(json.dumps({"variant": folder.name}))
    save_file({"audio.weight": torch.ones(8, 32)}, str(folder / "clap_heads.safetensors"))
    out = export_variant(folder, tmp_path / "out")
    card = (out / "README.md").read_text()
    assert "| dev | 50.0 % | 25.0 % | 2 |" in card and "| test | 75.0 % | 62.5 % | 2 |" in card
    assert "pretune.clap.losses=[sl]" in card and "pretune.clap.encoder=frozen" in card
    assert "clap_heads.safetensors" in card and (out / "clap_heads.safetensors").is_file()
    assert json.loads((out / SIDECAR).read_text())["kind"] == "clap"
    assert (_states(build_backbone(BackboneConfig(source=str(out))))
            - _states(build_backbone(BackboneConfig(family="whisper", source="tiny")))).abs().max() <= 1e-6


def test_card_names_a_hub_base_model() -> None:
    from metalearn.pretune.card import model_card

    meta = {"variant": "none", "kind": "none", "model_type": "wav2vec2", "summary": None, "whisper_mode": None,
            "variant_config": {"backbone": {"family": "wav2vec2", "source": "facebook/wav2vec2-base"}, "corpora": []}}
    card = model_card(meta)
    assert "\nbase_model: facebook/wav2vec2-base\n" in card and "from the Hugging Face Hub" in card
    assert "untouched wav2vec2 speech encoder" in card and "No training scores" in card


def test_a_failed_write_is_one_line_and_leaves_nothing(variants: dict[str, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("metalearn.pretune.export.swap_in_folder", full)
    with pytest.raises(MetalearnError, match=r"cannot write the export .*full \(No space left on device\)"):
        export_variant(variants["whisper"], tmp_path / "full")
    assert not [p for p in tmp_path.iterdir()]  # no temporary, no half export
    with pytest.raises(MetalearnError, match="is not a Hub repo id"):
        push_to_hub(tmp_path, "a/b/c")  # the id is checked before anything else


def test_a_variant_of_an_encoder_cut_to_its_first_layers_exports_into_the_whole_base(tmp_path: Path) -> None:
    """backbone.layers = 1: the export is the whole base model with the variant's layer 1 in it (states 0..1 as the
    variant's, the base's layer 2 and final norm untouched); an SSL encoder cut so is refused in one line."""
    rows = _rows(tmp_path)
    cut = BackboneConfig(source="tiny", layers=1)
    run_variants(rows, parse_subsets("alpha", ["alpha"]), tmp_path / "cut", Training(RECIPE, cut, torch.device("cpu")))
    variant = tmp_path / "cut" / "pft-alpha"
    folder = export_variant(variant, tmp_path / "exported")
    whole = build_backbone(BackboneConfig(source=str(folder)))
    base = build_backbone(BackboneConfig(source="tiny"))
    mine = _states(backbone_for_variant(variant))
    assert mine.shape[0] == 2 and whole.num_states == 3
    assert (_states(whole)[:2] - mine).abs().max() <= 1e-6
    assert (mine[1] - _states(base)[1]).abs().max() > 1e-4  # layer 1 was trained: the check can tell
    for name in ("layers.1.fc1.weight", "layer_norm.weight"):
        assert torch.equal(whole.encoder.state_dict()[name], base.encoder.state_dict()[name])
    ssl = BackboneConfig(family="wav2vec2", source="tiny", layers=1)
    run_variants(rows, parse_subsets("alpha", ["alpha"]), tmp_path / "ssl", Training(RECIPE, ssl, torch.device("cpu")))
    with pytest.raises(MetalearnError, match="cut to its first 1 layers .* not supported"):
        export_variant(tmp_path / "ssl" / "pft-alpha", tmp_path / "exported-ssl")
