"""The same history gives the same posteriors on PostgreSQL as on SQLite (the reference),
including decay over more half-lives than a double can hold and tiny weights and factors,
where PostgreSQL would raise "underflow" if the store let it."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

pytest.importorskip("asyncpg")

from qortex_mcp.learning import SqliteLearningStore
from qortex_mcp.learning.replay import replay_events
from qortex_mcp.learning.stores.base import LearningStore
from qortex_mcp.learning.types import FeedbackRow
from tests.postgres.conftest import MakeStore

pytestmark = pytest.mark.anyio

L = "eq"


def close(a: float, b: float) -> bool:
    # Values below 1e-150 are noise either way: PostgreSQL flushes them to 0 (see sql.py).
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-150)


async def run_history(store: LearningStore, seed: int, half_life: float | None) -> None:
    rng = random.Random(seed)
    at = 1000.0
    for i in range(120):
        at += rng.choice([0.5, 3.0, 40.0, 2e5])  # 2e5 s: thousands of half-lives
        op = rng.random()
        if op < 0.75:
            rows = [
                FeedbackRow(key=f"s{rng.randrange(60)}", arm=rng.choice("abc"),
                            ctx=rng.choice(["", "c1", "c2"]), ctx_body=None,
                            reward=rng.choice([0.0, 0.37, 0.5, 1.0, 1e-200]),
                            weight=rng.choice([1.0, 0.25, 1e-170]), outcome=None,
                            at=at - rng.choice([0.0, 1.0, 5e4]))
                for _ in range(rng.choice([1, 1, 3]))
            ]
            await store.apply(L, rows, half_life)
        elif op < 0.9:
            await store.decay(L, rng.choice(["", "a"]), rng.choice([0.7, 0.0, 1e-200]), at)
        else:
            await store.reset(L, [rng.choice("abc")], rng.choice([None, "c1"]), at,
                              dry_run=False)
        if i % 40 == 0:
            await store.record_selections(L, {"a": (2, at)}, {"b": (3.0, 2.0)}, 2, 1)


@pytest.mark.parametrize("half_life", [None, 10.0])
async def test_the_same_history_gives_the_same_state_as_sqlite(
    make_pg: MakeStore, tmp_path: Path, half_life: float | None
) -> None:
    pg = await make_pg()
    async with SqliteLearningStore(tmp_path / "ref.db") as ref:
        for seed in (1, 2):
            await run_history(pg, seed, half_life)
            await run_history(ref, seed, half_life)
        want = {(r.ctx, r.arm): r for r in await ref.evidence(L)}
        got = {(r.ctx, r.arm): r for r in await pg.evidence(L)}
        assert set(got) == set(want)
        for key, w in want.items():
            g = got[key]
            assert (g.n, g.t) == (w.n, w.t), key
            assert close(g.s, w.s), (key, g, w)
            assert close(g.f, w.f), (key, g, w)
            assert close(g.rsum, w.rsum), (key, g, w)
        assert [(e.kind, e.key, e.arm, e.ctx, e.reward) for e in await pg.events(L)] == [
            (e.kind, e.key, e.arm, e.ctx, e.reward) for e in await ref.events(L)]
        snap_pg, snap_ref = await pg.load(L), await ref.load(L)
        assert (snap_pg.selections, snap_pg.explored) == (snap_ref.selections, snap_ref.explored)
        assert sorted((a.arm, a.a0, a.b0, a.selections) for a in snap_pg.arms) == sorted(
            (a.arm, a.a0, a.b0, a.selections) for a in snap_ref.arms)
    report = replay_events(L, await pg.events(L), await pg.evidence(L), half_life)
    assert report.ok, report.mismatches
