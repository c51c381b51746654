"""What every figure of a report shares: one colour and marker per algorithm, the variant order, the k label.

- :func:`algorithm_style`: a fixed (colour, marker) per algorithm NAME, the same in every figure whatever
  else the figure holds: the registered algorithms (:data:`metalearn.fewshot.algorithms.ALGORITHMS`, sorted,
  the ``majority`` baseline left out: it is drawn grey and dashed) take :data:`PALETTE` in order; a name
  outside the registry takes the colours after them, by a hash of its name.
- :func:`variant_key` / :func:`ordered_variants`: ``none`` first, then by the number of corpora the variant
  was pre-finetuned on (``pft-a``, ..., ``pft-a+b+c+d``), then by name.
- :func:`k_label`: "k (support size)" in the binary protocol (k is the total support), "k (shots per class)"
  in N-way.

No Matplotlib import here; colours are hex strings Matplotlib reads.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from functools import cache

BASELINE = "majority"  # the algorithm drawn as the baseline line, not as a method
# A qualitative palette of 14 distinct colours: tab10 without its grey (grey is the baseline), then the dark
# shades of tab20b/tab20c (navy, olive, ochre, maroon, plum).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d", "H")
SUPPORT_SIZE_PROTOCOLS = ("binary",)  # protocols whose k is the whole support set, not shots per class


@cache
def _registered() -> tuple[str, ...]:
    from metalearn.fewshot.algorithms import ALGORITHMS

    return tuple(sorted(a for a in ALGORITHMS if a != BASELINE))


def algorithm_index(name: str) -> int:
    """The algorithm's fixed slot: its place in the sorted registry, else one after the registry (by hash)."""
    registered = _registered()
    if name in registered:
        return registered.index(name)
    spare = max(len(PALETTE) - len(registered), 1)
    return len(registered) + zlib.crc32(name.encode("utf-8")) % spare


def algorithm_style(name: str) -> tuple[str, str]:
    """(colour, marker) of algorithm ``name``, the same in every figure."""
    i = algorithm_index(name)
    return PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]


def algorithm_styles(algorithms: Iterable[str]) -> dict[str, tuple[str, str]]:
    """{name: (colour, marker)} for ``algorithms`` (:func:`algorithm_style` of each)."""
    return {a: algorithm_style(a) for a in set(algorithms)}


def corpora_count(variant: str) -> int:
    """How many corpora a variant name joins: 0 for ``none``, else the "+"-separated parts after its prefix."""
    if variant == "none":
        return 0
    body = variant.split("-", 1)[1] if "-" in variant else variant
    return body.count("+") + 1


def variant_key(variant: str) -> tuple[int, int, str]:
    """Sort key: ``none`` first, then by the number of corpora, then by name."""
    return (variant != "none", corpora_count(variant), variant)


def ordered_variants(variants: Iterable[str]) -> list[str]:
    """The distinct variant names in :func:`variant_key` order."""
    return sorted(set(variants), key=variant_key)


def k_label(protocol: str) -> str:
    """The k axis label of ``protocol``: the support size (binary) or the shots per class (N-way)."""
    return "k (support size)" if protocol in SUPPORT_SIZE_PROTOCOLS else "k (shots per class)"
