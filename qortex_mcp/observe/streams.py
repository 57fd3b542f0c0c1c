"""The hook for stream ingestion's backlog: ``StreamLag`` rows from an async source.

A stream consumer (Redis Streams, NATS JetStream) knows how far behind it is. It exposes
that as an async callable returning ``StreamLag`` rows (``qortex_mcp.ingest``'s: pending,
undelivered when the broker can tell, oldest pending age); the server registers it with
``observe_app(stream_lag=[source])`` and then ``/metrics`` reports
``qortex_stream_lag_messages`` / ``qortex_stream_pending_messages`` and the dashboard's
learners page shows a table of them, read at each scrape or poll. ``qortex-mcp serve`` and
``qortex-mcp dashboard`` register ``ingest_lag_source`` for the consumers that
``QORTEX_STREAM_LAG`` names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence

from qortex_mcp.ingest.options import StreamLag
from qortex_mcp.logging import get_logger

__all__ = ["StreamLag", "StreamLagSource", "ingest_lag_source"]

log = get_logger("qortex_mcp.observe")


StreamLagSource = Callable[[], Awaitable[Iterable[StreamLag]]]
"""An async callable listing consumer backlogs (stream ingestion registers one)."""


def ingest_lag_source(consumers: Sequence[tuple[str, str, str]]) -> StreamLagSource:
    """A source reading each (broker URL, stream, group) consumer's backlog from its broker
    at each scrape or poll (``qortex_mcp.ingest.lag``). A broker that cannot be reached is
    logged and left out of that reading, never an error of the page or scrape."""
    from qortex_mcp.errors import QortexError
    from qortex_mcp.ingest.run import lag

    async def read() -> list[StreamLag]:
        out = []
        for url, stream, group in consumers:
            try:
                got = await lag(url, name=stream, group=group)
            except QortexError as exc:
                log.warning("stream_lag_unavailable", url=url, stream=stream, group=group,
                            code=exc.code, error=exc.message)
                continue
            out.append(got)
        return out

    return read
