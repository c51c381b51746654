"""The stages a run needs before its trials, each skipped when its output exists (speechbrain's prepare).

Manifests from corpus roots, pretune variants from the source corpora, and per-variant features from
the embedding cache. Every stage checks its inputs first and fails with one line naming the config key.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from metalearn.clap.variant import ClapVariant, clap_variant_name, train_clap_variant
from metalearn.data.corpus_config import manifest_path, prepare_manifest
from metalearn.data.manifest import Utterance
from metalearn.features.table import FeatureTable
from metalearn.pretune.variant import PretuneVariant
from metalearn.run.config import ExperimentConfig
from metalearn.util.errors import MetalearnError

log = logging.getLogger(__name__)
VARIANT_CLASSES: dict[str, type[PretuneVariant]] = {"clap": ClapVariant}  # kind -> class (default: supervised)


def check_devices(cfg: ExperimentConfig) -> None:
    """Before any work: ``device`` and ``embeddings.device`` exist here (one line naming the key)."""
    from metalearn.util.devices import resolve_device

    for key, spec in (("device", cfg.device), ("embeddings.device", cfg.embeddings.device)):
        try:
            resolve_device(spec)
        except MetalearnError as e:
            raise MetalearnError(f"config key '{key}': {e}") from None


def check_roots(cfg: ExperimentConfig) -> None:
    """Before any work: every corpus whose manifest is missing needs an existing root; the devices exist."""
    check_devices(cfg)
    corpora = {"data.target": cfg.data.target, **{f"data.sources.{k}": c for k, c in cfg.data.sources.items()}}
    for key, corpus in corpora.items():
        if key != "data.target" and not _needs_sources(cfg):
            continue
        manifest = manifest_path(corpus, cfg.data.manifests_dir)
        if not manifest.is_file() and not (corpus.root and Path(corpus.root).is_dir()):
            raise MetalearnError(f"config key '{key}.root': {corpus.root} is not a folder (the {corpus.corpus} "
                                 f"corpus root; set {key}.root=/path/to/{corpus.corpus}, or {key}.manifest to "
                                 f"an existing manifest; {manifest} is not one)")


def _needs_sources(cfg: ExperimentConfig) -> bool:
    return any(s != "none" for s in cfg.pretune.subsets) or bool(cfg.pretune.clap.losses)


def prepare_variants(cfg: ExperimentConfig, train: bool = True) -> dict[str, PretuneVariant]:
    """Pretune variant name -> the typed variant, training the missing ones (when ``train``; else they are an error),
    then those ``pretune.extra`` names (exported variants or transformers folders, by folder or hub id)."""
    from metalearn.pretune.extra import extra_variants
    from metalearn.pretune.subsets import Training, ensure_variants, parse_subsets
    from metalearn.util.devices import resolve_device

    sources = [u for c in cfg.data.sources.values() for u in prepare_manifest(c, cfg.data.manifests_dir)] \
        if _needs_sources(cfg) else []
    corpora = sorted({u.corpus for u in sources})
    subsets = parse_subsets(",".join(cfg.pretune.subsets), corpora)
    out = Path(cfg.pretune.out)
    # the finished variants are checked against what this config would make (their fingerprint), the rest trained
    training = Training(cfg.pretune.recipe, cfg.backbone, resolve_device(cfg.pretune.recipe.device))
    names = ensure_variants(sources, subsets, out, training, train=train)
    folders = {**names, **_clap_variants(cfg, sources, corpora, out, train)}
    folders.update(extra_variants(cfg.pretune.extra, out / "extra", cfg.backbone.whisper_mode, folders))
    return {name: open_variant(folder) for name, folder in folders.items()}


def _clap_variants(cfg: ExperimentConfig, sources: list[Utterance], corpora: list[str], out: Path,
                   train: bool) -> dict[str, Path]:
    """CLAP variant name -> folder (one per loss of ``pretune.clap``), training the missing ones."""
    stage = cfg.pretune.clap
    if not stage.losses:
        return {}
    chosen = corpora if stage.corpora == "all" else sorted(set(stage.corpora.split("+")))
    unknown = sorted(set(chosen) - set(corpora))
    if unknown or not chosen:
        raise MetalearnError(f"config key 'pretune.clap.corpora': {stage.corpora!r} names corpora {unknown} that are "
                             f"not among data.sources ({', '.join(corpora) or 'none'}); use all or A+B")
    names = {clap_variant_name(loss, chosen): out / clap_variant_name(loss, chosen) for loss in stage.losses}
    for loss, (name, folder) in zip(stage.losses, names.items(), strict=True):
        if (folder / "done.json").is_file():
            continue
        if not train:
            raise MetalearnError(f"CLAP variant {name} is not trained in {out}: train it first, once "
                                 f"(python -m metalearn run --config ... --prepare; with pretune.train=true)")
        log.info("%s: CLAP pre-finetuning (%s encoder) into %s", name, stage.encoder, folder)
        train_clap_variant(loss, chosen, sources, folder, stage, cfg.backbone, cfg.embeddings)
    return names


def open_variant(folder: Path) -> PretuneVariant:
    """The typed variant in ``folder``, its checkpoints verified: its kind (in its config.json) picks the class,
    once; a damaged checkpoint is one line before any work."""
    variant = PretuneVariant.read(folder)
    variant = VARIANT_CLASSES.get(variant.kind, PretuneVariant).read(folder)
    variant.verify()
    return variant


def variant_embeddings(cfg: ExperimentConfig, variant: PretuneVariant, rows: list[Utterance]
                       ) -> tuple[list[Utterance], np.ndarray]:
    """(rows with an embedding, every hidden state [N, L + 1, D]) of the target corpus under one pretune variant
    (from the embedding cache, filled when missing)."""
    from metalearn.features.embeddings import extract

    emb = extract(rows, variant.load_backbone(), cfg.embeddings)
    if emb.problems.problems:
        log.warning("%s: %s", variant.name, emb.problems.summary())
    return emb.rows, emb.values


def source_rows(cfg: ExperimentConfig) -> list[Utterance]:
    """The rows of the ``meta_train.sources`` corpora whose speakers meta-train too: outside
    ``speakers.exclude``, with an emotion (not "other"); [] when the config names none."""
    unknown = sorted(set(cfg.meta_train.sources) - set(cfg.data.sources))
    if unknown:
        raise MetalearnError(f"config key 'meta_train.sources': {unknown} are not in data.sources "
                             f"({', '.join(sorted(cfg.data.sources)) or 'none'})")
    exclude = set(cfg.speakers.exclude)
    rows = [u for name in sorted(set(cfg.meta_train.sources))
            for u in prepare_manifest(cfg.data.sources[name], cfg.data.manifests_dir)
            if u.speaker not in exclude and u.emotion != "other"]
    target = cfg.data.target.corpus
    if any(u.corpus == target for u in rows):
        raise MetalearnError(f"config key 'meta_train.sources': a source is the target corpus {target} itself "
                             f"(its speakers are split into folds already)")
    return rows


def source_speakers(rows: list[Utterance]) -> dict[str, tuple[str, ...]]:
    """Source corpus -> its speakers in ``rows``, sorted."""
    out: dict[str, set[str]] = {}
    for u in rows:
        out.setdefault(u.corpus, set()).add(u.speaker)
    return {c: tuple(sorted(s)) for c, s in sorted(out.items())}


def configured_layer(cfg: ExperimentConfig) -> int | str:
    """The feature the config fixes: ``features.layer``, or "mean" with ``features.mean_layers``."""
    return "mean" if cfg.features.mean_layers else cfg.features.layer


def variant_features(cfg: ExperimentConfig, variant: PretuneVariant, rows: list[Utterance],
                     layer: int | str | None = None) -> FeatureTable:
    """The target corpus's features under one pretune variant (from the embedding cache), rows with an
    embedding only.

    Supervised variants give hidden state ``layer`` (None: :func:`configured_layer`; "mean": all states
    averaged), [N, D]; CLAP variants give their audio embeddings [N, E] (their own pooled layer through their
    audio projection) whatever ``layer`` is. The table's ``layer`` says which.
    """
    kept, values = variant_embeddings(cfg, variant, rows)
    layer = configured_layer(cfg) if layer is None else layer
    return FeatureTable(kept, variant.features(values, layer), variant.feature_name(layer, values.shape[1]),
                        variant.name)


def prefill_embeddings(cfg: ExperimentConfig, variants: list[PretuneVariant], rows: list[Utterance],
                       group: int = 8) -> None:
    """Fill the embedding caches of several variants at once, sharing their frozen layers' forward.

    Only for backbones that expose a shared trunk (Whisper); others are embedded one at a time later.
    At most ``group`` backbones are held in memory together; variants that embed identically count once.
    """
    from metalearn.features.shared_trunk import fill_caches

    distinct = list({v.encoder_identity: v for v in reversed(variants)}.values())[::-1]
    for start in range(0, len(distinct), group):
        chunk = distinct[start:start + group]
        if len(chunk) < 2:
            return
        first = chunk[0].load_backbone()
        if not hasattr(first, "trunk"):
            return
        fill_caches(rows, [first, *(v.load_backbone() for v in chunk[1:])], cfg.embeddings)
