"""Running a consumer from a broker URL: what ``qortex-mcp ingest`` does after parsing.

``redis://HOST:PORT/DB`` (also ``rediss://``, ``unix://``) reads a Redis stream with a
consumer group; ``nats://HOST:PORT`` (also ``tls://``) reads a JetStream subject with a
durable pull consumer. Each broker's module (``redis.py``, ``nats.py``: its consumer,
``consume`` and ``lag``) imports its client, and is imported only from here when a URL asks
for it, so the rest of qortex-mcp runs without the ``streams`` extra.
"""

from __future__ import annotations

import asyncio
import importlib
from types import ModuleType
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


def _broker(url: str) -> ModuleType:
    """The broker's module (``ingest.redis`` or ``ingest.nats``); importing it imports its
    client, which is why it happens here and only when asked for."""
    try:
        return importlib.import_module(f"qortex_mcp.ingest.{broker_of(url)}")
    except ImportError as exc:
        raise _missing_client(exc) from exc


async def consume(url: str, registry: LearnerRegistry, options: ConsumerOptions, *,
                  name: str | None, group: str | None, stop: asyncio.Event) -> IngestStats:
    """Consume ``name`` (stream or subject) as ``group`` (group or durable) until ``stop``.

    Raises:
        ConfigError: a bad URL, missing names, or the ``streams`` extra is not installed.
        StoreUnavailable: the NATS server cannot be reached at start (Redis is retried).
    """
    name, group = _names(url, name, group)
    result: IngestStats = await _broker(url).consume(url, registry, name, group, options, stop)
    return result


async def lag(url: str, *, name: str | None, group: str | None) -> StreamLag:
    """How far ``group`` is behind on ``name`` (see ``StreamLag``).

    Raises:
        ConfigError: as ``consume``. StoreUnavailable: the broker cannot be reached, or
            has no such stream, group or durable.
    """
    name, group = _names(url, name, group)
    result: StreamLag = await _broker(url).lag(url, name, group)
    return result
