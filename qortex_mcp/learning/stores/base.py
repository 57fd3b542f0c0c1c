"""The ``LearningStore`` protocol and what every store shares.

A store keeps, per learner: evidence rows per (context, arm), arm rows (prior, selection
counts), an append-only event log, and the learner's counters. Its one job on the write path
is ``apply``: insert feedback events (unique on (learner, key, arm)) and increment evidence
in the *same* transaction, returning statuses and the committed rows. Increments happen in
the store (SQL ``s = s + ?``), never as values computed by the caller, so concurrent writers
in other processes never lose an update.

The evidence update (``fold``) is commutative, so replaying events in any order gives the
same posterior: with a half-life ``h``, a row holds its evidence as of its latest event time
``t``; an event at ``at >= t`` decays the row to ``at`` and adds, an older event adds its own
decayed weight. Without a half-life it is plain addition.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

from qortex_mcp.learning.types import (
    ApplyResult,
    ArmRow,
    Decision,
    Event,
    EventRow,
    EvidenceRow,
    FeedbackRow,
)

__all__ = [
    "SCHEMA_VERSION",
    "AtomicStore",
    "BatchStore",
    "EventRowStore",
    "LearnerSnapshot",
    "LearnerSummary",
    "LearningStore",
    "StoreInfo",
    "apply_many",
    "claim_backup",
    "event_pages",
    "fold",
    "read_event_rows",
]

SCHEMA_VERSION = 2
"""1: 0.1. 2: the decision log (a ``decisions`` table) and feedback events carrying their
propensity and strategy version. Stores of schema 1 migrate when opened."""


def fold(
    s: float, f: float, t: float, at: float, ws: float, wf: float, half_life_s: float | None
) -> tuple[float, float, float]:
    """Add ``(ws, wf)`` observed at time ``at`` to evidence ``(s, f)`` held as of ``t``."""
    if half_life_s is None:
        return s + ws, f + wf, max(t, at)
    if at >= t:
        d = math.pow(0.5, (at - t) / half_life_s)
        return s * d + ws, f * d + wf, at
    d = math.pow(0.5, (t - at) / half_life_s)
    return s + ws * d, f + wf * d, t


def claim_backup(path: Path, version: int) -> Path:
    """A new, empty file beside ``path`` for its copy before a migration from schema
    ``version``: ``<name>.schema<N>.bak``, or a dated name when that exists (an earlier
    attempt's copy stays). Created exclusively, so two processes never share one copy."""
    target = path.with_name(f"{path.name}.schema{version}.bak")
    try:
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        target = path.with_name(f"{path.name}.schema{version}.{time.time_ns()}-"
                                f"{os.getpid()}.bak")
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    return target


@dataclass(frozen=True, slots=True)
class LearnerSnapshot:
    """Everything a learner loads at start, plus the cursor for ``changes``."""

    name: str
    evidence: tuple[EvidenceRow, ...]
    arms: tuple[ArmRow, ...]
    selections: int
    explored: int
    cursor: int
    answered: int = 0
    """Selections that got feedback on at least one arm (``record_selections``)."""


@dataclass(frozen=True, slots=True)
class LearnerSummary:
    name: str
    arms: int
    selections: int
    explored: int
    feedback: int
    last_update: float | None


@dataclass(frozen=True, slots=True)
class StoreInfo:
    kind: str
    location: str
    """Where the state lives, with any password masked."""
    schema_version: int


@runtime_checkable
class LearningStore(Protocol):
    """Durable state for learners. Every method is safe to call concurrently."""

    kind: str
    shared: bool
    """True when other processes may write the same state (the learner then refreshes)."""

    async def initialize(self) -> None:
        """Open connections and create or check the schema. Idempotent."""
        ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        """``initialize``, then the store itself (``async with open_store(url) as s:``)."""
        ...

    async def __aexit__(self, *exc: object) -> None:
        """``close``."""
        ...

    async def info(self) -> StoreInfo: ...

    async def ensure_learner(self, learner: str, config_json: str) -> None:
        """Create the learner's record if it does not exist (first writer's config stays)."""
        ...

    async def load(self, learner: str) -> LearnerSnapshot: ...

    async def changes(
        self, learner: str, cursor: int
    ) -> tuple[int, Sequence[EvidenceRow], Sequence[ArmRow]]:
        """Rows written since ``cursor`` (by any process), and the new cursor."""
        ...

    async def apply(
        self, learner: str, rows: Sequence[FeedbackRow], half_life_s: float | None
    ) -> ApplyResult:
        """Apply feedback atomically: all new rows are applied, or none (when any row
        conflicts with a standing answer, or on error). Returns only after commit."""
        ...

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
        """Add selection counters (write-behind statistics) and stored arm priors, and
        append ``decisions`` to the decision log (one already logged under its key is
        kept); ``answered`` counts selections that got their first feedback."""
        ...

    async def decisions(
        self, learner: str, after_seq: int = 0, limit: int = 10_000, *,
        keys: Sequence[str] | None = None,
    ) -> list[Decision]:
        """The decision log in ``seq`` order after ``after_seq``; with ``keys``, only the
        decisions logged under those keys."""
        ...

    async def decay(
        self, learner: str, arm: str, factor: float, at: float, reason: str | None = None
    ) -> Sequence[EvidenceRow]:
        """Multiply evidence of ``arm`` (every arm when empty) by ``factor``; log a decay
        event carrying ``reason`` (its ``outcome``: e.g. ``change_detected``) when given."""
        ...

    async def reset(
        self, learner: str, arms: Sequence[str] | None, ctx: str | None, at: float,
        dry_run: bool,
    ) -> tuple[tuple[str, ...], int, float]:
        """Zero evidence of the given arms (all when None) in ``ctx`` (all when None).
        Returns the arms touched, rows touched and evidence removed."""
        ...

    async def events(self, learner: str, after_seq: int = 0, limit: int = 10_000) -> list[Event]:
        ...

    async def evidence(self, learner: str) -> list[EvidenceRow]: ...

    async def learners(self) -> list[LearnerSummary]: ...

    async def contexts(self, learner: str, keys: Sequence[str]) -> dict[str, str]:
        """Canonical JSON bodies of the given context keys (those known)."""
        ...

    async def wait_for_change(self, learner: str, within_s: float) -> None:
        """Return when the learner may have changed elsewhere, or after ``within_s``."""
        ...


@runtime_checkable
class AtomicStore(Protocol):
    """A store that can make many calls one transaction (import uses it when there)."""

    def atomically(self) -> AbstractAsyncContextManager[None]:
        """Within ``async with store.atomically():`` every call this task makes commits
        together at the end, or none does if the block raises or the commit fails. Other
        writers, tasks the block starts included, wait until the block ends (in other
        processes too, up to their lock timeout): never await one inside the block. Not
        reentrant."""
        ...


@runtime_checkable
class BatchStore(Protocol):
    """A store that takes many ``apply`` requests in one call (and commits them together)."""

    async def apply_many(
        self, learner: str, requests: Sequence[Sequence[FeedbackRow]], half_life_s: float | None
    ) -> list[ApplyResult]:
        """``apply`` for each request (each atomic on its own, as ``apply``), committed in
        as few transactions as the store's batch allows. Returns after every commit."""
        ...


@runtime_checkable
class EventRowStore(Protocol):
    """A store that reads its event log as plain rows (SQLite, PostgreSQL): the fast path
    of ``event_pages``. Any other store's ``events`` are converted."""

    async def event_rows(
        self, learner: str, after_seq: int = 0, limit: int = 10_000, *, bodies: bool = True
    ) -> list[EventRow]:
        """``events`` as ``EventRow`` tuples; ``bodies=False`` may leave ``ctx_body`` None
        (a scan that needs only context keys skips the join that finds the bodies)."""
        ...


async def read_event_rows(store: LearningStore, learner: str, after: int,
                          page: int, *, bodies: bool = True) -> list[EventRow]:
    """One page of ``store``'s event log as rows, by its fast path where it has one."""
    if isinstance(store, EventRowStore):
        return await store.event_rows(learner, after, page, bodies=bodies)
    return [ev.row() for ev in await store.events(learner, after, page)]


async def event_pages(
    store: LearningStore, learner: str, page: int = 10_000, *, bodies: bool = True
) -> AsyncGenerator[list[EventRow], None]:
    """The learner's whole event log in ``seq`` order as ``EventRow`` tuples, a page at a
    time (memory: one page, whatever the length of the log). ``bodies=False``: the context
    bodies may be left out (see ``EventRowStore``).

    Pages are read one after the other, not ahead in another task: a caller inside a store
    transaction (an import) holds the store's lock, which a task of its own would wait on.
    """
    after = 0
    while True:
        rows = await read_event_rows(store, learner, after, page, bodies=bodies)
        if rows:
            yield rows
        if len(rows) < page:
            return
        after = rows[-1][0]


async def apply_many(
    store: LearningStore, learner: str, requests: Sequence[Sequence[FeedbackRow]],
    half_life_s: float | None,
) -> list[ApplyResult]:
    """``store.apply_many`` where the store has it, else every ``apply`` at once (a
    group-committing store still commits them together).

    Raises:
        StoreError: the first failure (the other requests may or may not have committed).
    """
    if isinstance(store, BatchStore):
        return await store.apply_many(learner, requests, half_life_s)
    results = await asyncio.gather(*(store.apply(learner, rows, half_life_s)
                                     for rows in requests), return_exceptions=True)
    return settled(results)


def settled(results: Sequence[ApplyResult | BaseException]) -> list[ApplyResult]:
    """The results of futures gathered with ``return_exceptions``: the first error raised
    (every one retrieved, so none is reported as never retrieved)."""
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return [r for r in results if isinstance(r, ApplyResult)]
