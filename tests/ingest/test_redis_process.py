"""``qortex-mcp ingest`` as a real process on Redis: SIGTERM, kill -9 at random moments, status.

The kill -9 harness runs ``CYCLES`` cycles: publish a chunk (a tenth of it twice, on
purpose), start the consumer, kill it at a random moment, then restart it with ``--once``
and check the store against the oracle: nothing lost, nothing counted twice, and a replay of
the event log equal to the state. ``QORTEX_INGEST_SCALE=full`` runs the issue's figures.
"""

from __future__ import annotations

import contextlib
import functools
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.exceptions import ResponseError

from qortex_mcp.ingest.publish import encode_feedback
from qortex_mcp.ingest.redis import dead_stream
from tests.ingest.support import (
    REDIS_URL,
    SCALE_FULL,
    bare,
    expected_counts,
    ingest_process,
    kill_moment,
    registry_at,
    run_ingest,
    stored_counts,
    unique,
)
from tests.postgres.support import eventually

pytestmark = pytest.mark.anyio

CYCLES, MESSAGES = (20, 20_000) if SCALE_FULL else (5, 2_000)
"""Kill cycles and messages per cycle."""


@pytest.fixture
async def stream(redis_client: Any) -> Any:
    name = unique("proc")
    yield name
    await redis_client.delete(name, dead_stream(name))


async def publish_all(client: Any, stream: str, messages: list[dict[str, Any]]) -> None:
    pipe = client.pipeline(transaction=False)
    for i, m in enumerate(messages):
        pipe.xadd(stream, {"feedback": encode_feedback(m)})
        if i % 1000 == 999:
            await pipe.execute()
    await pipe.execute()


async def entries_read(client: Any, stream: str) -> int:
    with contextlib.suppress(ResponseError):  # no stream or group yet
        for group in await client.xinfo_groups(stream):
            return int(group.get("entries-read") or 0)
    return 0


async def read_so_far(client: Any, stream: str, before: int) -> bool:
    return await entries_read(client, stream) > before


async def holding(client: Any, stream: str) -> bool:
    """Whether the group holds entries delivered and not yet acknowledged."""
    with contextlib.suppress(ResponseError):  # no stream or group yet
        return int((await client.xpending(stream, "g"))["pending"]) > 0
    return False


def args(stream: str, *extra: str) -> list[str]:
    return [REDIS_URL, "--stream", stream, "--group", "g", "--consumer", "worker",
            "--create-learners", *extra]


