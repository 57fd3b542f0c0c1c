"""Feedback from a Redis stream: a consumer group read in batches, acknowledged after COMMIT.

Order of operations, each for a reason:

1. ``XREADGROUP`` up to ``batch_size`` entries, waiting at most ``block_ms``.
2. Apply the batch through the library (``apply_batch``): one store transaction.
3. Only after that COMMIT, in one ``MULTI``: ``XADD`` each dead letter to ``NAME:dead``
   and ``XACK`` every settled entry. A crash before it leaves the batch pending: it is
   delivered again and the store counts it as duplicates, never twice.

Recovery: at start the consumer first re-reads its own pending entries (a restarted
consumer with a stable ``--consumer`` name resumes at once); a janitor takes over entries
other consumers left pending longer than ``claim_idle_ms`` (``XAUTOCLAIM``, never with a
zero idle time, which would take live consumers' work). Entries whose retryable failures
reach ``max_deliveries`` deliveries (``XPENDING``) are dead-lettered with their last error.
Broker errors (a Redis restart) pause and retry; the client reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from qortex_mcp.ingest.batch import Message, Verdict, apply_batch, message_key
from qortex_mcp.ingest.options import (
    BACKOFF_MAX_S,
    ConsumerOptions,
    IngestStats,
    StreamLag,
    pause,
    unreachable,
)
from qortex_mcp.learning.registry import LearnerRegistry
from qortex_mcp.logging import get_logger

__all__ = ["FIELD", "RedisFeedbackConsumer", "consume", "dead_stream", "lag", "redis_lag"]

log = get_logger(__name__)

FIELD: Final = b"feedback"
"""The entry field holding the JSON body."""

Entry = tuple[bytes, dict[bytes, bytes] | None]


def dead_stream(stream: str) -> str:
    return f"{stream}:dead"


class RedisFeedbackConsumer:
    """Consumes ``stream`` as ``options.consumer`` of ``group`` into ``registry``'s store.

    Args:
        registry: the open learner registry (its store and signer).
        client: a ``redis.asyncio.Redis`` (bytes responses); the caller closes it.
        stream, group: the stream key and the consumer group (created if missing).
    """

    def __init__(self, registry: LearnerRegistry, client: aioredis.Redis, stream: str,
                 group: str, options: ConsumerOptions | None = None) -> None:
        self.registry = registry
        self.client = client
        self.stream = stream
        self.group = group
        self.options = options or ConsumerOptions()
        self.stats = IngestStats()
        self._cursor = b"0-0"

    async def _ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, stop: asyncio.Event | None = None) -> IngestStats:
        """Consume until ``stop`` is set (or, with ``once``, until nothing is left); the
        batch in flight is always finished (committed and acknowledged) first.

        While a batch is being committed the next one is already being read (one read
        ahead), so the broker round trip overlaps the store's COMMIT.
        """
        stop = stop or asyncio.Event()
        opts = self.options
        history = True  # our own pending entries first (a restart under the same name)
        ready = False  # the group exists (checked again after any broker error)
        next_claim = 0.0
        backoff = 0.05
        ahead: asyncio.Task[list[Entry]] | None = None
        while not stop.is_set() or ahead is not None:
            try:
                if not ready:
                    await self._ensure_group()
                    ready = True
                if ahead is not None:  # read before the stop: finish it too
                    task, ahead = ahead, None
                    entries, deliveries = await task, {}
                elif history:
                    entries = await self._read("0", block=False)
                    history = bool(entries)
                    deliveries = await self._deliveries(entries)
                elif time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + max(opts.claim_idle_ms / 4000, 0.05)
                    entries = await self._claim()
                    deliveries = await self._deliveries(entries)
                else:
                    entries = await self._read(">", block=not opts.once)
                    deliveries = {}
                    if not entries and opts.once:
                        break
                if not entries:
                    continue
                if not history and not stop.is_set():
                    ahead = asyncio.create_task(self._read(">", block=not opts.once))
                retry = await self._settle(entries, deliveries)
                backoff = 0.05
            except RedisError as exc:
                log.warning("redis_unavailable", stream=self.stream, error=type(exc).__name__,
                            detail=str(exc)[:200], retry_in_s=backoff)
                if ahead is not None:  # what it read stays pending: re-read as history
                    ahead.cancel()
                    with contextlib.suppress(RedisError, asyncio.CancelledError):
                        await ahead
                    ahead = None
                await pause(stop, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                history, ready = True, False
                continue
            if retry:
                history = True  # read them again from our pending list, after a pause
                await pause(stop, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        log.info("ingest_stopped", broker="redis", stream=self.stream, group=self.group,
                 consumer=opts.consumer, read=self.stats.read, done=self.stats.done,
                 applied=self.stats.applied, dead=self.stats.dead)
        return self.stats

    async def _read(self, start: str, *, block: bool) -> list[Entry]:
        reply: Any = await self.client.xreadgroup(
            self.group, self.options.consumer, {self.stream: start},
            count=self.options.batch_size, block=self.options.block_ms if block else None)
        return list(reply[0][1]) if reply else []

    async def _claim(self) -> list[Entry]:
        reply: Any = await self.client.xautoclaim(
            self.stream, self.group, self.options.consumer, self.options.claim_idle_ms,
            start_id=self._cursor, count=self.options.batch_size)
        self._cursor = reply[0]
        entries: list[Entry] = list(reply[1])
        if entries:
            log.info("redis_claimed", stream=self.stream, group=self.group,
                     consumer=self.options.consumer, entries=len(entries))
        return entries

    async def _deliveries(self, entries: Sequence[Entry]) -> dict[bytes, int]:
        if not entries:
            return {}
        rows: Any = await self.client.xpending_range(
            self.stream, self.group, min=entries[0][0], max=entries[-1][0],
            count=len(entries), consumername=self.options.consumer)
        return {r["message_id"]: int(r["times_delivered"]) for r in rows}

    async def _settle(self, entries: Sequence[Entry], deliveries: dict[bytes, int]) -> bool:
        """Apply, then dead-letter and acknowledge in one MULTI; True if any is retried."""
        gone = [eid for eid, fields in entries if fields is None]  # deleted while pending
        live = [(eid, fields) for eid, fields in entries if fields is not None]
        messages = [Message(eid.decode(), fields.get(FIELD), deliveries.get(eid, 1),
                            message_key("redis", self.stream, eid.decode()))
                    for eid, fields in live]
        verdicts = await apply_batch(self.registry, messages,
                                     create_learners=self.options.create_learners)
        ack: list[bytes] = list(gone)
        dead: list[tuple[Message, Verdict]] = []
        retried = 0
        for (eid, _), message, verdict in zip(live, messages, verdicts, strict=True):
            if verdict.outcome == "retry":
                if message.deliveries < self.options.max_deliveries:
                    retried += 1
                    continue
                verdict = Verdict("dead", verdict.code, f"after {message.deliveries} "
                                  f"deliveries: {verdict.message}")
            if verdict.outcome == "dead":
                dead.append((message, verdict))
            self.stats.applied += verdict.applied
            ack.append(eid)
        if ack:
            async with self.client.pipeline(transaction=True) as pipe:
                for message, verdict in dead:
                    pipe.xadd(dead_stream(self.stream), _dead_fields(message, verdict))
                pipe.xack(self.stream, self.group, *ack)
                await pipe.execute()
        if dead:  # one line per batch: a flood of poison must not flood the log
            log.warning("feedback_dead_lettered", stream=self.stream, count=len(dead),
                        codes=sorted({v.code for _, v in dead}), first_id=dead[0][0].id,
                        first_reason=dead[0][1].message)
        self.stats.read += len(entries)
        self.stats.dead += len(dead)
        self.stats.done += len(ack) - len(dead)
        self.stats.retried += retried
        self.stats.batches += 1
        return retried > 0


def _dead_fields(message: Message, verdict: Verdict) -> dict[Any, Any]:
    return {"id": message.id, "code": verdict.code, "message": verdict.message,
            "deliveries": message.deliveries, FIELD: message.body or b""}


async def redis_lag(client: aioredis.Redis, stream: str, group: str) -> StreamLag:
    """Pending count, undelivered count and oldest pending age of ``group`` on ``stream``.

    Raises:
        redis.exceptions.RedisError: the server cannot be reached, or no such group.
    """
    summary = await client.xpending(stream, group)
    lag = None
    for info in await client.xinfo_groups(stream):
        name = info.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            lag = info.get("lag")
    oldest = None
    if summary["pending"] and summary["min"]:
        first_ms = int(summary["min"].split(b"-")[0])
        server_s, server_us = await client.time()
        oldest = max(0.0, server_s + server_us / 1e6 - first_ms / 1000)
    return StreamLag("redis", stream, group, int(summary["pending"]),
                     None if lag is None else int(lag), oldest)


async def consume(url: str, registry: LearnerRegistry, stream: str, group: str,
                  options: ConsumerOptions, stop: asyncio.Event) -> IngestStats:
    """``qortex-mcp ingest`` on a Redis stream (``ingest.run.consume``)."""
    client = aioredis.Redis.from_url(url, socket_timeout=10 + options.block_ms / 1000,
                                     socket_connect_timeout=5)
    try:
        return await RedisFeedbackConsumer(registry, client, stream, group, options).run(stop)
    finally:
        await client.aclose()


async def lag(url: str, stream: str, group: str) -> StreamLag:
    """``ingest.run.lag`` for a Redis stream."""
    client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return await redis_lag(client, stream, group)
    except RedisError as exc:
        raise unreachable(url, exc) from exc
    finally:
        await client.aclose()
