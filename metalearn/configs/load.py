"""Loading an experiment config: dataclass defaults, then a YAML preset, then ``key=value`` overrides (OmegaConf).

A preset's top-level ``kind`` picks its schema (:mod:`metalearn.configs.kinds`; default ``fewshot``).
A misspelt key, a value of the wrong type or a required value left unset stops the run before any work,
with one line naming the key (and the closest valid keys). Code below this entry point receives plain
dataclasses, never OmegaConf objects.

YAML is read so that ids keep their text (``0011`` stays ``"0011"``, not octal 9; :mod:`metalearn.util.yaml_ids`).
Presets are found by name: first in the folders of ``$METALEARN_PRESETS`` (``os.pathsep``-separated),
then among the presets shipped inside the package (``metalearn/configs/presets/*.yaml``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from metalearn.configs.kinds import kind_name, kind_of
from metalearn.configs.preset_paths import preset_names, preset_path  # noqa: F401 (re-exported)
from metalearn.util.config_merge import guarded
from metalearn.util.errors import MetalearnError
from metalearn.util.ranges import check_tree
from metalearn.util.yaml_ids import from_dotlist, read_yaml


def load_config(preset: str | None = None, overrides: Sequence[str] = (), kind: str | None = None):
    """Defaults, then the preset's YAML, then ``key=value`` overrides; validated, as dataclasses.

    The schema is ``kind``'s, else the one named by the preset's (or an override's) ``kind`` key, else
    :class:`ExperimentConfig`.
    """
    deleted = [item[1:] for item in overrides if item.startswith("~") and "=" not in item]
    overrides = [item for item in overrides if not (item.startswith("~") and "=" not in item)]
    for item in overrides:
        if "=" not in item:
            raise MetalearnError(f"override {item!r} is not key=value (e.g. episodes.ks=[1,5]) nor ~key (the "
                                 f"key back to its default, e.g. ~data.sources)")
    data = None
    if preset:
        path = preset_path(preset)
        data = guarded(lambda: read_yaml(path), OmegaConf.create({}), f"{path}: ")
        if not isinstance(data, DictConfig):
            raise MetalearnError(f"{path}: the top level must be a mapping of config keys (e.g. `name: demo`), "
                                 f"not a {type(data).__name__.removesuffix('Config').lower()}")
        for key in deleted:
            _delete(data, key)
    named = [i.split("=", 1)[1] for i in overrides if i.split("=", 1)[0] == "kind"]
    kind = kind or (named[-1] if named else None) or (data.get("kind") if data is not None else None) or "fewshot"
    spec = kind_of(str(kind))
    schema = OmegaConf.structured(spec.config)
    layers = [schema]
    if data is not None:
        layers.append(guarded(lambda: OmegaConf.merge(schema, data), schema, f"{path}: "))
    layers.append(guarded(lambda: from_dotlist(overrides), schema, "override: "))
    merged = guarded(lambda: OmegaConf.merge(*layers), schema)
    missing = sorted(OmegaConf.missing_keys(merged))
    for key in [k for k in missing if k.endswith(".root") and OmegaConf.select(merged, k[:-5] + ".manifest")]:
        OmegaConf.update(merged, key, "")  # a corpus given by its manifest needs no root (it is read, not parsed)
        missing.remove(key)
    if missing:
        raise MetalearnError(f"config key {missing[0]!r} has no value; set it, e.g. {missing[0]}=/path "
                             f"({len(missing)} unset: {', '.join(missing)})")
    guarded(lambda: check_tree(merged), schema)  # declared ranges, named by their full key
    cfg = guarded(lambda: OmegaConf.to_object(merged), schema)
    guarded(lambda: OmegaConf.structured(cfg), schema)  # a value its field's type cannot hold (a mapping for a
    # string: OmegaConf's merge lets it through) is refused here, not when the run folder's config.yaml is written
    unknown = [key for key in deleted if OmegaConf.select(schema, key, default=_ABSENT) is _ABSENT]
    if unknown:
        raise MetalearnError(f"override '~{unknown[0]}': {unknown[0]!r} is not a config key")
    spec.validate(cfg)
    return spec.resolve(cfg)


_ABSENT = object()


def _delete(data: DictConfig, key: str) -> None:
    """Remove dotted ``key`` from a preset's mapping (``~key``: the key takes the schema's default)."""
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.get(part) if isinstance(node, DictConfig) else None
    if isinstance(node, DictConfig) and last in node:
        del node[last]


def saved_config(run_dir: str | Path):
    """The config a few-shot run folder's runs saved (``config.yaml``, tuned values included), with ``out`` = the
    folder; what ``status`` and ``launch``'s report job read."""
    out = Path(run_dir)
    if not (out / "config.yaml").is_file():
        raise MetalearnError(f"{out}: no config.yaml; expected a run folder (the out= of a run or a launch)")
    cfg = load_config(str(out / "config.yaml"), [f"out={out}"])
    if kind_name(cfg) != "fewshot":
        raise MetalearnError(f"{out} holds a {cfg.kind!r} run; status follows few-shot grids (kind fewshot)")
    return cfg
