"""The dashboard's server-side aggregation (``DashboardData``) over stores other writers
change: SQLite in another process and PostgreSQL through another connection pool."""

from __future__ import annotations

import secrets
from pathlib import Path

import anyio
import numpy as np
import pytest

from qortex_mcp.errors import InvalidInput, UnknownLearner
from qortex_mcp.learning import (
    ArmOutcome,
    Learner,
    LearnerConfig,
    LearnerRegistry,
    SelectionSigner,
    SqliteLearningStore,
)
from qortex_mcp.observe.estimates import BETA, prob_best
from qortex_mcp.observe.views import DashboardData
from tests.conftest import PG_DSN, PG_UNAVAILABLE
from tests.pg import fresh_postgres_store

pytestmark = pytest.mark.anyio


def _registry(store: object) -> LearnerRegistry:
    return LearnerRegistry(store, SelectionSigner([secrets.token_bytes(32)]),  # type: ignore[arg-type]
                           refresh_interval_s=0.05)


async def _until_pulls(data: DashboardData, learner: str, arm: str, want: int) -> None:
    with anyio.fail_after(10):
        while True:
            page = await data.arms(learner, sort="id")
            if {a["id"]: a["pulls"] for a in page["arms"]}.get(arm) == want:
                return
            await anyio.sleep(0.05)


async def test_the_views_follow_feedback_written_through_another_postgres_pool() -> None:
    if PG_UNAVAILABLE:
        pytest.skip(f"PostgreSQL unavailable: {PG_UNAVAILABLE}")
    from qortex_mcp.learning.postgres import PostgresLearningStore

    writer_store = await fresh_postgres_store(PG_DSN)
    try:
        async with await Learner.create(LearnerConfig(name="pg-view"), writer_store) as writer:
            await writer.batch_observe([ArmOutcome("a", reward=1.0), ArmOutcome("b", reward=0.0)])
            reader = _registry(PostgresLearningStore(PG_DSN, schema=writer_store.schema))  # type: ignore[attr-defined]
            async with reader:
                data = DashboardData(lambda: reader, seed=1)
                listed = await data.learners()
                assert [x["name"] for x in listed["learners"]] == ["pg-view"]
                await _until_pulls(data, "pg-view", "a", 1)
                await writer.observe(ArmOutcome("a", reward=1.0))
                await _until_pulls(data, "pg-view", "a", 2)
                series = await data.series("pg-view", bucket_s=60)
                assert sum(b["feedback"] for b in series["buckets"]) == 3
    finally:
        await writer_store.close()


async def test_pages_are_bounded_and_sorted(tmp_path: Path) -> None:
    async with SqliteLearningStore(tmp_path / "s.db") as store, \
            await Learner.create(LearnerConfig(name="many"), store) as lrn:
        await lrn.batch_observe([ArmOutcome(f"arm-{i:03d}", reward=(i % 10) / 9)
                                 for i in range(250)])
        registry = _registry(store)
        registry._owns_store = False  # the test closes the store
        async with registry:
            data = DashboardData(lambda: registry, seed=3)
            page = await data.arms("many", offset=0, limit=200)
            assert (page["total"], len(page["arms"])) == (250, 200)
            means = [a["estimate"] for a in page["arms"]]
            assert means == sorted(means, reverse=True)
            rest = await data.arms("many", offset=200, limit=200)
            assert len(rest["arms"]) == 50
            assert all(a["ci_low"] <= a["estimate"] <= a["ci_high"] for a in page["arms"])
            assert abs(sum(a["prob_best"] for a in page["arms"] + rest["arms"]) - 1) < 1e-9
            with pytest.raises(InvalidInput):
                await data.arms("many", limit=201)
            with pytest.raises(InvalidInput):
                await data.arms("many", sort="nope")
            with pytest.raises(UnknownLearner):
                await data.arms("absent")


def test_prob_best_finds_the_clear_winner_among_many_arms_and_sums_to_one() -> None:
    rng = np.random.default_rng(7)
    alpha = np.array([10.0] * 150 + [90.0] + [10.0] * 150)
    beta = np.array([90.0] * 150 + [10.0] + [90.0] * 150)
    p = prob_best(BETA, alpha, beta, rng)
    assert p[150] > 0.99
    assert abs(p.sum() - 1) < 1e-9


def test_prob_best_shares_out_among_arms_nobody_knows_anything_about() -> None:
    rng = np.random.default_rng(8)
    p = prob_best(BETA, np.ones(4), np.ones(4), rng, draws=4000)
    assert np.all(np.abs(p - 0.25) < 0.05)


def test_folding_old_buckets_keeps_the_estimates_the_same() -> None:
    from qortex_mcp.observe.views import MAX_BUCKETS, _Log

    log = _Log(bucket_s=60)
    for i in range(3 * MAX_BUCKETS):
        log.buckets[i * 60] = {"a": [1.0, float(i % 2)], "b": [2.0, 1.0]}
    data = DashboardData(lambda: None)  # type: ignore[arg-type, return-value]
    before = data._buckets(log, ["a", "b"], (1.0, 1.0))
    data._fold_old(log)
    assert len(log.buckets) == MAX_BUCKETS
    after = data._buckets(log, ["a", "b"], (1.0, 1.0))
    assert after == before[-len(after):]
    assert len(after) == MAX_BUCKETS


async def test_stream_backlogs_reach_the_learners_page(tmp_path: Path) -> None:
    from qortex_mcp.observe.streams import StreamLag

    async def lag() -> list[StreamLag]:
        return [StreamLag("nats", "feedback", "qortex", pending=3, lag=12,
                          oldest_pending_age_s=None)]

    async with SqliteLearningStore(tmp_path / "s.db") as store:
        registry = _registry(store)
        registry._owns_store = False
        async with registry:
            data = DashboardData(lambda: registry, stream_lag=[lag])
            page = await data.learners()
    assert page["streams"] == [{"broker": "nats", "stream": "feedback", "group": "qortex",
                                "pending": 3, "lag": 12, "oldest_pending_age_s": None}]


async def test_the_dashboard_command_follows_postgres_written_by_another_process() -> None:
    """``qortex-mcp dashboard --store postgresql://...?schema=`` in its own process, this
    test process writing through its own pool."""
    if PG_UNAVAILABLE:
        pytest.skip(f"PostgreSQL unavailable: {PG_UNAVAILABLE}")
    import json

    from tests.observe.support import DashboardServer, request
    from tests.server.support import base_env

    writer_store = await fresh_postgres_store(PG_DSN)
    schema = writer_store.schema  # type: ignore[attr-defined]
    try:
        async with await Learner.create(LearnerConfig(name="pg-cmd"), writer_store) as writer:
            await writer.observe(ArmOutcome("a", reward=1.0))
            sep = "&" if "?" in PG_DSN else "?"
            dash = DashboardServer(base_env(Path("/nonexistent/state")), "--store",
                                   f"{PG_DSN}{sep}schema={schema}")
            try:
                url = dash.url + "/api/learners/pg-cmd?sort=id"

                async def pulls() -> int:
                    status, _, body = await anyio.to_thread.run_sync(lambda: request(url))
                    assert status == 200, body
                    return int(json.loads(body)["arms"][0]["pulls"])

                assert await pulls() == 1
                await writer.observe(ArmOutcome("a", reward=0.0))
                with anyio.fail_after(10):  # polled: the page would poll the same way
                    while True:
                        if await pulls() == 2:
                            break
                        await anyio.sleep(0.05)
            finally:
                dash.stop()
    finally:
        await writer_store.close()
