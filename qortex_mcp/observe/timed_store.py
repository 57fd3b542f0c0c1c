"""``TimedStore``: a store whose commits are timed (``qortex_store_commit_duration_seconds``).

It wraps any ``LearningStore`` and times the two writes the serving path makes: ``apply``
(feedback, acknowledged only after commit) and ``record_selections`` (write-behind
counters). Every other member is the wrapped store's own (``__getattr__``), so optional
capabilities such as ``atomically`` stay visible exactly when the store has them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from qortex_mcp.learning.stores.base import (
    LearnerSnapshot,
    LearnerSummary,
    LearningStore,
    StoreInfo,
    read_event_rows,
)
from qortex_mcp.learning.types import (
    ApplyResult,
    ArmRow,
    Decision,
    Event,
    EventRow,
    EvidenceRow,
    FeedbackRow,
)

__all__ = ["TimedStore"]

CommitSink = Callable[[str, str, float], None]
"""(store kind, operation, seconds)."""


class TimedStore:
    """Delegates to ``inner``; reports the duration of each commit to ``sink``."""

    def __init__(self, inner: LearningStore, sink: CommitSink) -> None:
        self.inner = inner
        self._sink = sink
        self.kind = inner.kind
        self.shared = inner.shared

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def apply(
        self, learner: str, rows: Sequence[FeedbackRow], half_life_s: float | None
    ) -> ApplyResult:
        started = time.perf_counter()
        try:
            return await self.inner.apply(learner, rows, half_life_s)
        finally:
            self._sink(self.kind, "feedback", time.perf_counter() - started)

    async def record_selections(
        self, learner: str, counts: Mapping[str, tuple[int, float]],
        priors: Mapping[str, tuple[float, float]], selections: int, explored: int,
        answered: int = 0, decisions: Sequence[Decision] = (),
    ) -> None:
        started = time.perf_counter()
        try:
            await self.inner.record_selections(learner, counts, priors, selections, explored,
                                               answered, decisions)
        finally:
            self._sink(self.kind, "selections", time.perf_counter() - started)

    # The rest of the protocol, spelled out so type checkers see a LearningStore.
    async def initialize(self) -> None:
        await self.inner.initialize()

    async def close(self) -> None:
        await self.inner.close()

    async def info(self) -> StoreInfo:
        return await self.inner.info()

    async def ensure_learner(self, learner: str, config_json: str) -> None:
        await self.inner.ensure_learner(learner, config_json)

    async def load(self, learner: str) -> LearnerSnapshot:
        return await self.inner.load(learner)

    async def changes(
        self, learner: str, cursor: int
    ) -> tuple[int, Sequence[EvidenceRow], Sequence[ArmRow]]:
        return await self.inner.changes(learner, cursor)

    async def decay(
        self, learner: str, arm: str, factor: float, at: float, reason: str | None = None
    ) -> Sequence[EvidenceRow]:
        return await self.inner.decay(learner, arm, factor, at, reason)

    async def reset(
        self, learner: str, arms: Sequence[str] | None, ctx: str | None, at: float,
        dry_run: bool,
    ) -> tuple[tuple[str, ...], int, float]:
        return await self.inner.reset(learner, arms, ctx, at, dry_run)

    async def events(self, learner: str, after_seq: int = 0, limit: int = 10_000) -> list[Event]:
        return await self.inner.events(learner, after_seq, limit)

    async def decisions(
        self, learner: str, after_seq: int = 0, limit: int = 10_000, *,
        keys: Sequence[str] | None = None,
    ) -> list[Decision]:
        return await self.inner.decisions(learner, after_seq, limit, keys=keys)

    async def event_rows(
        self, learner: str, after_seq: int = 0, limit: int = 10_000, *, bodies: bool = True
    ) -> list[EventRow]:
        return await read_event_rows(self.inner, learner, after_seq, limit, bodies=bodies)

    async def evidence(self, learner: str) -> list[EvidenceRow]:
        return await self.inner.evidence(learner)

    async def learners(self) -> list[LearnerSummary]:
        return await self.inner.learners()

    async def contexts(self, learner: str, keys: Sequence[str]) -> dict[str, str]:
        return await self.inner.contexts(learner, keys)

    async def wait_for_change(self, learner: str, within_s: float) -> None:
        await self.inner.wait_for_change(learner, within_s)
