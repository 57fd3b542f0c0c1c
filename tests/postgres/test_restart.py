"""PostgreSQL restarts under load (a private cluster): nothing acknowledged is lost, nothing
is counted twice, every call during an outage answers with a retryable error within 5 s,
and both instances serve again within 10 s of the database coming back, by themselves.

Two store instances (two Learners) share the cluster; eight clients send feedback and retry
retryable errors with the same selection id (backoff 0.1 s to 2 s), sometimes through the
other instance. Faults: at 30 % ``pg_ctl stop -m immediate`` (crash, WAL recovery), at 60 %
``pg_ctl stop -m fast``, each followed by one second down and a start; at 80 %
``pg_terminate_backend`` of every qortex-mcp connection (commits in flight become
ambiguous). ``QORTEX_FAULT_SCALE`` scales the number of feedbacks (default 4,000).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import anyio
import pytest

pytest.importorskip("asyncpg")

import asyncpg

from qortex_mcp.errors import StoreError
from qortex_mcp.learning import ArmOutcome, Learner, LearnerConfig, SelectionSigner
from qortex_mcp.learning.postgres import PostgresLearningStore
from tests.postgres.cluster import PrivateCluster, cluster_unavailable
from tests.postgres.support import audit, eventually, fault_scale

_WHY_NOT = cluster_unavailable()
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.skipif(_WHY_NOT is not None, reason=f"no private PostgreSQL cluster: {_WHY_NOT}"),
]

CALL_BOUND_S = 5.0
"""Every call answers within this, with success or a retryable error."""
BACK_WITHIN_S = 10.0
"""Every instance serves again within this after the database accepts connections."""
CLIENTS = 8
ARMS = [f"arm{i}" for i in range(6)]
L = "restart"


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    with PrivateCluster() as pg:
        yield pg


async def test_restarts_under_load_lose_nothing_and_count_nothing_twice(
    cluster: PrivateCluster,
) -> None:
    n = max(300, int(4000 * fault_scale()))
    signer = SelectionSigner.random()
    stores = [PostgresLearningStore(cluster.dsn) for _ in range(2)]
    for store in stores:
        await store.initialize()
        assert store.synchronous_commit == "on"
    learners = [await Learner.create(LearnerConfig(name=L, seed=i), store, signer=signer)
                for i, store in enumerate(stores)]
    plan = []
    for i in range(n):
        sel = await learners[i % 2].select(ARMS)
        plan.append((sel.selection_id, sel.selected[0].id, (0.0, 0.5, 1.0)[i % 3]))

    acked: dict[int, str] = {}
    retryable_errors: Counter[str] = Counter()
    last_ok = [0.0, 0.0]
    items = iter(range(n))

    async def client() -> None:
        for idx in items:
            sid, arm, reward = plan[idx]
            backoff, attempt = 0.1, 0
            while True:
                which = (idx + attempt) % 2
                try:
                    with anyio.fail_after(CALL_BOUND_S):
                        fb = await learners[which].observe(
                            ArmOutcome(arm_id=arm, reward=reward, selection_id=sid))
                except StoreError as exc:
                    if not exc.retryable:  # anything else is a real failure
                        raise
                    retryable_errors[exc.code] += 1
                    await anyio.sleep(backoff)
                    backoff, attempt = min(2.0, backoff * 2), attempt + 1
                    continue
                acked[idx] = fb.status
                last_ok[which] = time.monotonic()
                break

    async def serves_again() -> None:
        """Each instance answers a real read and a real write again, by itself."""
        with anyio.fail_after(BACK_WITHIN_S):
            for learner in learners:
                while True:
                    try:
                        with anyio.fail_after(CALL_BOUND_S):
                            await learner.store.evidence(L)
                            await learner.flush()
                        break
                    except StoreError as exc:
                        if not exc.retryable:
                            raise
                        await anyio.sleep(0.05)
        await eventually(lambda: all(store.listening for store in stores), BACK_WITHIN_S)

    async def faults() -> None:
        for share, fault in ((0.3, "immediate"), (0.6, "fast"), (0.8, "terminate")):
            await eventually(lambda: len(acked) >= share * n, 120)  # noqa: B023
            if fault == "terminate":
                conn = await asyncpg.connect(cluster.dsn, timeout=10)
                try:
                    killed = await conn.fetchval(
                        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) "
                        "FROM pg_stat_activity WHERE application_name = 'qortex-mcp') t")
                finally:
                    await conn.close()
                assert killed >= 2  # at least the two listening connections
            else:
                await cluster.stop(fault)
                await anyio.sleep(1.0)
                await cluster.start()
            await serves_again()

    try:
        await asyncio.gather(faults(), *(client() for _ in range(CLIENTS)))
        assert len(acked) == n
        assert sum(retryable_errors.values()) > 0, "the outages were never observed"
        statuses = Counter(acked.values())
        # "duplicate" only for a retry of a commit whose answer was lost in an outage
        assert statuses["applied"] + statuses["duplicate"] == n

        # 0 lost, 0 counted twice, posteriors = replay of the events, on every instance
        stored = await audit(stores[0], L, {
            (signer.verify(sid, L).nonce, arm): reward for sid, arm, reward in plan})
        for learner in learners:
            seen = {p.id: (p.alpha, p.beta, p.pulls) for p in await learner.posteriors()}
            assert seen == stored
    finally:
        # Bounded: a close stuck on a dead connection must fail this test, not hang the run.
        with anyio.fail_after(30):
            for learner in learners:
                await learner.close()
            for store in stores:
                await store.close()
