"""A broker restart under load: the consumer reconnects by itself, nothing lost or doubled.

The shared Redis and NATS are never restarted: each test starts a private server (its own
port and directory, persistence on) and restarts that one while a producer publishes and
the consumer consumes.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qortex_mcp.ingest import ConsumerOptions
from qortex_mcp.ingest.publish import publish_feedback_nats, publish_feedback_redis
from tests.ingest.support import (
    bare,
    expected_counts,
    free_port,
    registry_at,
    stored_counts,
    unreachable,
)
from tests.postgres.support import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

MESSAGES = 3000


class Server:
    """A private broker process on a free loopback port, restartable on the same data."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.argv, self.port = argv, port
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        # Popen returns at once (the server keeps running); only the wait below is slow.
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL,  # noqa: ASYNC220
                                     stderr=subprocess.DEVNULL)
        await eventually(lambda: unreachable(f"x://127.0.0.1:{self.port}", 0) is None, 30,
                         0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Server]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("REDIS-SERVER NOT INSTALLED: cannot start a private server to restart")
    port = free_port()
    (tmp_path / "redis").mkdir()
    server = Server([exe, "--bind", "127.0.0.1", "--port", str(port), "--dir",
                     str(tmp_path / "redis"), "--appendonly", "yes", "--appendfsync", "always",
                     "--save", ""], port)
    yield server
    server.stop()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[Server]:
    exe = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)
    if exe is None:
        pytest.skip("NATS-SERVER NOT INSTALLED: cannot start a private server to restart")
    port = free_port()
    server = Server([exe, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd",
                     str(tmp_path / "nats")], port)
    yield server
    server.stop()


async def publish_with_retries(publish: Any, messages: list[dict[str, Any]],
                               errors: tuple[type[BaseException], ...]) -> None:
    """Publish each message until the broker takes it (a retried publish may duplicate
    it: its idempotency key makes that harmless)."""
    for m in messages:
        while True:
            try:
                await publish(m)
                break
            except errors:
                await asyncio.sleep(0.05)


async def test_redis_restart_under_load(private_redis: Server, tmp_path: Path) -> None:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    from qortex_mcp.ingest.redis import RedisFeedbackConsumer

    await private_redis.start()
    url = f"redis://127.0.0.1:{private_redis.port}/0"
    messages = [bare("r", f"a{i % 6}", float(i % 3 == 0), f"k{i}") for i in range(MESSAGES)]
    producer = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1)
    client = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1)
    try:
        async with registry_at(tmp_path / "state") as registry:
            consumer = RedisFeedbackConsumer(registry, client, "s", "g", ConsumerOptions(
                consumer="c", block_ms=50, create_learners=True))
            stop = asyncio.Event()
            task = asyncio.create_task(consumer.run(stop))
            publishing = asyncio.create_task(publish_with_retries(
                lambda m: publish_feedback_redis(producer, "s", m), messages,
                (RedisError, OSError)))
            await eventually(lambda: consumer.stats.done > MESSAGES // 4, 60)
            private_redis.stop()
            await asyncio.sleep(0.5)
            await private_redis.start()
            await publishing
            await eventually(lambda: consumer.stats.done >= MESSAGES and
                             not consumer.stats.retried, 60)
            async def settled() -> bool:
                if task.done():
                    task.result()  # the consumer crashed: show why
                return (await stored_counts(registry, "r")) == expected_counts(messages)

            await eventually(settled, 60, 0.1)
            stop.set()
            await task
            assert (await (await registry.get("r")).replay()).ok
    finally:
        await producer.aclose()
        await client.aclose()


async def test_nats_restart_under_load(private_nats: Server, tmp_path: Path) -> None:
    import nats
    import nats.errors

    from qortex_mcp.ingest.nats import NatsFeedbackConsumer, ensure_stream

    await private_nats.start()
    url = f"nats://127.0.0.1:{private_nats.port}"
    messages = [bare("n", f"a{i % 6}", float(i % 3 == 0), f"k{i}") for i in range(MESSAGES)]
    options = {"max_reconnect_attempts": -1, "reconnect_time_wait": 0.1,
               "connect_timeout": 2}
    producer = await nats.connect(url, **options)
    nc = await nats.connect(url, **options)
    try:
        js = producer.jetstream()
        await ensure_stream(js, "fb")
        async with registry_at(tmp_path / "state") as registry:
            consumer = NatsFeedbackConsumer(registry, nc, "fb", "d", ConsumerOptions(
                block_ms=50, create_learners=True, claim_idle_ms=1000))
            stop = asyncio.Event()
            task = asyncio.create_task(consumer.run(stop))
            publishing = asyncio.create_task(publish_with_retries(
                lambda m: publish_feedback_nats(js, "fb", m, msg_id=m["idempotency_key"]),
                messages, (nats.errors.Error, OSError, asyncio.TimeoutError)))
            await eventually(lambda: consumer.stats.done > MESSAGES // 4, 60)
            private_nats.stop()
            await asyncio.sleep(0.5)
            await private_nats.start()
            await publishing

            async def settled() -> bool:
                if task.done():
                    task.result()  # the consumer crashed: show why
                return (await stored_counts(registry, "n")) == expected_counts(messages)

            await eventually(settled, 60, 0.1)
            stop.set()
            await task
            assert (await (await registry.get("n")).replay()).ok
    finally:
        await producer.close()
        await nc.close()
