"""Running a consumer from a broker URL: what ``qortex-mcp ingest`` does after parsing.

``redis://HOST:PORT/DB`` (also ``rediss://``, ``unix://``) reads a Redis stream with a
consumer group; ``nats://HOST:PORT`` (also ``tls://``) reads a JetStream subject with a
durable pull consumer. The broker clients are imported only here, so the rest of qortex-mcp
runs without the ``streams`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from qortex_mcp.errors import ConfigError, StoreUnavailable
from qortex_mcp.ingest.options import ConsumerOptions, IngestStats, StreamLag
from qortex_mcp.learning.registry import LearnerRegistry
from qortex_mcp.logging import get_logger

__all__ = ["NATS_SCHEMES", "REDIS_SCHEMES", "broker_of", "consume", "lag"]

log = get_logger(__name__)

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


async def _nats_error(exc: Exception) -> None:
    log.warning("nats_error", error=type(exc).__name__, detail=str(exc)[:200])


def _unreachable(url: str, exc: BaseException) -> StoreUnavailable:
    # The broker holds the messages: unreachable is the same retryable failure as a store's.
    detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return StoreUnavailable(f"cannot use the broker at {url}: {detail}")


def _missing_client(exc: ImportError) -> ConfigError:
    return ConfigError(f"the stream clients are not installed ({exc.name}): "
                       "pip install 'qortex-mcp[streams]'")


async def consume(url: str, registry: LearnerRegistry, options: ConsumerOptions, *,
                  name: str | None, group: str | None, stop: asyncio.Event) -> IngestStats:
    """Consume ``name`` (stream or subject) as ``group`` (group or durable) until ``stop``.

    Raises:
        ConfigError: a bad URL, missing names, or the ``streams`` extra is not installed.
        StoreUnavailable: the NATS server cannot be reached at start (Redis is retried).
    """
    name, group = _names(url, name, group)
    try:
        if broker_of(url) == "redis":
            import redis.asyncio as aioredis

            from qortex_mcp.ingest.redis import RedisFeedbackConsumer
        else:
            import nats
            import nats.errors

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
    # Reconnects forever (also at start: a consumer may start before its broker), until a
    # stop request; the client's own error log would print tracebacks, so its errors are one
    # line here.
    connecting = asyncio.ensure_future(nats.connect(
        url, max_reconnect_attempts=-1, reconnect_time_wait=0.25, connect_timeout=5,
        allow_reconnect=True, error_cb=_nats_error))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([connecting, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not connecting.done():
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError, nats.errors.Error):
            await connecting
        return IngestStats()
    try:
        nc = connecting.result()
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise _unreachable(url, exc) from exc
    try:
        return await NatsFeedbackConsumer(registry, nc, name, group, options).run(stop)
    finally:
        await nc.close()


async def lag(url: str, *, name: str | None, group: str | None) -> StreamLag:
    """How far ``group`` is behind on ``name`` (see ``StreamLag``).

    Raises:
        ConfigError: as ``consume``. StoreUnavailable: the broker cannot be reached, or
            has no such stream, group or durable.
    """
    name, group = _names(url, name, group)
    try:
        if broker_of(url) == "redis":
            import redis.asyncio as aioredis

            from qortex_mcp.ingest.redis import redis_lag
        else:
            import nats
            import nats.errors

            from qortex_mcp.ingest.nats import nats_lag
    except ImportError as exc:
        raise _missing_client(exc) from exc
    if broker_of(url) == "redis":
        from redis.exceptions import RedisError

        client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            return await redis_lag(client, name, group)
        except RedisError as exc:
            raise _unreachable(url, exc) from exc
        finally:
            await client.aclose()
    try:
        async with asyncio.timeout(10):  # the client retries a refused first connect
            nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0,
                                    allow_reconnect=False, error_cb=_nats_error)
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise _unreachable(url, exc) from exc
    try:
        return await nats_lag(nc.jetstream(), name, group)
    except (TimeoutError, nats.errors.Error) as exc:
        raise _unreachable(url, exc) from exc
    finally:
        await nc.close()
