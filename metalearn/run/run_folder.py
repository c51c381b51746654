"""A run folder's provenance, shared by every experiment kind: the resolved config (and the guard that
refuses to mix two configs in one folder), the git commit, and the config as W&B receives it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError  # PyYAML: omegaconf's own parser

from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import make_folder, write_atomic
from metalearn.util.provenance import git_commit

NOT_SCIENCE = ("tracking", "name", "out", "launcher")  # top-level keys that do not change the numbers
_ABSENT = object()


def to_yaml(cfg: object) -> str:
    """The resolved config as YAML (what :func:`metalearn.configs.load.load_config` reads back); a value its
    field's type cannot hold is a one-line error naming the key."""
    try:
        return OmegaConf.to_yaml(OmegaConf.structured(cfg))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise MetalearnError(f"config key {key!r}: {str(e).splitlines()[0]}" if key else
                             f"config: {str(e).splitlines()[0]}") from None


def as_dict(cfg: object) -> dict:
    """A dataclass config as plain nested dicts (for trackers and JSON)."""
    return dataclasses.asdict(cfg)


def tracked_config(cfg: object) -> dict:
    """The config with the git commit, as JSON-safe dicts (what W&B records)."""
    return json.loads(json.dumps({**as_dict(cfg), "git_commit": git_commit()}, default=str))


def save_config(cfg: object, out: Path) -> None:
    """Create run folder ``out`` and write ``out/config.yaml`` (resolved), refusing, before any work, a folder
    whose work came from another config.

    Work is what a run leaves to be reused (see :func:`work_in`). Committed tables with no logs beside them
    (a fresh clone) hold no work: their config.yaml is replaced. Path problems are one-line errors.
    """
    out = make_folder(out, "run folder")
    text = to_yaml(cfg)
    check_same_config(out, text, OmegaConf.to_yaml(OmegaConf.structured(type(cfg))))
    try:
        write_atomic(out / "config.yaml", text)
    except OSError as e:
        raise MetalearnError(f"cannot write {out / 'config.yaml'} ({e.strerror or e}); expected a writable "
                             f"run folder out=") from None


def work_in(out: Path) -> Path | None:
    """The first file in run folder ``out`` that shows a run worked there, or None.

    Work: a JSON Lines file in the folder or one level down (trial and fold logs, saved episodes, learning
    curves, metrics), or the ``run*.json`` of a run that started and has not reported (no ``*.csv`` or ``*.md``
    tables beside it: tables with a run.json and no logs are a committed result, not work in progress).
    """
    logs = sorted(out.glob("*.jsonl")) or sorted(out.glob("*/*.jsonl"))
    if logs:
        return logs[0]
    started = sorted(out.glob("run*.json"))
    reported = any(out.glob("*.csv")) or any(out.glob("*.md"))
    return started[0] if started and not reported else None


def check_same_config(out: Path, new_yaml: str, defaults_yaml: str | None = None) -> None:
    """Refuse (one-line :class:`MetalearnError`) when ``out`` holds work of a config other than ``new_yaml``,
    or work without a readable config.yaml to compare with."""
    work = work_in(out)
    if work is None:
        return
    path = out / "config.yaml"
    what = f"{out} holds work of an earlier run ({work.relative_to(out)})"
    if not path.is_file():
        raise MetalearnError(f"{what} but no config.yaml to tell its config; use another out=... or delete the "
                             f"folder")
    try:
        difference = config_difference(path.read_text(encoding="utf-8"), new_yaml, defaults_yaml)
    except (OSError, UnicodeDecodeError, ValueError, YAMLError, OmegaConfBaseException) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MetalearnError(f"{what} but its {path} is unreadable ({first}); expected the YAML config the run "
                             f"saved: restore it, use another out=... or delete the folder") from None
    if difference:
        raise MetalearnError(f"{out} holds a run with another config ({difference}); use another out=... or "
                             f"delete the folder")


def config_difference(saved_yaml: str, new_yaml: str, defaults_yaml: str | None = None) -> str | None:
    """The first config key whose value differs between a run's saved config and a new one, as a phrase
    naming the key and both values (``(absent)`` for a key one side lacks); None when they agree outside
    :data:`NOT_SCIENCE`.

    A key the saved config lacks (a field added to the code since) is no difference when its new value is
    its default in ``defaults_yaml``: the project's rule is that a new field's default keeps the old
    behaviour, so pulling an update does not strand a run half done.
    """
    old, new, defaults = (_flat(OmegaConf.to_container(OmegaConf.create(t or ""), resolve=False))
                          for t in (saved_yaml, new_yaml, defaults_yaml))
    for key in sorted(set(old) | set(new)):
        if key.split(".")[0] in NOT_SCIENCE or old.get(key, _ABSENT) == new.get(key, _ABSENT):
            continue
        if key not in old and key in defaults and defaults[key] == new[key]:
            continue
        shown = [repr(d[key]) if key in d else "(absent)" for d in (old, new)]
        return f"first difference: config key '{key}': {shown[0]} in its config.yaml, {shown[1]} now"
    return None


def _flat(node: object, prefix: str = "") -> dict[str, object]:
    """A nested dict as dotted key -> leaf value (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, object] = {}
    for k, v in node.items():
        out |= _flat(v, f"{prefix}.{k}" if prefix else str(k))
    return out
