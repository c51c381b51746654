"""Loading an experiment config: dataclass defaults, then a YAML preset, then ``key=value`` overrides (OmegaConf).

A preset's top-level ``kind`` picks its schema (:mod:`metalearn.experiment.kinds`; default ``fewshot``).
A misspelt key, a value of the wrong type or a required value left unset stops the run before any work,
with one line naming the key (and the closest valid keys). Code below this entry point receives plain
dataclasses, never OmegaConf objects.

Presets are found by name: first in the folders of ``$METALEARN_PRESETS`` (``os.pathsep``-separated),
then among the presets shipped inside the package (``metalearn/experiment/presets/*.yaml``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from metalearn.experiment.kinds import kind_of
from metalearn.util.errors import MetalearnError

PRESETS_ENV = "METALEARN_PRESETS"


def preset_dirs() -> list[Path]:
    """Where presets are searched by name, in order: ``$METALEARN_PRESETS``, then the package's own."""
    extra = [Path(d) for d in os.environ.get(PRESETS_ENV, "").split(os.pathsep) if d]
    return [*extra, Path(str(resources.files("metalearn.experiment") / "presets"))]


def preset_names() -> list[str]:
    """Every preset name found on the search path."""
    return sorted({p.stem for d in preset_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def preset_path(preset: str) -> Path:
    """A preset name (``demo``, ``compare``, ``paper_a``, ...) on the search path, or a path to a YAML file."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise MetalearnError(f"config file {path} does not exist")
        return path
    for folder in preset_dirs():
        if (folder / f"{preset}.yaml").is_file():
            return folder / f"{preset}.yaml"
    raise MetalearnError(f"unknown preset {preset!r}; expected one of: {', '.join(preset_names())} "
                         f"(or a .yaml path; more folders: ${PRESETS_ENV})")


def load_config(preset: str | None = None, overrides: Sequence[str] = (), kind: str | None = None):
    """Defaults, then the preset's YAML, then ``key=value`` overrides; validated, as dataclasses.

    The schema is ``kind``'s, else the one named by the preset's (or an override's) ``kind`` key, else
    :class:`ExperimentConfig`.
    """
    for item in overrides:
        if "=" not in item:
            raise MetalearnError(f"override {item!r} is not key=value (e.g. episodes.ks=[1,5])")
    data = None
    if preset:
        path = preset_path(preset)
        data = _guard(lambda: OmegaConf.load(path), OmegaConf.create({}), f"{path}: ")
    named = [i.split("=", 1)[1] for i in overrides if i.split("=", 1)[0] == "kind"]
    kind = kind or (named[-1] if named else None) or (data.get("kind") if data is not None else None) or "fewshot"
    spec = kind_of(str(kind))
    cls, check = spec.config, spec.validate
    schema = OmegaConf.structured(cls)
    layers = [schema]
    if data is not None:
        layers.append(_guard(lambda: OmegaConf.merge(schema, data), schema, f"{path}: "))
    layers.append(_guard(lambda: OmegaConf.from_dotlist(list(overrides)), schema, "override: "))
    merged = _guard(lambda: OmegaConf.merge(*layers), schema)
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise MetalearnError(f"config key {missing[0]!r} has no value; set it, e.g. {missing[0]}=/path "
                             f"({len(missing)} unset: {', '.join(missing)})")
    cfg = _guard(lambda: OmegaConf.to_object(merged), schema)
    check(cfg)
    return cfg


def _guard(make, schema: DictConfig, where: str = ""):
    """Run ``make``; OmegaConf errors become one line naming the key (and the closest valid keys)."""
    try:
        return make()
    except ConfigKeyError as e:
        key = e.full_key or str(e.key)
        close = difflib.get_close_matches(key, _all_keys(schema), n=3, cutoff=0.5)
        hint = f"; closest valid keys: {', '.join(close)}" if close else ""
        raise MetalearnError(f"{where}config key {key!r} is not a valid key{hint}") from None
    except MissingMandatoryValue as e:
        raise MetalearnError(f"{where}config key {e.full_key!r} has no value; set it") from None
    except OmegaConfBaseException as e:
        msg = str(e).splitlines()[0]
        key = getattr(e, "full_key", None)
        raise MetalearnError(f"{where}config key {key!r}: {msg}" if key else f"{where}{msg}") from None
    except MetalearnError:
        raise
    except yaml.YAMLError as e:
        raise MetalearnError(f"{where}not valid YAML: {' '.join(str(e).split())}") from None
    except (ValueError, TypeError) as e:  # a dataclass __post_init__ refusing a value, or unreadable YAML
        raise MetalearnError(f"{where}{str(e).splitlines()[0]}") from None


def _all_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k in node.keys():
        full = f"{prefix}{k}"
        keys.append(full)
        child = node._get_node(k)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            keys += _all_keys(child, f"{full}.")
    return keys
