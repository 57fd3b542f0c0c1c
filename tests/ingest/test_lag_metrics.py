"""A stream consumer's backlog on ``/metrics`` and the dashboard (``QORTEX_STREAM_LAG``),
read from the real Redis server by a real HTTP server process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qortex_mcp.config import Settings
from qortex_mcp.errors import ConfigError
from qortex_mcp.ingest.publish import publish_feedback_redis
from tests.ingest.support import REDIS_URL, bare, unique
from tests.observe.support import base_of, request
from tests.server.support import HttpServer, base_env

pytestmark = pytest.mark.anyio


def lag_samples(text: str) -> dict[tuple[str, str, str], float]:
    return {(s.name, s.labels["stream"], s.labels["group"]): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith("qortex_stream_")}


async def test_the_backlog_of_a_named_consumer_is_on_metrics_and_the_dashboard(
    redis_client: Any, tmp_path: Path,
) -> None:
    stream = unique("lag")
    await redis_client.xgroup_create(stream, "g", id="0", mkstream=True)
    try:
        for i in range(7):  # published, never consumed
            await publish_feedback_redis(redis_client, stream, bare("ads", "a", 1.0, f"k{i}"))
        consumers = f"{REDIS_URL}?stream={stream}&group=g nats://127.0.0.1:1?subject=x&durable=y"
        srv = HttpServer(base_env(tmp_path / "state", QORTEX_STREAM_LAG=consumers))
        try:
            status, _, body = request(base_of(srv.url) + "/metrics")
            assert status == 200
            got = lag_samples(body.decode())
            assert got[("qortex_stream_lag_messages", stream, "g")] == 7
            assert got[("qortex_stream_pending_messages", stream, "g")] == 0
            # the unreachable NATS consumer is left out of the reading, not an error
            assert {s for _, s, _ in got} == {stream}
            status, _, body = request(base_of(srv.url) + "/dashboard/api/learners")
            assert status == 200
            streams = json.loads(body)["streams"]
            assert [(s["stream"], s["lag"], s["pending"]) for s in streams] == [(stream, 7, 0)]
        finally:
            srv.stop()
    finally:
        await redis_client.delete(stream)


@pytest.mark.parametrize("entry", [
    "kafka://127.0.0.1:9092?topic=x&group=y",  # no such broker here
    "redis://127.0.0.1:6379/0?stream=x",  # no group
    "nats://127.0.0.1:4222?subject=x&durable=y&extra=1",
])
def test_a_malformed_stream_lag_entry_is_a_config_error(entry: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"QORTEX_STREAM_LAG": entry})
    assert "QORTEX_STREAM_LAG" in err.value.message
