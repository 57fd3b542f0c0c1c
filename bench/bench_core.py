"""Benchmarks of the learning core, side by side with anchors.py's numpy reference.

    python bench/bench_core.py [all | select topk observe regret register] [--quick | --smoke]

Parts (``all`` runs every part; the figures in bench/RESULTS.md come from it):

* ``select``: ``Learner.select`` p50 (async, public API, awaited one call at a time) at
  K = 10, 1,000 and 10,000 candidates on a memory and a SQLite store, vs ``RefTS.select``.
  Both are warmed like anchors.py's speed part (min(2000, 5K) random feedbacks, through
  ``batch_observe`` for the learner). Candidate forms: the same list of ids / of ``Arm``
  objects every call (a library caller), and a freshly built list every call (what a server
  decoding JSON hands over; building it is not timed). Also checks that ``select`` never
  suspends, i.e. never awaits the store.
* ``topk``: ``select(..., k=5)`` over 1,000 candidates vs ``RefTS.topk(5)`` (warmed like
  anchors.py's top-k part).
* ``observe``: durable ``observe`` on SQLite (synchronous=FULL, a file in a temp directory
  on disk): p50 for one client, and acknowledged feedbacks per second with 16 concurrent
  clients; the memory store for context; plain sqlite3 / aiosqlite upserts as reference.
* ``regret``: cumulative pseudo-regret on anchors.py's K10 and K100 problems with the same
  reward random numbers as ``run_regret_once``, the project's seeded Learner (memory store,
  Thompson Sampling, select + observe quoting the selection id, all through the public API)
  vs ``RefTS``, plus ``RefTS`` drawing with the learner's sampler (SFC64, gamma pairs): the
  learner must make exactly that reference's decisions, seed for seed.
* ``register``: the first ``select`` over N never-seen ids (N = 10,000, 100,000, 1,000,000;
  a new learner each time, memory store; issue 11's target <= 0.3 s at 1M) next to its
  floor in the same process, alternating: interning N ids in a dict
  (``dict(zip(ids, range(N)))``) and gathering their slots (``np.fromiter``), what any
  id-to-slot mapping pays. Median of 3 (1 in smoke mode).

Every part runs the reference in the same process, interleaved with the project (see
bench/common.py); ratios are project / reference.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import Case, fmt_ratio, interleave, ratio, round_ratio, table, verdict

from qortex_mcp.learning import (
    Arm,
    ArmOutcome,
    Learner,
    LearnerConfig,
    LearningStore,
    MemoryLearningStore,
    SelectionSigner,
    SqliteLearningStore,
)
from qortex_mcp.learning.stores.sqlite import sql as sqlite_sql
from qortex_mcp.learning.stores.sqlite.thread import DbThread

PARTS = ("all", "select", "topk", "observe", "regret", "register")

# Targets from issue 2 (project / reference, except throughput).
SELECT_K1000_MAX = 1.5
SELECT_K10000_MAX = 1.0
TOPK_MAX = 1.3
OBSERVE_16_MIN_PER_S = 5000.0
REGISTER_1M_MAX_S = 0.3  # issue 11
REGRET_BAR = {"K10": 60.0, "K100": 1400.0}


class Sizes:
    """How much of everything to do, per mode."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        smoke, quick = mode == "smoke", mode == "quick"
        self.select_ks: tuple[int, ...] = (10, 100) if smoke else (10, 1000, 10_000)
        self.select_budget_s = 0.02 if smoke else 0.6 if quick else 4.0
        self.select_rounds = 2 if smoke else 40
        self.topk_k = 100 if smoke else 1000
        self.observe_arms = 50 if smoke else 1000
        self.observe_budget_s = 0.05 if smoke else 1.0 if quick else 5.0
        self.observe_block = 10 if smoke else 50
        self.clients = 4 if smoke else 16
        self.burst = 40 if smoke else 800 if quick else 3000
        self.burst_rounds = 1 if smoke else 2 if quick else 5
        self.problems: tuple[str, ...] = ("K10",) if smoke else ("K10", "K100")
        self.horizon = 200 if smoke else 2000 if quick else 20_000
        self.seeds = 1 if smoke else 2 if quick else 50

    def block(self, k: int) -> int:
        """Calls per timed block: about 20-50 ms of work per block."""
        if self.mode == "smoke":
            return 5
        return 200 if k <= 1000 else 20


# --- building learners ----------------------------------------------------------------------


