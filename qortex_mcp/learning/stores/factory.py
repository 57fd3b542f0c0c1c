"""Build the store and signer that the configuration asks for."""

from __future__ import annotations

import os

from qortex_mcp.config import Settings
from qortex_mcp.learning.stores.base import LearningStore
from qortex_mcp.learning.stores.json import JsonLearningStore
from qortex_mcp.learning.stores.memory import MemoryLearningStore
from qortex_mcp.learning.stores.sqlite import SqliteLearningStore
from qortex_mcp.learning.tokens import SelectionSigner, load_secret

__all__ = ["default_signer", "open_store"]


def open_store(settings: Settings) -> LearningStore:
    """An uninitialized store of the configured kind (``await store.initialize()`` next)."""
    if settings.store == "sqlite":
        # QORTEX_TEST_FAULTS: deliberate bugs the reliability suite must catch (tests only).
        faults = frozenset(f.strip() for f in os.environ.get("QORTEX_TEST_FAULTS", "").split(",")
                           if f.strip())
        return SqliteLearningStore(settings.sqlite_path, synchronous=settings.sqlite_synchronous,
                                   _faults=faults)
    if settings.store == "json":
        return JsonLearningStore(settings.json_path)
    if settings.store == "memory":
        return MemoryLearningStore()
    from qortex_mcp.learning.postgres import PostgresLearningStore

    assert settings.database_url is not None  # Settings.build checks this
    return PostgresLearningStore(settings.database_url)


def default_signer(
    settings: Settings, store: LearningStore, ttl_s: float = 30 * 86400
) -> SelectionSigner:
    """The configured key; a throwaway key for a memory store without ``QORTEX_SECRET``
    (its selections die with the process anyway, and tests stay out of the user's data
    directory)."""
    if store.kind == "memory" and not settings.secret:
        return SelectionSigner.random()
    return SelectionSigner([load_secret(settings.state_dir, settings.secret)], ttl_s=ttl_s)
