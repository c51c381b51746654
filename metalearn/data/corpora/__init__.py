"""Corpus loaders: each reads a corpus's real on-disk layout and returns manifest rows.

Every loader is ``load(root: Path, ctx: LoadContext) -> Iterable[Utterance]`` in a module of its
own; :func:`load_corpus` is the one entry point (checks the root, collects problems, filters).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections import Counter
from pathlib import Path

from metalearn.data.audio import ProblemReport
from metalearn.data.corpora.base import LoadContext
from metalearn.data.emotions import CANONICAL
from metalearn.util.errors import MetalearnError
from metalearn.data.manifest import Utterance

CORPORA: tuple[str, ...] = (
    "esd", "iemocap", "msp_podcast", "msp_improv", "mandarin_affective", "cremad", "ravdess",
)


@dataclasses.dataclass
class LoadResult:
    """A loaded corpus: its rows, the files skipped (with reasons), and what was left out by design."""

    utterances: list[Utterance]
    problems: ProblemReport
    excluded: Counter


def load_corpus(name: str, root: str | Path, *, strict: bool = False, check_audio: bool = True,
                classes: tuple[str, ...] | None = None) -> LoadResult:
    """Load corpus ``name`` from ``root``.

    Args:
        name: one of :data:`CORPORA`.
        root: the corpus's top folder, in its own layout.
        strict: the first bad file is an error instead of a skipped file.
        check_audio: decode every file (finds NaN, silence, truncation) instead of reading headers.
        classes: keep only these canonical emotions (e.g. IEMOCAP's four classes).
    Raises:
        MetalearnError: unknown corpus, missing root, unknown class, or no usable utterance.
    """
    if name not in CORPORA:
        raise MetalearnError(f"unknown corpus {name!r}; expected one of: {', '.join(CORPORA)}")
    root = Path(root)
    if not root.is_dir():
        raise MetalearnError(f"{name} root {str(root)!r} is not a directory")
    if classes is not None:
        bad = [c for c in classes if c not in CANONICAL]
        if bad:
            raise MetalearnError(
                f"unknown classes {bad}; expected canonical emotions: {', '.join(CANONICAL)}")
    ctx = LoadContext(corpus=name, report=ProblemReport(strict=strict), check_audio=check_audio,
                      classes=tuple(classes) if classes else None)
    module = importlib.import_module(f"metalearn.data.corpora.{name}")
    utterances = [u for u in module.load(root, ctx) if u is not None]
    if not utterances:
        raise MetalearnError(
            f"no usable {name} utterances under {str(root)!r} ({ctx.report.summary()}); "
            f"expected the layout described in metalearn/data/corpora/{name}.py")
    return LoadResult(utterances, ctx.report, ctx.excluded)
