"""Benchmarks of the PostgreSQL store, side by side with the SQLite store in one run.

    python bench/bench_postgres.py [all | observe select freshness] [--quick | --smoke]
                                   [--json FILE] [--dsn DSN]

Parts (``all`` runs every part; the figures in bench/RESULTS.md come from it):

* ``observe``: acknowledged feedbacks per second through ``Learner.observe`` quoting a
  selection id (durable: PostgreSQL with synchronous_commit=on, SQLite synchronous=FULL in
  a temp directory on disk), with 1 and 16 concurrent clients; rounds alternate the stores.
  Also 16 clients spread over 3 PostgreSQL store instances sharing the learner (a fleet of
  servers: writers of one learner take turns on its version row, each instance commits
  its queue in one transaction).
* ``select``: ``Learner.select`` p50 / p90 over 20 candidates on a PostgreSQL and a SQLite
  store, interleaved; the ratio must be ~1 (select never touches the database; checked by
  driving it by hand: it never suspends).
* ``freshness``: two PostgreSQL store instances in two processes; instance A acknowledges
  a feedback, and the time until instance B's select cache shows it (B's learner polls only
  once an hour, so only a NOTIFY can wake it), p50 / p99.

PostgreSQL: ``--dsn`` or ``QORTEX_TEST_DATABASE_URL`` (default the test database on
127.0.0.1:5432); everything goes into a private schema that is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
from bench_core import never_suspends
from common import Case, fmt_ratio, interleave, round_ratio, table, verdict

from qortex_mcp.learning import (
    ArmOutcome,
    Learner,
    LearnerConfig,
    LearningStore,
    SelectionSigner,
    SqliteLearningStore,
)

PARTS = ("all", "observe", "select", "freshness")
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SELECT_RATIO_MAX = 1.25
"""select on PostgreSQL vs SQLite: equal within noise."""
ARMS = [f"arm-{i}" for i in range(20)]


class Sizes:
    def __init__(self, mode: str) -> None:
        smoke, quick = mode == "smoke", mode == "quick"
        self.one_client = 20 if smoke else 300 if quick else 1000
        self.clients = 4 if smoke else 16
        self.burst = 40 if smoke else 1000 if quick else 4000
        self.rounds = 1 if smoke else 2 if quick else 3
        self.warm = 50 if smoke else 2000
        self.select_budget_s = 0.05 if smoke else 1.0 if quick else 4.0
        self.select_block = 5 if smoke else 200
        self.trials = 5 if smoke else 60 if quick else 300


class Stores:
    """Opens PostgreSQL stores on one private schema and SQLite stores in a temp dir."""

    def __init__(self, dsn: str, tmp: Path) -> None:
        from qortex_mcp.learning.postgres import PostgresLearningStore

        self._pg = PostgresLearningStore
        self.dsn = dsn
        self.tmp = tmp
        self.schema = f"bench_{secrets.token_hex(4)}"
        self.opened: list[LearningStore] = []

    async def open(self, kind: str, name: str = "") -> LearningStore:
        store: LearningStore
        if kind == "postgres":
            store = self._pg(self.dsn, schema=self.schema)
        else:
            store = SqliteLearningStore(self.tmp / f"{name or 'bench'}.db", synchronous="FULL")
        await store.initialize()
        self.opened.append(store)
        return store

    async def close(self) -> None:
        import asyncpg

        for store in self.opened:
            await store.close()
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        finally:
            await conn.close()


async def learner_on(store: LearningStore, name: str, signer: SelectionSigner,
                     refresh_interval_s: float = 0.5) -> Learner:
    return await Learner.create(LearnerConfig(name=name, seed=1), store, signer=signer,
                                refresh_interval_s=refresh_interval_s)


async def burst(learners: list[Learner], clients: int, total: int) -> tuple[float, float]:
    """``total`` select + observe loops over ``clients`` tasks (client i uses learner
    i % len); returns (acknowledged feedbacks per second, p50 observe latency in ms).
    Selecting is not timed: it never touches the store."""
    issued = 0
    lat: list[float] = []
    wall = 0.0

    async def client(me: int) -> None:
        nonlocal issued, wall
        learner = learners[me % len(learners)]
        while issued < total:
            issued += 1
            sel = await learner.select(ARMS)
            t0 = time.perf_counter()
            await learner.observe(ArmOutcome(arm_id=sel.selected[0].id, reward=1.0,
                                             selection_id=sel.selection_id))
            dt = time.perf_counter() - t0
            lat.append(dt)
            wall += dt / clients

    async with asyncio.timeout(600):
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - t0
    return total / elapsed, statistics.median(lat) * 1e3


async def part_observe(stores: Stores, sz: Sizes) -> dict[str, Any]:
    signer = SelectionSigner.random()
    pg = [await stores.open("postgres") for _ in range(3)]
    sqlite = await stores.open("sqlite", "observe")
    systems: dict[str, tuple[list[Learner], int, int]] = {
        "postgres, 1 client": ([await learner_on(pg[0], "observe-1", signer)], 1,
                               sz.one_client),
        "sqlite, 1 client": ([await learner_on(sqlite, "observe-1", signer)], 1,
                             sz.one_client),
        f"postgres, {sz.clients} clients": ([await learner_on(pg[0], "observe-n", signer)],
                                           sz.clients, sz.burst),
        f"sqlite, {sz.clients} clients": ([await learner_on(sqlite, "observe-n", signer)],
                                         sz.clients, sz.burst),
        f"postgres, {sz.clients} clients over 3 instances": (
            [await learner_on(s, "observe-fleet", signer) for s in pg], sz.clients, sz.burst),
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in systems}
    names = list(systems)
    try:
        for r in range(sz.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                learners, clients, total = systems[name]
                runs[name].append(await burst(learners, clients, total))
        # Nothing acknowledged was lost or counted twice.
        for name, (learners, _, total) in systems.items():
            metrics = await learners[0].metrics()
            if metrics.feedback != total * sz.rounds:
                raise SystemExit(f"observe: {name} holds {metrics.feedback} feedbacks, "
                                 f"{total * sz.rounds} were acknowledged")
    finally:
        for learners, _, _ in systems.values():
            for learner in learners:
                await learner.close()
    out = {name: {"per_s": statistics.median(x[0] for x in v),
                  "per_s_all": [round(x[0]) for x in v],
                  "p50_ms": statistics.median(x[1] for x in v)} for name, v in runs.items()}
    for name, v in out.items():
        print(f"[observe] {name}: {v['per_s']:.0f}/s", file=sys.stderr, flush=True)
    return out


def print_observe(res: dict[str, Any], fs: str) -> None:
    print(f"\n### Acknowledged feedbacks per second, Learner.observe quoting a selection id "
          f"(durable; SQLite on {fs})\n")
    print(table(["store, clients", "median per s", "every round", "p50 ms per observe"],
                [[name, f"{v['per_s']:,.0f}", ", ".join(f"{x:,}" for x in v["per_s_all"]),
                  f"{v['p50_ms']:.2f}"] for name, v in res.items()]))
    print("\nAfter the runs every store held exactly the acknowledged feedbacks.")


async def part_select(stores: Stores, sz: Sizes) -> dict[str, Any]:
    signer = SelectionSigner.random()
    learners = {kind: await learner_on(await stores.open(kind, "select"), "select", signer)
                for kind in ("postgres", "sqlite")}
    try:
        for learner in learners.values():
            outcomes = [ArmOutcome(arm_id=ARMS[i % len(ARMS)], reward=float(i % 3 == 0))
                        for i in range(sz.warm)]
            for i in range(0, len(outcomes), 500):
                await learner.batch_observe(outcomes[i:i + 500])
        quiet = {kind: never_suspends(lr, ARMS) for kind, lr in learners.items()}
        cases = {kind: Case(lambda lr=lr: lr.select(ARMS)) for kind, lr in learners.items()}
        await interleave(cases, block=sz.select_block, rounds=400,
                         budget_s=sz.select_budget_s, min_rounds=2)
    finally:
        for learner in learners.values():
            await learner.close()
    out = {kind: {"p50_us": c.p50_us, "p90_us": c.p90_us, "n": len(c.samples),
                  "never_suspends": quiet[kind]} for kind, c in cases.items()}
    out["ratio"] = round_ratio(cases["postgres"], cases["sqlite"])
    print(f"[select] postgres/sqlite {out['ratio']:.2f}x", file=sys.stderr, flush=True)
    return out


def print_select(res: dict[str, Any]) -> None:
    print(f"\n### select, {len(ARMS)} candidates, k=1 (p50 / p90 us, one call at a time)\n")
    print(table(["store", "p50 us", "p90 us", "calls", "never suspends"],
                [[kind, f"{res[kind]['p50_us']:.1f}", f"{res[kind]['p90_us']:.1f}",
                  res[kind]["n"], res[kind]["never_suspends"]]
                 for kind in ("postgres", "sqlite")]))
    print(f"\npostgres / sqlite (median of per-round ratios): {fmt_ratio(res['ratio'])} "
          f"{verdict(res['ratio'], SELECT_RATIO_MAX)} (target: equal within noise, "
          f"<= {SELECT_RATIO_MAX})")


async def watch(dsn: str, schema: str) -> None:
    """The freshness part's instance B, in its own process: for each arm name read from
    stdin, say ``watching``, spin until this instance's select cache shows feedback for it,
    then print the wall-clock time it did."""
    from qortex_mcp.learning.postgres import PostgresLearningStore

    store = PostgresLearningStore(dsn, schema=schema)
    await store.initialize()
    learner = await learner_on(store, "fresh", SelectionSigner.random(),
                               refresh_interval_s=3600.0)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := (await reader.readline()).decode().strip():
            print("watching", flush=True)
            # Spinning on the cache is the measurement (no event says "B has it").
            while not (await learner.evidence([line]))[0][0]:  # noqa: ASYNC110
                await asyncio.sleep(0)
            print(f"{time.time():.6f}", flush=True)
    finally:
        await learner.close()
        await store.close()


async def part_freshness(stores: Stores, sz: Sizes) -> dict[str, Any]:
    a = await stores.open("postgres")
    writer = await learner_on(a, "fresh", SelectionSigner.random())
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--watch", stores.dsn, stores.schema,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert child.stdin is not None
    assert child.stdout is not None
    since_ack: list[float] = []
    since_call: list[float] = []
    try:
        for trial in range(sz.trials):
            arm = f"fresh-{trial}"
            child.stdin.write(f"{arm}\n".encode())
            await child.stdin.drain()
            async with asyncio.timeout(30):
                assert (await child.stdout.readline()).strip() == b"watching"
                called = time.time()
                await writer.observe(ArmOutcome(arm_id=arm, reward=1.0))
                acked = time.time()
                seen = float(await child.stdout.readline())
            since_ack.append(seen - acked)
            since_call.append(seen - called)
    finally:
        child.stdin.close()
        async with asyncio.timeout(30):
            await child.wait()
        await writer.close()

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3

    out = {"trials": len(since_ack),
           "ack_p50_ms": pct(since_ack, 0.5), "ack_p99_ms": pct(since_ack, 0.99),
           "ack_max_ms": pct(since_ack, 1.0),
           "call_p50_ms": pct(since_call, 0.5), "call_p99_ms": pct(since_call, 0.99)}
    print(f"[freshness] after the ack: p50 {out['ack_p50_ms']:.2f} ms, "
          f"p99 {out['ack_p99_ms']:.2f} ms", file=sys.stderr, flush=True)
    return out


def print_freshness(res: dict[str, Any]) -> None:
    print("\n### Freshness: instance A acknowledges a feedback, instance B (another process) "
          "has it in its select cache\n")
    print(table(["measured from", "p50 ms", "p99 ms", "max ms", "trials"], [
        ["A's observe returned (ack)", f"{res['ack_p50_ms']:.2f}", f"{res['ack_p99_ms']:.2f}",
         f"{res['ack_max_ms']:.2f}", res["trials"]],
        ["A's observe called", f"{res['call_p50_ms']:.2f}", f"{res['call_p99_ms']:.2f}", "",
         res["trials"]],
    ]))
    print("\nB's learner polls only once an hour: every update reached it by NOTIFY (sent at "
          "A's COMMIT, so B can have it before A's caller resumes: negative values). Without "
          "a LISTEN connection the bound is the learner's refresh interval (0.5 s); "
          "inspection calls on B read the store first and are always current.")


async def main() -> int:
    ap = common.base_parser(__doc__.splitlines()[0], PARTS)
    ap.add_argument("--dsn", default=None, help="PostgreSQL to use (a private schema in it)")
    ap.add_argument("--tmpdir", default=None, help="where the SQLite files go (a real disk)")
    ap.add_argument("--watch", nargs=2, metavar=("DSN", "SCHEMA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.watch:
        await watch(*args.watch)
        return 0
    sz = Sizes("smoke" if args.smoke else "quick" if args.quick else "full")
    dsn = args.dsn or os.environ.get("QORTEX_TEST_DATABASE_URL") or DEFAULT_DSN
    notes = common.machine_notes()
    parts = common.chosen_parts(args, PARTS)
    results: dict[str, Any] = {"machine": notes}
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmpdir:
        tmp = Path(tmpdir)
        fs = common.filesystem_of(tmp)
        stores = Stores(dsn, tmp)
        printers: list[Callable[[], None]] = []
        try:
            if "observe" in parts:
                res = results["observe"] = await part_observe(stores, sz)
                printers.append(lambda: print_observe(res, fs))
            if "select" in parts:
                sel = results["select"] = await part_select(stores, sz)
                printers.append(lambda: print_select(sel))
            if "freshness" in parts:
                fresh = results["freshness"] = await part_freshness(stores, sz)
                printers.append(lambda: print_freshness(fresh))
        finally:
            await stores.close()
    print("## PostgreSQL store (`bench/bench_postgres.py`)")
    for show in printers:
        show()
    common.print_notes(notes, sys.argv)
    common.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    common.run(main)
