"""A corpus in a config (its loader, root and manifest) and its manifest rows, read or written once.

The manifest is read when it exists, else parsed from the corpus's root and written (speechbrain's prepare step);
the loader's options (``CorpusConfig.options``) are part of the file name, since they change the rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING

from metalearn.data.manifest import Utterance, read_manifest, write_manifest
from metalearn.util.errors import MetalearnError

log = logging.getLogger(__name__)


@dataclass
class CorpusConfig:
    """A corpus: its loader, its root in the corpus's own layout, and the manifest parsed from it.

    The manifest is read when it exists, else written from ``root`` (then ``root`` must exist).
    """

    corpus: str = "esd"
    root: str = MISSING
    manifest: str = ""                  # "" = {data.manifests_dir}/{corpus}.csv
    classes: list[str] | None = None    # keep only these canonical emotions (IEMOCAP 4-class)
    options: dict[str, str] = field(default_factory=dict)  # the loader's options, e.g. msp_improv {labels: target}


def manifest_path(corpus: CorpusConfig, manifests_dir: str) -> Path:
    """Where the corpus's manifest is (or will be written)."""
    options = "".join(f"-{k}={v}" for k, v in sorted(corpus.options.items()))  # options change the rows
    return Path(corpus.manifest or Path(manifests_dir) / f"{corpus.corpus}{options}.csv")


def prepare_manifest(corpus: CorpusConfig, manifests_dir: str) -> list[Utterance]:
    """The corpus's manifest rows: read when the file exists, else parsed from its root and written."""
    path = manifest_path(corpus, manifests_dir)
    if path.is_file():
        rows = read_manifest(path)
        check_root(corpus, path, rows)
        return rows
    from metalearn.data.corpora import load_corpus

    log.info("%s: writing the manifest from %s", path, corpus.root)
    result = load_corpus(corpus.corpus, corpus.root, classes=tuple(corpus.classes) if corpus.classes else None,
                         options=dict(corpus.options))
    write_manifest(result.utterances, path)
    if result.problems.problems:
        result.problems.write(path.with_name(path.stem + ".problems.tsv"))
        log.warning("%s: skipped %s", corpus.corpus, result.problems.summary())
    return result.utterances


def check_root(corpus: CorpusConfig, path: Path, rows: list[Utterance]) -> None:
    """A manifest found in the manifests folder (no ``manifest`` set) was written from this ``root``: its first
    file lies under it; else one line (a manifest of another root would give that corpus's clips silently)."""
    root = corpus.root if isinstance(corpus.root, str) else ""
    if corpus.manifest or not root or root == MISSING or not rows:
        return
    first, base = Path(rows[0].path).absolute(), Path(root).absolute()
    if not (first.is_relative_to(base) or first.resolve().is_relative_to(base.resolve())):
        raise MetalearnError(f"{path}: written from another {corpus.corpus} root (its first file is {rows[0].path}), "
                             f"not from root {root}; delete the manifest to write it from this root, or set the "
                             f"root it was made from")
