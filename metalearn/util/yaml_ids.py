"""Reading config YAML so that ids keep their text: ``0011`` stays ``"0011"``, never the octal number 9.

YAML 1.1 (PyYAML, hence OmegaConf) reads an unquoted ``0011``-``0017`` as an octal integer and ``0020`` as 16,
so a speaker id typed without quotes (ESD's ``0011``-``0020``) would silently become another id. Every config
layer of the project (a preset or a saved config.yaml, a tuned overlay, ``key=value`` overrides) is read here:
OmegaConf's own loader with one resolver in front of the others, which keeps a number written with a leading
zero as the string the user typed. Fields typed ``int`` still accept it (OmegaConf converts ``"0010"`` to 10);
fields typed ``str`` (speaker ids) get the text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from metalearn.util.errors import MetalearnError

STR_TAG = "tag:yaml.org,2002:str"
LEADING_ZERO = re.compile(r"^[-+]?0[0-9_]+$")  # 0011, 007, -0012: YAML 1.1 octal (or invalid) integers


@functools.cache
def id_loader() -> type:
    """OmegaConf's YAML loader, with leading-zero integers read as strings (tried before every other resolver)."""
    try:
        from omegaconf._yaml import get_yaml_loader
    except ImportError:  # omegaconf 2.1-2.3 keep it in _utils
        from omegaconf._utils import get_yaml_loader

    base = get_yaml_loader()
    resolvers = {first: list(rs) for first, rs in base.yaml_implicit_resolvers.items()}
    for first in "-+0":
        resolvers[first] = [(STR_TAG, LEADING_ZERO), *resolvers.get(first, [])]
    return type("IdLoader", (base,), {"yaml_implicit_resolvers": resolvers})


def parse_value(text: str) -> Any:
    """One YAML value as an override gives it (``[0011, 0012]`` -> ``["0011", "0012"]``)."""
    return yaml.load(text, Loader=id_loader())


def read_yaml(path: str | Path) -> DictConfig | ListConfig | Any:
    """A YAML file as OmegaConf reads it (an empty file is ``{}``), ids kept as text; a top level that is neither
    a mapping nor a list comes back as the plain value, for the caller to refuse."""
    text = Path(path).read_text(encoding="utf-8")
    data = parse_value(text)
    if data is None:
        return OmegaConf.create()
    return OmegaConf.create(data) if isinstance(data, dict | list) else data


def from_dotlist(items: Sequence[str]) -> DictConfig:
    """``key=value`` items as a config (what ``OmegaConf.from_dotlist`` makes), values read by :func:`parse_value`;
    a key with an empty part (``a..b``) is a one-line error (OmegaConf would make a key named ``""`` of it)."""
    conf = OmegaConf.create()
    for item in items:
        key, sep, value = item.partition("=")
        if not key or "" in key.split("."):
            raise MetalearnError(f"override {item!r}: the key {key!r} has an empty part (two dots in a row, or a "
                                 f"dot at an end); expected dot-separated names, e.g. pretune.extra.NAME=VALUE")
        try:
            parsed = parse_value(value) if sep else None
        except yaml.YAMLError as e:
            raise MetalearnError(f"override {item[:80]!r}: the value of {key!r} is not valid YAML "
                                 f"({' '.join(str(e).split())[:120]})") from None
        OmegaConf.update(conf, key, parsed)
    return conf
