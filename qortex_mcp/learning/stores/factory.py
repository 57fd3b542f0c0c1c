"""Build the store and signer that the server's configuration asks for.

The environment is read in one place, ``Settings.from_env``; these functions only act on
the ``Settings`` they are given (a store through ``Settings.store_url`` and
``stores.url.open_store``) (the server and ``Learner.create(config)`` without a store
both go through them). ``store_signer`` is for a learner given a store and no signer: it
reads no environment and writes nothing outside that store.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from qortex_mcp.learning.stores.base import LearningStore
from qortex_mcp.learning.stores.url import open_store
from qortex_mcp.learning.tokens import SelectionSigner, load_secret

if TYPE_CHECKING:  # the library never imports the configuration module at run time
    from qortex_mcp.config import Settings

__all__ = ["configured_store", "default_signer", "store_signer"]


def configured_store(settings: Settings) -> LearningStore:
    """An uninitialized store of the configured kind (``await store.initialize()`` next)."""
    return open_store(settings.store_url)


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
