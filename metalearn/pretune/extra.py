"""Variants named in a config (``pretune.extra: {name: folder or hub id}``), run beside the trained ones.

The source is a folder written by ``export-variant`` (a transformers folder with ``metalearn.json``), a plain
transformers speech encoder folder (an untouched backbone), or the hub id of either, fetched with
huggingface_hub's ``snapshot_download`` from the local cache first; a hub id not in the cache with
``HF_HUB_OFFLINE`` set, or with the Hub unreachable, is one line, without waiting on the network.

Each is verified (its ``config.json`` ``model_type`` is a speech backbone family; an export's ``metalearn.json``
has a known ``kind`` and the same ``model_type``; a CLAP export has its heads) and then written as an ordinary
variant folder ``{pretune.out}/extra/{name}/`` whose backbone source is the resolved folder (loaded through
``from_pretrained``, as ``backbone.source=FOLDER`` is) and whose ``weights`` is null, so every later stage
treats it as any variant. Its ``config.json`` records the source and the SHA-256 of the source's weight files;
a later run whose source no longer matches (another folder, new weights) is refused in one line.

An export carries ``sha256.json`` (:data:`MANIFEST`, written by export-variant): the SHA-256 and size of each of
its files. It is verified before anything is recorded: a file that differs (a flipped byte), is truncated or is
missing, or a weight file it does not list, is refused in one line naming the file, so a damaged file's hash never
becomes the reference. An export without a manifest (exported by a version that wrote none) is read unchecked,
so such exports stay usable.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from metalearn.features.backbone_args import FAMILIES
from metalearn.pretune.subsets import file_sha256, write_done
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import write_json
from metalearn.util.hub import check_reachable

log = logging.getLogger(__name__)
SIDECAR = "metalearn.json"          # written by export-variant (metalearn.pretune.export)
MANIFEST = "sha256.json"            # written by export-variant last: {"sha256": {file: hex}, "bytes": {file: n}}
KINDS = ("none", "supervised", "clap")
CLAP_HEADS = "clap_heads.safetensors"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_SKIP = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "tf_model*", "flax_model*", "rust_model*", "*.tflite"]


def extra_variants(extra: Mapping[str, str], out: str | Path, whisper_mode: str, taken: Iterable[str] = (),
                   timeout: float = 10.0) -> dict[str, Path]:
    """Name -> variant folder under ``out`` (made or checked) for each ``pretune.extra`` entry, in order.

    ``taken``: the run's other variant names (a clash is one line). ``whisper_mode``: the run's, for a plain
    Whisper folder (an export embeds in the mode its variant did).
    """
    taken = set(taken)
    folders = {}
    for name, spec in extra.items():
        key = f"pretune.extra.{name}"
        if not _NAME.match(name) or name in taken:
            raise MetalearnError(f"config key '{key}': the name must be new among the run's variants "
                                 f"({', '.join(sorted(taken))}) and made of letters, digits and . _ + -")
        source = resolve_source(str(spec), key, timeout)
        folders[name] = materialize(name, source, str(spec), Path(out) / name, whisper_mode, key)
    return folders


def resolve_source(spec: str, key: str, timeout: float = 10.0) -> Path:
    """An existing folder as is; else the hub id's snapshot folder (the local cache first, see the module doc)."""
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return folder.resolve()
    if not _HUB_ID.match(spec):
        raise MetalearnError(f"config key '{key}': {spec!r} is neither a folder nor a hub id (user/name)")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    try:
        return Path(snapshot_download(spec, local_files_only=True, ignore_patterns=_SKIP))
    except (OSError, HFValidationError, ValueError):
        pass  # not in the local cache
    if constants.HF_HUB_OFFLINE:
        raise MetalearnError(f"config key '{key}': {spec!r} is not a folder, and as a hub id it is not in the local "
                             f"Hugging Face cache while HF_HUB_OFFLINE is set (fetch it once with network)")

    check_reachable(constants.ENDPOINT, timeout, spec, action="download")
    try:
        return Path(snapshot_download(spec, ignore_patterns=_SKIP, etag_timeout=timeout))
    except (HfHubHTTPError, HFValidationError, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MetalearnError(f"config key '{key}': {spec!r} is not a folder, and downloading it as a hub id "
                             f"failed: {first}") from None


def source_config(source: Path, key: str, whisper_mode: str) -> dict:
    """The variant ``config.json`` for ``source`` (verified, see the module doc), without its name."""
    model = _read(source / "config.json", key)
    model_type = model.get("model_type")
    if model_type not in FAMILIES:
        raise MetalearnError(f"config key '{key}': {source} holds a {model_type!r} model, not a speech backbone "
                             f"({', '.join(FAMILIES)})")
    meta = _read(source / SIDECAR, key) if (source / SIDECAR).is_file() else None
    if meta is not None:
        verify_manifest(source, f"config key '{key}'")
    base, kind, mode = {}, "none", whisper_mode
    if meta is not None:
        kind, base = meta.get("kind"), meta.get("variant_config") or {}
        if meta.get("format") != 1 or kind not in KINDS or meta.get("model_type") != model_type:
            raise MetalearnError(f"config key '{key}': {source / SIDECAR} is not an export this version reads "
                                 f"(format {meta.get('format')!r}, kind {kind!r}, model_type "
                                 f"{meta.get('model_type')!r} against config.json's {model_type!r})")
        if kind == "clap" and not (source / CLAP_HEADS).is_file():
            raise MetalearnError(f"config key '{key}': {source} is a CLAP export without {CLAP_HEADS}")
        mode = meta.get("whisper_mode") or (meta.get("backbone") or {}).get("whisper_mode") or whisper_mode
    weights = sorted(p.name for p in source.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not [w for w in weights if w != CLAP_HEADS]:
        raise MetalearnError(f"config key '{key}': {source} has no model weights (*.safetensors or *.bin)")
    return {**base, "kind": kind, "weights": None,
            "backbone": {"family": model_type, "source": str(source), "whisper_mode": mode},
            "corpora": list(base.get("corpora") or []),
            "extra": {"folder": str(source), "sha256": {w: file_sha256(source / w) for w in weights}}}


def manifest(folder: Path) -> dict:
    """The :data:`MANIFEST` of ``folder``: the SHA-256 and size of each file under it (paths relative, with /)."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    return {"format": 1, "sha256": {name: file_sha256(folder / name) for name in files},
            "bytes": {name: (folder / name).stat().st_size for name in files}}


def write_manifest(folder: Path) -> None:
    """Write ``folder``'s :func:`manifest` into it (the export's last file)."""
    write_json(folder / MANIFEST, manifest(folder), indent=1)


def verify_manifest(folder: Path, who: str) -> None:
    """Check ``folder``'s files against its :data:`MANIFEST` (none: an export without one, read unchecked); a
    file that differs, is truncated or missing, or a weight file not listed is one line that starts with ``who``
    and names the file."""
    path = folder / MANIFEST
    if not path.is_file():
        log.info("%s has no %s (exported before manifests): its files are not checked", folder, MANIFEST)
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MetalearnError(f"{who}: {path} is unreadable ({type(e).__name__}); export the variant again") from None
    saved = saved if isinstance(saved, dict) else {}
    sums, sizes = saved.get("sha256"), saved.get("bytes")
    if saved.get("format") != 1 or not isinstance(sums, dict) or not isinstance(sizes, dict) or \
            any(not isinstance(n, str) or ".." in Path(n).parts or Path(n).is_absolute() for n in sums):
        raise MetalearnError(f"{who}: {path} is not a manifest this version reads (format 1, sha256 and bytes "
                             f"per file inside the folder); export the variant again")
    for name, want in sums.items():
        problem = file_problem(folder / name, want, sizes.get(name))
        if problem:
            raise MetalearnError(f"{who}: {folder / name} {problem}; export the variant again (or fetch it anew)")
    unlisted = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                      and p.name not in sums)
    if unlisted:
        raise MetalearnError(f"{who}: {folder / unlisted[0]} is not listed in {path.name} (not part of the export); "
                             f"remove it or export the variant again")


def file_problem(path: Path, sha256: str, size: int | None) -> str | None:
    """What is wrong with ``path`` against the SHA-256 and size :data:`MANIFEST` records: missing, truncated or
    other bytes (None: nothing)."""
    if not path.is_file():
        return f"is missing ({MANIFEST} lists it)"
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"is truncated or damaged: {actual} bytes where {MANIFEST} records {size}"
    got = file_sha256(path)
    return None if got == sha256 else f"is damaged: its SHA-256 is {got[:16]}…, {MANIFEST} records {str(sha256)[:16]}…"


def materialize(name: str, source: Path, spec: str, folder: Path, whisper_mode: str, key: str) -> Path:
    """Write (or check) the variant folder of one extra variant; returns it."""
    config = source_config(source, key, whisper_mode)
    config = {**config, "variant": name, "extra": {"spec": spec, **config["extra"]}}
    saved = folder / "config.json"
    if saved.is_file() and (folder / "done.json").is_file():
        old = _read(saved, key)
        if old == json.loads(json.dumps(config)):
            return folder
        what = "weights" if old.get("extra", {}).get("folder") == str(source) else "source"
        raise MetalearnError(f"config key '{key}': {folder} was made from another {what} "
                             f"({old.get('extra', {}).get('spec')!r} at {old.get('extra', {}).get('folder')}); "
                             f"delete {folder} to use {spec!r} under this name")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "done.json").unlink(missing_ok=True)
    heads = [CLAP_HEADS] if config["kind"] == "clap" else []
    for file in heads:
        shutil.copy2(source / file, folder / file)
    write_json(saved, config, indent=2)
    write_done(folder, name, heads)
    log.info("%s: extra variant from %s (%s, %s)", name, spec, config["kind"], source)
    return folder


def _read(path: Path, key: str) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MetalearnError(f"config key '{key}': {path} is unreadable ({type(e).__name__})") from None
    if not isinstance(value, dict):
        raise MetalearnError(f"config key '{key}': {path} is not a JSON object")
    return value
