"""A JupyterLab save that changes nothing git keeps leaves ``git status`` clean.

The nbstripout clean filter (``make install``, ``.gitattributes``) maps a notebook saved with outputs, execution
counts and the kernel's ``language_info`` back to its committed content. Yet git lists such a file as modified
without running the filter: its index entry holds the size of the file last added, and a different size is
taken as a change (git's read-cache.c, ``ie_modified``). An entry whose recorded size is 0, as
``git update-index --cacheinfo`` leaves it, is compared by content instead, through the filter.

So the server's post-save hook (``ContentsManager.post_save_hook``, which ``make install`` sets in the venv's
``etc/jupyter/jupyter_server_config.json``) re-records the saved file's index entry with the mode and blob it
already has. Nothing is staged: the next ``git status`` runs the filter on that file once, lists it only if its
cleaned content differs from the index (a real edit, left unstaged), and records its size when it does not.
The outputs stay in the working copy; the save itself runs no filter.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def _git(folder: Path, *args: str, stdin: str | None = None) -> str | None:
    """``git args`` run in ``folder``: its output, or None when git fails or is missing."""
    try:
        done = subprocess.run(["git", *args], cwd=folder, input=stdin, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _index_entry(folder: Path, name: str) -> tuple[str, str, str] | None:
    """(mode, blob, path from the top of the checkout) of ``name``'s index entry; None when it has none we may
    rewrite: untracked, outside a checkout, unmerged, skip-worktree or assume-unchanged (``-v`` tags those other
    than ``H``), or added with ``--intent-to-add`` (the empty blob, which rewriting would stage)."""
    listed = _git(folder, "ls-files", "--stage", "-v", "-z", "--full-name", "--", name)
    entries = [entry for entry in (listed or "").split("\0") if entry]
    if len(entries) != 1:
        return None
    fields, path = entries[0].split("\t", 1)
    tag, mode, blob, stage = fields.split(" ")
    if tag != "H" or stage != "0" or blob == (_git(folder, "hash-object", "--stdin", stdin="") or "").strip():
        return None
    return mode, blob, path


def refresh_git_index(model=None, os_path: str = "", contents_manager=None, **kwargs) -> bool:
    """Jupyter's post-save hook: make git compare the file just saved by its filtered content, not its size.
    Returns whether the index entry was re-recorded; a failure (git missing, the index locked) only logs."""
    path = Path(os_path)
    entry = _index_entry(path.parent, path.name)
    if entry is None:
        return False
    mode, blob, tracked = entry
    done = _git(path.parent, "update-index", "--cacheinfo", f"{mode},{blob},{tracked}") is not None
    if not done and contents_manager is not None:
        contents_manager.log.warning("git update-index failed for %s: git status may list it until `git add`", path)
    return done
