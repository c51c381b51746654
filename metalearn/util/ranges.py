"""Allowed values declared beside the fields they constrain, checked before anything runs.

A config dataclass lists its rules in a class attribute ``RANGES`` (field -> rule): ``"> 0"``, ``">= 0"``,
``">= 1"`` (numbers; ``None`` always passes, for optional fields) or a tuple of the allowed values. Its
``__post_init__`` calls :func:`check_fields` (so a dataclass built in Python refuses a bad value), and the config
loader calls :func:`check_tree` on the merged config before building the dataclasses, so the one-line error names
the full key (``config key 'algorithms.maml.inner_lr': -1.0 must be > 0``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any

from metalearn.util.errors import MetalearnError

Rule = str | tuple
COMPARISONS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def problem(value: Any, rule: Rule) -> str | None:
    """What is wrong with ``value`` under ``rule`` (None: nothing)."""
    if value is None:
        return None
    if isinstance(rule, tuple):
        return None if value in rule else f"{value!r} is not one of {', '.join(map(str, rule))}"
    sign, bound = rule.split()
    values = list(value) if isinstance(value, list | tuple) else [value]
    for item in values:
        if isinstance(item, bool) or not isinstance(item, int | float):
            return f"{value!r} must be a number {rule}"
        if not math.isfinite(item):
            return f"{value!r} must be a finite number {rule}"
        if not COMPARISONS[sign](item, float(bound)):
            return f"{value!r} must be {rule}" if item is value else f"{value!r}: each must be {rule}"
    return None


def check_fields(obj: object, where: str | None = None) -> None:
    """Refuse the first field of ``obj`` that breaks its class's ``RANGES``: one line naming ``where`` (default:
    the class name) and the field, e.g. ``MAMLConfig: inner_lr -1 must be > 0``."""
    rules: Mapping[str, Rule] = getattr(type(obj), "RANGES", {})
    for name, rule in rules.items():
        found = problem(getattr(obj, name), rule)
        if found:
            raise MetalearnError(f"{where or type(obj).__name__}: {name} {found}")


def check_tree(node: Any, prefix: str = "") -> None:
    """Check every structured section of an OmegaConf config (sections typed by a dataclass with ``RANGES``),
    naming the full key of the first value out of range."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, DictConfig):
        if node._is_none() or node._is_missing() or node._is_interpolation():
            return
        rules: Mapping[str, Rule] = getattr(OmegaConf.get_type(node), "RANGES", {})
        for name, rule in rules.items():
            found = problem(_plain(node[name]), rule) if name in node else None
            if found:
                raise MetalearnError(f"config key '{prefix}{name}': {found}")
        for key in node.keys():
            check_tree(node._get_node(key), f"{prefix}{key}.")
    elif isinstance(node, ListConfig) and not (node._is_none() or node._is_missing()):
        for i in range(len(node)):
            check_tree(node._get_node(i), f"{prefix.removesuffix('.')}[{i}].")


def _plain(value: Any) -> Any:
    from omegaconf import Container, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else value
