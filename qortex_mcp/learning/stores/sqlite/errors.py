"""SQLite driver errors mapped onto the one error tree (retryable conditions keep
retryable codes)."""

from __future__ import annotations

import sqlite3
from typing import Final

from qortex_mcp.errors import (
    CorruptState,
    StoreBusy,
    StoreError,
    StoreFull,
    StoreUnavailable,
)

__all__ = ["BUSY", "primary_code", "translate"]

BUSY: Final = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def primary_code(exc: sqlite3.Error) -> int | None:
    """The primary result code (extended codes carry it in the low byte), if the driver
    gave one."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def translate(exc: sqlite3.Error, doing: str) -> StoreError:
    """Map a driver error to the tree: retryable conditions get retryable codes."""
    primary = primary_code(exc)
    if primary == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc):
        return StoreFull(f"the store's disk is full while {doing}; free space and retry")
    if primary in BUSY:
        return StoreBusy(f"the database stayed locked by another writer while {doing}; retry")
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return CorruptState(f"the SQLite file is not a valid qortex database ({doing})")
    if primary in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY):
        return StoreUnavailable(f"the SQLite file cannot be written while {doing}; retry")
    return StoreError(f"SQLite failed while {doing}: {type(exc).__name__}")
