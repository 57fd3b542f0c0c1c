"""LISTEN/NOTIFY: wake a learner as soon as another instance commits a change.

Every write transaction sends ``pg_notify(channel, "<origin>:<learner>")``; PostgreSQL
delivers it after COMMIT (never for a rolled-back transaction). One connection per store
listens; a notification from another store instance sets the learner's wake-up event, and
the learner's refresh loop then pulls the new rows with ``changes``. Notifications a store
sent itself are ignored: its own writes already updated the learner that made them.

Notifications are a latency optimisation, never the source of truth: ``wait_for_change``
also returns after its polling interval, and after the listening connection comes back from
an outage every waiter is woken (notifications sent meanwhile are lost).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

from qortex_mcp.learning.postgres.errors import DRIVER_ERRORS
from qortex_mcp.learning.tasks import stop_tasks
from qortex_mcp.logging import get_logger

__all__ = ["Listener"]

log = get_logger(__name__)

_KEEPALIVE_S: Final = 2.0
"""A silent peer (no FIN, e.g. a frozen host) is noticed by a ping this often."""
_RETRY_S: Final = (0.1, 0.2, 0.5, 1.0)


class Listener:
    """Keeps one LISTEN connection alive and turns notifications into wake-ups.

    Args:
        channel: the notification channel (one per schema).
        origin: this store instance's id; its own notifications are ignored.
        connect: opens the listening connection.
        release: gives the connection back (closes it, or returns it to a shared pool).
        timeout_s: bound on the keep-alive ping.
    """

    def __init__(
        self,
        channel: str,
        origin: str,
        connect: Callable[[], Awaitable[Any]],
        release: Callable[[Any], Awaitable[None]],
        timeout_s: float,
    ) -> None:
        self.channel = channel
        self.origin = origin
        self._connect = connect
        self._release = release
        self._timeout_s = timeout_s
        self._wakers: dict[str, asyncio.Event] = {}
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.listening = asyncio.Event()
        """Set while notifications can arrive."""
        self.reconnects = 0
        self.server_pid: int | None = None
        """The listening backend's process id (for operators and tests)."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"qortex-pg-listen-{self.channel}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            await stop_tasks([self._task], f"listener {self.channel}")
            self._task = None
        self.listening.clear()
        self._wake_all()

    async def wait(self, learner: str, within_s: float) -> None:
        """Return when ``learner`` was changed by another instance, or after ``within_s``."""
        event = self._wakers.setdefault(learner, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                await event.wait()
        # A notification that lands while the caller pulls changes stays set, so the next
        # wait returns at once and the caller pulls again: nothing is slept through.
        event.clear()

    def _wake_all(self) -> None:
        for event in self._wakers.values():
            event.set()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        origin, _, learner = payload.partition(":")
        if origin == self.origin:
            return
        event = self._wakers.get(learner)
        if event is not None:
            event.set()

    def _on_lost(self, _conn: object) -> None:
        self._lost.set()

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:  # a cancellation a driver swallowed ends it too (tasks.py)
            served = False
            try:
                conn = await self._connect()
            except DRIVER_ERRORS as exc:
                if attempt == 0:
                    log.warning("postgres_listen_failed", error=type(exc).__name__)
            else:
                try:
                    served = await self._serve(conn)
                finally:
                    self.listening.clear()
                    conn.remove_termination_listener(self._on_lost)
                    await self._unlisten(conn)
                    await self._release(conn)
            # Reconnect at once after a connection that served; back off while failing.
            attempt = 0 if served else attempt + 1
            if attempt:
                await asyncio.sleep(_RETRY_S[min(attempt, len(_RETRY_S)) - 1])

    async def _unlisten(self, conn: Any) -> None:
        # A pooled connection must go back without our callback (asyncpg warns otherwise).
        if conn.is_closed():
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                await conn.remove_listener(self.channel, self._on_notify)
        except DRIVER_ERRORS as exc:
            log.debug("postgres_unlisten_failed", error=type(exc).__name__)
            conn.terminate()

    async def _serve(self, conn: Any) -> bool:
        """Listen on ``conn`` until it is lost; False when LISTEN itself failed."""
        self._lost.clear()
        conn.add_termination_listener(self._on_lost)
        try:
            async with asyncio.timeout(self._timeout_s):
                await conn.add_listener(self.channel, self._on_notify)
        except DRIVER_ERRORS as exc:
            log.warning("postgres_listen_failed", error=type(exc).__name__)
            return False
        self.server_pid = conn.get_server_pid()
        if self.reconnects:
            log.info("postgres_listening_again", channel=self.channel)
        self.reconnects += 1
        self.listening.set()
        # Whatever was sent while we were not listening is lost: make every learner look.
        self._wake_all()
        while not (conn.is_closed() or self._stopping):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_KEEPALIVE_S):
                    await self._lost.wait()
            if self._lost.is_set() or conn.is_closed():
                break
            try:
                await conn.execute("SELECT 1", timeout=self._timeout_s)
            except DRIVER_ERRORS as exc:
                log.warning("postgres_listen_lost", error=type(exc).__name__)
                return True
        log.warning("postgres_listen_lost", channel=self.channel)
        return True
