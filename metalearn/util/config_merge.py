"""OmegaConf merging with one-line errors: every config layer of the project goes through :func:`guarded`.

The experiment loader (:mod:`metalearn.configs.load`) merges defaults, a preset and overrides; the
pre-finetuning command merges ``key=value`` overrides into its recipe (:func:`merge_overrides`). Both turn
OmegaConf's exceptions into one line naming the key and the closest valid keys.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from metalearn.util.errors import MetalearnError
from metalearn.util.yaml_ids import from_dotlist

T = TypeVar("T")


def merge_overrides(cfg: T, items: Sequence[str], where: str = "") -> T:
    """The dataclass ``cfg`` with ``key=value`` items merged by OmegaConf (values parsed as YAML, leading-zero
    numbers kept as text, typed by the field; ``none`` also means null). Unknown keys and values of the wrong type
    are one-line errors."""
    for item in items:
        if "=" not in item:
            raise MetalearnError(f"{where}override {item!r}: expected key=value")
    items = [f"{k}=null" if v.strip().lower() == "none" else f"{k}={v}" for k, v in (i.split("=", 1) for i in items)]
    schema = OmegaConf.structured(cfg)
    merged = guarded(lambda: OmegaConf.merge(schema, from_dotlist(items)), schema, where)
    return guarded(lambda: OmegaConf.to_object(merged), schema, where)


def guarded(make: Callable[[], T], schema: DictConfig, where: str = "") -> T:
    """Run ``make``; OmegaConf errors become one line naming the key (and the closest valid keys)."""
    try:
        return make()
    except ConfigKeyError as e:
        key = e.full_key or str(e.key)
        close = difflib.get_close_matches(key, all_keys(schema), n=3, cutoff=0.5)
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


def all_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k in node.keys():
        full = f"{prefix}{k}"
        keys.append(full)
        child = node._get_node(k)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            keys += all_keys(child, f"{full}.")
    return keys
