"""``QortexRuntime``: the one learner registry behind the qortex tools of a server.

A standalone server (``build_server``) opens the registry in its lifespan. A host server
that added the tools with ``register_tools`` gets the runtime back and chooses:

* put ``async with runtime.running():`` in its own lifespan: the registry opens at start
  and closes (pending statistics flushed, store closed) at shutdown; or
* do nothing: the registry opens on the first tool call and stays open until
  ``await runtime.aclose()``. Feedback is durable either way (every acknowledged feedback
  was committed before the tool answered); only selection counters wait for a close.

A registry passed in by the caller is used as is and never closed here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import anyio

from qortex_mcp.config import Settings
from qortex_mcp.errors import ConfigError
from qortex_mcp.learning import Learner, LearnerRegistry, LearningStore
from qortex_mcp.learning.stores.factory import configured_store, default_signer
from qortex_mcp.logging import get_logger

if TYPE_CHECKING:
    from qortex_mcp.tools.boundary import ToolBoundary

__all__ = [
    "CLOSE_TIMEOUT_S",
    "QortexRuntime",
    "close_registry",
    "open_registry",
    "server_learner_options",
]

log = get_logger(__name__)

CLOSE_TIMEOUT_S: Final = 4.0
"""Closing may take this long (flush, then close the store); shutdown must end within 5 s."""


async def open_registry(
    settings: Settings, *, wrap: Callable[[LearningStore], LearningStore] | None = None,
    agent_caps: bool = True,
) -> LearnerRegistry:
    """Open the configured store and signer as a ``LearnerRegistry`` (caller closes it).

    ``wrap`` may wrap the store the learners use (the metrics time its commits);
    ``agent_caps=False`` leaves out the server's feedback rate caps (stream consumers).

    Every learner option of the TOML file is checked here, so a bad file fails at start
    rather than on some later tool call.

    Raises:
        ConfigError: bad learner options, or no selection key can be read or created.
        StoreError: the store cannot be opened.
    """
    store = configured_store(settings)
    try:
        try:
            signer = default_signer(settings, store)
        except OSError as exc:
            raise ConfigError(
                f"cannot read or create the selection key in {settings.state_dir}: "
                f"{exc.strerror}"
            ) from exc
        options = server_learner_options(settings) if agent_caps else settings.learners
        registry = LearnerRegistry(
            store if wrap is None else wrap(store), signer, options=options,
            max_open=settings.max_open_learners,
            memory_budget_bytes=settings.memory_budget_mb * 1024 * 1024)
        for name in {"default", *settings.learners} - {"*"}:
            registry.config_for(name)
        await registry.open()
    except BaseException:
        await store.close()
        raise
    return registry


def server_learner_options(settings: Settings) -> dict[str, Mapping[str, Any]]:
    """The TOML learner options over the server's own defaults: the feedback rate caps of
    ``QORTEX_FEEDBACK_PER_MINUTE`` / ``QORTEX_FEEDBACK_PER_ARM_PER_MINUTE`` apply to every
    learner unless ``[defaults]`` or its own table sets them (the library has none)."""
    options = dict(settings.learners)
    options["*"] = {"feedback_per_minute": settings.feedback_per_minute,
                    "feedback_per_arm_per_minute": settings.feedback_per_arm_per_minute,
                    **settings.learners.get("*", {})}
    return options


class QortexRuntime:
    """Holds the learner registry the tools use; opens it once, closes it once.

    Args:
        settings: where the store lives and how learners are configured.
        registry: an open registry owned by the caller (then never opened or closed here).
    """

    def __init__(self, settings: Settings, registry: LearnerRegistry | None = None) -> None:
        self.settings = settings
        self._registry = registry
        self._owned = registry is None
        self._users = 0
        self._lock = asyncio.Lock()
        self.boundary: ToolBoundary | None = None
        """The boundary guarding this runtime's tools (``register_tools`` sets it)."""

    @property
    def opened(self) -> LearnerRegistry | None:
        """The registry if it is open now (never opens it)."""
        return self._registry

    async def registry(self) -> LearnerRegistry:
        """The open registry (opened now if nothing opened it yet).

        Raises:
            ConfigError, StoreError: it cannot be opened.
        """
        registry = self._registry
        if registry is not None:
            return registry
        async with self._lock:
            if self._registry is None:
                self._registry = await open_registry(self.settings)
                log.info("registry_opened", store=self.settings.store,
                         location=self.settings.location())
            return self._registry

    async def learner(self, name: str, *, create: bool = True) -> Learner:
        """The learner ``name`` (created on first use when ``create``).

        Raises:
            InvalidName, UnknownLearner, LimitExceeded: see ``LearnerRegistry.get``.
        """
        return await (await self.registry()).get(name, create=create)

    @asynccontextmanager
    async def use(self, name: str, *, create: bool = True) -> AsyncIterator[Learner]:
        """The learner ``name``, kept open for the block (tools hold their learner so; an
        idle learner may be closed to make room for others, and reopens when named).

        Raises:
            InvalidName, UnknownLearner, LimitExceeded: see ``LearnerRegistry.get``.
        """
        async with (await self.registry()).use(name, create=create) as learner:
            yield learner

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LearnerRegistry]:
        """Keep the registry open for the block; the last block to leave closes it.

        Nested and concurrent blocks share one registry (a server entered by several
        in-memory clients at once opens its store once).

        Raises:
            ConfigError, StoreError: the registry cannot be opened.
        """
        registry = await self.registry()
        self._users += 1
        try:
            yield registry
        finally:
            self._users -= 1
            if self._users == 0:
                await self.aclose()

    async def aclose(self) -> None:
        """Close the registry if this runtime opened it; a later call opens a fresh one."""
        with anyio.CancelScope(shield=True):
            async with self._lock:
                registry = self._registry
                if registry is None or not self._owned:
                    return
                self._registry = None
                await close_registry(registry)


async def close_registry(registry: LearnerRegistry) -> None:
    """Close ``registry`` (flush statistics, close the store) even while being cancelled.

    Shielded and bounded by ``CLOSE_TIMEOUT_S``: a shutdown signal must not cut the final
    flush short, nor a stuck store hang the exit.
    """
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT_S) as scope:
        await registry.close()
    if scope.cancelled_caught:
        log.error("registry_close_timeout", timeout_s=CLOSE_TIMEOUT_S)
    else:
        log.info("registry_closed")
