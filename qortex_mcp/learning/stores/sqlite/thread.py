"""One plain ``sqlite3`` connection owned by one thread, driven from asyncio.

The SQLite store used to reach its connections through aiosqlite, where every ``await`` on a
connection is a hand-off to the connection's thread and back (about 60-100 us here): one
feedback transaction took eight of them. Here the caller hands the thread a whole unit of
work (a function of the connection: a transaction, a snapshot read) and gets one answer
back, so a transaction costs one hand-off whatever it does.

The thread is a daemon: a program that forgets to close its store still exits (what was
committed is on disk; WAL recovers the rest as after a crash). Every answer goes back with
``loop.call_soon_threadsafe``; one that arrives after its loop closed is dropped, so the
thread never prints a traceback of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

__all__ = ["Batch", "DbThread", "settle"]

T = TypeVar("T")
B = TypeVar("B")
_NOTHING: Final = object()


@dataclass
class _Call:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _set(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # its caller was cancelled: the work happened all the same
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _set_many(answers: Sequence[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, exc in answers:
        _set(future, result, exc)


def settle(
    loop: asyncio.AbstractEventLoop,
    answers: Sequence[tuple[asyncio.Future[Any], Any, BaseException | None]],
) -> None:
    """Answer futures of ``loop`` from the database thread, all in one loop wake-up."""
    if answers:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            loop.call_soon_threadsafe(_set_many, answers)


@dataclass
class Batch(Generic[B]):
    """How the thread groups queued items of one type into one unit (group commit)."""

    kind: type[B]
    run: Callable[[sqlite3.Connection, list[B]], None]
    """Runs on the thread with the items (it answers their futures itself)."""
    most: int


class DbThread(Generic[B]):
    """A daemon thread that opens a connection with ``open_conn`` and runs, in order, the
    functions given to ``call`` (and, with ``batch``, consecutive queued items of
    ``batch.kind`` together, at most ``batch.most`` at a time)."""

    def __init__(self, name: str, open_conn: Callable[[], sqlite3.Connection],
                 batch: Batch[B] | None = None) -> None:
        self._open = open_conn
        self._batch = batch
        self._inbox: queue.SimpleQueue[_Call | B | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._opened: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self.conn: sqlite3.Connection | None = None

    async def start(self) -> None:
        """Start the thread and open its connection; the open's error is raised here (and
        the thread has ended by then)."""
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()
        self._opened = (loop, opened)
        self._thread.start()
        try:
            await opened
        except BaseException:
            self._inbox.put(None)
            self._thread.join(5.0)
            raise

    def reopen(self) -> None:
        """On the thread: replace a connection that cannot roll back."""
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
        self.conn = self._open()

    def _main(self) -> None:
        assert self._opened is not None
        loop, opened = self._opened
        try:
            self.conn = self._open()
        except Exception as exc:  # noqa: BLE001  # raised by start(), in the caller's task
            settle(loop, [(opened, None, exc)])
            return
        settle(loop, [(opened, None, None)])
        try:
            self._serve()
        finally:
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()

    def _serve(self) -> None:
        batch = self._batch
        held: _Call | B | object | None = _NOTHING  # read past the end of a group
        while True:
            item = self._inbox.get() if held is _NOTHING else held
            held = _NOTHING
            if item is None:
                return
            if isinstance(item, _Call):
                self._run(item)
            else:
                assert batch is not None
                assert self.conn is not None
                group: list[B] = [item]  # type: ignore[list-item]  # not a call: a batch item
                while len(group) < batch.most:
                    try:
                        nxt = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                    if not isinstance(nxt, batch.kind):
                        held = nxt
                        break
                    group.append(nxt)
                batch.run(self.conn, group)
                del group
            # Nothing done stays referenced while the thread waits: a finished call's
            # function may hold its store, which must stay collectable (its finaliser
            # warns about a store never closed, and ends this thread).
            del item

    def _run(self, call: _Call) -> None:
        assert self.conn is not None
        try:
            result = call.fn(self.conn)
        except Exception as exc:  # noqa: BLE001  # the caller's to handle, with its traceback
            settle(call.loop, [(call.future, None, exc)])
        else:
            settle(call.loop, [(call.future, result, None)])

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn(connection)``; its result or exception arrives on the future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._inbox.put(_Call(fn, future, loop))
        return future

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the thread, awaited (one hand-off)."""
        return await self.submit(fn)

    def put(self, item: B) -> None:
        """Queue one item for the batch runner (its own future carries the answer)."""
        self._inbox.put(item)

    async def stop(self) -> None:
        """Run what is queued, close the connection, end the thread."""
        if not self._thread.is_alive():
            return
        done = self.submit(lambda conn: None)
        self._inbox.put(None)
        with contextlib.suppress(Exception):
            await done
        self._thread.join(5.0)

    def stop_soon(self) -> None:
        """From anywhere (a finaliser): end the thread once what is queued has run."""
        self._inbox.put(None)
