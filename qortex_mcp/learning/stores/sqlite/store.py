"""SQLite store (the default): WAL, one writer thread with group commit, one reader thread.

Durability and concurrency rules, each for a reason:

* ``synchronous=FULL`` by default: a committed feedback survives power loss, not just a
  process crash. ``NORMAL`` is an opt-in that keeps consistency but may drop the last
  commits on power loss.
* Every write transaction is ``BEGIN IMMEDIATE`` on a connection opened with
  ``isolation_level=None``: a deferred transaction that reads and then writes can fail with
  SQLITE_BUSY_SNAPSHOT at once, whatever the busy timeout, when another process commits.
* One writer connection, owned by one thread (``thread.DbThread``), which runs each
  transaction whole as one call: one hand-off from the event loop per transaction, not one
  per statement. Concurrent ``apply`` calls queued there are committed together in one
  transaction (group commit): throughput grows with concurrency while each caller still
  returns only after its COMMIT.
* A caller that is cancelled does not cancel its transaction; it completes or rolls back
  as a whole on the writer thread.
* Counters are incremented in SQL (``n = n + 1``), never computed in Python, so two
  processes on one file never lose an update.
* Reads use a second connection on its own thread (WAL readers do not block the writer);
  a snapshot read is one read transaction in one call.

This module is the facade and stays one file past 400 lines because its parts share the
store's lifecycle state (the two threads, the loop, the running ``atomically()`` session):
the SQL, the batch writer, the threads, the pre-open checks and the error mapping are in
their own modules beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import queue
import sqlite3
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Self, TypeVar

from qortex_mcp.errors import (
    ClosedError,
    SchemaTooNew,
    StoreBusy,
    StoreError,
    StoreInaccessible,
    StoreUnavailable,
)
from qortex_mcp.learning.stores.base import (
    SCHEMA_VERSION,
    LearnerSnapshot,
    LearnerSummary,
    StoreInfo,
    claim_backup,
    settled,
)
from qortex_mcp.learning.stores.decision_rows import decision_from_row, decision_values
from qortex_mcp.learning.stores.dedup import ApplyRequest
from qortex_mcp.learning.stores.sqlite import sql
from qortex_mcp.learning.stores.sqlite.checks import (
    USER_OBJECTS,
    foreign,
    preflight,
    state_dir_error,
)
from qortex_mcp.learning.stores.sqlite.errors import BUSY, primary_code, translate
from qortex_mcp.learning.stores.sqlite.thread import Batch, DbThread, settle
from qortex_mcp.learning.stores.sqlite.writer import apply_batch
from qortex_mcp.learning.types import (
    GLOBAL_CONTEXT,
    ApplyResult,
    ArmRow,
    Decision,
    Event,
    EventRow,
    EvidenceRow,
    FeedbackRow,
)
from qortex_mcp.logging import get_logger

__all__ = ["SqliteLearningStore"]

log = get_logger(__name__)

T = TypeVar("T")
_MIGRATION_TRIES: Final = 5

def _rows(conn: sqlite3.Connection, statement: str,
          args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(statement, args).fetchall()]


def _one(conn: sqlite3.Connection, statement: str,
         args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
    row = conn.execute(statement, args).fetchone()
    return tuple(row) if row is not None else None


def _connect(path: Path, busy_timeout_ms: int, synchronous: str) -> sqlite3.Connection:
    """On a database thread: a connection in autocommit mode (every write transaction says
    ``BEGIN IMMEDIATE`` itself), with the store's busy timeout and durability."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn


class _Aborted(Exception):
    """An ``atomically()`` block failed: its transaction rolls back."""


_Op = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]", str]


@dataclass
class _Session:
    """An ``atomically()`` block: its calls run, in order, inside one writer call."""

    task: asyncio.Task[Any] | None
    ops: queue.SimpleQueue[_Op | bool]
    job: asyncio.Future[Any]


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: nobody waits for an aborted block's rollback


