"""Where dmesr keeps what it fetches and computes: the data home.

``$DMESR_HOME`` (default ``~/.cache/dmesr``) holds raw downloads (``raw/``), preprocessed splits
(``processed/``) and the enrichment caches (``enrich/``: descriptions and features), shared by every
checkout and run on the machine.
"""

from __future__ import annotations

import os
from pathlib import Path


def dmesr_home(home: Path | str | None = None) -> Path:
    """Cache root: ``home``, else ``$DMESR_HOME``, else ``~/.cache/dmesr``."""
    return Path(home or os.environ.get("DMESR_HOME") or Path.home() / ".cache" / "dmesr").expanduser()
