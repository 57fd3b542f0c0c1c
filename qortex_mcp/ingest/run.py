"""Running a consumer from a broker URL: what ``qortex-mcp ingest`` does after parsing.

``redis://HOST:PORT/DB`` (also ``rediss://``, ``unix://``) reads a Redis stream with a
consumer group; ``nats://HOST:PORT`` (also ``tls://``) reads a JetStream subject with a
durable pull consumer. The broker clients are imported only here, so the rest of qortex-mcp
runs without the ``streams`` extra.
"""

from __future__ import annotations

import asyncio
from typing import Final

from qortex_mcp.errors import ConfigError
from qortex_mcp.ingest.options import ConsumerOptions, IngestStats, StreamLag
from qortex_mcp.learning.registry import LearnerRegistry

__all__ = ["NATS_SCHEMES", "REDIS_SCHEMES", "broker_of", "consume", "lag"]

REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")
NATS_SCHEMES: Final = ("nats://", "tls://")


def broker_of(url: str) -> str:
    """``redis`` or ``nats``.

    Raises:
        ConfigError: another scheme.
    """
    if url.startswith(REDIS_SCHEMES):
        return "redis"
    if url.startswith(NATS_SCHEMES):
        return "nats"
    raise ConfigError("the broker URL must start with redis://, rediss://, unix://, nats:// "
                      "or tls://")


def _names(url: str, name: str | None, group: str | None) -> tuple[str, str]:
    broker = broker_of(url)
    flags = ("--stream", "--group") if broker == "redis" else ("--subject", "--durable")
    if not name or not group:
        raise ConfigError(f"{broker} ingestion needs {flags[0]} NAME and {flags[1]} NAME")
    return name, group


def _missing_client(exc: ImportError) -> ConfigError:
    return ConfigError(f"the stream clients are not installed ({exc.name}): "
                       "pip install 'qortex-mcp[streams]'")


async def consume(url: str, registry: LearnerRegistry, options: ConsumerOptions, *,
                  name: str | None, group: str | None, stop: asyncio.Event) -> IngestStats:
    """Consume ``name`` (stream or subject) as ``group`` (group or durable) until ``stop``.

    Raises:
        ConfigError: a bad URL, missing names, or the ``streams`` extra is not installed.
    """
    name, group = _names(url, name, group)
    try:
        if broker_of(url) == "redis":
            import redis.asyncio as aioredis

            from qortex_mcp.ingest.redis import RedisFeedbackConsumer
        else:
            import nats

            from qortex_mcp.ingest.nats import NatsFeedbackConsumer
    except ImportError as exc:
        raise _missing_client(exc) from exc
    if broker_of(url) == "redis":
        client = aioredis.Redis.from_url(url, socket_timeout=10 + options.block_ms / 1000,
                                         socket_connect_timeout=5)
        try:
            return await RedisFeedbackConsumer(registry, client, name, group, options).run(stop)
        finally:
            await client.aclose()
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.25,
                            connect_timeout=5, allow_reconnect=True)
    try:
        return await NatsFeedbackConsumer(registry, nc, name, group, options).run(stop)
    finally:
        await nc.close()


async def lag(url: str, *, name: str | None, group: str | None) -> StreamLag:
    """How far ``group`` is behind on ``name`` (see ``StreamLag``).

    Raises:
        ConfigError: as ``consume``. The broker client's errors when it cannot tell.
    """
    name, group = _names(url, name, group)
    try:
        if broker_of(url) == "redis":
            import redis.asyncio as aioredis

            from qortex_mcp.ingest.redis import redis_lag
        else:
            import nats

            from qortex_mcp.ingest.nats import nats_lag
    except ImportError as exc:
        raise _missing_client(exc) from exc
    if broker_of(url) == "redis":
        client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            return await redis_lag(client, name, group)
        finally:
            await client.aclose()
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        return await nats_lag(nc.jetstream(), name, group)
    finally:
        await nc.close()