class SqliteLearningStore:
    """Learner state in one SQLite file, safe for many tasks and several processes.

    Args:
        path: the database file (its directory is created).
        synchronous: ``"FULL"`` (default, power-loss safe) or ``"NORMAL"`` (faster commits;
            the newest commits may roll back after a power loss, never after a crash).
        busy_timeout_ms: how long a writer waits for another process's write lock.
        max_batch: most feedback requests committed in one transaction.
    """

    kind = "sqlite"
    shared = True

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = 5000,
        max_batch: int = 256,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.max_batch = max_batch
        self._writer: DbThread[ApplyRequest] | None = None
        self._reader: DbThread[ApplyRequest] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = False
        self._closed = False
        self._init_lock = asyncio.Lock()
        self._active: _Session | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def __del__(self) -> None:
        # Like an unclosed file or httpx client: say so (shown when ResourceWarnings are on,
        # e.g. python -X dev or pytest), and end the database threads so nothing lingers.
        if getattr(self, "_closed", True) or getattr(self, "_writer", None) is None:
            return
        warnings.warn(f"SqliteLearningStore({str(self.path)!r}) was never closed; use "
                      "'async with store:' or 'await store.close()'", ResourceWarning,
                      stacklevel=2, source=self)
        for thread in (self._writer, self._reader):
            if thread is not None:
                thread.stop_soon()

    async def __aenter__(self) -> Self:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _threads(self) -> tuple[DbThread[ApplyRequest], DbThread[ApplyRequest]]:
        """The writer and reader threads. Neither holds the store itself (only a weak
        reference to its batch runner): a store its program dropped unclosed is collected,
        and its finaliser ends them."""
        opener = functools.partial(_connect, self.path, self.busy_timeout_ms, self.synchronous)
        runner = weakref.WeakMethod(self._run_batch)

        def run_batch(conn: sqlite3.Connection, batch: list[ApplyRequest]) -> None:
            method = runner()
            if method is not None:  # else unreachable: whoever waits holds the store
                method(conn, batch)

        return (DbThread("qortex-sqlite-writer", opener,
                         Batch(ApplyRequest, run_batch, self.max_batch)),
                DbThread("qortex-sqlite-reader", opener))

    async def initialize(self) -> None:
        async with self._init_lock:
            if self._closed:
                raise ClosedError("the SQLite store is closed")
            if self._ready:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise state_dir_error(self.path.parent, exc) from exc
            await asyncio.to_thread(preflight, self.path)
            self._loop = asyncio.get_running_loop()
            try:
                self._writer, reader = self._threads()
                await self._writer.start()
                mode = await self._writer.call(self._enable_wal)
                if mode is None or str(mode[0]).lower() != "wal":
                    raise StoreUnavailable("SQLite refused WAL mode for the store file")
                backup, migrated = await self._open_schema(self._writer)
                self._reader = reader
                await self._reader.start()
            except sqlite3.Error as exc:
                await self._close_connections()
                if primary_code(exc) in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY):
                    # At open these are the file's or the directory's permissions: permanent.
                    raise StoreInaccessible(
                        f"cannot open {self.path} for writing ({exc}): make the file and its "
                        "directory writable or set QORTEX_STATE_DIR to another directory"
                    ) from exc
                raise translate(exc, f"opening {self.path.name}") from exc
            except BaseException:
                await self._close_connections()
                raise
            self._ready = True
            if migrated is not None:
                log.warning("store_migrated", store="sqlite", path=str(self.path),
                            from_version=migrated, to_version=SCHEMA_VERSION,
                            backup=None if backup is None else str(backup))
            log.debug("store_opened", store="sqlite", path=str(self.path),
                      synchronous=self.synchronous)

    def _enable_wal(self, conn: sqlite3.Connection) -> tuple[Any, ...] | None:
        """``PRAGMA journal_mode = WAL``, retried while another process holds the file.

        Switching a fresh file to WAL needs an exclusive lock, and SQLite answers BUSY at
        once there instead of calling the busy handler: two processes opening a new store
        at the same moment would otherwise see "database is locked" from one of them.
        """
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        pause = 0.002
        while True:
            try:
                return _one(conn, "PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                if primary_code(exc) not in BUSY or (
                    time.monotonic() + pause > deadline
                ):
                    raise
            time.sleep(pause)  # on the writer thread, before the store is usable
            pause = min(pause * 2, 0.1)

    def _stored_version(self, conn: sqlite3.Connection) -> int | None:
        """The file's schema version; None for a new (or foreign) file."""
        if _one(conn, "SELECT 1 FROM sqlite_master WHERE type = 'table' "
                "AND name = 'qortex_meta'") is None:
            return None
        row = _one(conn, "SELECT value FROM qortex_meta WHERE key = 'schema_version'")
        return None if row is None else int(row[0])

    async def _open_schema(self, writer: DbThread[ApplyRequest]) -> tuple[Path | None,
                                                                        int | None]:
        """Back up a file of an older schema, then create or migrate the schema: the
        backup and the version migrated from (None, None: nothing migrated).

        The backup cannot be taken inside the migration's transaction (SQLite's backup of a
        connection's own open write transaction waits on itself), so it is taken just
        before, and the migration checks that no other process committed in between (a
        ``data_version`` that moved): then that backup is dropped and both are done again.
        """
        for _ in range(_MIGRATION_TRIES):
            backup, mark = await writer.call(self._backup_before_migration)
            migrated, stale = await writer.call(functools.partial(self._create_schema, mark=mark))
            if not stale and (migrated is not None or backup is None):
                return backup, migrated
            # Stale, or another process migrated between the version read and the backup
            # (which then copied the migrated file): this backup is not one to keep.
            if backup is not None:
                backup.unlink(missing_ok=True)
            if not stale:
                return None, None
        raise StoreBusy(f"{self.path.name} kept changing while it was to be migrated; "
                        "retry when its other writers are quieter")

    def _backup_before_migration(self, conn: sqlite3.Connection) -> tuple[Path | None,
                                                                           int | None]:
        """A copy of a file of an older schema, beside it, taken before it migrates:
        ``<name>.schema<N>.bak`` (a consistent snapshot through SQLite's backup API), and
        the file's ``data_version`` right after it. (None, None) when nothing will
        migrate."""
        version = self._stored_version(conn)
        if version is None or version >= SCHEMA_VERSION:
            return None, None
        target = claim_backup(self.path, version)  # never another process's copy
        copy = sqlite3.connect(target)
        try:
            conn.backup(copy)
        finally:
            copy.close()
        mark = _one(conn, "PRAGMA data_version")
        assert mark is not None
        return target, int(mark[0])

    def _create_schema(self, conn: sqlite3.Connection,
                       mark: int | None = None) -> tuple[int | None, bool]:
        """Create the schema, or migrate an older one in the same transaction: returns
        the version migrated from (None: nothing migrated), and True (having changed
        nothing) when another process committed since the backup taken at ``mark``."""
        migrated: int | None = None
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = _one(conn, "PRAGMA data_version")
            if mark is not None and now is not None and int(now[0]) != mark:
                conn.execute("ROLLBACK")
                return None, True
            names = {str(r[0]) for r in _rows(conn, USER_OBJECTS)}
            if names and "qortex_meta" not in names:
                raise foreign(self.path, names)  # rolled back below: nothing created
            # Statement by statement: executescript() would COMMIT the open transaction.
            for statement in sql.SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            # Files written before the answered counter: add it (0), their data intact.
            columns = {r[1] for r in _rows(conn, "PRAGMA table_info(learners)")}
            if "answered" not in columns:
                conn.execute(
                    "ALTER TABLE learners ADD COLUMN answered INTEGER NOT NULL DEFAULT 0")
            row = _one(conn, "SELECT value FROM qortex_meta WHERE key = 'schema_version'")
            if row is None:
                conn.execute(
                    "INSERT INTO qortex_meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row[0]) > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"{self.path.name} has schema version {row[0]}, newer than this "
                    f"qortex-mcp understands ({SCHEMA_VERSION}); upgrade qortex-mcp"
                )
            elif int(row[0]) < SCHEMA_VERSION:
                migrated = int(row[0])
                self._migrate(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return migrated, False

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Schema 1 to 2, inside ``_create_schema``'s transaction (all of it or none)."""
        columns = {r[1] for r in _rows(conn, "PRAGMA table_info(events)")}
        for statement in sql.MIGRATE_1_2:
            if statement.split()[-2] not in columns:
                conn.execute(statement)
        conn.execute("UPDATE qortex_meta SET value = ? WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION),))

    async def _close_connections(self) -> None:
        for thread in (self._writer, self._reader):
            if thread is not None:
                await thread.stop()
        self._writer = self._reader = None

    async def close(self) -> None:
        """Finish queued writes, then close both connections. Idempotent."""
        async with self._init_lock:
            if self._closed:
                return
            self._closed = True
            self._ready = False
            await self._close_connections()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the SQLite store is closed")
        if not self._ready:
            raise ClosedError("the SQLite store is not initialized; await initialize() first")

    def _write(self) -> DbThread[ApplyRequest]:
        self._check_open()
        assert self._writer is not None
        return self._writer

    async def info(self) -> StoreInfo:
        return StoreInfo("sqlite", str(self.path), SCHEMA_VERSION)

    # --- one transaction for many calls ----------------------------------------------------

    def _session(self) -> _Session | None:
        """The running atomically() block, if this task runs it (other tasks' calls queue
        behind its transaction)."""
        session = self._active
        return session if session is not None and session.task is asyncio.current_task() \
            else None

    @contextlib.asynccontextmanager
    async def atomically(self) -> AsyncIterator[None]:
        """All of the block's calls, or none (see ``AtomicStore``): they run in one
        ``BEGIN IMMEDIATE`` transaction on the writer thread, reads included (they see the
        block's own writes). This process's other writes queue behind it; other processes
        wait up to ``busy_timeout_ms``, then get the retryable ``STORE_BUSY``."""
        writer = self._write()
        if self._session() is not None:
            raise RuntimeError("SqliteLearningStore.atomically() is not reentrant")
        loop = asyncio.get_running_loop()
        ops: queue.SimpleQueue[_Op | bool] = queue.SimpleQueue()
        started: asyncio.Future[None] = loop.create_future()

        def run(conn: sqlite3.Connection) -> None:
            # The writer thread stays in here, running the block's calls as they come, until
            # the block ends: every other write of this process waits behind it.
            settle(loop, [(started, None, None)])  # BEGIN IMMEDIATE succeeded
            while True:
                item = ops.get()
                if item is True:
                    return  # the transaction commits
                if item is False:
                    raise _Aborted()
                op, fut, doing = item
                try:
                    result = op(conn)
                except sqlite3.Error as exc:
                    settle(loop, [(fut, None, translate(exc, doing))])
                    raise  # the whole transaction rolls back
                except BaseException as exc:
                    settle(loop, [(fut, None, exc)])
                    raise
                settle(loop, [(fut, result, None)])

        session = _Session(asyncio.current_task(), ops,
                           writer.submit(self._transaction(run, "applying one transaction")))
        try:
            await asyncio.wait([started, session.job], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled while queued: the job ends as soon as it starts
            ops.put(False)
            session.job.add_done_callback(_consume)
            raise
        if not started.done():
            session.job.result()  # BEGIN failed: raise why
        self._active = session
        try:
            yield
        except BaseException:
            ops.put(False)
            session.job.add_done_callback(_consume)
            raise
        finally:
            self._active = None  # before the COMMIT: the next block's job may start after it
        ops.put(True)
        await session.job  # the COMMIT (its StoreError when it failed: nothing committed)

    async def _in_session(
        self, session: _Session, op: Callable[[sqlite3.Connection], Any], doing: str,
    ) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        session.ops.put((op, fut, doing))
        await asyncio.wait([fut, session.job], return_when=asyncio.FIRST_COMPLETED)
        if fut.done():
            return fut.result()
        session.job.result()  # the transaction ended before this call ran: raise why
        raise StoreError(f"the transaction ended before {doing}")

    # --- on the writer thread --------------------------------------------------------------

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as exc:  # the connection is unusable: replace it
                log.warning("sqlite_rollback_failed", error=type(exc).__name__)
                assert self._writer is not None
                self._writer.reopen()

    def _transaction(
        self, run: Callable[[sqlite3.Connection], T], doing: str
    ) -> Callable[[sqlite3.Connection], T]:
        """``run`` as one ``BEGIN IMMEDIATE`` ... ``COMMIT`` on the writer thread: a driver
        error rolls it back and becomes the tree's error for ``doing``."""

        def transaction(conn: sqlite3.Connection) -> T:
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = run(conn)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise translate(exc, doing) from exc
            except BaseException:
                self._rollback(conn)
                raise
            return result

        return transaction

    def _run_batch(self, conn: sqlite3.Connection, batch: list[ApplyRequest]) -> None:
        """Group commit: the queued feedback requests in one transaction, each answered
        once its COMMIT returned (in one wake-up of the event loop)."""
        loop = self._loop
        assert loop is not None
        try:
            results = self._write_batch(conn, batch)
        except sqlite3.Error as exc:
            self._rollback(conn)
            err = translate(exc, "saving feedback")
            log.warning("sqlite_write_failed", code=err.code, requests=len(batch))
            settle(loop, [(req.future, None, err) for req in batch])
            return
        except Exception as exc:  # a defect: its callers get it, the writer goes on
            self._rollback(conn)
            log.error("sqlite_write_crashed", requests=len(batch), exc_info=exc)
            settle(loop, [(req.future, None, exc) for req in batch])
            return
        settle(loop, [(req.future, result, None)
                      for req, result in zip(batch, results, strict=True)])

    def _write_batch(
        self, conn: sqlite3.Connection, batch: list[ApplyRequest]
    ) -> list[ApplyResult]:
        """One transaction for the batch; its results once COMMIT returned. (The
        reliability suite's fault-injecting store, ``qortex_mcp.testing.faults``, replaces
        this and ``_fold_plain`` to prove its checks catch the bugs they are for.)"""
        conn.execute("BEGIN IMMEDIATE")
        results = self._apply_batch(conn, batch)
        conn.execute("COMMIT")
        return results

    def _apply_batch(self, conn: sqlite3.Connection,
                     batch: list[ApplyRequest]) -> list[ApplyResult]:
        return apply_batch(conn, batch, self._fold_plain)

    def _fold_plain(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        """Add evidence increments without decay, in SQL (read and written under the lock):
        ``rows`` are (learner, ctx, arm, s, f, n, rsum, t, v), one per cell."""
        conn.executemany(sql.FOLD_PLAIN, rows)

    async def _submit_job(self, run: Callable[[sqlite3.Connection], T], doing: str) -> T:
        """``run`` in its own write transaction (or in the running atomically() block)."""
        writer = self._write()
        session = self._session()
        if session is not None:
            result: T = await self._in_session(session, run, doing)
            return result
        return await writer.call(self._transaction(run, doing))

    # --- writes ----------------------------------------------------------------------------

    async def apply(
        self, learner: str, rows: Sequence[FeedbackRow], half_life_s: float | None
    ) -> ApplyResult:
        writer = self._write()
        fut: asyncio.Future[ApplyResult] = asyncio.get_running_loop().create_future()
        request = ApplyRequest(learner, rows, half_life_s, fut)
        session = self._session()
        if session is not None:
            def alone(conn: sqlite3.Connection) -> ApplyResult:
                return self._apply_batch(conn, [request])[0]

            result: ApplyResult = await self._in_session(session, alone, "saving feedback")
            return result
        writer.put(request)
        return await fut

    async def apply_many(
        self, learner: str, requests: Sequence[Sequence[FeedbackRow]], half_life_s: float | None
    ) -> list[ApplyResult]:
        """Many ``apply`` requests queued at once: the writer commits up to ``max_batch`` of
        them per transaction (each decided on its own), without a task per request."""
        writer = self._write()
        if self._session() is not None:
            return [await self.apply(learner, rows, half_life_s) for rows in requests]
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[ApplyResult]] = []
        for rows in requests:
            fut: asyncio.Future[ApplyResult] = loop.create_future()
            writer.put(ApplyRequest(learner, rows, half_life_s, fut))
            futures.append(fut)
        return settled(await asyncio.gather(*futures, return_exceptions=True))

    async def ensure_learner(self, learner: str, config_json: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO learners (name, config, created_at) VALUES (?, ?, ?)",
                (learner, config_json, time.time()),
            )

        await self._submit_job(run, "creating a learner")

    async def selection_key(self, candidate: bytes) -> bytes:
        """The selection-signing key kept in this file (``qortex_meta``): ``candidate`` (ASCII)
        is stored when there is none yet; the first writer wins, so every process on the file
        signs with the same key. Used only by a ``Learner`` given this store and no signer;
        the server signs with its key file or ``QORTEX_SECRET`` instead."""

        def run(conn: sqlite3.Connection) -> bytes:
            conn.execute(
                "INSERT OR IGNORE INTO qortex_meta (key, value) VALUES ('selection_key', ?)",
                (candidate.decode("ascii"),),
            )
            row = _one(conn, "SELECT value FROM qortex_meta WHERE key = 'selection_key'")
            assert row is not None
            return str(row[0]).encode("ascii")

        return await self._submit_job(run, "reading the selection key")

    async def record_selections(
        self,
        learner: str,
        counts: Mapping[str, tuple[int, float]],
        priors: Mapping[str, tuple[float, float]],
        selections: int,
        explored: int,
        answered: int = 0,
        decisions: Sequence[Decision] = (),
    ) -> None:
        def run(conn: sqlite3.Connection) -> None:
            row = _one(conn, sql.BUMP, (learner, time.time()))
            assert row is not None
            v = int(row[0])
            conn.execute(
                "UPDATE learners SET selections = selections + ?, explored = explored + ?, "
                "answered = answered + ? WHERE name = ?",
                (selections, explored, answered, learner),
            )
            rows = []
            for arm in set(counts) | set(priors):
                n, last = counts.get(arm, (0, None))
                a0, b0 = priors.get(arm, (None, None))
                rows.append((learner, arm, a0, b0, n, last, v))
            conn.executemany(sql.COUNT_SELECTIONS, rows)
            if decisions:
                conn.executemany(sql.INSERT_DECISION,
                                 [decision_values(learner, d) for d in decisions])

        await self._submit_job(run, "recording selections")

    async def decay(
        self, learner: str, arm: str, factor: float, at: float, reason: str | None = None
    ) -> Sequence[EvidenceRow]:
        def run(conn: sqlite3.Connection) -> list[EvidenceRow]:
            row = _one(conn, sql.BUMP, (learner, time.time()))
            assert row is not None
            v = int(row[0])
            conn.execute(
                "UPDATE evidence SET s = s * ?1, f = f * ?1, v = ?2 WHERE learner = ?3 "
                "AND (?4 = '' OR arm = ?4)", (factor, v, learner, arm),
            )
            conn.execute(
                sql.INSERT_EVENT,
                (learner, "decay", None, arm, None, None, None, reason, at, factor, None, None),
            )
            return [EvidenceRow(*r) for r in conn.execute(sql.EVIDENCE_AT, (learner, v))]

        return await self._submit_job(run, "decaying evidence")

    async def reset(
        self, learner: str, arms: Sequence[str] | None, ctx: str | None, at: float,
        dry_run: bool,
    ) -> tuple[tuple[str, ...], int, float]:
        wanted = None if arms is None else json.dumps(list(arms))

        def match(conn: sqlite3.Connection) -> tuple[tuple[str, ...], int, float]:
            hits = _rows(conn, sql.RESET_MATCH, (learner, wanted, ctx))
            touched = tuple(sorted({h[1] for h in hits}))
            removed = sum(h[2] + h[3] for h in hits if h[0] == (ctx or GLOBAL_CONTEXT))
            return touched, len(hits), removed

        if dry_run:
            return await self._read_call(match)

        def run(conn: sqlite3.Connection) -> tuple[tuple[str, ...], int, float]:
            touched, n, removed = match(conn)
            if n:
                row = _one(conn, sql.BUMP, (learner, time.time()))
                assert row is not None
                conn.execute(sql.RESET_APPLY, (learner, wanted, ctx, int(row[0])))
                conn.executemany(sql.INSERT_EVENT, [
                    (learner, "reset", None, arm, ctx, None, None, None, at, None, None, None)
                    for arm in touched
                ])
            return touched, n, removed

        return await self._submit_job(run, "resetting")

    # --- reads -----------------------------------------------------------------------------

    async def _read_call(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """``read`` on the reader thread (one hand-off), or inside the running atomically()
        block on the writer, where the block's own writes are visible."""
        self._check_open()
        session = self._session()
        if session is not None:
            result: T = await self._in_session(session, read, "reading")
            return result
        assert self._reader is not None
        try:
            return await self._reader.call(read)
        except sqlite3.Error as exc:
            raise translate(exc, "reading") from exc

    async def _query(self, statement: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._read_call(lambda conn: _rows(conn, statement, args))

    @staticmethod
    def _snapshot_rows(
        conn: sqlite3.Connection, learner: str, cursor: int
    ) -> tuple[tuple[Any, ...] | None, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        head = _one(
            conn, "SELECT version, selections, explored, answered FROM learners WHERE name = ?",
            (learner,),
        )
        ev: list[tuple[Any, ...]] = []
        arms: list[tuple[Any, ...]] = []
        if head is not None and int(head[0]) > cursor:
            ev = _rows(conn, sql.EVIDENCE_SINCE, (learner, cursor))
            arms = _rows(conn, sql.ARMS_SINCE, (learner, cursor))
        return head, ev, arms

    async def _snapshot_read(
        self, learner: str, cursor: int
    ) -> tuple[tuple[Any, ...] | None, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Learner row, evidence and arms newer than ``cursor``, in one read transaction."""

        def read(conn: sqlite3.Connection) -> tuple[
            tuple[Any, ...] | None, list[tuple[Any, ...]], list[tuple[Any, ...]]
        ]:
            if conn.in_transaction:  # inside the block's transaction, on the writer
                return self._snapshot_rows(conn, learner, cursor)
            conn.execute("BEGIN")
            try:
                return self._snapshot_rows(conn, learner, cursor)
            finally:
                conn.execute("COMMIT")

        return await self._read_call(read)

    async def load(self, learner: str) -> LearnerSnapshot:
        head, ev, arms = await self._snapshot_read(learner, -1)
        return LearnerSnapshot(
            name=learner,
            evidence=tuple(EvidenceRow(*r) for r in ev),
            arms=tuple(ArmRow(*r) for r in arms),
            selections=int(head[1]) if head else 0,
            explored=int(head[2]) if head else 0,
            cursor=int(head[0]) if head else 0,
            answered=int(head[3]) if head else 0,
        )

    async def changes(
        self, learner: str, cursor: int
    ) -> tuple[int, Sequence[EvidenceRow], Sequence[ArmRow]]:
        head, ev, arms = await self._snapshot_read(learner, cursor)
        version = int(head[0]) if head else cursor
        return (max(version, cursor), [EvidenceRow(*r) for r in ev], [ArmRow(*r) for r in arms])

    async def events(self, learner: str, after_seq: int = 0, limit: int = 10_000) -> list[Event]:
        return [Event(*r) for r in await self.event_rows(learner, after_seq, limit)]

    async def event_rows(
        self, learner: str, after_seq: int = 0, limit: int = 10_000, *, bodies: bool = True
    ) -> list[EventRow]:
        # the columns of EventRow
        statement = sql.EVENTS if bodies else sql.EVENTS_BARE
        return await self._query(statement, (learner, after_seq, limit))

    async def decisions(
        self, learner: str, after_seq: int = 0, limit: int = 10_000, *,
        keys: Sequence[str] | None = None,
    ) -> list[Decision]:
        if keys is None:
            rows = await self._query(sql.DECISIONS, (learner, after_seq, limit))
        else:
            rows = await self._query(sql.DECISIONS_BY_KEY, (learner, json.dumps(list(keys))))
        return [decision_from_row(r) for r in rows]

    async def evidence(self, learner: str) -> list[EvidenceRow]:
        rows = await self._query(
            "SELECT ctx, arm, s, f, n, rsum, t, v FROM evidence WHERE learner = ?", (learner,)
        )
        return [EvidenceRow(*r) for r in rows]

    async def learners(self) -> list[LearnerSummary]:
        rows = await self._query(
            "SELECT l.name, (SELECT count(*) FROM arms a WHERE a.learner = l.name), "
            "l.selections, l.explored, "
            "(SELECT coalesce(sum(n), 0) FROM evidence e WHERE e.learner = l.name AND e.ctx = ''),"
            " (SELECT max(t) FROM evidence e WHERE e.learner = l.name) "
            "FROM learners l ORDER BY l.name"
        )
        return [LearnerSummary(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4]), r[5])
                for r in rows]

    async def contexts(self, learner: str, keys: Sequence[str]) -> dict[str, str]:
        rows = await self._query(
            "SELECT ctx, body FROM contexts WHERE learner = ? "
            "AND ctx IN (SELECT value FROM json_each(?))", (learner, json.dumps(list(keys))),
        )
        return {r[0]: r[1] for r in rows}

    async def wait_for_change(self, learner: str, within_s: float) -> None:
        await asyncio.sleep(within_s)

    async def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` or the first problem SQLite reports."""
        rows = await self._query("PRAGMA integrity_check")
        return str(rows[0][0]) if rows else "no answer"
