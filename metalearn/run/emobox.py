"""EmoBox's published splits as metalearn speaker folds (``python -m metalearn folds --emobox DIR ...``).

EmoBox (Ma et al. 2024, github.com/emo-box/EmoBox) publishes, per dataset, ``data/<dataset>/fold_<n>/`` with
``<dataset>_train_fold_<n>.jsonl`` and ``<dataset>_test_fold_<n>.jsonl`` (and the same as ``.json``). A JSON
Lines entry is ``{"key", "dataset", "wav", "type", "sample_rate", "num_frame", "task", "length", "emo",
"channel"}``; a ``.json`` file is one object ``{key: {"wav", "length", "emo", "dataset", "channel"}}``. There
is no speaker field, and the key is not written alike across datasets (``esd-0005-000001`` for
``0005_000001.wav``: underscores made hyphens; ``iemocap-Ses01F_impro04_F000``: the stem kept), so an entry is
matched to the manifest by the stem of its ``wav`` path (the manifest's ``utterance_id``, else its file stem;
several candidates: the one sharing most trailing path parts), and its speaker is the manifest's. EmoBox's
loader also reads an optional ``<dataset>_valid_fold_<n>.jsonl``; where present its speakers are the fold's
validation speakers.

EmoBox's generic split (``EmoBox/utils/preprocess_utils.py``, ``write_folds``) goes by speaker only where a
dataset has 4 or more speakers with equal emotion counts (ESD: 5 folds of 4 speakers; RAVDESS: 6 of 4); IEMOCAP
leaves one session out; otherwise it is one stratified 75/25 split of utterances (CREMA-D, MSP-Podcast, ...).
Such a fold is refused: the science here needs speaker-disjoint folds. On EmoBox's own files (at 08280f2) against
manifests of the same utterances: IEMOCAP 5 folds and RAVDESS 6, every utterance matched; CREMA-D refused (all 91
speakers on both sides); an English-only ESD manifest gives 4 folds (EmoBox's fold_3 tests Mandarin speakers only).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from metalearn.data.manifest import Utterance
from metalearn.run.grid import Fold
from metalearn.util.errors import MetalearnError

log = logging.getLogger(__name__)
SPLITS = ("train", "test", "valid")
_FILE = re.compile(r"^(?P<dataset>.+)_(?P<split>train|test|valid)_fold_(?P<n>\d+)\.(?P<ext>jsonl|json)$")


@dataclass(frozen=True)
class Entry:
    """One EmoBox split entry: its key, audio path (``downloads/<dataset>/...``) and emotion label."""

    key: str
    wav: str
    emo: str


@dataclass
class EmoBoxImport:
    """What an import made: the folds, and how the EmoBox entries met the manifest."""

    dataset: str
    folds: list[Fold]
    entries: int = 0                 # distinct EmoBox utterances in the fold files
    matched: int = 0
    unmatched: list[str] = field(default_factory=list)   # keys with no manifest row
    ambiguous: list[str] = field(default_factory=list)   # keys with several equally good rows
    excluded: int = 0                # matched utterances of excluded speakers (speakers.exclude)
    outside: int = 0                 # manifest rows in no EmoBox file
    dropped: list[int] = field(default_factory=list)     # EmoBox fold numbers with no test speaker in the manifest

    def summary(self, manifest: str = "the manifest") -> str:
        """One line: folds made, matched and unmatched counts."""
        example = f" (e.g. {self.unmatched[0]})" if self.unmatched else ""
        left = f"; EmoBox folds {self.dropped} have no test speaker in it, left out" if self.dropped else ""
        return (f"EmoBox {self.dataset}: {len(self.folds)} speaker folds; {self.entries} utterances in its files, "
                f"{self.matched} matched to {manifest}, {len(self.unmatched)} unmatched{example}, "
                f"{len(self.ambiguous)} ambiguous, {self.excluded} of excluded speakers; {self.outside} manifest rows "
                f"in no EmoBox file{left}")


def fold_files(folder: str | os.PathLike) -> tuple[str, dict[int, dict[str, Path]]]:
    """(dataset name, EmoBox fold number -> split -> file) of an EmoBox dataset folder; ``.jsonl`` preferred."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MetalearnError(f"--emobox {folder}: not a folder (expected EmoBox's data/<dataset>/ with fold_<n>/)")
    found: dict[int, dict[str, Path]] = {}
    names = set()
    for path in sorted(folder.glob("fold_*/*.json*"), key=lambda p: p.suffix != ".jsonl"):
        m = _FILE.match(path.name)
        if m is None or path.parent.name != f"fold_{int(m['n'])}":
            continue
        names.add(m["dataset"])
        found.setdefault(int(m["n"]), {}).setdefault(m["split"], path)
    if not found:
        raise MetalearnError(f"--emobox {folder}: no fold_<n>/<dataset>_test_fold_<n>.jsonl (or .json) files; "
                             f"expected an EmoBox dataset folder such as EmoBox/data/iemocap")
    if len(names) != 1:
        raise MetalearnError(f"--emobox {folder}: split files of several datasets {sorted(names)}; expected one")
    for n, splits in found.items():
        missing = [s for s in ("train", "test") if s not in splits]
        if missing:
            raise MetalearnError(f"--emobox {folder}: fold_{n} has no {' or '.join(missing)} file")
    return names.pop(), dict(sorted(found.items()))


def read_entries(path: str | os.PathLike) -> list[Entry]:
    """The entries of one EmoBox split file (JSON Lines, or the ``.json`` object keyed by ``key``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = [{"key": k, **v} for k, v in json.loads(text).items()]
        return [Entry(str(r["key"]), str(r["wav"]), str(r["emo"])) for r in records]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
        raise MetalearnError(f"EmoBox split file {path}: not in EmoBox's format (entries with key, wav, emo; "
                             f"{type(e).__name__}: {e})") from None


class _Matcher:
    """Manifest rows by ``utterance_id`` and by file stem; an entry's row by its ``wav`` stem."""

    def __init__(self, rows: Sequence[Utterance]) -> None:
        self.by_id: dict[str, list[Utterance]] = {}
        self.by_stem: dict[str, list[Utterance]] = {}
        for u in rows:
            self.by_id.setdefault(u.utterance_id, []).append(u)
            self.by_stem.setdefault(Path(u.path).stem, []).append(u)

    def __call__(self, entry: Entry) -> Utterance | None | str:
        """The entry's row; None when no row matches; "ambiguous" when several match equally well."""
        wav = PurePosixPath(entry.wav)
        candidates = self.by_id.get(wav.stem) or self.by_stem.get(wav.stem) or []
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        shared = [_trailing(wav.parts, Path(u.path).parts) for u in candidates]
        best = max(shared)
        return candidates[shared.index(best)] if shared.count(best) == 1 else "ambiguous"


def _trailing(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def import_emobox(folder: str | os.PathLike, rows: Sequence[Utterance], validation: int = 1, seed: int = 0,
                  exclude: Sequence[str] = ("Unknown",)) -> EmoBoxImport:
    """EmoBox's folds in ``folder`` as speaker folds over ``rows`` (one corpus's manifest).

    Per EmoBox fold (in order; fold_<n> becomes fold position n - 1 unless a fold is left out): its test file's
    speakers -> test; its valid file's speakers -> validation, else ``validation`` of its train file's speakers
    drawn with ``numpy.random.default_rng([seed, position])`` as :func:`~metalearn.run.grid.three_way_folds`
    draws them; the other train speakers -> meta_train. A fold whose splits share a speaker is refused in one line;
    a fold none of whose test utterances is in ``rows`` is left out (e.g. ESD's Mandarin speakers in an English-only
    manifest) and reported.
    """
    if validation < 0:
        raise MetalearnError(f"--validation {validation}: must be >= 0")
    dataset, files = fold_files(folder)
    match, excluded = _Matcher(rows), set(exclude)
    result = EmoBoxImport(dataset, [])
    seen: dict[str, Utterance | None | str] = {}
    folds: list[Fold] = []
    for n, splits in files.items():
        speakers: dict[str, set[str]] = {}
        for split, path in splits.items():
            speakers[split] = set()
            for entry in read_entries(path):
                if entry.key not in seen:
                    seen[entry.key] = match(entry)
                row = seen[entry.key]
                if isinstance(row, Utterance) and row.speaker not in excluded:
                    speakers[split].add(row.speaker)
        _check_disjoint(dataset, n, splits, speakers)
        if not speakers["test"]:
            result.dropped.append(n)
            continue
        folds.append(_fold(len(folds), speakers, validation, seed, dataset, n))
    if not folds:
        raise MetalearnError(f"--emobox {folder}: no test utterance of any EmoBox fold matched the manifest "
                             f"({len(rows)} rows of {sorted({u.corpus for u in rows})}); is it the same corpus?")
    matched = {k: r for k, r in seen.items() if isinstance(r, Utterance)}
    result.folds, result.entries, result.matched = folds, len(seen), len(matched)
    result.unmatched = sorted(k for k, r in seen.items() if r is None)
    result.ambiguous = sorted(k for k, r in seen.items() if r == "ambiguous")
    result.excluded = sum(r.speaker in excluded for r in matched.values())
    used = {id(r) for r in matched.values()}
    result.outside = sum(id(u) not in used for u in rows)
    return result


def _check_disjoint(dataset: str, n: int, splits: dict[str, Path], speakers: dict[str, set[str]]) -> None:
    for a, b in (("train", "test"), ("valid", "test"), ("train", "valid")):
        both = sorted(speakers.get(a, set()) & speakers.get(b, set()))
        if both:
            raise MetalearnError(f"EmoBox {dataset} fold_{n} is not speaker-disjoint: {len(both)} speakers "
                                 f"({', '.join(both[:3])}{', ...' if len(both) > 3 else ''}) are in both "
                                 f"{splits[a].name} and {splits[b].name} (an utterance-level split); "
                                 f"metalearn needs speaker-disjoint folds")


def _fold(position: int, speakers: dict[str, set[str]], validation: int, seed: int, dataset: str, n: int) -> Fold:
    """One fold: test from the test file, validation from the valid file or drawn from the train speakers."""
    rest = sorted(speakers["train"])
    if "valid" in speakers:
        chosen = speakers["valid"]
    else:
        if rest and validation >= len(rest):
            raise MetalearnError(f"--validation {validation}: leaves EmoBox {dataset} fold_{n} no meta-training "
                                 f"speaker (its train file has {len(rest)} speakers: {', '.join(rest)})")
        drawn = np.random.default_rng([seed, position]).choice(len(rest), size=min(validation, len(rest)),
                                                               replace=False)
        chosen = {rest[i] for i in drawn}
    return Fold(position, tuple(sorted(speakers["test"])), tuple(sorted(chosen)),
                tuple(s for s in rest if s not in chosen))


def main(emobox: str, manifest: str, out: str, validation: int, seed: int, exclude: Sequence[str]) -> int:
    """``python -m metalearn folds --emobox DIR --manifest M.csv --out folds.json``: import, write, one line."""
    from metalearn.data.manifest import read_manifest
    from metalearn.run.folds_file import write_folds
    from metalearn.util.fileio import writable_file

    writable_file(out, "folds --out")  # an unwritable place is one line before anything is read
    rows = read_manifest(manifest)
    result = import_emobox(emobox, rows, validation, seed, exclude)
    path = write_folds(out, result.folds)
    print(result.summary(manifest))
    sizes = Counter((len(f.test), len(f.validation), len(f.meta_train)) for f in result.folds)
    print(f"wrote {path}: test / validation / meta_train speakers per fold "
          f"{', '.join(f'{t}/{v}/{m} x{c}' for (t, v, m), c in sorted(sizes.items()))}; "
          f"use it with speakers.folds_file={path}")
    return 0
