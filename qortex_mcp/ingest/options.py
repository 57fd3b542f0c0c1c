"""What every stream consumer shares: its options, its counters, its lag report, back-off."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass, field
from typing import Final

from qortex_mcp.errors import ConfigError, StoreUnavailable

__all__ = [
    "BACKOFF_MAX_S", "ConsumerOptions", "IngestStats", "StreamLag", "default_consumer",
    "unreachable",
]

BACKOFF_MAX_S: Final = 2.0
"""Longest pause after a broker or store failure (a stop request still ends it at once)."""


def default_consumer() -> str:
    """``host-pid``: unique per process. Give a stable name (``--consumer``) to have a
    restarted consumer take its own pending messages back at once."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    """How a consumer reads.

    Attributes:
        batch_size: most messages read (and committed) at once.
        block_ms: longest wait for a batch to fill.
        claim_idle_ms: a message pending this long with another consumer is taken over
            (Redis ``XAUTOCLAIM``; the NATS consumer's ``ack_wait``). It must exceed the
            slowest batch, or two consumers work on one message (harmless, it counts once,
            but wasted); never 0, which would take live consumers' work.
        max_deliveries: a message that failed with a retryable error this many times is
            dead-lettered with that error.
        once: drain what is there, then return (batch jobs and tests).
        consumer: this consumer's name in its group (Redis).
        create_learners: bare feedback for a learner that does not exist creates it (as
            the tool does); by default it is dead-lettered ``UNKNOWN_LEARNER``, so a
            mistyped name in a producer cannot create learners.
    """

    batch_size: int = 256
    block_ms: int = 100
    claim_idle_ms: int = 30_000
    max_deliveries: int = 5
    once: bool = False
    consumer: str = field(default_factory=default_consumer)
    create_learners: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "block_ms", "claim_idle_ms", "max_deliveries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number of at least 1")


@dataclass(slots=True)
class IngestStats:
    """What a consumer did so far."""

    read: int = 0
    applied: int = 0
    """Arm outcomes newly counted (duplicates are not)."""
    done: int = 0
    """Messages acknowledged after their commit (applied or duplicates)."""
    dead: int = 0
    retried: int = 0
    batches: int = 0


@dataclass(frozen=True, slots=True)
class StreamLag:
    """How far a group or durable consumer is behind (what ``status`` and metrics show).

    Attributes:
        pending: delivered to a consumer, not yet acknowledged.
        lag: not yet delivered to any consumer of the group (None when the broker cannot
            tell).
        oldest_pending_age_s: age of the oldest pending message (None when none is).
    """

    broker: str
    stream: str
    group: str
    pending: int
    lag: int | None
    oldest_pending_age_s: float | None


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass


def unreachable(url: str, exc: BaseException) -> StoreUnavailable:
    """The broker could not be used: the same retryable failure as a store's (the broker
    holds the messages)."""
    detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return StoreUnavailable(f"cannot use the broker at {url}: {detail}")
