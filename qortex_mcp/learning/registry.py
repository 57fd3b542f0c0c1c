"""``LearnerRegistry``: named learners sharing one store and one signer.

The MCP server holds one registry for its lifetime; learners are created on first use with
the configured defaults (per-learner TOML options applied).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Self

import numpy as np

from qortex_mcp.errors import ClosedError, LimitExceeded, StoreError, UnknownLearner, preview
from qortex_mcp.learning.config import LearnerConfig
from qortex_mcp.learning.learner import Learner
from qortex_mcp.learning.stores.base import LearnerSummary, LearningStore
from qortex_mcp.learning.strategies import default_generator
from qortex_mcp.learning.tokens import SelectionSigner
from qortex_mcp.learning.validation import check_name
from qortex_mcp.logging import get_logger

__all__ = ["LearnerRegistry"]

log = get_logger(__name__)


class LearnerRegistry:
    """Opens learners by name over one store; closes them (and the store, if owned).

    Args:
        store: the shared store (initialized by ``open()``).
        signer: signs and verifies every learner's selection ids.
        options: per-learner options (``"*"`` for defaults), as from ``QORTEX_CONFIG``.
        max_learners: the most learners one registry opens (``LIMIT_EXCEEDED`` beyond).
        seed: seeds the learners' generators (each learner gets its own stream).
    """

    def __init__(
        self,
        store: LearningStore,
        signer: SelectionSigner,
        *,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        max_learners: int = 1000,
        seed: int | None = None,
        owns_store: bool = True,
        refresh_interval_s: float = 0.5,
    ) -> None:
        self.store = store
        self.signer = signer
        self._options = dict(options or {})
        self._max = max_learners
        self._seeds = np.random.SeedSequence(seed)
        self._owns_store = owns_store
        self._refresh = refresh_interval_s
        self._learners: dict[str, Learner] = {}
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

    async def get(self, name: str, *, create: bool = True) -> Learner:
        """The learner called ``name``; created on first use when ``create``.

        Raises:
            InvalidName: a bad name. UnknownLearner: ``create=False`` and no such learner.
            LimitExceeded: too many learners.
        """
        if self._closed:
            raise ClosedError("the learner registry is closed")
        learner = self._learners.get(name)
        if learner is not None:
            return learner
        check_name(name, "learner name")
        async with self._lock:
            learner = self._learners.get(name)
            if learner is not None:
                return learner
            if not create and name not in await self._stored_names(refresh=True):
                raise UnknownLearner(f"no learner named {preview(name)}; select creates one")
            if len(self._learners) >= self._max:
                raise LimitExceeded(f"at most {self._max} learners per server")
            rng = default_generator(self._seeds.spawn(1)[0])
            learner = await Learner.create(self.config_for(name), self.store, signer=self.signer,
                                           rng=rng, refresh_interval_s=self._refresh)
            self._learners[name] = learner
            if self._known is not None:
                self._known.add(name)
            return learner

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
