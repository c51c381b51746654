"""metalearn: few-shot speech emotion recognition in which every speaker is a task.

The notebook API (:mod:`metalearn.api`) is re-exported here lazily: ``import metalearn`` stays light
(no torch), and the first use of a name below (``metalearn.load_config``, ...) imports it.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = ("load_config", "run_experiment", "records", "summary", "comparisons", "to_dataframe", "build_adapter",
        "AdapterSpec", "ALGORITHMS", "make_corpora", "export_variant", "push_to_hub", "load_episodes",
        "save_episodes", "RunResult")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> object:
    if name in _API:
        value = getattr(importlib.import_module("metalearn.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'metalearn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