async def make_learner(
    kind: str, tmp: Path, name: str, seed: int = 1, max_candidates: int = 10_000,
    rng: np.random.Generator | None = None,
) -> Learner:
    store: LearningStore
    if kind == "memory":
        store = MemoryLearningStore()
    else:
        store = SqliteLearningStore(tmp / f"{name}.db", synchronous="FULL")
    # A store passed in is not closed by the learner: close_learner() closes both.
    config = LearnerConfig(name=name, seed=seed, max_candidates=max_candidates)
    return await Learner.create(config, store, signer=SelectionSigner.random(), rng=rng)


async def close_learner(learner: Learner) -> None:
    await learner.close()
    await learner.store.close()


def arm_ids(k: int) -> list[str]:
    return [f"arm-{i}" for i in range(k)]


async def warm_both(
    ref: Any, learner: Learner, ids: Sequence[str], arms: np.ndarray, rewards: np.ndarray
) -> None:
    """The same feedbacks for the reference (``warm``) and the learner (``batch_observe``)."""
    ref.warm(arms, rewards)
    outcomes = [ArmOutcome(arm_id=ids[int(a)], reward=float(r))
                for a, r in zip(arms, rewards, strict=True)]
    for i in range(0, len(outcomes), 500):
        await learner.batch_observe(outcomes[i:i + 500])


def never_suspends(learner: Learner, candidates: Sequence[Any]) -> bool:
    """Drive one ``select`` by hand: True when it finished without ever awaiting anything
    (so it cannot have waited on the store, whose every call awaits a thread or socket)."""
    coro = learner.select(candidates)
    try:
        coro.send(None)
    except StopIteration:
        return True
    coro.close()
    return False


# --- select ---------------------------------------------------------------------------------


