"""Build the store and signer that the configuration asks for.

The environment is read in one place, ``Settings.from_env``; these functions only act on
the ``Settings`` they are given (the server and ``Learner.create(config)`` without a store
both go through them). ``store_signer`` is for a learner given a store and no signer: it
reads no environment and writes nothing outside that store.
"""

from __future__ import annotations

import secrets
from typing import Protocol, runtime_checkable

from qortex_mcp.config import Settings
from qortex_mcp.learning.stores.base import LearningStore
from qortex_mcp.learning.stores.json import JsonLearningStore
from qortex_mcp.learning.stores.memory import MemoryLearningStore
from qortex_mcp.learning.stores.sqlite import SqliteLearningStore
from qortex_mcp.learning.tokens import SelectionSigner, load_secret

__all__ = ["default_signer", "open_store", "store_signer"]


def open_store(settings: Settings) -> LearningStore:
    """An uninitialized store of the configured kind (``await store.initialize()`` next)."""
    if settings.store == "sqlite":
        return SqliteLearningStore(settings.sqlite_path, synchronous=settings.sqlite_synchronous)
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


@runtime_checkable
class _KeepsSelectionKey(Protocol):
    async def selection_key(self, candidate: bytes) -> bytes: ...


async def store_signer(store: LearningStore, ttl_s: float = 30 * 86400) -> SelectionSigner:
    """The signer of a learner given ``store`` and no signer: the key kept in the store
    itself when it can keep one (SQLite: the file's ``qortex_meta`` table; PostgreSQL: the
    schema's ``meta`` table; created on first use, shared by every process on that store),
    else a random key for this process (memory and JSON stores: their selection ids are
    refused after a restart). Reads no environment variable and writes no file outside the
    store. ``store`` must be initialized.
    """
    if isinstance(store, _KeepsSelectionKey):
        key = await store.selection_key(secrets.token_hex(32).encode("ascii"))
        return SelectionSigner([key], ttl_s=ttl_s)
    return SelectionSigner([secrets.token_bytes(32)], ttl_s=ttl_s)
