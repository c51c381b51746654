"""Corpus loaders: each reads a corpus's real on-disk layout and returns manifest rows.

Every loader is ``load(root: Path, ctx: LoadContext, **options) -> Iterable[Utterance]`` in a module of
its own; :func:`load_corpus` is the one entry point (checks the root and the options, collects problems,
filters). A loader that takes options lists them, with their defaults, in its module's ``OPTIONS``
(``{name: default}``, string values): MSP-IMPROV ``labels`` (perceived | target), Mandarin Affective
Speech ``types`` (all | phrase | phrase+sentence ...), IEMOCAP ``type`` (all | improvised | scripted).
The defaults reproduce a load without options.
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
    """A loaded corpus: its rows, the files skipped (with reasons), what was left out by design, and
    what was kept but flagged (``notes``, e.g. MSP-Podcast rows whose speaker is ``Unknown``)."""

    utterances: list[Utterance]
    problems: ProblemReport
    excluded: Counter
    notes: Counter = dataclasses.field(default_factory=Counter)


def load_corpus(name: str, root: str | Path, *, strict: bool = False, check_audio: bool = True,
                classes: tuple[str, ...] | None = None, options: dict[str, str] | None = None) -> LoadResult:
    """Load corpus ``name`` from ``root``.

    Args:
        name: one of :data:`CORPORA`.
        root: the corpus's top folder, in its own layout.
        strict: the first bad file is an error instead of a skipped file.
        check_audio: decode every file (finds NaN, silence, truncation) instead of reading headers.
        classes: keep only these canonical emotions (e.g. IEMOCAP's four classes).
        options: the loader's options (its module's ``OPTIONS``); None or {} = every default.
    Raises:
        MetalearnError: unknown corpus, missing root, unknown class or option, or no usable utterance.
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
    kwargs = loader_options(name, getattr(module, "OPTIONS", {}), options)
    utterances = [u for u in module.load(root, ctx, **kwargs) if u is not None]
    if not utterances:
        raise MetalearnError(
            f"no usable {name} utterances under {str(root)!r} ({ctx.report.summary()}); "
            f"expected the layout described in metalearn/data/corpora/{name}.py")
    return LoadResult(utterances, ctx.report, ctx.excluded, ctx.notes)


def loader_options(name: str, known: dict[str, str], given: dict[str, str] | None) -> dict[str, str]:
    """``given`` checked against the loader's ``known`` options, values as strings; unknown keys are errors."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(known))
    if unknown:
        valid = ", ".join(f"{k} (default {v})" for k, v in known.items()) or "none"
        raise MetalearnError(f"unknown {name} option {unknown[0]!r}; valid options: {valid}")
    return {k: str(v) for k, v in given.items()}
