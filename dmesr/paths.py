"""Where dmesr keeps what it fetches and computes: the data home.

``$DMESR_HOME`` (default ``~/.cache/dmesr``) holds raw downloads (``raw/``), preprocessed splits
(``processed/``) and the enrichment caches (``enrich/``: descriptions and features), shared by every
checkout and run on the machine. ``write_atomically`` is how a small file there (or in a run folder)
is replaced: a kill leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

LOW_SPACE = 64 << 20  # bytes: a failed write with less free than this is reported as a full disk


def dmesr_home(home: Path | str | None = None) -> Path:
    """Cache root: ``home``, else ``$DMESR_HOME``, else ``~/.cache/dmesr``."""
    return Path(home or os.environ.get("DMESR_HOME") or Path.home() / ".cache" / "dmesr").expanduser()


def write_atomically(path: Path | str, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place (the parent folder
    is made if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise save_failed(path, error) from None


def save_failed(path: Path, error: BaseException) -> OSError:
    """One line for a file that could not be written, naming it; a full disk is called one (a write
    cut short on a full disk does not always say so: torch reports "unexpected pos ...")."""
    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        free = None
    if getattr(error, "errno", None) == errno.ENOSPC or (free is not None and free < LOW_SPACE):
        return OSError(f"{path}: not saved, the disk is full ({free} bytes free); free some space and run the "
                       "same command again (nothing older was replaced)")
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    return OSError(f"{path}: not saved ({reason}); nothing older was replaced")
