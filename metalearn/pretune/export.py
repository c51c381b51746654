"""Share a pretune variant: a transformers folder with a model card, and a push to the Hugging Face Hub.

``export_variant(VARIANT_DIR, OUT_DIR)`` writes the variant's speech encoder with ``save_pretrained``, so that
``AutoModel.from_pretrained(OUT_DIR)`` loads it (wav2vec2, WavLM, HuBERT, data2vec-audio: the encoder itself;
Whisper: the whole model, whose encoder is the variant's and whose decoder is the base model's), plus:

- ``README.md``: the model card (:mod:`metalearn.pretune.card`): base model, corpora and subset, recipe,
  dev and test scores (the variant's ``summary.json``), the commands that made it;
- ``metalearn.json``: the variant's ``config.json`` and ``summary.json``, the Whisper input mode, the command;
- ``sha256.json``: the SHA-256 and size of every other file, written last; ``pretune.extra`` verifies it
  (:func:`metalearn.pretune.extra.verify_manifest`) and so does a push;
- the variant's head files as they are (``heads.safetensors``: supervised emotion heads, with the z-score and
  mix weights of the feature they read under ``feature.*``;
  ``clap_heads.safetensors``: a CLAP variant's projections), and a feature extractor config.

The folder is also a metalearn backbone source: ``backbone.source=OUT_DIR`` (or the hub id it was pushed to)
embeds exactly as the variant did. The folder is written beside ``OUT_DIR`` and moved in at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from metalearn.features.backbones import BackboneConfig, SpeechBackbone
from metalearn.pretune.card import model_card
from metalearn.pretune.extra import verify_manifest, write_manifest
from metalearn.pretune.variant import PretuneVariant
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import make_folder, swap_in_folder
from metalearn.util.hub import check_reachable

SIDECAR = "metalearn.json"
HEAD_FILES = ("heads.safetensors", "clap_heads.safetensors")
# Files of a local Whisper base folder that describe its input and tokens (not its weights).
PROCESSOR_FILES = ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                   "merges.txt", "normalizer.json", "added_tokens.json", "special_tokens_map.json")


def export_variant(variant_dir: str | os.PathLike, out_dir: str | os.PathLike, command: str | None = None,
                   repo: str | None = None) -> Path:
    """Write the finished variant in ``variant_dir`` as a transformers folder ``out_dir`` (see the module doc).

    ``out_dir`` may be a new folder or an earlier export (replaced whole); any other non-empty folder is refused.
    ``command`` is recorded as the one that made the export; ``repo``: the Hub repo it will be pushed to, checked
    first. Every refusal (a bad repo id, a place that cannot be written) is one line, before anything is written.
    Returns ``out_dir``.
    """
    if repo is not None:
        check_repo_id(repo)
    out = check_target(Path(out_dir))
    variant = PretuneVariant.read(variant_dir)
    if not variant.done:
        raise MetalearnError(f"pretune variant {variant.folder} is not finished (no done.json); train it first")
    variant.verify()
    with _quiet_transformers():
        backbone = variant.load_backbone()
    try:
        _write_export(variant, backbone, out, command)
    except OSError as e:
        raise MetalearnError(f"cannot write the export {out} ({e.strerror or e}); expected a folder this user can "
                             f"write, with room for the model") from None
    return out


def check_target(out: Path) -> Path:
    """``out`` is a new folder or an earlier export, in a folder this user can write (created if missing)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / SIDECAR).is_file())):
        raise MetalearnError(f"{out} exists and is not an earlier export (no {SIDECAR}); choose a new folder")
    make_folder(out.parent, "export-variant OUT_DIR's folder")
    return out


