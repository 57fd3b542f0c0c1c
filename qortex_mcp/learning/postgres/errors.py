"""Map asyncpg and socket errors into the store error tree.

Retryable codes mean "the transaction rolled back or its outcome is unknown, retry with the
same selection id": feedback is deduplicated on that id, so a retry never counts twice.
Messages name the exception type and SQLSTATE only: driver messages can quote hosts,
user names or values, and a DSN or password must never reach an agent or a log.
"""

from __future__ import annotations

from typing import Final

import asyncpg
from asyncpg import exceptions as pgexc

from qortex_mcp.errors import StoreBusy, StoreError, StoreFull, StoreUnavailable

__all__ = ["DRIVER_ERRORS", "is_connection_error", "translate"]

DRIVER_ERRORS: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    pgexc.InternalClientError,
    OSError,
    TimeoutError,
)
"""What a call into asyncpg may raise besides our own errors (connect, query, pool)."""

_UNAVAILABLE: Final = (
    pgexc.PostgresConnectionError,  # class 08, including "connection does not exist"
    pgexc.CannotConnectNowError,  # 57P03: starting up or shutting down
    pgexc.AdminShutdownError,  # 57P01: pg_ctl stop -m fast, pg_terminate_backend
    pgexc.CrashShutdownError,  # 57P02: pg_ctl stop -m immediate, a backend crash
    pgexc.ReadOnlySQLTransactionError,  # a standby: failover in progress
)
_BUSY: Final = (
    pgexc.TransactionRollbackError,  # class 40: serialization failure, deadlock
    pgexc.LockNotAvailableError,
    pgexc.QueryCanceledError,  # statement_timeout
    pgexc.TooManyConnectionsError,
)


def is_connection_error(exc: BaseException) -> bool:
    """True when the connection itself is gone (a fresh connection may well work)."""
    if isinstance(exc, TimeoutError):  # an OSError, but the budget is spent: no retry
        return False
    if isinstance(exc, OSError | pgexc.PostgresConnectionError | pgexc.AdminShutdownError
                  | pgexc.CrashShutdownError | pgexc.CannotConnectNowError):
        return True
    if isinstance(exc, pgexc.InternalClientError):
        # e.g. "cannot switch to state 15; another operation is in progress": a connection
        # the server cut in the middle of an exchange, not yet noticed as closed.
        return True
    return isinstance(exc, asyncpg.InterfaceError) and not isinstance(
        exc, pgexc.ClientConfigurationError | pgexc.DataError
    )


def translate(exc: BaseException, doing: str, timeout_s: float) -> StoreError:
    """The ``StoreError`` for a driver exception raised while ``doing`` something."""
    name = type(exc).__name__
    state = getattr(exc, "sqlstate", None)
    tag = f"{name}, SQLSTATE {state}" if state else name
    if isinstance(exc, TimeoutError):
        return StoreUnavailable(
            f"PostgreSQL did not answer within {timeout_s:g} s while {doing}; the outcome is "
            "unknown: retry (feedback with the same selection id is never counted twice)"
        )
    if isinstance(exc, pgexc.DiskFullError):
        return StoreFull(f"PostgreSQL's disk is full while {doing} ({tag}); free space and retry")
    if isinstance(exc, _BUSY):
        return StoreBusy(f"PostgreSQL is busy while {doing} ({tag}); retry")
    if isinstance(exc, (*_UNAVAILABLE, pgexc.InsufficientResourcesError)) or (
        is_connection_error(exc)
    ):
        return StoreUnavailable(f"PostgreSQL is unavailable while {doing} ({tag}); retry")
    if isinstance(exc, pgexc.InvalidAuthorizationSpecificationError):
        return StoreError(f"PostgreSQL refused the credentials while {doing} ({tag})")
    if isinstance(exc, pgexc.InvalidCatalogNameError):
        return StoreError(f"the PostgreSQL database does not exist ({tag})")
    if isinstance(exc, pgexc.ClientConfigurationError):
        return StoreError(f"the PostgreSQL connection settings are invalid ({name})")
    return StoreError(f"PostgreSQL failed while {doing} ({tag})")
