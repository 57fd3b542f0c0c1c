"""What the SQLite store checks before it opens a file: a location that can never hold the
store, or another program's database, is refused before SQLite creates or changes anything,
with a message that says what to fix (``STORE_INACCESSIBLE``, never "retry")."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from pathlib import Path
from typing import Final

from qortex_mcp.errors import StoreError, StoreFull, StoreInaccessible, StoreUnavailable

__all__ = ["USER_OBJECTS", "foreign", "preflight", "state_dir_error"]

# Schema objects other than SQLite's own: a file with some but no qortex_meta is not ours.
USER_OBJECTS: Final = (
    "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
)
# mkdir failures no retry can cure: the location itself has to change.
_PERMANENT_ERRNOS: Final = frozenset({
    errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG,
    errno.ELOOP,
})


def state_dir_error(parent: Path, exc: OSError) -> StoreError:
    """Why the state directory could not be created, as the error a caller can act on."""
    doing = f"cannot create the state directory {parent}: {exc.strerror}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(f"{doing}; free space and retry")
    if exc.errno in _PERMANENT_ERRNOS:
        return StoreInaccessible(f"{doing}; fix it or set QORTEX_STATE_DIR to another directory")
    return StoreUnavailable(doing)


def foreign(path: Path, names: set[str]) -> StoreInaccessible:
    shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
    return StoreInaccessible(
        f"{path} is another program's SQLite database (tables {shown}; no qortex_meta); "
        "it was left untouched: set QORTEX_STATE_DIR to another directory")


def preflight(path: Path) -> None:
    """Refuse, before SQLite creates or changes anything, a location that can never hold
    the store; each message says what to fix. (Runs in a thread.)"""
    if path.is_dir():
        raise StoreInaccessible(f"{path} is a directory, where the SQLite store needs a file: "
                                "remove it or set QORTEX_STATE_DIR to another directory")
    parent = path.parent
    if not path.exists():
        # os.access, unlike the mode bits, also sees read-only mounts and immutable files
        # for root.
        if not os.access(parent, os.W_OK | os.X_OK):
            raise StoreInaccessible(
                f"the state directory {parent} is read-only and holds no database yet: make "
                "it writable or set QORTEX_STATE_DIR to another directory")
        return
    if not os.access(path, os.R_OK | os.W_OK):
        raise StoreInaccessible(f"{path} is not readable and writable: fix its permissions "
                                "or set QORTEX_STATE_DIR to another directory")
    try:
        # immutable=1: no lock, no -wal or -shm file, nothing written. (A WAL not yet
        # checkpointed is not read; the check inside the schema transaction covers that.)
        uri = f"{path.absolute().as_uri()}?mode=ro&immutable=1"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            names = {str(r[0]) for r in db.execute(USER_OBJECTS)}
    except sqlite3.Error:
        return  # not readable as a database: opening it reports why (CORRUPT_STATE, ...)
    if names and "qortex_meta" not in names:
        raise foreign(path, names)