def check_repo_id(repo: str) -> None:
    """A Hub model repo id (``user/name``) that the Hub would accept; else one line."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MetalearnError(f"--push-to-hub {repo!r} is not a Hub repo id ({first}); expected user/name") from None


def _write_export(variant: PretuneVariant, backbone: SpeechBackbone, out: Path, command: str | None) -> None:
    """The export of ``variant`` (its loaded ``backbone``), written beside ``out`` and moved in whole."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        with _quiet_transformers():
            model_type = _save_model(backbone, variant.backbone, tmp)
        for name in HEAD_FILES:
            if (variant.folder / name).is_file():
                shutil.copy2(variant.folder / name, tmp / name)
        summary = _read_json(variant.folder / "summary.json")
        meta = {"format": 1, "variant": variant.name, "kind": variant.kind, "model_type": model_type,
                "backbone": variant.config["backbone"], "whisper_mode": getattr(backbone, "mode", None),
                "variant_config": variant.config, "summary": summary, "exported_by": command,
                "exported": time.time()}
        (tmp / SIDECAR).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(model_card(meta), encoding="utf-8")
        write_manifest(tmp)
        tmp.chmod(0o755)
        swap_in_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No transformers progress bars (loading, writing shards) meanwhile: the CLI prints one line per step."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _save_model(backbone: SpeechBackbone, cfg: BackboneConfig, out: Path) -> str:
    """``backbone``'s weights as a transformers model in ``out``; returns its ``model_type``."""
    from metalearn.features.backbones.hf_ssl import SSLBackbone
    from metalearn.features.backbones.whisper import WhisperBackbone

    if isinstance(backbone, WhisperBackbone):
        return _save_whisper(backbone, cfg, out)
    if isinstance(backbone, SSLBackbone):
        from transformers import Wav2Vec2FeatureExtractor

        if len(backbone.model.encoder.layers) < backbone.model.config.num_hidden_layers:
            raise MetalearnError(f"backbone {backbone.name}: exporting an SSL encoder cut to its first {cfg.layers} "
                                 f"layers (backbone.layers) is not supported; export the variant of a whole one")

        backbone.model.save_pretrained(out)
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=backbone.sample_rate, padding_value=0.0,
                                 do_normalize=backbone.normalize,
                                 return_attention_mask=backbone.use_mask).save_pretrained(out)
        return backbone.model.config.model_type
    raise MetalearnError(f"backbone {backbone.name}: no transformers export for {type(backbone).__name__}")


def base_source(cfg: BackboneConfig) -> str:
    """Where ``cfg``'s weights come from: a local folder or a hub id (the installed Whisper: its imported folder)."""
    if cfg.source == "default" or cfg.source.startswith("installed:"):
        from metalearn.features.backbones.default import DEFAULT_WHISPER, installed_whisper_dir

        return str(installed_whisper_dir(cfg.source.partition(":")[2] or DEFAULT_WHISPER))
    return cfg.source


def _load_encoder(full: torch.nn.Module, encoder: torch.nn.Module) -> None:
    """``encoder``'s weights into the base model's ``full`` encoder; an encoder cut to its first n layers
    (``backbone.layers``) leaves the base's layers n.. and final norm, which it never changed, in place."""
    missing, unexpected = full.load_state_dict(encoder.state_dict(), strict=False)
    n = len(encoder.layers)
    kept = [k for k in missing if not (k.startswith("layer_norm.") or
                                       (k.startswith("layers.") and int(k.split(".")[1]) >= n))]
    if unexpected or kept:
        raise MetalearnError(f"cannot export the encoder into its base model: keys {sorted(unexpected + kept)[:3]} "
                             f"do not match")


def _save_whisper(backbone, cfg: BackboneConfig, out: Path) -> str:
    """The base Whisper model (tiny: seeded random) holding ``backbone``'s encoder, with its processor files."""
    from transformers import AutoConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperModel

    encoder = backbone.encoder
    if cfg.source == "tiny":
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model, folder = WhisperModel(encoder.config), None
    else:
        source = base_source(cfg)
        generates = "WhisperForConditionalGeneration" in (AutoConfig.from_pretrained(source).architectures or [])
        model = (WhisperForConditionalGeneration if generates else WhisperModel).from_pretrained(source)
        folder = Path(source) if Path(source).is_dir() else None
    _load_encoder(model.get_encoder(), encoder)
    model.save_pretrained(out)
    copied = [n for n in PROCESSOR_FILES if folder is not None and (folder / n).is_file()]
    for name in copied:
        shutil.copy2(folder / name, out / name)
    if "preprocessor_config.json" not in copied:
        WhisperFeatureExtractor(feature_size=encoder.config.num_mel_bins).save_pretrained(out)
    return "whisper"


def push_to_hub(folder: str | os.PathLike, repo: str, token: str | None = None, private: bool = False,
                timeout: float = 10.0) -> str:
    """Upload an exported ``folder`` to the Hub model repo ``repo`` (created when missing); returns its URL.

    Fails in one line (MetalearnError), within about ``timeout`` seconds, when ``HF_HUB_OFFLINE`` is set or
    the Hub cannot be reached, before any upload starts.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    check_repo_id(repo)
    folder = Path(folder)
    if not (folder / SIDECAR).is_file():
        raise MetalearnError(f"{folder} is not an exported variant (no {SIDECAR}); run export-variant first")
    verify_manifest(folder, f"cannot push {folder} to {repo}")
    if constants.HF_HUB_OFFLINE:
        raise MetalearnError(f"cannot push {folder} to {repo}: HF_HUB_OFFLINE is set (unset it to upload)")
    check_reachable(constants.ENDPOINT, timeout, repo)
    api = HfApi(endpoint=constants.ENDPOINT, token=token)
    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo, folder_path=folder, repo_type="model",
                          commit_message=f"metalearn export-variant {folder.name}")
    except (HfHubHTTPError, HFValidationError, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MetalearnError(f"push of {folder} to {repo} failed: {first}") from None
    return str(url)
