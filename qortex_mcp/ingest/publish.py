"""``publish_feedback``: what a producer outside MCP calls to send one feedback.

The message is the JSON object ``qortex_feedback`` takes (checked here first, so a producer
learns of a bad message at once rather than from the dead-letter stream). A producer that
may publish the same bare feedback twice (a retry after a timeout) must give it an
``idempotency_key``: without one, each publish is a distinct message and counts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from qortex_mcp.ingest.batch import MAX_BODY_BYTES
from qortex_mcp.learning.feedback import parse_feedback

if TYPE_CHECKING:  # both clients are optional (the ``streams`` extra)
    import redis.asyncio as aioredis
    from nats.js import JetStreamContext

__all__ = ["encode_feedback", "publish_feedback_nats", "publish_feedback_redis"]


def encode_feedback(feedback: Mapping[str, Any]) -> bytes:
    """The message body of ``feedback`` (the fields of ``qortex_feedback``).

    Raises:
        InvalidInput (and its codes): not a valid feedback.
        LimitExceeded: larger than a consumer takes.
    """
    parse_feedback(feedback)
    body = json.dumps(dict(feedback), separators=(",", ":"), allow_nan=False).encode()
    if len(body) > MAX_BODY_BYTES:
        from qortex_mcp.errors import LimitExceeded

        raise LimitExceeded(f"feedback is {len(body)} bytes; the most is {MAX_BODY_BYTES}")
    return body


async def publish_feedback_redis(
    client: aioredis.Redis, stream: str, feedback: Mapping[str, Any], *,
    maxlen: int | None = None,
) -> str:
    """``XADD`` one feedback to ``stream`` (field ``feedback``); returns the entry id.

    ``maxlen`` trims the stream approximately: only use it with a bound far above the
    consumers' lag, since trimmed entries that were never read are lost.
    """
    entry = await client.xadd(stream, {"feedback": encode_feedback(feedback)},
                              maxlen=maxlen, approximate=True)
    return entry.decode() if isinstance(entry, bytes) else str(entry)


async def publish_feedback_nats(
    js: JetStreamContext, subject: str, feedback: Mapping[str, Any], *,
    msg_id: str | None = None,
) -> int:
    """Publish one feedback to ``subject`` on JetStream; returns its stream sequence.

    ``msg_id`` becomes the ``Nats-Msg-Id`` header: JetStream drops a second publish with
    the same id within the stream's duplicate window (defence in depth; the store's
    idempotency is the guarantee).
    """
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    ack = await js.publish(subject, encode_feedback(feedback), headers=headers)
    return int(ack.seq)
