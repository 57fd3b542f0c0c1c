"""PostgreSQL store: several qortex-mcp instances share one database.

How it stays correct with many writers in many processes:

* Every write transaction starts by locking its learner's row and taking the learner's next
  version (``sql._LOCK``, ``runner.py``). Writers of one learner are therefore serialized from that
  statement to COMMIT, so versions and event seqs are in commit order: a reader that sees
  version V has seen every row stamped <= V, and ``changes(cursor)`` can never miss a
  committed row (a bare sequence would not do: sequence values are taken in one order and
  committed in another). The price, one writer per learner at a time, is paid once per
  batch: concurrent ``apply`` calls of this instance are committed together (group commit,
  ``writer.py``). Row locks on a hot arm's evidence would serialize its writers across
  the commit anyway; different learners never wait on each other.
* Feedback is decided under that lock (already answered, same or another reward), then the
  events are inserted with ``ON CONFLICT DO NOTHING`` and the evidence incremented in SQL
  from the rows actually inserted, in one statement. A request with a conflicting row
  changes nothing; duplicates and conflicts behave exactly as on SQLite, across instances.
* READ COMMITTED, ``synchronous_commit`` checked at start. "Acknowledged" means COMMIT
  returned.
* Every call is bounded by ``timeout_s``: when PostgreSQL is gone, calls fail fast with the
  retryable ``StoreUnavailable``; the pool reconnects by itself once it is back.
* Other instances learn about a change through NOTIFY (``listener.py``); ``select`` never
  touches the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Self, TypeVar

import asyncpg

from qortex_mcp.errors import ClosedError, StoreUnavailable
from qortex_mcp.learning.postgres.listener import Listener
from qortex_mcp.learning.postgres.runner import Runner
from qortex_mcp.learning.postgres.sql import Statements
from qortex_mcp.learning.postgres.startup import (
    close_pool,
    durability,
    listen_source,
    open_pool,
    prepare_schema,
)
from qortex_mcp.learning.postgres.writer import FeedbackWriter
from qortex_mcp.learning.stores.base import (
    SCHEMA_VERSION,
    LearnerSnapshot,
    LearnerSummary,
    StoreInfo,
)
from qortex_mcp.learning.stores.decision_rows import decision_from_row, decision_values
from qortex_mcp.learning.stores.dsn import mask_dsn
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

__all__ = ["PostgresLearningStore"]

log = get_logger(__name__)

T = TypeVar("T")


class PostgresLearningStore:
    """Learner state in PostgreSQL, shared by every instance that uses the same schema.

    Args:
        dsn: ``postgresql://user:password@host:port/database`` (the store owns its pool).
        pool: an existing ``asyncpg`` pool to use instead (the store never closes it, and
            holds one of its connections for LISTEN when it has room for two).
        schema: where the tables live (created if needed): a lower-case identifier.
        min_size, max_size: the owned pool's size.
        timeout_s: every call answers within this bound; after it the call fails with the
            retryable ``StoreUnavailable`` (a write's outcome is then unknown, and a retry
            with the same selection id is safe).
        connect_timeout_s: bound on opening one connection.
        max_batch: most feedback requests committed in one transaction.

    Raises:
        ValueError: neither or both of ``dsn`` and ``pool``, or an invalid schema name.
    """

    kind = "postgres"
    shared = True

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: asyncpg.Pool | None = None,
        schema: str = "qortex",
        min_size: int = 1,
        max_size: int = 10,
        timeout_s: float = 4.0,
        connect_timeout_s: float = 2.0,
        max_batch: int = 256,
    ) -> None:
        if (dsn is None) == (pool is None):
            raise ValueError("give PostgresLearningStore a dsn or a pool (one of them)")
        self._sql = Statements.for_schema(schema, SCHEMA_VERSION)
        self.schema = schema
        self._dsn = dsn
        self._shared_pool: Any = pool
        self.min_size, self.max_size = min_size, max_size
        self.timeout_s = timeout_s
        self.connect_timeout_s = min(connect_timeout_s, timeout_s)
        self.max_batch = max_batch
        self.location = (
            f"{mask_dsn(dsn)} (schema {schema})" if dsn is not None
            else f"shared asyncpg pool (schema {schema})"
        )
        self.synchronous_commit: str | None = None
        """``SHOW synchronous_commit`` as read at ``initialize``."""
        self.schema_created = False
        """True when this instance's ``initialize`` created the tables."""
        self._channel = "qortex_" + schema
        self._origin = secrets.token_hex(8)
        self._runner = Runner(self._sql, timeout_s, self._channel, self._origin)
        self._writer: FeedbackWriter | None = None
        self._listener: Listener | None = None
        self._closed = False
        self._init_lock = asyncio.Lock()

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def initialize(self) -> None:
        """Open the pool, create or check the schema, start listening. Idempotent.

        Raises:
            StoreUnavailable: PostgreSQL cannot be reached (retryable).
            SchemaTooNew: the schema was written by a newer qortex-mcp.
            StoreError: credentials, database or settings are wrong.
            ClosedError: the store was closed.
        """
        async with self._init_lock:
            if self._closed:
                raise ClosedError("the PostgreSQL store is closed")
            if self._writer is not None:
                return
            if self._dsn is not None:
                self._runner.pool = await open_pool(self._dsn, self.min_size, self.max_size,
                                                    self.timeout_s, self.connect_timeout_s)
            else:
                self._runner.pool = self._shared_pool
            try:
                self.schema_created = await self._runner.run(
                    "creating the schema",
                    lambda conn: prepare_schema(conn, self._sql, self.schema))
                self.synchronous_commit = await self._runner.run(
                    "checking durability settings", lambda conn: durability(conn, self.location))
            except BaseException:
                await self._close_pool()
                raise
            source = listen_source(self._dsn, self._shared_pool, self.timeout_s,
                                   self.connect_timeout_s)
            if source is not None:
                self._listener = Listener(self._channel, self._origin, *source, self.timeout_s)
                self._listener.start()
                # Changes made from here on should wake us: give LISTEN a moment to start.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.connect_timeout_s):
                        await self._listener.listening.wait()
            self._writer = FeedbackWriter(self._runner, self.max_batch)
            self._writer.start()

    async def _close_pool(self) -> None:
        pool, self._runner.pool = self._runner.pool, None
        if pool is not None and self._dsn is not None:  # a shared pool is its owner's
            await close_pool(pool, self.timeout_s)

    async def close(self) -> None:
        """Finish queued writes, stop listening, close the pool if this store opened it.
        Idempotent."""
        async with self._init_lock:
            if self._closed:
                return
            self._closed = True
            if self._writer is not None:
                await self._writer.stop()
            if self._listener is not None:
                await self._listener.stop()
                self._listener = None
            await self._close_pool()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the PostgreSQL store is closed")
        if self._writer is None:
            raise ClosedError("the PostgreSQL store is not initialized; await initialize() first")

    async def info(self) -> StoreInfo:
        return StoreInfo("postgres", self.location, SCHEMA_VERSION)

    @property
    def listening(self) -> bool:
        """True while notifications from other instances can arrive."""
        return self._listener is not None and self._listener.listening.is_set()

    @property
    def listener_pid(self) -> int | None:
        """The server process id of the LISTEN connection, while listening."""
        return self._listener.server_pid if self.listening and self._listener else None

    # --- writes ----------------------------------------------------------------------------

    async def _read(self, doing: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        self._check_open()
        return await self._runner.run(doing, fn, retry=True)

    async def _write(
        self, learner: str, doing: str, body: Callable[[Any, int], Awaitable[T]],
        keep: Callable[[T], bool] = lambda _: True,
    ) -> T:
        self._check_open()
        return await self._runner.write(
            [learner], doing, lambda conn, versions: body(conn, versions[learner]), keep)

    async def apply(
        self, learner: str, rows: Sequence[FeedbackRow], half_life_s: float | None
    ) -> ApplyResult:
        """Apply feedback atomically; returns after COMMIT (group commit: ``writer.py``).

        Raises:
            StoreUnavailable, StoreBusy: retryable (same rows, same keys: never counted twice).
            StoreError: any other database failure.
            ClosedError: the store is closed.
        """
        self._check_open()
        assert self._writer is not None
        if not rows:
            return ApplyResult((), (), ())
        return await self._writer.submit(learner, rows, half_life_s)

    async def apply_many(
        self, learner: str, requests: Sequence[Sequence[FeedbackRow]], half_life_s: float | None
    ) -> list[ApplyResult]:
        """Many ``apply`` requests at once, committed together (see ``apply``)."""
        self._check_open()
        assert self._writer is not None
        empty = ApplyResult((), (), ())
        live = [rows for rows in requests if rows]
        done = iter(await self._writer.submit_many(learner, live, half_life_s) if live else ())
        return [next(done) if rows else empty for rows in requests]

    async def ensure_learner(self, learner: str, config_json: str) -> None:
        async def run(conn: Any) -> None:
            await conn.execute(self._sql.ensure_learner, learner, config_json, time.time())

        # Idempotent (first writer's config stays), so it may retry like a read.
        await self._read("creating a learner", run)

    async def selection_key(self, candidate: bytes) -> bytes:
        """The selection-signing key kept in this schema's ``meta`` table: ``candidate``
        (ASCII) is stored when there is none yet; the first instance wins, so every instance
        on the schema signs with the same key. Used only by a ``Learner`` given this store and
        no signer; the server signs with ``QORTEX_SECRET`` or its key file instead."""

        async def run(conn: Any) -> bytes:
            value = None
            for _ in range(3):
                # None: another instance inserted its key after this statement's snapshot
                # was taken; the next statement sees it.
                value = await conn.fetchval(self._sql.selection_key, candidate.decode("ascii"))
                if value is not None:
                    break
            if value is None:
                raise StoreUnavailable("the selection key in the store could not be read")
            return str(value).encode("ascii")

        # Idempotent (the first key stays), so it may retry like a read.
        return await self._read("reading the selection key", run)

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
        arms = sorted(set(counts) | set(priors))
        none2: tuple[None, None] = (None, None)
        # columns of decision_values after the learner: key, kind, ctx, at, policy,
        # chosen, propensities, candidates, n_candidates
        logged = list(zip(*(decision_values(learner, d)[1:] for d in decisions),
                          strict=True)) or [()] * 9

        async def run(conn: Any, v: int) -> None:
            await conn.execute(
                self._sql.count_selections, learner, selections, explored, v, arms,
                [priors.get(a, none2)[0] for a in arms], [priors.get(a, none2)[1] for a in arms],
                [counts.get(a, (0, None))[0] for a in arms],
                [counts.get(a, (0, None))[1] for a in arms], answered,
                *(list(column) for column in logged),
            )

        await self._write(learner, "recording selections", run)

    async def decay(
        self, learner: str, arm: str, factor: float, at: float, reason: str | None = None
    ) -> Sequence[EvidenceRow]:
        async def run(conn: Any, v: int) -> list[EvidenceRow]:
            rows = await conn.fetch(self._sql.decay, learner, factor, v, arm, at, reason)
            return [EvidenceRow(*r) for r in rows]

        return await self._write(learner, "decaying evidence", run)

    async def reset(
        self, learner: str, arms: Sequence[str] | None, ctx: str | None, at: float,
        dry_run: bool,
    ) -> tuple[tuple[str, ...], int, float]:
        wanted = None if arms is None else list(arms)

        async def match(conn: Any) -> tuple[tuple[str, ...], int, float]:
            hits = await conn.fetch(self._sql.reset_match, learner, wanted, ctx)
            touched = tuple(sorted({h[1] for h in hits}))
            removed = sum(h[2] + h[3] for h in hits if h[0] == (ctx or GLOBAL_CONTEXT))
            return touched, len(hits), removed

        if dry_run:
            return await self._read("previewing a reset", match)

        async def run(conn: Any, v: int) -> tuple[tuple[str, ...], int, float]:
            touched, n, removed = await match(conn)
            if n:
                await conn.execute(self._sql.reset_apply, learner, wanted, ctx, v, at,
                                   list(touched))
            return touched, n, removed

        return await self._write(learner, "resetting", run, keep=lambda res: res[1] > 0)

    # --- reads -----------------------------------------------------------------------------

    async def _since(
        self, learner: str, cursor: int
    ) -> tuple[int | None, tuple[int, int, int], list[EvidenceRow], list[ArmRow]]:
        async def run(conn: Any) -> Any:
            return await conn.fetchrow(self._sql.since, learner, cursor)

        rec = await self._read("reading changes", run)
        if rec is None:
            return None, (0, 0, 0), [], []
        return (int(rec[0]), (int(rec[1]), int(rec[2]), int(rec[3])),
                [EvidenceRow(*r) for r in rec[4] or ()], [ArmRow(*r) for r in rec[5] or ()])

    async def load(self, learner: str) -> LearnerSnapshot:
        version, (selections, explored, answered), ev, arms = await self._since(learner, -1)
        return LearnerSnapshot(name=learner, evidence=tuple(ev), arms=tuple(arms),
                               selections=selections, explored=explored, cursor=version or 0,
                               answered=answered)

    async def changes(
        self, learner: str, cursor: int
    ) -> tuple[int, Sequence[EvidenceRow], Sequence[ArmRow]]:
        version, _, ev, arms = await self._since(learner, cursor)
        return max(version or cursor, cursor), ev, arms

    async def events(self, learner: str, after_seq: int = 0, limit: int = 10_000) -> list[Event]:
        return [Event(*r) for r in await self.event_rows(learner, after_seq, limit)]

    async def event_rows(
        self, learner: str, after_seq: int = 0, limit: int = 10_000, *, bodies: bool = True
    ) -> list[EventRow]:
        sql = self._sql.events if bodies else self._sql.events_bare

        async def run(conn: Any) -> list[EventRow]:
            rows = await conn.fetch(sql, learner, after_seq, limit)
            return [tuple(r) for r in rows]

        return await self._read("reading events", run)

    async def decisions(
        self, learner: str, after_seq: int = 0, limit: int = 10_000, *,
        keys: Sequence[str] | None = None,
    ) -> list[Decision]:
        async def run(conn: Any) -> list[Decision]:
            rows = (await conn.fetch(self._sql.decisions, learner, after_seq, limit)
                    if keys is None else
                    await conn.fetch(self._sql.decisions_by_key, learner, list(keys)))
            return [decision_from_row(r) for r in rows]

        return await self._read("reading decisions", run)

    async def evidence(self, learner: str) -> list[EvidenceRow]:
        async def run(conn: Any) -> list[EvidenceRow]:
            return [EvidenceRow(*r) for r in await conn.fetch(self._sql.evidence, learner)]

        return await self._read("reading evidence", run)

    async def learners(self) -> list[LearnerSummary]:
        async def run(conn: Any) -> list[LearnerSummary]:
            rows = await conn.fetch(self._sql.learners)
            return [LearnerSummary(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4]), r[5])
                    for r in rows]

        return await self._read("listing learners", run)

    async def contexts(self, learner: str, keys: Sequence[str]) -> dict[str, str]:
        async def run(conn: Any) -> dict[str, str]:
            rows = await conn.fetch(self._sql.contexts, learner, list(keys))
            return {r[0]: r[1] for r in rows}

        return await self._read("reading contexts", run)

    async def wait_for_change(self, learner: str, within_s: float) -> None:
        """Return when another instance changed ``learner`` (NOTIFY), or after ``within_s``
        (the polling fallback, also used while the listening connection is down)."""
        listener = self._listener
        if listener is None or self._closed:
            await asyncio.sleep(within_s)
            return
        await listener.wait(learner, within_s)
