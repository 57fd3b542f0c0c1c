"""Running statements: every call within a time bound, driver errors translated, writes in
transactions that lock their learners first.

The learner lock (``sql._LOCK``) is what makes versions and event seqs commit-ordered: it
serializes the writers of one learner from their first statement to COMMIT (see
``store.py``). Cancellation and timeouts drop the connection instead of reusing it: a
statement cut short leaves the protocol in an unknown state, and the server rolls back a
transaction whose connection is gone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from qortex_mcp.errors import ClosedError
from qortex_mcp.learning.postgres.errors import DRIVER_ERRORS, is_connection_error, translate
from qortex_mcp.learning.postgres.sql import Statements
from qortex_mcp.logging import get_logger

__all__ = ["Runner"]

log = get_logger(__name__)

T = TypeVar("T")


class Runner:
    """Runs ``fn(connection)`` on ``pool`` (set once the pool is open).

    Args:
        sql: the statements of the store's schema.
        timeout_s: the bound on every call, from acquiring a connection to the answer.
        channel, origin: where write transactions NOTIFY, and who they say sent it.
    """

    def __init__(self, sql: Statements, timeout_s: float, channel: str, origin: str) -> None:
        self.sql = sql
        self.timeout_s = timeout_s
        self.channel = channel
        self.origin = origin
        self.pool: Any = None

    async def run(
        self, doing: str, fn: Callable[[Any], Awaitable[T]], *, retry: bool = False
    ) -> T:
        """``fn(connection)`` within ``timeout_s``. With ``retry`` (idempotent reads only), a
        connection found dead (e.g. after a server restart) is replaced once.

        Raises:
            StoreError: translated from the driver (``StoreUnavailable`` after the bound).
            ClosedError: there is no pool.
        """
        pool = self.pool
        if pool is None:
            raise ClosedError("the PostgreSQL store is not initialized; await initialize() first")
        try:
            async with asyncio.timeout(self.timeout_s):
                try:
                    return await self._on_connection(pool, fn)
                except DRIVER_ERRORS as exc:
                    if not (retry and is_connection_error(exc)):
                        raise
                    log.debug("postgres_retry", doing=doing, error=type(exc).__name__)
                return await self._on_connection(pool, fn)
        except DRIVER_ERRORS as exc:
            raise translate(exc, doing, self.timeout_s) from exc

    async def _on_connection(self, pool: Any, fn: Callable[[Any], Awaitable[T]]) -> T:
        conn = await pool.acquire(timeout=self.timeout_s)
        try:
            return await fn(conn)
        except (TimeoutError, asyncio.CancelledError):
            conn.terminate()
            raise
        except DRIVER_ERRORS as exc:
            if is_connection_error(exc):
                conn.terminate()
            raise
        finally:
            try:
                await pool.release(conn)
            except DRIVER_ERRORS as exc:
                # asyncpg has already dropped the connection; what fn did (or raised) is
                # still the answer.
                log.info("postgres_release_failed", error=type(exc).__name__)

    async def write(
        self, learners: Sequence[str], doing: str,
        body: Callable[[Any, dict[str, int]], Awaitable[T]],
        keep: Callable[[T], bool] = lambda _: True,
    ) -> T:
        """One transaction: lock ``learners`` and take their next versions, run
        ``body(connection, versions)``, COMMIT when ``keep(result)`` (else roll back)."""
        return await self.run(doing, lambda conn: self._transaction(conn, learners, body, keep))

    async def _transaction(
        self, conn: Any, learners: Sequence[str],
        body: Callable[[Any, dict[str, int]], Awaitable[T]], keep: Callable[[T], bool],
    ) -> T:
        tx = conn.transaction()
        await tx.start()
        try:
            versions = {}
            now = time.time()
            # Sorted: two instances locking the same learners never wait on each other in
            # a cycle.
            for learner in sorted(set(learners)):
                row = await conn.fetchrow(self.sql.lock, learner, now, self.channel,
                                          f"{self.origin}:{learner}")
                versions[learner] = int(row[0])
            result = await body(conn, versions)
        except BaseException as exc:
            await self._abort(conn, tx, exc)
            raise
        if keep(result):
            await tx.commit()
        else:
            await tx.rollback()
        return result

    async def _abort(self, conn: Any, tx: Any, exc: BaseException) -> None:
        """Roll back after ``exc``; a connection in an unknown state is dropped instead.
        ``exc`` stays the caller's error."""
        if conn.is_closed():
            return
        if not isinstance(exc, Exception) or isinstance(exc, TimeoutError) or (
            isinstance(exc, DRIVER_ERRORS) and is_connection_error(exc)
        ):
            conn.terminate()
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                await tx.rollback()
        except DRIVER_ERRORS as err:
            log.debug("postgres_rollback_failed", error=type(err).__name__)
            conn.terminate()
