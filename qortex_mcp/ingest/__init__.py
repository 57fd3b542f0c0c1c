"""Feedback from streams: Redis Streams and NATS JetStream consumers over the library's
feedback path (``qortex_mcp.learning.feedback``), exactly once into any store.

The broker clients are the optional ``streams`` extra; import ``qortex_mcp.ingest.redis`` or
``qortex_mcp.ingest.nats`` for a consumer, ``qortex_mcp.ingest.publish`` for producers, and
``qortex_mcp.ingest.lag`` for how far a consumer is behind.
"""

from qortex_mcp.ingest.batch import MAX_BODY_BYTES, Message, Verdict, apply_batch, decode
from qortex_mcp.ingest.options import ConsumerOptions, IngestStats, StreamLag

__all__ = [
    "MAX_BODY_BYTES",
    "ConsumerOptions",
    "IngestStats",
    "Message",
    "StreamLag",
    "Verdict",
    "apply_batch",
    "decode",
]
