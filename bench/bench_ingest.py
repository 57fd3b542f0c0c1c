"""Stream ingestion: sustained events/s and publish-to-visible latency, with their floors.

Parts (``python bench/bench_ingest.py [PART ...] [--quick | --smoke] [--json FILE]``):

* ``throughput``: N feedback messages pre-published to a fresh Redis stream, consumed by 1
  and 2 consumer processes (``RedisFeedbackConsumer``, batch 256) into SQLite
  (``synchronous=FULL``) and PostgreSQL; events/s from the first read to the last ack. In
  the same run, the floors: a bare ``XREADGROUP``+``XACK`` loop (no store), and the store
  written directly with ``Learner.observe_many`` (batches of 256, no broker), and the
  per-message reference ``Learner.observe`` one at a time.
* ``latency``: a producer publishes at a steady 5,000 events/s for a few seconds while one
  consumer process ingests into SQLite; a reader polls the store's event log (what a
  learner's refresh, and so ``select``, reads) and records when each message became
  visible: p50/p99 of publish -> visible. Reference: ``observe`` called at the same rate
  in-process (visible when it returns).

Targets (issue 15): >= 20,000 events/s into SQLite; p99 <= 250 ms at 5,000 events/s.
Needs Redis on ``QORTEX_BENCH_REDIS_URL`` (default redis://127.0.0.1:6379/0) and, for the
PostgreSQL rows, ``QORTEX_TEST_DATABASE_URL`` (a private schema, dropped at the end); a
missing service skips its rows (said loudly).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    base_parser,
    chosen_parts,
    machine_notes,
    print_notes,
    table,
    verdict,
    write_json,
)
from qortex_mcp.ingest import ConsumerOptions
from qortex_mcp.ingest.publish import encode_feedback
from qortex_mcp.learning import (
    ArmOutcome,
    LearnerRegistry,
    LearningStore,
    SelectionSigner,
    SqliteLearningStore,
)

PARTS = ("all", "throughput", "latency")
REDIS_URL = os.environ.get("QORTEX_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get("QORTEX_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
LEARNER = "bench"
ARMS = 100


def message(i: int, tag: str) -> dict[str, Any]:
    return {"learner": LEARNER, "arm_id": f"arm{i % ARMS}", "outcome": float(i % 3 == 0),
            "idempotency_key": f"{tag}-{i}"}


def open_store(kind: str, where: str) -> LearningStore:
    if kind == "sqlite":
        return SqliteLearningStore(Path(where) / "bench.db")
    from qortex_mcp.learning.postgres import PostgresLearningStore

    return PostgresLearningStore(PG_DSN, schema=where)


async def prepared(store: LearningStore) -> LearnerRegistry:
    registry = LearnerRegistry(store, SelectionSigner.random(), owns_store=True)
    await registry.open()
    await (await registry.get(LEARNER)).batch_observe([ArmOutcome("arm0", reward=1.0)])
    return registry


# --- the consumer process -----------------------------------------------------------------

async def worker(kind: str, where: str, stream: str, name: str) -> int:
    import redis.asyncio as aioredis

    from qortex_mcp.ingest.redis import RedisFeedbackConsumer

    registry = await prepared(open_store(kind, where))
    client = aioredis.Redis.from_url(REDIS_URL)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await RedisFeedbackConsumer(registry, client, stream, "g", ConsumerOptions(
            consumer=name, create_learners=True)).run(stop)
    finally:
        await client.aclose()
        await registry.close()
    return 0


def spawn(kind: str, where: str, stream: str, n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, __file__, "--worker", kind, where, stream,
                              f"w{i}"], stdout=subprocess.DEVNULL) for i in range(n)]


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=30)


# --- throughput ---------------------------------------------------------------------------

async def publish(client: Any, stream: str, messages: list[dict[str, Any]]) -> None:
    pipe = client.pipeline(transaction=False)
    for i, m in enumerate(messages):
        pipe.xadd(stream, {"feedback": encode_feedback(m)})
        if i % 2000 == 1999:
            await pipe.execute()
    await pipe.execute()


async def group_progress(client: Any, stream: str) -> tuple[int, int]:
    groups = await client.xinfo_groups(stream)
    if not groups:
        return 0, 0
    return int(groups[0].get("entries-read") or 0), int(groups[0]["pending"])


async def consume_rate(client: Any, kind: str, where: str, n: int, consumers: int) -> float:
    stream = f"bench:{secrets.token_hex(4)}"
    await publish(client, stream, [message(i, stream) for i in range(n)])
    await client.xgroup_create(stream, "g", id="0")
    procs = spawn(kind, where, stream, consumers)
    try:
        # Polling: the progress lives in Redis, there is no event to wait on.
        while (await group_progress(client, stream))[0] == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        start = time.perf_counter()
        while (await group_progress(client, stream)) != (n, 0):  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        return n / (time.perf_counter() - start)
    finally:
        stop_all(procs)
        await client.delete(stream)


async def redis_floor(client: Any, n: int) -> float:
    """XREADGROUP 256 + XACK, nothing else: what the broker round trips alone allow."""
    stream = f"bench:{secrets.token_hex(4)}"
    await publish(client, stream, [message(i, stream) for i in range(n)])
    await client.xgroup_create(stream, "g", id="0")
    start = time.perf_counter()
    done = 0
    while done < n:
        reply = await client.xreadgroup("g", "floor", {stream: ">"}, count=256)
        ids = [eid for eid, _ in reply[0][1]]
        await client.xack(stream, "g", *ids)
        done += len(ids)
    rate = n / (time.perf_counter() - start)
    await client.delete(stream)
    return rate


async def store_floor(kind: str, where: str, n: int) -> tuple[float, float]:
    """``observe_many`` in batches of 256 (no broker), and ``observe`` one at a time."""
    registry = await prepared(open_store(kind, where))
    try:
        learner = await registry.get(LEARNER)
        tag = secrets.token_hex(4)
        batches = [[[ArmOutcome(f"arm{i % ARMS}", reward=float(i % 3 == 0),
                                idempotency_key=f"f{tag}-{i}")] for i in range(b, b + 256)]
                   for b in range(0, n, 256)]
        start = time.perf_counter()
        for batch in batches:
            await learner.observe_many(batch)
        many = n / (time.perf_counter() - start)
        single = max(200, n // 20)
        start = time.perf_counter()
        for i in range(single):
            await learner.observe(ArmOutcome(f"arm{i % ARMS}", reward=1.0,
                                             idempotency_key=f"o{tag}-{i}"))
        one = single / (time.perf_counter() - start)
        return many, one
    finally:
        await registry.close()


# --- latency ------------------------------------------------------------------------------

async def steady_latency(client: Any, where: str, rate: int, seconds: float) -> list[float]:
    stream = f"bench:{secrets.token_hex(4)}"
    await client.xgroup_create(stream, "g", id="0", mkstream=True)
    procs = spawn("sqlite", where, stream, 1)
    reader = SqliteLearningStore(Path(where) / "bench.db")
    await reader.initialize()
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    try:
        while (await group_progress(client, stream))[0] == 0:  # the consumer is up
            await client.xadd(stream, {"feedback": encode_feedback(message(0, "warm"))})
            await asyncio.sleep(0.05)
        cursor = 0  # skip what is logged already (the warm-up)
        events = await reader.events(LEARNER, cursor, 100_000)
        while events:
            cursor = events[-1].seq
            events = await reader.events(LEARNER, cursor, 100_000)

        async def produce() -> None:
            tick, per_tick = 0.01, max(1, int(rate * 0.01))
            t0 = time.perf_counter()
            for k in range(int(seconds / tick)):
                pipe = client.pipeline(transaction=False)
                now = time.perf_counter()
                for j in range(per_tick):
                    key = f"lat-{k}-{j}"
                    sent[key] = now
                    pipe.xadd(stream, {"feedback": encode_feedback(
                        {**message(k * per_tick + j, "x"), "idempotency_key": key})})
                await pipe.execute()
                await asyncio.sleep(max(0.0, t0 + (k + 1) * tick - time.perf_counter()))

        producer = asyncio.create_task(produce())
        deadline = time.perf_counter() + seconds + 10
        while time.perf_counter() < deadline and (not producer.done() or len(seen) < len(sent)):
            for e in await reader.events(LEARNER, cursor, 100_000):
                cursor = e.seq
                if e.key and e.key.startswith("key:lat-"):
                    seen.setdefault(e.key[4:], time.perf_counter())
            await asyncio.sleep(0.002)
        await producer
    finally:
        stop_all(procs)
        await reader.close()
        await client.delete(stream)
    return [(seen[k] - sent[k]) * 1000 for k in sent if k in seen]


async def observe_latency(where: str, rate: int, seconds: float) -> list[float]:
    registry = await prepared(open_store("sqlite", where))
    out: list[float] = []
    try:
        learner = await registry.get(LEARNER)
        gap = 1 / rate
        t0 = time.perf_counter()
        for i in range(int(rate * seconds)):
            start = time.perf_counter()
            await learner.observe(ArmOutcome(f"arm{i % ARMS}", reward=1.0,
                                             idempotency_key=f"ref-{i}"))
            out.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(max(0.0, t0 + (i + 1) * gap - time.perf_counter()))
    finally:
        await registry.close()
    return out


async def pg_unavailable() -> str | None:
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed"
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}"
    await conn.close()
    return None


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


# --- main ---------------------------------------------------------------------------------

async def main() -> int:
    ap = base_parser(__doc__ or "", PARTS)
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return await worker(*args.worker)
    n = 1_000 if args.smoke else 30_000 if args.quick else 100_000
    seconds = 0.5 if args.smoke else 4.0 if args.quick else 10.0
    counts = (1,) if args.smoke else (1, 2)
    from tests.ingest.support import unreachable

    if why := unreachable(REDIS_URL, 6379):
        print(f"bench_ingest: SKIPPED, REDIS UNREACHABLE: {why}")
        return 0
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    results: dict[str, Any] = {"n": n}
    kinds = ["sqlite"]
    schema = f"bench_ingest_{secrets.token_hex(4)}"
    if not args.smoke:
        if why := await pg_unavailable():
            print(f"bench_ingest: PostgreSQL rows SKIPPED: {why}")
        else:
            kinds.append("postgres")
    try:
        for part in chosen_parts(args, PARTS):
            if part == "throughput":
                rows = []
                floor = await redis_floor(client, n)
                for kind in kinds:
                    for consumers in counts:
                        with tempfile.TemporaryDirectory() as tmp:
                            where = tmp if kind == "sqlite" else schema
                            rate = await consume_rate(client, kind, where, n, consumers)
                            many, one = await store_floor(kind, where, n)
                        results[f"{kind}_{consumers}"] = rate
                        results[f"{kind}_floor_many"], results[f"{kind}_observe"] = many, one
                        rows.append([kind, consumers, f"{rate:,.0f}", f"{many:,.0f}",
                                     f"{one:,.0f}", f"{rate / one:.1f}x",
                                     verdict(rate, 20_000, True) if kind == "sqlite" else ""])
                results["redis_floor"] = floor
                print(f"\nthroughput: {n:,} messages; bare XREADGROUP+XACK floor "
                      f"{floor:,.0f} msg/s")
                print(table(["store", "consumers", "ingest ev/s", "observe_many ev/s",
                             "observe ev/s", "ingest/observe", ">= 20k"], rows))
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    lat = await steady_latency(client, tmp, 5_000, seconds)
                with tempfile.TemporaryDirectory() as tmp:
                    ref = await observe_latency(tmp, 5_000, seconds)
                p50, p99 = pct(lat, 50), pct(lat, 99)
                r50, r99 = pct(ref, 50), pct(ref, 99)
                results.update(latency_p50_ms=p50, latency_p99_ms=p99, observe_p50_ms=r50,
                               observe_p99_ms=r99, latency_seen=len(lat))
                print(f"\nlatency at 5,000 ev/s for {seconds:g} s ({len(lat):,} messages seen)")
                print(table(["path", "p50 ms", "p99 ms", "p99 <= 250 ms"], [
                    ["publish -> visible (Redis, SQLite FULL)", f"{p50:.1f}", f"{p99:.1f}",
                     verdict(p99, 250)],
                    ["observe() in-process (reference)", f"{r50:.2f}", f"{r99:.2f}", ""]]))
    finally:
        await client.aclose()
        if "postgres" in kinds:
            import asyncpg

            conn = await asyncpg.connect(PG_DSN)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
    print_notes(machine_notes(), sys.argv)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
