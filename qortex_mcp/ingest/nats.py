"""Feedback from NATS JetStream: a durable pull consumer, acknowledged after COMMIT.

The consumer fetches up to ``batch_size`` messages (waiting at most ``block_ms``), applies
them through the library (``apply_batch``: one store transaction), and only then acks them
(and flushes, so the acks reach the server). A crash before that leaves them unacked: they
are redelivered after ``ack_wait`` (``claim_idle_ms``) and count as duplicates.

Retryable failures are nak'd with a delay; a message whose retryable failures reach
``max_deliveries`` deliveries, or that can never apply, is published to ``SUBJECT.dead``
and then acked. That pair is not atomic, so the dead letter is made idempotent: it carries
``Nats-Msg-Id: dead:<stream>:<sequence>``, and a crash between the two republishes the same
id, which JetStream drops within the stream's duplicate window.

If no stream captures the subject, one is created (``QORTEX_<SUBJECT>``, file storage)
over the subject and its ``.dead`` subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from nats.js.errors import NotFoundError

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

__all__ = [
    "NatsFeedbackConsumer", "consume", "dead_subject", "ensure_stream", "lag", "nats_lag",
]

log = get_logger(__name__)

_RETRY_DELAY_S = 0.5


def dead_subject(subject: str) -> str:
    return f"{subject}.dead"


async def ensure_stream(js: JetStreamContext, subject: str) -> str:
    """The name of the stream capturing ``subject``; created (with ``.dead``) if none."""
    try:
        return await js.find_stream_name_by_subject(subject)
    except NotFoundError:
        name = "QORTEX_" + re.sub(r"[^A-Za-z0-9_-]", "_", subject).upper()
        await js.add_stream(StreamConfig(name=name, subjects=[subject, dead_subject(subject)]))
        log.info("nats_stream_created", stream=name, subject=subject)
        return name


class NatsFeedbackConsumer:
    """Consumes ``subject`` through the durable pull consumer ``durable``.

    Args:
        registry: the open learner registry (its store and signer).
        nc: a NATS connection (with JetStream) the caller closes.
    """

    def __init__(self, registry: LearnerRegistry, nc: NATS, subject: str,
                 durable: str, options: ConsumerOptions | None = None) -> None:
        self.registry = registry
        self.nc = nc
        self.js = nc.jetstream()
        self.subject = subject
        self.durable = durable
        self.options = options or ConsumerOptions()
        self.stats = IngestStats()
        self.stream = ""

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        self.stream = await ensure_stream(self.js, self.subject)
        config = ConsumerConfig(
            durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.options.claim_idle_ms / 1000, max_deliver=-1,
            max_ack_pending=max(1000, 4 * self.options.batch_size),
            filter_subject=self.subject)
        return await self.js.pull_subscribe(self.subject, durable=self.durable,
                                            stream=self.stream, config=config)

    async def run(self, stop: asyncio.Event | None = None) -> IngestStats:
        """Consume until ``stop`` is set (or, with ``once``, until nothing is left); the
        batch in flight is always finished (committed and acked) first."""
        stop = stop or asyncio.Event()
        opts = self.options
        backoff = 0.05
        sub: JetStreamContext.PullSubscription | None = None
        while not stop.is_set():
            try:
                if sub is None:
                    sub = await self._subscribe()
                try:
                    msgs = await sub.fetch(opts.batch_size, timeout=opts.block_ms / 1000)
                except nats.errors.TimeoutError:
                    # Drained: nothing undelivered, and nothing unacked that a dead
                    # consumer may still give back (that waits up to ack_wait).
                    if opts.once:
                        info = await sub.consumer_info()
                        if not info.num_pending and not info.num_ack_pending:
                            break
                    continue
                await self._settle(msgs)
                backoff = 0.05
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                # A server restart: the client reconnects by itself; the pull subscription
                # is made again (unacked messages of the batch come back after ack_wait).
                log.warning("nats_unavailable", subject=self.subject, error=type(exc).__name__,
                            detail=str(exc)[:200], retry_in_s=backoff)
                if sub is not None:
                    with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                        await sub.unsubscribe()
                    sub = None
                await pause(stop, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        if sub is not None:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await sub.unsubscribe()
        log.info("ingest_stopped", broker="nats", subject=self.subject, durable=self.durable,
                 read=self.stats.read, done=self.stats.done, applied=self.stats.applied,
                 dead=self.stats.dead)
        return self.stats

    async def _settle(self, msgs: Sequence[Msg]) -> None:
        messages = []
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            messages.append(Message(str(seq), msg.data, msg.metadata.num_delivered,
                                    message_key("nats", self.stream, str(seq))))
        verdicts = await apply_batch(self.registry, messages,
                                     create_learners=self.options.create_learners)
        dead = 0
        codes: set[str] = set()
        for msg, message, verdict in zip(msgs, messages, verdicts, strict=True):
            if verdict.outcome == "retry":
                if message.deliveries < self.options.max_deliveries:
                    self.stats.retried += 1
                    await msg.nak(delay=_RETRY_DELAY_S * message.deliveries)
                    continue
                verdict = Verdict("dead", verdict.code, f"after {message.deliveries} "
                                  f"deliveries: {verdict.message}")
            if verdict.outcome == "dead":
                await self.js.publish(dead_subject(self.subject), msg.data, headers={
                    "Nats-Msg-Id": f"dead:{self.stream}:{message.id}",
                    "Qortex-Error-Code": verdict.code,
                    "Qortex-Error-Message": verdict.message[:512],
                    "Qortex-Source-Sequence": message.id})
                dead += 1
                codes.add(verdict.code)
            self.stats.applied += verdict.applied
            await msg.ack()
        await self.nc.flush()  # the acks reach the server before the next fetch
        if dead:  # one line per batch: a flood of poison must not flood the log
            log.warning("feedback_dead_lettered", subject=self.subject, count=dead,
                        codes=sorted(codes))
        self.stats.read += len(msgs)
        self.stats.dead += dead
        self.stats.done += sum(v.outcome == "done" for v in verdicts)
        self.stats.batches += 1


async def nats_lag(js: JetStreamContext, subject: str, durable: str) -> StreamLag:
    """Pending (unacked), undelivered count and oldest unacked age of ``durable``.

    Raises:
        nats.errors.Error: the server cannot be reached, or no such stream or consumer.
    """
    stream = await js.find_stream_name_by_subject(subject)
    info = await js.consumer_info(stream, durable)
    oldest = None
    if info.num_ack_pending and info.ack_floor is not None:
        try:
            first = await js.get_msg(stream, (info.ack_floor.stream_seq or 0) + 1)
        except NotFoundError:
            first = None
        if first is not None and first.time is not None:
            oldest = max(0.0, time.time() - first.time.timestamp())
    return StreamLag("nats", subject, durable, int(info.num_ack_pending or 0),
                     int(info.num_pending or 0), oldest)


async def _log_error(exc: Exception) -> None:
    log.warning("nats_error", error=type(exc).__name__, detail=str(exc)[:200])


async def consume(url: str, registry: LearnerRegistry, subject: str, durable: str,
                  options: ConsumerOptions, stop: asyncio.Event) -> IngestStats:
    """``qortex-mcp ingest`` on a JetStream subject (``ingest.run.consume``).

    Reconnects forever (also at start: a consumer may start before its broker), until a
    stop request; the client's own error log would print tracebacks, so its errors are one
    line here.
    """
    connecting = asyncio.ensure_future(nats.connect(
        url, max_reconnect_attempts=-1, reconnect_time_wait=0.25, connect_timeout=5,
        allow_reconnect=True, error_cb=_log_error))
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
        raise unreachable(url, exc) from exc
    try:
        return await NatsFeedbackConsumer(registry, nc, subject, durable, options).run(stop)
    finally:
        await nc.close()


async def lag(url: str, subject: str, durable: str) -> StreamLag:
    """``ingest.run.lag`` for a JetStream durable."""
    try:
        async with asyncio.timeout(10):  # the client retries a refused first connect
            nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0,
                                    allow_reconnect=False, error_cb=_log_error)
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise unreachable(url, exc) from exc
    try:
        return await nats_lag(nc.jetstream(), subject, durable)
    except (TimeoutError, nats.errors.Error) as exc:
        raise unreachable(url, exc) from exc
    finally:
        await nc.close()
