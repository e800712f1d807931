"""One writer at a time: an exclusive lock on a file next to what a process writes.

A run directory (``<run dir>/.lock``) and an enrich cache file (``<file>.lock``) each have one
writer; a second process gets :class:`InProgressError` naming the first one's pid, instead of
both appending rows to one log or describing the same items twice. The lock is ``fcntl.flock``
on the lock file, which the kernel releases when its holder dies, so the lock of a killed
process is free for the next one (the stale file, holding the dead pid, is simply taken over).
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class InProgressError(RuntimeError):
    """Another live process holds the lock."""


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def is_locked(path: str | Path) -> bool:
    """Whether a live process holds the lock file ``path`` now (a probe: takes and drops it)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)  # never creates the file: a probe leaves nothing behind
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


@contextmanager
def exclusive(path: str | Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold the lock file ``path`` for the block; ``what`` (e.g. the run directory) names it in errors.
    ``wait``: queue behind a holder instead of failing (for short writes, such as adding runs to a store).

    The file holds the holder's pid and is removed on release. After taking the lock, the path is
    checked to still be the locked file: a holder that released (and removed it) in between means
    the lock is taken again on the new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise InProgressError(f"run in progress (pid {_holder(path)}): {what} is being written by "
                                  "another process; wait for it or stop it") from None
        try:
            same_file = os.path.exists(path) and os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except OSError:
            same_file = False
        if same_file:
            break
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()
