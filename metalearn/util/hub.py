"""Whether the Hugging Face Hub answers, asked once and fast, before a download or a push waits on it."""

from __future__ import annotations

import urllib.error
import urllib.request

from metalearn.util.errors import MetalearnError


def check_reachable(endpoint: str, timeout: float, repo: str, action: str = "push to") -> None:
    """One HEAD request to the Hub (proxies honoured): any HTTP answer is reachable; no answer is one line
    (``cannot {action} {repo}: ...``)."""
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise MetalearnError(f"cannot {action} {repo}: the Hub at {endpoint} is unreachable ({reason}); "
                             f"check the network (or HF_ENDPOINT)") from None
