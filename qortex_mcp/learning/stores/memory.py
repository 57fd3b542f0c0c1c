"""In-memory store: the reference behaviour, for tests and ephemeral learners."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Self

from qortex_mcp.errors import ClosedError
from qortex_mcp.learning.stores.base import (
    SCHEMA_VERSION,
    LearnerSnapshot,
    LearnerSummary,
    StoreInfo,
)
from qortex_mcp.learning.stores.tables import Tables
from qortex_mcp.learning.types import (
    ApplyResult,
    ArmRow,
    Decision,
    Event,
    EvidenceRow,
    FeedbackRow,
)

__all__ = ["MemoryLearningStore"]


class MemoryLearningStore:
    """State in this process only; gone when the process ends.

    Every method runs without awaiting in between, so each call is atomic on the event loop.
    """

    kind = "memory"
    shared = False

    def __init__(self) -> None:
        self._tables = Tables()
        self._closed = False
        self._gate = asyncio.Lock()  # held by an atomically() block
        self._in_block: asyncio.Task[Any] | None = None

    async def _writable(self) -> Tables:
        """The tables, once no other task's atomically() block is running (a failed block
        puts its copy back, which would undo writes made meanwhile)."""
        if self._gate.locked() and self._in_block is not asyncio.current_task():
            async with self._gate:
                pass
        return self._t()

    def _t(self) -> Tables:
        if self._closed:
            raise ClosedError("the memory store is closed")
        return self._tables

    async def __aenter__(self) -> Self:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def initialize(self) -> None:
        self._t()

    async def close(self) -> None:
        self._closed = True

    @contextlib.asynccontextmanager
    async def atomically(self) -> AsyncIterator[None]:
        """All of the block's calls, or none (see ``AtomicStore``): a copy of the state is
        put back if the block fails."""
        if self._in_block is not None and self._in_block is asyncio.current_task():
            raise RuntimeError("MemoryLearningStore.atomically() is not reentrant")
        async with self._gate:
            before = copy.deepcopy(self._t())
            self._in_block = asyncio.current_task()
            try:
                yield
            except BaseException:
                self._tables = before
                raise
            finally:
                self._in_block = None

    async def info(self) -> StoreInfo:
        return StoreInfo("memory", "process memory (not persisted)", SCHEMA_VERSION)

    async def ensure_learner(self, learner: str, config_json: str) -> None:
        (await self._writable()).ensure_learner(learner, config_json)

    async def load(self, learner: str) -> LearnerSnapshot:
        return self._t().snapshot(learner)

    async def changes(
        self, learner: str, cursor: int
    ) -> tuple[int, Sequence[EvidenceRow], Sequence[ArmRow]]:
        return self._t().changes(learner, cursor)

    async def apply(
        self, learner: str, rows: Sequence[FeedbackRow], half_life_s: float | None
    ) -> ApplyResult:
        return (await self._writable()).apply(learner, rows, half_life_s)

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
        (await self._writable()).record_selections(learner, counts, priors, selections, explored,
                                                   answered, decisions)

    async def decay(
        self, learner: str, arm: str, factor: float, at: float, reason: str | None = None
    ) -> Sequence[EvidenceRow]:
        return (await self._writable()).decay(learner, arm, factor, at, reason)

    async def reset(
        self, learner: str, arms: Sequence[str] | None, ctx: str | None, at: float,
        dry_run: bool,
    ) -> tuple[tuple[str, ...], int, float]:
        tables = self._t() if dry_run else await self._writable()
        return tables.reset(learner, arms, ctx, at, dry_run)

    async def events(self, learner: str, after_seq: int = 0, limit: int = 10_000) -> list[Event]:
        return self._t().event_page(learner, after_seq, limit)

    async def decisions(
        self, learner: str, after_seq: int = 0, limit: int = 10_000, *,
        keys: Sequence[str] | None = None,
    ) -> list[Decision]:
        return self._t().decision_page(learner, after_seq, limit, keys)

    async def evidence(self, learner: str) -> list[EvidenceRow]:
        return self._t().evidence(learner)

    async def learners(self) -> list[LearnerSummary]:
        return self._t().summaries()

    async def contexts(self, learner: str, keys: Sequence[str]) -> dict[str, str]:
        return self._t().contexts(learner, keys)

    async def wait_for_change(self, learner: str, within_s: float) -> None:
        await asyncio.sleep(within_s)