async def part_select(a: Any, sz: Sizes, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in sz.select_ks:
        rng = np.random.default_rng(7)  # anchors.py part_speed
        nwarm = min(2000, 5 * k)
        warm_arms = rng.integers(0, k, nwarm)
        warm_r = (rng.random(nwarm) < 0.4).astype(float)
        ids = arm_ids(k)
        arms = [Arm(id=i) for i in ids]
        for kind in ("memory", "sqlite"):
            ref = a.RefTS(k, 1)
            learner = await make_learner(kind, tmp, f"select-{kind}-{k}")
            try:
                await warm_both(ref, learner, ids, warm_arms, warm_r)
                quiet = never_suspends(learner, ids) and never_suspends(learner, arms)
                cases = {
                    "ref": Case(ref.select),
                    "ids": Case(lambda lr=learner, c=ids: lr.select(c)),
                    "arms": Case(lambda lr=learner, c=arms: lr.select(c)),
                    "ids_fresh": Case(lambda c, lr=learner: lr.select(c),
                                      prep=lambda n=k: [f"arm-{i}" for i in range(n)]),
                    "arms_fresh": Case(lambda c, lr=learner: lr.select(c),
                                       prep=lambda n=k: [Arm(id=f"arm-{i}") for i in range(n)]),
                }
                await interleave(cases, block=sz.block(k), rounds=sz.select_rounds,
                                 budget_s=sz.select_budget_s, min_rounds=2)
            finally:
                await close_learner(learner)
            row = {"K": k, "store": kind, "select_never_suspends": quiet,
                   "ref_p50_us": cases["ref"].p50_us, "n": len(cases["ref"].samples)}
            for name in ("ids", "arms", "ids_fresh", "arms_fresh"):
                row[f"{name}_p50_us"] = cases[name].p50_us
                row[f"{name}_p90_us"] = cases[name].p90_us
                row[f"{name}_ratio"] = ratio(cases[name].p50_us, cases["ref"].p50_us)
                row[f"{name}_round_ratio"] = round_ratio(cases[name], cases["ref"])
            out[f"{kind}/{k}"] = row
            print(f"[select] K={k} {kind}: ref {row['ref_p50_us']:.1f} us, ids "
                  f"{row['ids_p50_us']:.1f} ({row['ids_ratio']:.2f}x), Arms "
                  f"{row['arms_p50_us']:.1f} ({row['arms_ratio']:.2f}x), fresh ids "
                  f"{row['ids_fresh_p50_us']:.1f}, fresh Arms {row['arms_fresh_p50_us']:.1f}; "
                  f"never suspends: {quiet}", file=sys.stderr, flush=True)
    return out


def target_for(k: int) -> float | None:
    return {1000: SELECT_K1000_MAX, 10_000: SELECT_K10000_MAX}.get(k)


def print_select(res: dict[str, Any]) -> None:
    print("\n### Select: p50 us per call, one call at a time (ratio = project / reference)\n")
    rows = []
    for row in res.values():
        target = target_for(row["K"])
        cells: list[object] = [f"{row['K']:,}", row["store"], f"{row['ref_p50_us']:.1f}"]
        for name in ("ids", "arms", "ids_fresh", "arms_fresh"):
            r = row[f"{name}_ratio"]
            mark = "" if target is None or name.endswith("fresh") else f" {verdict(r, target)}"
            cells.append(f"{row[f'{name}_p50_us']:.1f} ({fmt_ratio(r)}{mark})")
        cells.append("yes" if row["select_never_suspends"] else "**NO**")
        rows.append(cells)
    print(table(["K", "store", "ref select", "ids, same list", "Arms, same list",
                 "ids, new list each call", "Arms, new list each call",
                 "select never awaits"], rows))
    print("\nTargets: <= 1.5x the reference at K = 1,000 and <= 1.0x at K = 10,000 (marked on "
          "the same-list columns). Per-round ratios (median of the ratio within each round):")
    print(", ".join(f"{key} ids {v['ids_round_ratio']:.2f}x / Arms {v['arms_round_ratio']:.2f}x"
                    for key, v in res.items()))


# --- top-k ----------------------------------------------------------------------------------


async def part_topk(a: Any, sz: Sizes, tmp: Path) -> dict[str, Any]:
    k_cands, k = sz.topk_k, 5
    rng = np.random.default_rng(5)  # anchors.py part_topk
    warm_arms = rng.integers(0, k_cands, 3000)
    warm_r = (rng.random(3000) < 0.4).astype(float)
    ids = arm_ids(k_cands)
    arms = [Arm(id=i) for i in ids]
    out: dict[str, Any] = {}
    for kind in ("memory", "sqlite"):
        ref = a.RefTS(k_cands, 1)
        learner = await make_learner(kind, tmp, f"topk-{kind}")
        # The same learner on the reference's bit generator (PCG64): how much of the
        # margin is the default SFC64 generator rather than the API's own cost.
        pcg = await make_learner(kind, tmp, f"topk-pcg-{kind}", rng=np.random.default_rng(1))
        try:
            await warm_both(ref, learner, ids, warm_arms, warm_r)
            await warm_both(a.RefTS(k_cands, 1), pcg, ids, warm_arms, warm_r)
            got = await learner.select(ids, k=k)
            assert len({s.id for s in got.selected}) == k
            cases = {
                "ref": Case(lambda r=ref: r.topk(k)),
                "ids": Case(lambda lr=learner: lr.select(ids, k=k)),
                "arms": Case(lambda lr=learner: lr.select(arms, k=k)),
                "pcg": Case(lambda lr=pcg: lr.select(ids, k=k)),
            }
            await interleave(cases, block=sz.block(k_cands), rounds=sz.select_rounds,
                             budget_s=sz.select_budget_s, min_rounds=2)
        finally:
            await close_learner(learner)
            await close_learner(pcg)
        row = {"K": k_cands, "k": k, "store": kind, "ref_p50_us": cases["ref"].p50_us}
        for name in ("ids", "arms", "pcg"):
            row[f"{name}_p50_us"] = cases[name].p50_us
            row[f"{name}_ratio"] = ratio(cases[name].p50_us, cases["ref"].p50_us)
            row[f"{name}_round_ratio"] = round_ratio(cases[name], cases["ref"])
        out[kind] = row
        print(f"[topk] {kind}: ref {row['ref_p50_us']:.1f} us, ids {row['ids_p50_us']:.1f} "
              f"({row['ids_ratio']:.2f}x), Arms {row['arms_p50_us']:.1f} "
              f"({row['arms_ratio']:.2f}x)", file=sys.stderr, flush=True)
    return out


def print_topk(res: dict[str, Any]) -> None:
    first = next(iter(res.values()))
    print(f"\n### Top-{first['k']} of {first['K']:,}: select(k={first['k']}) vs "
          f"RefTS.topk({first['k']}), p50 us\n")
    rows = [[r["store"], f"{r['ref_p50_us']:.1f}",
             f"{r['ids_p50_us']:.1f} ({fmt_ratio(r['ids_ratio'])} "
             f"{verdict(r['ids_ratio'], TOPK_MAX)})",
             f"{r['arms_p50_us']:.1f} ({fmt_ratio(r['arms_ratio'])} "
             f"{verdict(r['arms_ratio'], TOPK_MAX)})",
             f"{r['ids_round_ratio']:.2f}x / {r['arms_round_ratio']:.2f}x",
             f"{r['pcg_p50_us']:.1f} ({fmt_ratio(r['pcg_ratio'])})"]
            for r in res.values()]
    print(table(["store", "ref topk", "ids", "Arms", "per-round ratio ids / Arms",
                 "ids, PCG64 injected"], rows))
    print(f"\nTarget: <= {TOPK_MAX}x the reference. The learner's default generator is "
          "SFC64; the last column injects the reference's PCG64 (context, not a target).")


# --- observe --------------------------------------------------------------------------------


async def burst(call: Callable[[int], Any], clients: int, total: int) -> tuple[float, float]:
    """``total`` calls spread over ``clients`` concurrent tasks; returns (acknowledged per
    second, p50 latency in us under that load)."""
    issued = 0
    lat: list[int] = []

    async def client() -> None:
        nonlocal issued
        while issued < total:
            i = issued
            issued += 1
            t0 = time.perf_counter_ns()
            await call(i)
            lat.append(time.perf_counter_ns() - t0)

    t0 = time.perf_counter()
    async with asyncio.timeout(600):
        await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return total / wall, statistics.median(lat) / 1000.0


async def part_observe(a: Any, sz: Sizes, tmp: Path) -> dict[str, Any]:
    import aiosqlite

    n_arms = sz.observe_arms
    ids = arm_ids(n_arms)
    rng = np.random.default_rng(9)  # anchors.py part_persist
    stream = 200_000
    pick = rng.integers(0, n_arms, stream).tolist()
    rew = (rng.random(stream) < 0.4).astype(float).tolist()
    pos = {"i": 0}

    def nxt() -> tuple[str, float]:
        i = pos["i"] = (pos["i"] + 1) % stream
        return ids[pick[i]], rew[i]

    # Reference: plain upserts of one row per feedback (anchors.py part_persist).
    con = sqlite3.connect(tmp / "ref_sqlite3.db", isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute(a.SCHEMA)
    adb = await aiosqlite.connect(tmp / "ref_aiosqlite.db", isolation_level=None)
    await adb.execute("PRAGMA journal_mode=WAL")
    await adb.execute("PRAGMA synchronous=FULL")
    await adb.execute(a.SCHEMA)

    def ref_sync() -> None:
        arm, r = nxt()
        con.execute("BEGIN")
        con.execute(a.UPSERT, ("L", arm, r, r))
        con.execute("COMMIT")

    async def writer_thread(name: str, schema: str) -> DbThread[Any]:
        """A started thread owning a WAL, synchronous=FULL connection to a fresh file."""
        def open_conn() -> sqlite3.Connection:
            c = sqlite3.connect(tmp / f"{name}.db", isolation_level=None)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=FULL")
            c.executescript(schema)
            return c

        thread: DbThread[Any] = DbThread(name, open_conn)
        await thread.start()
        return thread

    # The floor of any one-hand-off writer: the same transaction on a thread that owns its
    # connection (the store's DbThread), awaited from the loop: one hand-off each way.
    handoff = await writer_thread("ref_handoff", a.SCHEMA)

    def txn(conn: sqlite3.Connection, arm: str, r: float) -> None:
        conn.execute("BEGIN")
        conn.execute(a.UPSERT, ("L", arm, r, r))
        conn.execute("COMMIT")

    def ref_handoff() -> Any:
        arm, r = nxt()
        return handoff.call(lambda conn: txn(conn, arm, r))

    # And the store's own statements for one bare feedback, in one transaction on such a
    # thread, without its Python around them: bump the learner's version, check the key,
    # insert the event, fold the evidence, upsert the arm, read the row back.
    store_sql = await writer_thread("ref_store_sql", sqlite_sql.SCHEMA)
    seq = {"i": 0}

    def store_txn(conn: sqlite3.Connection, arm: str, r: float) -> None:
        seq["i"] += 1
        key, now = f"bare:{seq['i']}", time.time()
        conn.execute("BEGIN IMMEDIATE")
        (v,) = conn.execute(sqlite_sql.BUMP, ("L", now)).fetchone()
        conn.execute(sqlite_sql.ANSWERED, ("L", json.dumps([key]))).fetchall()
        conn.execute(sqlite_sql.INSERT_EVENT,
                     ("L", "feedback", key, arm, "", r, 1.0, None, now, None, None, None))
        conn.execute(sqlite_sql.FOLD_PLAIN, ("L", "", arm, r, 1.0 - r, 1, r, now, v))
        conn.execute(sqlite_sql.UPSERT_ARM, ("L", arm, None, None, v))
        conn.execute(sqlite_sql.EVIDENCE_AT, ("L", v)).fetchall()
        conn.execute("COMMIT")

    def ref_store_sql() -> Any:
        arm, r = nxt()
        return store_sql.call(lambda conn: store_txn(conn, arm, r))

    async def ref_async() -> None:
        arm, r = nxt()
        await adb.execute(a.UPSERT, ("L", arm, r, r))

    learners = {kind: await make_learner(kind, tmp, f"observe-{kind}")
                for kind in ("sqlite", "memory")}
    out: dict[str, Any] = {}
    try:
        def bare(lr: Learner) -> Callable[[], Any]:
            def call() -> Any:
                arm, r = nxt()
                return lr.observe(ArmOutcome(arm_id=arm, reward=r))
            return call

        def quoting(lr: Learner) -> tuple[Callable[[Any], Any], Callable[[], Any]]:
            async def prep() -> ArmOutcome:
                arm, r = nxt()
                sel = await lr.select([arm, ids[(ids.index(arm) + 1) % n_arms]])
                return ArmOutcome(arm_id=sel.selected[0].id, reward=r,
                                  selection_id=sel.selection_id)
            return (lambda o: lr.observe(o)), prep

        q_sql, p_sql = quoting(learners["sqlite"])
        q_mem, p_mem = quoting(learners["memory"])
        cases = {
            "ref sqlite3": Case(ref_sync),
            "ref sqlite3, one hand-off": Case(ref_handoff),
            "ref store SQL, one hand-off": Case(ref_store_sql),
            "ref aiosqlite": Case(ref_async),
            "sqlite bare": Case(bare(learners["sqlite"])),
            "sqlite quoted": Case(q_sql, prep=p_sql),
            "memory bare": Case(bare(learners["memory"])),
            "memory quoted": Case(q_mem, prep=p_mem),
        }
        await interleave(cases, block=sz.observe_block, rounds=200,
                         budget_s=sz.observe_budget_s, min_rounds=2)
        out["one_client"] = {name: {"p50_us": c.p50_us, "p90_us": c.p90_us,
                                    "n": len(c.samples)} for name, c in cases.items()}

        # Throughput: rounds alternate the three systems so noise hits them alike.
        async def ref_conc(i: int) -> None:
            await adb.execute(a.UPSERT, ("L", ids[pick[i]], rew[i], rew[i]))

        def learner_conc(lr: Learner) -> Callable[[int], Any]:
            def call(i: int) -> Any:
                return lr.observe(ArmOutcome(arm_id=ids[pick[i]], reward=rew[i]))
            return call

        systems: dict[str, Callable[[int], Any]] = {
            "sqlite": learner_conc(learners["sqlite"]),
            "ref aiosqlite": ref_conc,
            "memory": learner_conc(learners["memory"]),
        }
        acked = {name: 0 for name in systems}
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in systems}
        names = list(systems)
        for r in range(sz.burst_rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                runs[name].append(await burst(systems[name], sz.clients, sz.burst))
                acked[name] += sz.burst
        out["concurrent"] = {
            name: {"clients": sz.clients, "per_s": statistics.median(x[0] for x in v),
                   "per_s_all": [round(x[0]) for x in v],
                   "p50_us_under_load": statistics.median(x[1] for x in v)}
            for name, v in runs.items()
        }
        # Nothing acknowledged was lost or counted twice.
        for kind, lr in learners.items():
            m = await lr.metrics()
            expected = len(cases[f"{kind} bare"].samples) + len(
                cases[f"{kind} quoted"].samples) + acked[kind]
            out["concurrent"][kind]["feedback_in_store"] = m.feedback
            out["concurrent"][kind]["feedback_acknowledged"] = expected
            if m.feedback != expected:
                raise SystemExit(f"observe: {kind} store holds {m.feedback} feedbacks, "
                                 f"{expected} were acknowledged")
    finally:
        for lr in learners.values():
            await close_learner(lr)
        con.close()
        await adb.close()
        await handoff.stop()
        await store_sql.stop()
    for name, v in out["one_client"].items():
        print(f"[observe] {name}: p50 {v['p50_us']:.0f} us", file=sys.stderr, flush=True)
    for name, v in out["concurrent"].items():
        print(f"[observe] {name}, {v['clients']} clients: {v['per_s']:.0f}/s",
              file=sys.stderr, flush=True)
    return out


def print_observe(res: dict[str, Any], fs: str) -> None:
    one = res["one_client"]
    label = {
        "ref sqlite3": "reference: sqlite3 WAL FULL, BEGIN / upsert / COMMIT (blocking)",
        "ref sqlite3, one hand-off": "the same transaction on a writer thread, awaited (one "
                                     "hand-off each way: the floor of the store's design)",
        "ref store SQL, one hand-off": "the store's own statements for one feedback (bump, "
                                       "check, event, fold, arm, read back) on such a thread",
        "ref aiosqlite": "reference: aiosqlite WAL FULL, autocommit upsert (1 await)",
        "sqlite bare": "Learner.observe, SQLite FULL, bare arm feedback",
        "sqlite quoted": "Learner.observe, SQLite FULL, quoting a selection_id",
        "memory bare": "Learner.observe, memory store, bare arm feedback",
        "memory quoted": "Learner.observe, memory store, quoting a selection_id",
    }
    print(f"\n### Observe, one client: p50 / p90 us per acknowledged feedback ({fs})\n")
    print(table(["operation", "p50 us", "p90 us", "calls"],
                [[label[n], f"{v['p50_us']:.0f}", f"{v['p90_us']:.0f}", v["n"]]
                 for n, v in one.items()]))
    conc = res["concurrent"]
    clabel = {
        "sqlite": "Learner.observe, SQLite FULL (group commit)",
        "ref aiosqlite": "reference: aiosqlite WAL FULL, one connection, autocommit upserts",
        "memory": "Learner.observe, memory store",
    }
    n = next(iter(conc.values()))["clients"]
    print(f"\n### Observe, {n} concurrent clients: acknowledged feedbacks per second\n")
    rows = []
    for name, v in conc.items():
        mark = f" {verdict(v['per_s'], OBSERVE_16_MIN_PER_S, True)}" if name == "sqlite" else ""
        rows.append([clabel[name], f"{v['per_s']:,.0f}{mark}",
                     ", ".join(f"{x:,}" for x in v["per_s_all"]),
                     f"{v['p50_us_under_load']:.0f}"])
    print(table(["system", "median per s", "every round", "p50 us per call under load"], rows))
    print(f"\nTarget: >= {OBSERVE_16_MIN_PER_S:,.0f}/s on SQLite. After the runs the stores held "
          "exactly the acknowledged feedbacks (" + ", ".join(
              f"{k}: {v['feedback_in_store']:,}" for k, v in conc.items()
              if "feedback_in_store" in v) + ").")


# --- regret ---------------------------------------------------------------------------------


async def learner_regret(mu: np.ndarray, horizon: int, u: np.ndarray, seed: int) -> dict[str, Any]:
    """anchors.run_regret_once for the project's Learner (memory store, seeded)."""
    k = len(mu)
    gaps = float(mu.max()) - mu
    ids = [str(i) for i in range(k)]
    index = {a: i for i, a in enumerate(ids)}
    learner = await Learner.create(LearnerConfig(name="regret", seed=seed),
                                   MemoryLearningStore(), signer=SelectionSigner.random())
    reg = 0.0
    marks: dict[int, float] = {}
    t0 = time.perf_counter()
    try:
        for t in range(horizon):
            res = await learner.select(ids)
            arm = res.selected[0].id
            i = index[arm]
            r = 1.0 if u[t, i] < mu[i] else 0.0
            await learner.observe(ArmOutcome(arm_id=arm, reward=r,
                                             selection_id=res.selection_id))
            reg += gaps[i]
            if t + 1 in (1000, 5000):
                marks[t + 1] = reg
    finally:
        await close_learner(learner)
    marks[horizon] = reg
    return {"regret": marks, "secs": time.perf_counter() - t0}


def same_sampler_ref(a: Any) -> type:
    """``RefTS`` drawing as the learner does: numpy's SFC64 bit generator, U(0, 1) while
    every arm is at Beta(1, 1), else X / (X + Y) from one vectorised gamma draw (the same
    distributions as ``rng.beta``). With the same seed it must make the learner's
    decisions exactly, which shows that any regret gap to ``RefTS`` is the random stream,
    not the algorithm."""

    class RefSameSampler(a.RefTS):  # type: ignore[name-defined]
        def __init__(self, k: int, seed: int) -> None:
            super().__init__(k, seed)
            self.rng = np.random.Generator(np.random.SFC64(seed))

        def select(self) -> int:
            al, be = self.a, self.b
            if np.all(al == 1.0) and np.all(be == 1.0):
                return int(np.argmax(self.rng.random(len(al))))
            g = self.rng.standard_gamma(np.concatenate((al, be)))
            x = g[: len(al)]
            return int(np.argmax(x / (x + g[len(al):])))

    return RefSameSampler


REF = "ref numpy TS"
REF_FLAT = "ref numpy TS, the learner's sampler"
MINE = "qortex Learner TS"


async def part_regret(a: Any, sz: Sizes, tmp: Path) -> dict[str, Any]:
    horizon = sz.horizon
    flat_ref = same_sampler_ref(a)
    out: dict[str, Any] = {"T": horizon, "seeds": sz.seeds, "problems": {}}
    for prob in sz.problems:
        lr_c = float(np.mean([a.lai_robbins_constant(a.make_problem(prob, s))
                              for s in range(sz.seeds)]))
        runs: dict[str, list[dict[str, Any]]] = {REF: [], REF_FLAT: [], MINE: []}
        for s in range(sz.seeds):
            mu = a.make_problem(prob, s)
            u = np.random.default_rng(20_000 + s).random((horizon, len(mu)))
            # Alternate which runs first (wall time is reported, and noise should hit both).
            order = [REF, REF_FLAT, MINE] if s % 2 == 0 else [MINE, REF_FLAT, REF]
            for name in order:
                if name == MINE:
                    runs[name].append(await learner_regret(mu, horizon, u, s))
                else:
                    cls = a.RefTS if name == REF else flat_ref
                    runs[name].append(a.run_regret_once(
                        lambda kk, ss, c=cls: c(kk, ss), mu, horizon, u, s))
            print(f"[regret] {prob} seed {s}: " + ", ".join(
                f"{n} {runs[n][-1]['regret'][horizon]:.1f}" for n in runs),
                file=sys.stderr, flush=True)
        rows = {}
        for name, rs in runs.items():
            row: dict[str, Any] = {"per_seed": [round(r["regret"][horizon], 1) for r in rs]}
            for cp in sorted(rs[0]["regret"]):
                vals = [r["regret"][cp] for r in rs]
                row[f"median@{cp}"] = float(np.median(vals))
                row[f"mean@{cp}"] = float(np.mean(vals))
                row[f"sd@{cp}"] = float(np.std(vals))
            row["secs_per_run"] = float(np.median([r["secs"] for r in rs]))
            rows[name] = row
        same = sum(x["regret"] == y["regret"] for x, y in zip(runs[REF_FLAT], runs[MINE],
                                                             strict=True))
        out["problems"][prob] = {"lai_robbins_C": lr_c, "bound_T": lr_c * math.log(horizon),
                                 "algos": rows, "identical_to_same_sampler_ref": same}
    return out


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def regret_ok(res: dict[str, Any], prob: str) -> bool:
    """The learner's median is within the bar (anchors: about 60 and 1,400) and it made the
    exact decisions of the same-draw-order reference on every seed."""
    d = res["problems"][prob]
    med = d["algos"][MINE][f"median@{res['T']}"]
    return med <= REGRET_BAR.get(prob, math.inf) and d["identical_to_same_sampler_ref"] == res[
        "seeds"]


def print_regret(res: dict[str, Any]) -> None:
    horizon = res["T"]
    for prob, d in res["problems"].items():
        print(f"\n### Regret, {prob}, T = {horizon:,}, {res['seeds']} seeds (seeds 0..), "
              f"Lai-Robbins C ln T = {d['bound_T']:.0f}\n")
        rows = []
        ref_med = d["algos"][REF][f"median@{horizon}"]
        for name, r in d["algos"].items():
            med = r[f"median@{horizon}"]
            note = ""
            if name != REF:
                note = f"{fmt_ratio(ratio(med, ref_med))} of {REF}"
            if name == MINE:
                bar = REGRET_BAR.get(prob, math.inf)
                note += f"; {verdict(med, bar)} vs bar {bar:,.0f}"
            rows.append([name, _num(r.get("median@1000")), _num(r.get("median@5000")),
                         f"{med:.1f}",
                         f"{r[f'mean@{horizon}']:.1f} ± {r[f'sd@{horizon}']:.1f}",
                         f"{med / d['bound_T']:.2f}", f"{r['secs_per_run']:.2f}", note])
        print(table(["algorithm", "R@1000 median", "R@5000 median", "R@T median",
                     "R@T mean ± sd", "R_T / (C ln T)", "s/run", "vs"], rows))
        print(f"\nThe learner made exactly the decisions of '{REF_FLAT}' on "
              f"{d['identical_to_same_sampler_ref']} of {res['seeds']} seeds (same seed, "
              "same draws): the gap to RefTS is the random stream (another bit generator, and "
              "Beta drawn from gamma pairs), not the algorithm.")
        wins = sum(m <= r for m, r in zip(d["algos"][MINE]["per_seed"],
                                          d["algos"][REF]["per_seed"], strict=True))
        print(f"Learner regret <= {REF} on {wins} of {res['seeds']} seeds.")


# --- register -------------------------------------------------------------------------------


async def part_register(a: Any, sz: Sizes, tmp: Path) -> dict[str, Any]:
    sizes = (1000, 10_000) if sz.mode == "smoke" else (10_000, 100_000, 1_000_000)
    rounds = 1 if sz.mode == "smoke" else 3
    out: dict[str, Any] = {}
    for n in sizes:
        ids = [f"arm-{i:07d}" for i in range(n)]
        mine, floor = [], []
        for _ in range(rounds):
            learner = await Learner.create(
                LearnerConfig(name="reg", max_arms=2 * n, max_candidates=2 * n),
                MemoryLearningStore())
            t0 = time.perf_counter()
            await learner.select(ids)
            mine.append(time.perf_counter() - t0)
            await learner.close()
            t0 = time.perf_counter()
            index = dict(zip(ids, range(n), strict=True))
            np.fromiter(map(index.__getitem__, ids), dtype=np.int64, count=n)
            floor.append(time.perf_counter() - t0)
            del index
        out[str(n)] = {"n": n, "s": statistics.median(mine), "floor_s": statistics.median(floor)}
    return out


def print_register(res: dict[str, Any]) -> None:
    print("\n### First select over N new ids (s, median) vs interning them in a dict\n")
    print(table(["N", "first select", "dict + gather (floor)", "ratio"],
                [[f"{r['n']:,}", f"{r['s']:.3f}", f"{r['floor_s']:.3f}",
                  fmt_ratio(ratio(r["s"], r["floor_s"]))] for r in res.values()]))


# --- main -----------------------------------------------------------------------------------


async def main() -> int:
    ap = common.base_parser(__doc__.splitlines()[0], PARTS)
    ap.add_argument("--seeds", type=int, default=None, help="regret seeds (default 50)")
    ap.add_argument("--tmpdir", default=None,
                    help="where the SQLite files go (default: the system temp dir; must be "
                         "a real disk for the durability figures, not tmpfs)")
    args = ap.parse_args()
    a = common.load_anchors()
    sz = Sizes("smoke" if args.smoke else "quick" if args.quick else "full")
    if args.seeds is not None:
        sz.seeds = args.seeds
    parts = common.chosen_parts(args, PARTS)
    notes = common.machine_notes()
    results: dict[str, Any] = {"notes": notes, "mode": sz.mode, "argv": sys.argv}
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qortex-bench-", dir=args.tmpdir) as d:
        tmp = Path(d)
        fs = common.filesystem_of(tmp)
        notes["tmp_fs"] = fs
        if "tmpfs" in fs and "observe" in parts:
            print(f"WARNING: {tmp} is on {fs}: the durable-observe figures are not disk "
                  "figures; pass --tmpdir on a real disk", file=sys.stderr)
        for p in parts:
            t0 = time.perf_counter()
            results[p] = await globals()[f"part_{p}"](a, sz, tmp)
            results[p + "_wall_s"] = round(time.perf_counter() - t0, 1)
        notes["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    common.print_notes(notes, sys.argv)
    if "select" in results:
        print_select(results["select"])
        for row in results["select"].values():
            target = target_for(row["K"])
            failed += [f"select K={row['K']} {row['store']} {n}" for n in ("ids", "arms")
                       if target is not None and row[f"{n}_ratio"] > target]
    if "topk" in results:
        print_topk(results["topk"])
        failed += [f"topk {r['store']} {n}" for r in results["topk"].values()
                   for n in ("ids", "arms") if r[f"{n}_ratio"] > TOPK_MAX]
    if "observe" in results:
        print_observe(results["observe"], notes["tmp_fs"])
        if results["observe"]["concurrent"]["sqlite"]["per_s"] < OBSERVE_16_MIN_PER_S:
            failed.append("observe throughput")
    if "register" in results:
        print_register(results["register"])
        big = results["register"].get("1000000")
        if big is not None and big["s"] > REGISTER_1M_MAX_S:
            failed.append("register 1M ids")
    if "regret" in results:
        print_regret(results["regret"])
        failed += [f"regret {prob}" for prob in results["regret"]["problems"]
                   if not regret_ok(results["regret"], prob)]
    print("\nTargets missed: " + (", ".join(failed) if failed else "none")
          + (" (smoke mode: sizes too small to mean anything)" if sz.mode == "smoke" else ""))
    common.write_json(args.json, results)
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    common.run(main)
