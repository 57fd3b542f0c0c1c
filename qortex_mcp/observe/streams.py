"""The hook for stream ingestion's backlog: ``StreamLag`` rows from an async source.

A stream consumer (Redis Streams, NATS JetStream) knows how far behind it is. It exposes
that as an async callable returning ``StreamLag`` rows; the server registers it with
``observe_app(stream_lag=[source])`` and then ``/metrics`` reports
``qortex_stream_lag_messages`` / ``qortex_stream_pending_messages`` and the dashboard's
learners page shows a table of them, read at each scrape or poll.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

__all__ = ["StreamLag", "StreamLagSource"]


@dataclass(frozen=True)
class StreamLag:
    """One stream consumer's backlog, as a stream ingester reports it."""

    stream: str
    group: str
    lag_messages: int
    """Messages in the stream the group has yet to read."""
    pending_messages: int = 0
    """Messages read but not yet acknowledged."""


StreamLagSource = Callable[[], Awaitable[Iterable[StreamLag]]]
"""An async callable listing consumer backlogs (stream ingestion registers one)."""
