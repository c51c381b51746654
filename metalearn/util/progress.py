"""Progress bars with ETA: live on a terminal, a line every 30 s in a log file."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress(total: float, desc: str, unit: str = "it", **kwargs) -> tqdm:
    """A tqdm bar for ``total`` units; refreshes rarely when stderr is not a terminal."""
    live = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=0.2 if live else 30.0,
                dynamic_ncols=live, **kwargs)
