"""``Learner``: the async facade over a strategy, a reward model and a store.

The class is built in layers, one module each, every layer using only those below it:
``state`` (the in-memory cache and every write to it), ``candidates`` (candidate lists to
slots), ``choosing`` (``select``), ``observing`` (feedback), ``inspecting`` (reading and
maintenance), and this facade (``create``, background refresh and flush, ``close``).

Design:

* ``select`` never awaits the store. Posteriors live in numpy arrays (one slot per arm),
  loaded at ``create`` and written through by ``observe``. Selection counters are
  write-behind statistics, flushed every second and at ``close``.
* ``observe`` returns only after the store committed the event and the evidence increment
  in one transaction; the cache is then updated from the committed rows (never from values
  computed here), guarded by per-row versions so an older read never overwrites a newer one.
* When the store is shared with other processes, a background task pulls rows they wrote
  (``store.changes``); inspection calls pull before answering.

"""

from __future__ import annotations

import asyncio
import time
from typing import Self

import numpy as np

from qortex_mcp.errors import (
    QortexError,
)
from qortex_mcp.learning.choosing import MAX_K
from qortex_mcp.learning.clock import WallClock
from qortex_mcp.learning.config import LearnerConfig
from qortex_mcp.learning.inspecting import Inspecting
from qortex_mcp.learning.limits import (
    Clock,
    MemoryBudget,
)
from qortex_mcp.learning.stores.base import LearningStore
from qortex_mcp.learning.strategies import (
    default_generator,
)
from qortex_mcp.learning.tasks import stop_tasks
from qortex_mcp.learning.tokens import SelectionSigner
from qortex_mcp.logging import get_logger

__all__ = ["MAX_K", "Learner"]

log = get_logger(__name__)


class Learner(Inspecting):
    """A named bandit learner. Create with ``await Learner.create(config)``.

    Use as ``async with await Learner.create(...) as learner`` or call ``close()``.
    """

    @classmethod
    async def create(
        cls,
        config: LearnerConfig | None = None,
        store: LearningStore | None = None,
        *,
        signer: SelectionSigner | None = None,
        rng: np.random.Generator | None = None,
        refresh_interval_s: float = 0.5,
        flush_interval_s: float = 1.0,
        budget: MemoryBudget | None = None,
        clock: Clock | None = None,
        now: WallClock = time.time,
    ) -> Self:
        """Open (or create) a learner and load its posteriors.

        Without a store, the learner lives where the environment says, resolved exactly as
        the server resolves it (``Settings.from_env``: ``QORTEX_STORE``, ``DATABASE_URL``,
        ``QORTEX_STATE_DIR``, default SQLite in the per-user state directory) and signs with
        ``QORTEX_SECRET`` or the state directory's key file; it owns that store and closes
        it. Given a store, it reads no environment variable and writes nothing outside that
        store.

        Args:
            config: the learner's settings (default: ``LearnerConfig()``, named "default").
            store: where state lives. A store passed in stays the caller's: the learner
                initializes it but never closes it, so close it yourself (``async with
                store:``, or ``await store.close()`` after the learner).
            signer: signs selection ids. Default without a store: ``QORTEX_SECRET`` or the
                key file in the state directory (a random key for a memory store). Default
                with a store: the key kept in that store (SQLite, PostgreSQL; created on first
                use), else a random key for this process (memory, JSON), see
                ``stores.factory.store_signer``. Pass one to share selection ids with a
                server using its own key.
            rng: the random generator (default: seeded from ``config.seed``).
            budget: the memory budget this learner's in-memory state counts against
                (shared by a registry's learners); default: its own, without a limit.
            clock: monotonic seconds for the feedback rate caps (default
                ``time.monotonic``; tests pass a fake one).
            now: wall seconds since the epoch for feedback and selection times, half-life
                decay and maintenance events (default ``time.time``; tests pass a
                ``clock.FakeClock`` and move it instead of sleeping).

        Raises:
            StoreError: the store cannot be opened.
            ConfigError: the configuration is invalid.
        """
        from qortex_mcp.learning.stores.factory import (
            configured_store,
            default_signer,
            store_signer,
        )

        config = config or LearnerConfig()
        owns = store is None
        if store is None:
            from qortex_mcp.config import Settings

            settings = Settings.from_env()  # the only place a learner reads the environment
            store = configured_store(settings)
            if signer is None:
                signer = default_signer(settings, store, config.selection_ttl_s)
        learner: Self | None = None
        try:
            await store.initialize()
            if signer is None:
                signer = await store_signer(store, config.selection_ttl_s)
            learner = cls(config, store, signer, rng or default_generator(config.seed), owns,
                          refresh_interval_s, flush_interval_s, budget, clock, now)
            for arm, prior in config.arm_priors.items():
                learner._set_prior(learner._slot(arm), prior, persist=False)
            await learner._sync()
        except BaseException:
            if learner is not None:
                learner._release_budget()
            if owns:
                await store.close()
            raise
        learner._tasks.append(asyncio.create_task(learner._flush_loop(),
                                                  name=f"qortex-flush-{learner.name}"))
        if store.shared:
            learner._tasks.append(asyncio.create_task(learner._refresh_loop(),
                                                      name=f"qortex-refresh-{learner.name}"))
        return learner

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Flush selection statistics and stop background work (and the store, if owned)."""
        if self._closed:
            return
        self._closed = True
        await stop_tasks(self._tasks, f"learner {self.name}")
        try:
            await self._flush()
        except QortexError as exc:
            log.warning("learner_flush_failed", learner=self.name, code=exc.code)
        finally:
            self._release_budget()
            if self._owns_store:
                await self.store.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def rng(self) -> np.random.Generator:
        """The learner's random generator (seeded from ``config.seed``); callers that sample
        on the learner's behalf, such as the reranker's ``explore``, draw from it."""
        return self._rng

    @property
    def memory_bytes(self) -> int:
        """The estimate of this learner's in-memory state (``qortex_mcp.learning.limits``)."""
        return self._charged

    @property
    def feedback_last_minute(self) -> int:
        """Feedback rows this learner took in the last 60 seconds (what the rate caps
        count; refused calls are not counted)."""
        return self._limiter.recent()

    async def refresh(self) -> None:
        """Pull changes made by other processes now (inspection calls do this themselves)."""
        self._check_open()
        await self._sync()

    async def _refresh_loop(self) -> None:
        while not self._closed:  # also a cancellation a driver swallowed ends it (tasks.py)
            await self.store.wait_for_change(self.name, self._refresh_interval)
            try:
                await self._sync()
            except QortexError as exc:
                log.warning("learner_refresh_failed", learner=self.name, code=exc.code)

    async def _flush_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._flush_interval)
            try:
                await self._flush()
            except QortexError as exc:
                log.warning("learner_flush_failed", learner=self.name, code=exc.code)
            except Exception:  # a bug must not end the flushes: say so, and go on
                log.exception("learner_flush_crashed", learner=self.name)

    async def flush(self) -> None:
        """Write pending selection statistics now."""
        self._check_open()
        await self._flush()

