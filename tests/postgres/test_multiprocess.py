"""Three qortex-mcp processes on one database, twelve concurrent clients: 5,000 distinct
feedbacks, re-sent duplicates and conflicting answers sent to the other instances.

Every instance is a worker process with its own Learner and PostgresLearningStore
(``tests/postgres/worker.py``); the selection ids are issued by all three and answered at
random instances. ``QORTEX_FAULT_SCALE`` scales the load (default 1 = the issue's numbers).
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections import Counter
from dataclasses import dataclass

import pytest

pytest.importorskip("asyncpg")

from qortex_mcp.learning import SelectionSigner
from qortex_mcp.learning.postgres import PostgresLearningStore
from tests.conftest import PG_DSN
from tests.postgres.instances import Instance
from tests.postgres.support import audit, fault_scale
from tests.postgres.worker import LEARNER

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ARMS = [f"arm{i}" for i in range(12)]
CONTEXTS = [None, {"task": "review"}, {"task": "search"}]
CLIENTS = 12
OTHER_REWARD = {0.0: 1.0, 0.5: 1.0, 1.0: 0.0}


@dataclass
class Feedback:
    sid: str
    arm: str
    reward: float
    ctx: int
    to: int
    resend: str | None = None  # "duplicate" or "conflict"
    resend_to: int = 0


async def test_three_instances_count_every_feedback_once(schema: str) -> None:
    n = max(30, int(5000 * fault_scale()))
    rng = random.Random(5)
    secret = secrets.token_hex(32)
    instances = [await Instance.start(PG_DSN, schema, secret) for _ in range(3)]
    try:
        # Each instance issues a third of the selections, in three contexts.
        plan: list[Feedback] = []
        for i, inst in enumerate(instances):
            for c, context in enumerate(CONTEXTS):
                count = n // 9 + (1 if i * 3 + c < n % 9 else 0)
                reply = await inst.call(op="select", arms=ARMS, context=context, n=count)
                for sid, arm in reply["ids"]:
                    plan.append(Feedback(sid, arm, rng.choice([0.0, 0.5, 1.0]), c,
                                         rng.randrange(3)))
        assert len(plan) == n
        for fb in rng.sample(plan, n // 10 + n // 50):
            fb.resend = "duplicate"
        for fb in rng.sample([fb for fb in plan if fb.resend is None], n // 50):
            fb.resend = "conflict"
        for fb in plan:
            fb.resend_to = (fb.to + rng.choice([1, 2])) % 3

        answers: Counter[str] = Counter()
        queue: asyncio.Queue[Feedback] = asyncio.Queue()
        for fb in plan:
            queue.put_nowait(fb)

        async def client() -> None:
            while not queue.empty():
                fb = queue.get_nowait()
                first = await instances[fb.to].call(op="observe", sid=fb.sid, arm=fb.arm,
                                                    reward=fb.reward)
                answers["first:" + first.get("status", first.get("error", "?"))] += 1
                if fb.resend is None:
                    continue
                reward = fb.reward if fb.resend == "duplicate" else OTHER_REWARD[fb.reward]
                again = await instances[fb.resend_to].call(op="observe", sid=fb.sid,
                                                           arm=fb.arm, reward=reward)
                answers[f"{fb.resend}:" + again.get("status", again.get("error", "?"))] += 1

        await asyncio.gather(*(client() for _ in range(CLIENTS)))

        dups = sum(fb.resend == "duplicate" for fb in plan)
        conflicts = sum(fb.resend == "conflict" for fb in plan)
        assert answers == {"first:applied": n, "duplicate:duplicate": dups,
                           "conflict:SELECTION_CONFLICT": conflicts}

        # The database holds exactly the plan, and its posteriors are the replay of its events.
        signer = SelectionSigner([bytes.fromhex(secret)])
        async with PostgresLearningStore(PG_DSN, schema=schema) as store:
            stored = await audit(store, LEARNER, {
                (signer.verify(fb.sid, LEARNER).nonce, fb.arm): fb.reward for fb in plan})

        # Every instance serves the same posteriors, equal to the database's.
        for inst in instances:
            reply = await inst.call(op="posteriors")
            seen = {a: (alpha, beta, pulls) for a, alpha, beta, pulls in reply["arms"] if pulls}
            assert seen == stored
    finally:
        codes = [await inst.stop() for inst in instances]
    assert codes == [0, 0, 0]