@pytest.mark.slow
async def test_kill_9_at_random_moments_loses_nothing_and_counts_nothing_twice(
    redis_client: Any, stream: str, tmp_path: Path,
) -> None:
    rng = random.Random(15)
    published: list[dict[str, Any]] = []
    kills_mid_batch = 0
    for cycle in range(CYCLES):
        chunk = [bare("k9", f"arm{rng.randrange(8)}", float(rng.random() < 0.3),
                      f"c{cycle}-{i}") for i in range(MESSAGES)]
        dups = rng.sample(chunk, MESSAGES // 10)
        batch = chunk + dups
        rng.shuffle(batch)
        published += chunk
        read = await entries_read(redis_client, stream)
        proc = ingest_process(tmp_path, *args(stream))
        slices = [batch[i::20] for i in range(20)]

        async def publish_slowly(slices: list[list[dict[str, Any]]] = slices) -> None:
            for part in slices:  # over ~1-2 s, while the consumer starts and works
                await publish_all(redis_client, stream, part)
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            tg.start_soon(publish_slowly)
            started = functools.partial(read_so_far, redis_client, stream, read)
            await kill_moment(rng, cycle, started, functools.partial(holding, redis_client, stream))
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
        kills_mid_batch += await holding(redis_client, stream)
        run_ingest(tmp_path, *args(stream, "--once"))
        async with registry_at(tmp_path) as registry:
            assert await stored_counts(registry, "k9") == expected_counts(published), cycle
            assert (await (await registry.get("k9")).replay()).ok, cycle
        assert (await redis_client.xpending(stream, "g"))["pending"] == 0
    print(f"\nredis kill -9: {CYCLES} cycles x {MESSAGES} messages (+10% duplicates), "
          f"{kills_mid_batch} kills with messages pending: 0 lost, 0 double-counted")
    assert kills_mid_batch > 0, "no kill hit the consumer at work: the harness proves nothing"


async def test_sigterm_finishes_the_batch_in_flight_and_exits_within_5_s(
    redis_client: Any, stream: str, tmp_path: Path,
) -> None:
    messages = [bare("t", f"a{i % 5}", 1.0, f"k{i}") for i in range(30_000)]
    await publish_all(redis_client, stream, messages)
    proc = ingest_process(tmp_path, *args(stream, "--batch-size", "64"))
    try:
        async def started() -> bool:
            groups = await redis_client.xinfo_groups(stream)
            return bool(groups and groups[0].get("entries-read"))

        await eventually(started, within_s=60, every_s=0.05)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = proc.wait(timeout=30)
        gone_after = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out, err = proc.communicate()
    assert code == 0, err.decode()[-2000:]
    assert gone_after <= 5.0, f"still running {gone_after:.1f} s after SIGTERM"
    assert b"Traceback" not in err
    # What it acknowledged was committed, and nothing it read is left unacknowledged.
    summary = await redis_client.xpending(stream, "g")
    assert summary["pending"] == 0
    group = (await redis_client.xinfo_groups(stream))[0]
    acked = int(group["entries-read"])
    async with registry_at(tmp_path) as registry:
        assert sum((await stored_counts(registry, "t")).values()) == acked
    assert b"ingested" in out


async def test_status_prints_pending_lag_and_oldest_age(
    redis_client: Any, stream: str, tmp_path: Path,
) -> None:
    for i in range(3):
        await redis_client.xadd(stream, {"feedback": encode_feedback(bare("s", "a", 1, f"{i}"))})
    await redis_client.xgroup_create(stream, "g", id="0")
    await redis_client.xreadgroup("g", "x", {stream: ">"}, count=1)
    out = run_ingest(tmp_path, REDIS_URL, "--stream", stream, "--group", "g", "--status")
    assert f"redis {stream} group g: pending 1, lag 2, oldest pending" in out


def test_a_bad_url_or_missing_names_fail_with_one_line(tmp_path: Path) -> None:
    from tests.server.support import SCRIPT, base_env

    for argv, needle in ((["http://x"], "broker URL"),
                         ([REDIS_URL, "--stream", "s"], "--group")):
        proc = subprocess.run([str(SCRIPT), "ingest", *argv], env=base_env(tmp_path),
                              capture_output=True, timeout=60, check=False)
        assert proc.returncode == 2
        assert needle in proc.stderr.decode()
        assert b"Traceback" not in proc.stderr


@pytest.mark.parametrize("broker", ["redis", "nats"])
def test_the_example_producer_feeds_a_consumer(broker: str, tmp_path: Path) -> None:
    """``examples/stream_producer.py`` then ``qortex-mcp ingest --once``: every message
    counts once, even when the producer runs twice with the same run id."""
    import sys

    from tests.ingest.support import NATS_UNREACHABLE, NATS_URL, REDIS_UNREACHABLE
    from tests.server.support import ROOT

    if (why := REDIS_UNREACHABLE if broker == "redis" else NATS_UNREACHABLE):
        pytest.skip(f"{broker.upper()} UNREACHABLE: {why}")
    name = unique("example").replace("-", "_")
    target = (["--stream", name] if broker == "redis" else ["--nats", NATS_URL, "--subject", name])
    for _ in range(2):
        done = subprocess.run([sys.executable, str(ROOT / "examples" / "stream_producer.py"),
                               *target, "--count", "50"], capture_output=True, timeout=60,
                              check=False)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
    consumer = ([REDIS_URL, "--stream", name, "--group", "g"] if broker == "redis" else
                [NATS_URL, "--subject", name, "--durable", "d"])
    try:
        out = run_ingest(tmp_path, *consumer, "--once", "--create-learners")
        # NATS already drops the second run's publishes (same Nats-Msg-Id); Redis keeps
        # them, and the store counts them as duplicates.
        read = 100 if broker == "redis" else 50
        assert f"ingested {read} message(s): {read} committed (50 outcome(s) applied)" in out
    finally:
        if broker == "redis":
            import redis

            redis.Redis.from_url(REDIS_URL).delete(name, name + ":dead")
        else:
            async def drop() -> None:
                import nats

                nc = await nats.connect(NATS_URL)
                js = nc.jetstream()
                await js.delete_stream(await js.find_stream_name_by_subject(name))
                await nc.close()

            anyio.run(drop)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:{port}/0", "nats://127.0.0.1:{port}"])
def test_a_consumer_waiting_for_an_unreachable_broker_stops_on_sigterm(
    url: str, tmp_path: Path,
) -> None:
    from tests.ingest.support import free_port

    target = url.format(port=free_port())
    names = (["--stream", "s", "--group", "g"] if target.startswith("redis") else
             ["--subject", "s", "--durable", "d"])
    proc = ingest_process(tmp_path, target, *names)
    try:
        time.sleep(1.0)  # it is retrying the connection by now
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=5)  # the documented promise: gone within 5 s
    finally:
        if proc.poll() is None:
            proc.kill()
        _out, err = proc.communicate()
    assert code == 0, err.decode()[-2000:]
    assert b"Traceback" not in err


async def test_status_shows_a_consumers_lag_beside_the_store(
    redis_client: Any, stream: str, tmp_path: Path,
) -> None:
    from tests.server.support import SCRIPT, base_env

    argv = [str(SCRIPT), "status", "--ingest", REDIS_URL, "--stream", stream, "--group", "g"]
    missing = await anyio.run_process(argv, env=base_env(tmp_path), check=False)
    assert missing.returncode == 2  # no such stream or group: one line, no traceback
    assert b"STORE_UNAVAILABLE" in missing.stderr
    assert b"Traceback" not in missing.stderr
    for i in range(2):
        await redis_client.xadd(stream, {"feedback": encode_feedback(bare("s", "a", 1, f"{i}"))})
    await redis_client.xgroup_create(stream, "g", id="0")
    await redis_client.xreadgroup("g", "x", {stream: ">"}, count=1)
    shown = await anyio.run_process(argv, env=base_env(tmp_path), check=False)
    assert shown.returncode == 0
    assert f"redis {stream} group g: pending 1, lag 1, oldest pending" in shown.stdout.decode()
