"""Where dmesr keeps what it fetches and computes: the data home.

``$DMESR_HOME`` (default ``~/.cache/dmesr``) holds raw downloads (``raw/``), preprocessed splits
(``processed/``) and the enrichment caches (``enrich/``: descriptions and features), shared by every
checkout and run on the machine. ``write_atomically`` is how a small file there (or in a run folder)
is replaced: a kill leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import os
from pathlib import Path


def dmesr_home(home: Path | str | None = None) -> Path:
    """Cache root: ``home``, else ``$DMESR_HOME``, else ``~/.cache/dmesr``."""
    return Path(home or os.environ.get("DMESR_HOME") or Path.home() / ".cache" / "dmesr").expanduser()


def write_atomically(path: Path | str, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place (the parent folder
    is made if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
