"""PostgreSQL test helpers: each test gets its own schema in the ``test`` database."""

from __future__ import annotations

import secrets

from qortex_mcp.learning.stores.base import LearningStore


async def fresh_postgres_store(dsn: str) -> LearningStore:
    from qortex_mcp.learning.postgres import PostgresLearningStore

    return PostgresLearningStore(dsn, schema=f"qx_test_{secrets.token_hex(6)}")
