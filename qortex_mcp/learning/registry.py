"""``LearnerRegistry``: named learners sharing one store and one signer.

The MCP server holds one registry for its lifetime; learners are created on first use with
the configured defaults (per-learner TOML options applied).

Open learners are capped, not learners that exist: past ``max_open`` open learners, or
past 90% of the memory budget, the least recently used idle learner is flushed and closed
(and reopened from the store when named again). A learner is idle when no ``use()`` block
holds it; one that is in use is never closed under its caller.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Self

import numpy as np

from qortex_mcp.errors import (
    ClosedError,
    ConfigError,
    LimitExceeded,
    StoreError,
    UnknownLearner,
    preview,
)
from qortex_mcp.learning.clock import WallClock
from qortex_mcp.learning.config import LearnerConfig
from qortex_mcp.learning.learner import Learner
from qortex_mcp.learning.limits import Clock, MemoryBudget
from qortex_mcp.learning.stores.base import LearnerSummary, LearningStore
from qortex_mcp.learning.strategies import default_generator
from qortex_mcp.learning.tokens import SelectionSigner
from qortex_mcp.learning.validation import check_name
from qortex_mcp.logging import get_logger

__all__ = ["LearnerRegistry"]

log = get_logger(__name__)

SHED_AT: Final = 0.9
"""Share of the memory budget past which idle learners are closed to make room."""


class LearnerRegistry:
    """Opens learners by name over one store; closes them (and the store, if owned).

    Args:
        store: the shared store (initialized by ``open()``).
        signer: signs and verifies every learner's selection ids.
        options: per-learner options (``"*"`` for defaults), as from ``QORTEX_CONFIG``.
        max_open: the most learners kept open at once; the least recently used idle one
            is closed to open another (``LIMIT_EXCEEDED`` only when all are in use).
        memory_budget_bytes: the most in-memory learner state (an estimate, see
            ``qortex_mcp.learning.limits``) the open learners may hold together; None: no
            limit. Calls that would pass it are refused with ``LIMIT_EXCEEDED``.
        seed: seeds the learners' generators (each learner gets its own stream).
        clock: monotonic seconds for the learners' feedback rate caps (tests).
        now: the learners' wall clock (``Learner.create(now=...)``; tests).
    """

    def __init__(
        self,
        store: LearningStore,
        signer: SelectionSigner,
        *,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        max_open: int = 1000,
        memory_budget_bytes: int | None = None,
        seed: int | None = None,
        owns_store: bool = True,
        refresh_interval_s: float = 0.5,
        clock: Clock | None = None,
        now: WallClock = time.time,
    ) -> None:
        if isinstance(max_open, bool) or not isinstance(max_open, int) or max_open < 1:
            raise ConfigError("max_open must be an integer of at least 1")
        self.store = store
        self.signer = signer
        self._options = dict(options or {})
        self._max = max_open
        self.budget = MemoryBudget(memory_budget_bytes)
        self._clock = clock
        self._now = now
        self._seeds = np.random.SeedSequence(seed)
        self._owns_store = owns_store
        self._refresh = refresh_interval_s
        # Least recently used first; _users counts the use() blocks holding each learner.
        self._learners: OrderedDict[str, Learner] = OrderedDict()
        self._users: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._closed = False
        self._known: set[str] | None = None

    async def open(self) -> Self:
        await self.store.initialize()
        return self

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def config_for(self, name: str) -> LearnerConfig:
        merged = dict(self._options.get("*", {}))
        merged.update(self._options.get(name, {}))
        return LearnerConfig.from_options(name, merged)

    def default_config(self) -> LearnerConfig:
        """The configuration of a learner without options of its own."""
        return LearnerConfig.from_options("*", self._options.get("*", {}))

    async def get(self, name: str, *, create: bool = True) -> Learner:
        """The learner called ``name``; created on first use when ``create``.

        The learner stays open until the registry closes or, once it is idle, until other
        learners need its place (``max_open``, the memory budget). To keep it open across
        awaits while many learners are used, hold it with ``use()`` instead.

        Raises:
            InvalidName: a bad name. UnknownLearner: ``create=False`` and no such learner.
            LimitExceeded: every open learner is in use, or the memory budget is used up.
        """
        if self._closed:
            raise ClosedError("the learner registry is closed")
        learner = self._learners.get(name)
        if learner is not None and not self.budget.over(SHED_AT):
            self._learners.move_to_end(name)
            return learner
        check_name(name, "learner name")
        async with self._lock:
            if self._closed:
                raise ClosedError("the learner registry is closed")
            if self.budget.over(SHED_AT):
                await self._shed(keep=name)
            learner = self._learners.get(name)
            if learner is not None:
                self._learners.move_to_end(name)
                return learner
            # A name seen stored stays stored (learners are never deleted): only a miss
            # reads the store's list again (a learner closed to make room reopens cheaply).
            if not create and name not in await self._stored_names() and \
                    name not in await self._stored_names(refresh=True):
                raise UnknownLearner(f"no learner named {preview(name)}; select creates one")
            while len(self._learners) >= self._max:
                if not await self._evict_one(keep=name):
                    raise LimitExceeded(
                        f"all {self._max} open learners are in use; retry when a call ends")
            rng = default_generator(self._seeds.spawn(1)[0])
            learner = await Learner.create(self.config_for(name), self.store, signer=self.signer,
                                           rng=rng, refresh_interval_s=self._refresh,
                                           budget=self.budget, clock=self._clock,
                                           now=self._now)
            self._learners[name] = learner
            if self._known is not None:
                self._known.add(name)
            return learner

    @asynccontextmanager
    async def use(self, name: str, *, create: bool = True) -> AsyncIterator[Learner]:
        """Hold the learner ``name`` open for the block (it is never evicted meanwhile).

        Raises:
            InvalidName, UnknownLearner, LimitExceeded: as ``get``.
        """
        learner = await self.get(name, create=create)
        # No await between get() returning and this count: eviction cannot slip between.
        self._users[name] = self._users.get(name, 0) + 1
        try:
            yield learner
        finally:
            left = self._users[name] - 1
            if left:
                self._users[name] = left
            else:
                del self._users[name]

    def in_use(self, name: str) -> bool:
        return name in self._users

    async def _evict_one(self, keep: str) -> bool:
        """Close the least recently used idle learner (not ``keep``); False if none is."""
        for name, learner in list(self._learners.items()):
            if name == keep or name in self._users:
                continue
            try:
                # Flushed while still listed: if the store refuses, it stays open (and its
                # counts pending) and the next idle learner is tried instead.
                await learner.flush()
            except StoreError as exc:
                log.warning("evict_flush_failed", learner=name, code=exc.code)
                continue
            if name in self._users or self._learners.get(name) is not learner:
                continue  # taken by a use() block while flushing
            del self._learners[name]
            await learner.close()
            log.info("learner_evicted", learner=name, open=len(self._learners),
                     memory_mib=round(self.budget.used_bytes / 2**20, 1))
            return True
        return False

    async def _shed(self, keep: str) -> None:
        """Close idle learners, least recently used first, until the budget has room."""
        while self.budget.over(SHED_AT) and await self._evict_one(keep):
            pass

    async def _stored_names(self, refresh: bool = False) -> set[str]:
        if self._known is None or refresh:
            self._known = {s.name for s in await self.store.learners()}
        return self._known

    async def summaries(self) -> list[LearnerSummary]:
        """Every learner in the store, with counts (pending selections flushed first, if
        the store takes the write: a full disk must not stop a read)."""
        for learner in list(self._learners.values()):
            try:
                await learner.flush()
            except StoreError as exc:  # the counts stay pending for the next flush
                log.warning("summaries_flush_failed", learner=learner.name, code=exc.code)
        return await self.store.learners()

    def open_learners(self) -> list[Learner]:
        return list(self._learners.values())

    @property
    def max_open(self) -> int:
        return self._max

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for learner in list(self._learners.values()):
                await learner.close()
        finally:
            if self._owns_store:
                await self.store.close()
