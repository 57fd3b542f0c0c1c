"""Broker fixtures: skip loudly only when a broker cannot be reached."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.ingest.support import NATS_UNREACHABLE, NATS_URL, REDIS_UNREACHABLE, REDIS_URL


@pytest.fixture
async def redis_client() -> AsyncIterator[object]:
    if REDIS_UNREACHABLE:
        pytest.skip(f"REDIS UNREACHABLE: {REDIS_UNREACHABLE}")
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def nats_client() -> AsyncIterator[object]:
    if NATS_UNREACHABLE:
        pytest.skip(f"NATS UNREACHABLE: {NATS_UNREACHABLE}")
    import nats

    nc = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=0)
    try:
        yield nc
    finally:
        await nc.close()
