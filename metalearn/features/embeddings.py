"""Extract once, reuse everywhere: a content-keyed on-disk cache of utterance embeddings.

A cache folder is named by the hash of everything that changes the numbers except the files
themselves: the backbone's weights, its input mode, pooling, crop and sample rate. Inside it,
each finished batch is a shard (``NNNNNN.npy`` [n, L + 1, D] plus ``NNNNNN.json`` listing each
row's file identity: path, size and mtime, and the shard's SHA-256). A shard is written to a
temporary name and renamed, the JSON last, so a killed run leaves only whole shards behind and the
next run extracts just what is missing. A changed file has a new identity and is extracted again;
a truncated or corrupted shard fails its hash, is removed, and its rows are extracted again; a damaged
``meta.json`` (the key the folder is named by) empties that cache with a warning. Processes may fill one cache
at once: each claims its shard numbers exclusively, and every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from queue import Queue
from typing import ClassVar

import numpy as np
import torch

from metalearn.data.audio import TARGET_SR, AudioError, ProblemReport, load_audio
from metalearn.data.manifest import Utterance
from metalearn.features.backbones import BackboneOutput, SpeechBackbone, pad_batch
from metalearn.features.backbones.pooling import masked_mean
from metalearn.util.devices import autocast, resolve_device
from metalearn.util.fileio import atomic_path, make_folder, sha256_file, write_json
from metalearn.util.progress import progress
from metalearn.util.ranges import Rule, check_fields

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class EmbeddingConfig:
    """How to extract and where to cache.

    Attributes:
        cache_dir: root folder of all caches.
        batch_seconds: padded audio per batch (batch size x longest clip), the memory knob.
        max_batch: at most this many utterances per batch.
        max_seconds: crop every utterance to this duration (None keeps it whole).
        device: "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
        precision: "fp32", or "bf16"/"fp16" autocast on CUDA (ignored on CPU).
        storage: "float32" or "float16" on disk.
        prefetch: batches of audio read ahead by a background thread.
    """

    cache_dir: str = "cache/embeddings"
    batch_seconds: float = 160.0
    max_batch: int = 32
    max_seconds: float | None = None
    device: str = "auto"
    precision: str = "fp32"
    storage: str = "float32"
    prefetch: int = 2
    RANGES: ClassVar[dict[str, Rule]] = {"batch_seconds": "> 0", "max_batch": ">= 1", "max_seconds": "> 0",
                                         "precision": ("fp32", "bf16", "fp16"), "storage": ("float32", "float16"),
                                         "prefetch": ">= 0"}

    def __post_init__(self) -> None:
        check_fields(self, "embeddings")


@dataclasses.dataclass
class Embeddings:
    """Utterance embeddings aligned with manifest rows.

    Attributes:
        rows: the utterances that have an embedding (bad files are left out).
        values: [N, L + 1, D] float32, every hidden state mean-pooled over valid frames.
        problems: files that could not be read.
        stats: {"cached", "extracted", "batches", "shards_rebuilt"} counts of this call.
    """

    rows: list[Utterance]
    values: np.ndarray
    problems: ProblemReport
    stats: dict[str, int]


def weights_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(backbone: SpeechBackbone, cfg: EmbeddingConfig) -> dict:
    """Everything besides the files that changes the embeddings."""
    return {"format": FORMAT_VERSION, "backbone": type(backbone).__name__, "name": backbone.name,
            "weights": weights_fingerprint(backbone), "pooling": "mean", "layers": "all",
            "max_seconds": cfg.max_seconds, "sample_rate": TARGET_SR, "storage": cfg.storage}


def cache_store(backbone: SpeechBackbone, cfg: EmbeddingConfig) -> ShardStore:
    """The cache folder of ``backbone`` under ``cfg`` (named by the hash of its key)."""
    key = cache_key(backbone, cfg)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return ShardStore(make_folder(cfg.cache_dir, "embedding cache_dir") / digest, key)


def file_identity(path: str) -> str:
    """path|size|mtime_ns of a file: changes when the file is replaced or edited."""
    st = os.stat(path)
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


class ShardStore:
    """The shards of one cache folder: read and verify them, append new ones atomically."""

    def __init__(self, folder: Path, key: dict) -> None:
        """Open (create) the cache folder; a damaged ``meta.json`` empties the cache with a warning."""
        self.folder = make_folder(folder, "embedding cache folder")
        self.rebuilt = 0
        meta = folder / "meta.json"
        if not meta.exists():
            write_json(meta, key)
        elif (problem := meta_problem(meta, key)) is not None:
            removed = self.clear()
            log.warning("embedding cache %s: meta.json is damaged (%s); the cache is rebuilt (%d shards removed)",
                        folder, problem, removed)
            self.rebuilt += removed
            write_json(meta, key)

    def clear(self) -> int:
        """Remove every shard (array and index); the number of shards removed."""
        shards = {p.stem for pattern in ("[0-9]*.npy", "[0-9]*.json") for p in self.folder.glob(pattern)
                  if p.stem.isdigit()}
        for stem in shards:
            for suffix in (".json", ".npy"):  # the index first: it marks a shard complete
                (self.folder / f"{stem}{suffix}").unlink(missing_ok=True)
        return len(shards)

    def load(self) -> dict[str, np.ndarray]:
        """{file identity: embedding [L + 1, D]} from every valid shard; invalid shards are removed."""
        table: dict[str, np.ndarray] = {}
        for index_file in sorted(self.folder.glob("[0-9]*.json")):
            data_file = index_file.with_suffix(".npy")
            try:
                index = json.loads(index_file.read_text())
                if sha256_file(data_file) != index["sha256"]:
                    raise ValueError("checksum mismatch")
                values = np.load(data_file)
                if values.shape[0] != len(index["items"]):
                    raise ValueError("row count mismatch")
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("embedding cache shard %s is damaged (%s): removed, its rows are re-extracted",
                            data_file, e)
                index_file.unlink(missing_ok=True)
                data_file.unlink(missing_ok=True)
                self.rebuilt += 1
                continue
            table.update(zip(index["items"], values, strict=True))
        return table

    def append(self, items: Sequence[str], values: np.ndarray) -> None:
        """Write one shard: the array first, then its index (the index marks it complete)."""
        data_file = self._claim_shard()
        with atomic_path(data_file) as tmp, open(tmp, "wb") as f:
            np.save(f, values)
        index = {"items": list(items), "sha256": sha256_file(data_file), "shape": list(values.shape)}
        write_json(data_file.with_suffix(".json"), index, indent=None)

    def _claim_shard(self) -> Path:
        """Reserve the next free shard file (created empty, O_EXCL): processes filling one cache never share one.

        An empty claimed array with no index (a killed run's) is never read and never reused.
        """
        while True:
            taken = [int(p.stem) for pattern in ("[0-9]*.npy", "[0-9]*.json") for p in self.folder.glob(pattern)
                     if p.stem.isdigit()]
            data_file = self.folder / f"{max(taken, default=-1) + 1:06d}.npy"
            try:
                os.close(os.open(data_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                return data_file
            except FileExistsError:
                continue


def meta_problem(meta: Path, key: dict) -> str | None:
    """What is wrong with a cache's ``meta.json`` against the ``key`` its folder is named by (None: nothing)."""
    try:
        saved = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        return f"unreadable: {e}"
    except ValueError as e:
        return f"not JSON: {e}"
    if not isinstance(saved, dict):
        return f"a JSON {type(saved).__name__}, not an object"
    if set(saved) != set(key):
        return f"keys {sorted(saved)}, expected {sorted(key)}"
    wrong = next((k for k in sorted(key) if saved[k] != key[k]), None)
    return None if wrong is None else f"key {wrong!r} is {saved[wrong]!r}, expected {key[wrong]!r}"


def plan_batches(durations: Sequence[float], batch_seconds: float, max_batch: int) -> list[list[int]]:
    """Group indices by length (longest first) so a batch's padded audio stays under ``batch_seconds``."""
    order = sorted(range(len(durations)), key=lambda i: -durations[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < max_batch and \
                durations[batches[-1][0]] * (len(batches[-1]) + 1) <= batch_seconds:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def prefetch_audio(rows: Sequence[Utterance], batches: list[list[int]], max_seconds: float | None,
              depth: int) -> Iterator[tuple[list[int], list[torch.Tensor], list[tuple[int, str]]]]:
    """Yield (indices kept, waves, [(index, reason)] of bad files) per batch, read ahead in a thread."""
    queue: Queue = Queue(maxsize=max(depth, 1))

    def work() -> None:
        for batch in batches:
            kept, waves, bad = [], [], []
            for i in batch:
                try:
                    waves.append(torch.from_numpy(load_audio(rows[i].path, TARGET_SR, max_seconds)))
                    kept.append(i)
                except (AudioError, OSError) as e:
                    bad.append((i, str(e)))
            queue.put((kept, waves, bad))
        queue.put(None)

    threading.Thread(target=work, daemon=True).start()
    while (item := queue.get()) is not None:
        yield item


@torch.inference_mode()
def embed_batch(backbone: SpeechBackbone, waves: list[torch.Tensor], device: torch.device,
                precision: str = "fp32") -> np.ndarray:
    """Mean-pooled states of every layer for one batch: [B, L + 1, D] float32."""
    batch, lengths = pad_batch(waves)
    with autocast(device, precision):
        out = backbone(batch.to(device), lengths.to(device))
    return pooled_states(out)


def pooled_states(out: BackboneOutput) -> np.ndarray:
    """Every hidden state mean-pooled over valid frames: [B, L + 1, D] float32 on the CPU."""
    pooled = masked_mean(out.hidden_states.float(), out.lengths)  # [L + 1, B, D]
    return pooled.permute(1, 0, 2).cpu().numpy()


def extract(rows: Sequence[Utterance], backbone: SpeechBackbone, cfg: EmbeddingConfig,
            report: ProblemReport | None = None) -> Embeddings:
    """Embeddings of ``rows``: cached ones are read, the rest extracted in length-sorted batches."""
    report = report or ProblemReport()
    device = resolve_device(cfg.device)
    backbone = backbone.to(device).eval()
    store = cache_store(backbone, cfg)
    table = store.load()
    identities = [file_identity(u.path) if os.path.exists(u.path) else "" for u in rows]
    for u, ident in zip(rows, identities, strict=True):
        if not ident:
            report.add(u.path, "missing file")
    todo = [i for i, ident in enumerate(identities) if ident and ident not in table]
    durations = [min(rows[i].duration_s, cfg.max_seconds or np.inf) for i in todo]
    batches = [[todo[j] for j in b] for b in plan_batches(durations, cfg.batch_seconds, cfg.max_batch)]
    stats = {"cached": len(rows) - len(todo), "extracted": 0, "batches": 0}
    dtype = np.float16 if cfg.storage == "float16" else np.float32
    total = float(sum(durations))
    with progress(total, f"embeddings {backbone.name}", "s", disable=not todo,
                  bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]") as bar:
        for kept, waves, bad in prefetch_audio(rows, batches, cfg.max_seconds, cfg.prefetch):
            for i, reason in bad:
                report.add(rows[i].path, reason)
            if kept:
                values = embed_batch(backbone, waves, device, cfg.precision).astype(dtype)
                store.append([identities[i] for i in kept], values)
                table.update(zip((identities[i] for i in kept), values, strict=True))
                stats["extracted"] += len(kept)
                stats["batches"] += 1
            done = kept + [i for i, _ in bad]
            step = sum(min(rows[i].duration_s, cfg.max_seconds or np.inf) for i in done)
            bar.update(min(step, bar.total - bar.n))  # float sums in another order may overshoot
    stats["shards_rebuilt"] = store.rebuilt
    keep = [i for i, ident in enumerate(identities) if ident in table]
    values = np.stack([table[identities[i]] for i in keep]).astype(np.float32) if keep else \
        np.zeros((0, backbone.num_states, backbone.hidden_size), np.float32)
    return Embeddings([rows[i] for i in keep], values, report, stats)
