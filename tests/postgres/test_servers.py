"""Three ``qortex-mcp serve --transport http`` processes on one PostgreSQL database, twelve
concurrent MCP clients: 5,000 distinct feedbacks, duplicates re-sent to the other
instances and conflicting answers: the applied count is exact, every duplicate is answered
``duplicate``, every conflict refused, and the posteriors are the replay of the events.

Each client selects on its own server and answers at a random one (selection ids travel
between instances). Three MCP servers and the clients share two cores here, so CI runs
1,000 distinct feedbacks (about 20 s); ``QORTEX_FAULT_SCALE=5`` runs the issue's 5,000
(about 85 s). ``test_multiprocess.py`` runs 5,000 by default through the library.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.importorskip("asyncpg")

import asyncpg

from qortex_mcp.learning.postgres import PostgresLearningStore
from tests.conftest import PG_DSN
from tests.postgres.support import audit, fault_scale
from tests.reliability.servers import HttpRpc, ServerProcess, nonce_of, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SERVERS = 3
CLIENTS = 12
LEARNER = "fleet"
ARMS = [f"arm{i}" for i in range(10)]
CONTEXTS = [None, {"task": "review"}, {"task": "search"}]
REWARDS = [0.0, 0.25, 0.5, 1.0]


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A fresh database (the servers use the default schema), dropped afterwards."""
    name = f"qx_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(PG_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield PG_DSN.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_three_servers_count_every_feedback_exactly_once(
    database: str, tmp_path: Path
) -> None:
    n = max(60, int(1000 * fault_scale()))
    rng = random.Random(11)
    servers = [
        ServerProcess(server_env(tmp_path / f"state{i}", store="postgres",
                                 extra={"DATABASE_URL": database}),
                      tmp_path / f"server{i}.log", transport="http")
        for i in range(SERVERS)
    ]
    rpcs: list[HttpRpc] = []
    try:
        # All three start at once on the empty database: one creates the schema.
        await asyncio.gather(*(s.start() for s in servers))
        rpcs = [HttpRpc(servers[i % SERVERS].url) for i in range(CLIENTS)]
        answers: Counter[str] = Counter()
        sent: dict[tuple[str, str], float] = {}
        jobs = iter(range(n))

        async def feedback(rpc: HttpRpc, sid: str, arm: str, reward: float) -> str:
            reply = await rpc.call_tool("qortex_feedback", {
                "learner": LEARNER, "selection_id": sid, "outcomes": {arm: reward}})
            return str(reply.data["arms"][0]["status"]) if reply.ok else reply.code

        async def client(me: int) -> None:
            other_rpcs = [HttpRpc(s.url) for s in servers]
            try:
                for job in jobs:
                    context = CONTEXTS[job % len(CONTEXTS)]
                    sel = await rpcs[me].call_tool("qortex_select", {
                        "learner": LEARNER, "candidates": ARMS, "context": context})
                    assert sel.ok, sel.text
                    sid, arm = sel.data["selection_id"], sel.data["selected"][0]["id"]
                    reward = rng.choice(REWARDS)
                    where = rng.randrange(SERVERS)
                    answers["first:" + await feedback(other_rpcs[where], sid, arm, reward)] += 1
                    sent[(nonce_of(sid), arm)] = reward
                    elsewhere = other_rpcs[(where + rng.choice([1, 2])) % SERVERS]
                    if job % 10 == 0:
                        answers["duplicate:" + await feedback(elsewhere, sid, arm, reward)] += 1
                    elif job % 50 == 1:
                        conflicting = rng.choice([r for r in REWARDS if r != reward])
                        answers["conflict:" + await feedback(elsewhere, sid, arm,
                                                             conflicting)] += 1
            finally:
                for rpc in other_rpcs:
                    await rpc.aclose()

        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
        dups = len(range(0, n, 10))
        conflicts = len(range(1, n, 50))
        assert answers == {"first:applied": n, "duplicate:duplicate": dups,
                           "conflict:SELECTION_CONFLICT": conflicts}

        async with PostgresLearningStore(database) as store:
            stored = await audit(store, LEARNER, sent)

        # Every instance answers with the database's posteriors.
        for rpc in rpcs[:SERVERS]:
            post = await rpc.call_tool("qortex_posteriors", {"learner": LEARNER})
            assert post.ok, post.text
            seen = {p["id"]: (p["alpha"], p["beta"], p["pulls"]) for p in post.data["arms"]
                    if p["pulls"]}
            assert seen.keys() == stored.keys()
            for arm, (alpha, beta, pulls) in seen.items():
                assert pulls == stored[arm][2]
                assert math.isclose(alpha, stored[arm][0], rel_tol=1e-12)
                assert math.isclose(beta, stored[arm][1], rel_tol=1e-12)
        logs = "".join((tmp_path / f"server{i}.log").read_text() for i in range(SERVERS))
        assert logs.count("postgres_schema_created") == 1
        assert logs.count("synchronous_commit='on'") == SERVERS
    finally:
        for rpc in rpcs:
            await rpc.aclose()
        for server in servers:
            await server.aclose()
