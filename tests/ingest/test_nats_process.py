"""``qortex-mcp ingest nats://...`` as a real process: kill -9 at random moments, SIGTERM.

Same harness as the Redis one (``test_redis_process``): publish while the consumer works,
kill it, restart it with ``--once``, and check the store against the oracle every cycle.
"""

from __future__ import annotations

import contextlib
import functools
import random
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from nats.js.errors import NotFoundError

from qortex_mcp.ingest.nats import ensure_stream
from qortex_mcp.ingest.publish import encode_feedback
from tests.ingest.support import (
    NATS_URL,
    bare,
    expected_counts,
    ingest_process,
    kill_moment,
    registry_at,
    run_ingest,
    stored_counts,
    unique,
)
from tests.ingest.test_redis_process import CYCLES, MESSAGES
from tests.postgres.support import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
async def subject(nats_client: Any) -> Any:
    name = unique("nproc").replace("-", "_")
    js = nats_client.jetstream()
    stream = await ensure_stream(js, name)
    yield name, stream
    await js.delete_stream(stream)


async def publish_all(js: Any, subject: str, messages: list[dict[str, Any]]) -> None:
    futures = [await js.publish_async(subject, encode_feedback(m)) for m in messages]
    for fut in futures:
        await fut


def args(subject: str, *extra: str) -> list[str]:
    # A short ack wait: a killed consumer's messages come back soon for the --once run.
    return [NATS_URL, "--subject", subject, "--durable", "worker", "--create-learners",
            "--claim-idle-ms", "1000", *extra]


async def delivered(js: Any, stream: str) -> int:
    try:
        return int((await js.consumer_info(stream, "worker")).delivered.stream_seq or 0)
    except NotFoundError:  # not created yet: nothing delivered
        return 0


async def holding(js: Any, stream: str) -> bool:
    """Whether the consumer holds messages delivered and not yet acknowledged."""
    with contextlib.suppress(NotFoundError):  # not created yet
        return int((await js.consumer_info(stream, "worker")).num_ack_pending) > 0
    return False


@pytest.mark.slow
async def test_kill_9_at_random_moments_loses_nothing_and_counts_nothing_twice(
    nats_client: Any, subject: tuple[str, str], tmp_path: Path,
) -> None:
    name, stream = subject
    js = nats_client.jetstream()
    rng = random.Random(16)
    published: list[dict[str, Any]] = []
    kills_mid_batch = 0
    for cycle in range(CYCLES):
        chunk = [bare("k9", f"arm{rng.randrange(8)}", float(rng.random() < 0.3),
                      f"c{cycle}-{i}") for i in range(MESSAGES)]
        batch = chunk + rng.sample(chunk, MESSAGES // 10)
        rng.shuffle(batch)
        published += chunk
        before = await delivered(js, stream)
        proc = ingest_process(tmp_path, *args(name))

        async def publish_slowly(batch: list[dict[str, Any]] = batch) -> None:
            for i in range(20):
                await publish_all(js, name, batch[i::20])
                await anyio.sleep(0.05)

        async def working(before: int = before) -> bool:
            return await delivered(js, stream) > before

        async with anyio.create_task_group() as tg:
            tg.start_soon(publish_slowly)
            await kill_moment(rng, cycle, working, functools.partial(holding, js, stream))
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
        kills_mid_batch += await holding(js, stream)
        run_ingest(tmp_path, *args(name, "--once"))
        async with registry_at(tmp_path) as registry:
            assert await stored_counts(registry, "k9") == expected_counts(published), cycle
            assert (await (await registry.get("k9")).replay()).ok, cycle
    print(f"\nnats kill -9: {CYCLES} cycles x {MESSAGES} messages (+10% duplicates), "
          f"{kills_mid_batch} kills with messages unacked: 0 lost, 0 double-counted")
    assert kills_mid_batch > 0, "no kill hit the consumer at work: the harness proves nothing"


async def test_sigterm_finishes_the_batch_in_flight_and_exits_within_5_s(
    nats_client: Any, subject: tuple[str, str], tmp_path: Path,
) -> None:
    name, stream = subject
    js = nats_client.jetstream()
    await publish_all(js, name, [bare("t", f"a{i % 5}", 1.0, f"k{i}") for i in range(20_000)])
    proc = ingest_process(tmp_path, *args(name, "--batch-size", "64"))
    try:
        async def started() -> bool:
            return await delivered(js, stream) > 0

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
    info = await js.consumer_info(stream, "worker")
    assert info.num_ack_pending == 0
    async with registry_at(tmp_path) as registry:
        assert sum((await stored_counts(registry, "t")).values()) == info.ack_floor.stream_seq
    assert b"ingested" in out
