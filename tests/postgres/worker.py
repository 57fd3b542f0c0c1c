"""One qortex-mcp instance for the multi-process tests: a Learner over its own
PostgresLearningStore, driven by JSON lines on stdin, answering JSON lines on stdout.

    python -m tests.postgres.worker DSN SCHEMA SECRET_HEX

Requests (``id`` is echoed back; requests run concurrently):
    {"id": 1, "op": "select", "arms": [...], "context": {...} | null, "n": 100}
        -> {"id": 1, "ids": [[selection_id, arm], ...]}
    {"id": 2, "op": "observe", "sid": "...", "arm": "a", "reward": 1.0}
        -> {"id": 2, "status": "applied" | "duplicate"} or {"id": 2, "error": CODE}
    {"id": 3, "op": "posteriors"} -> {"id": 3, "arms": [[arm, alpha, beta, pulls], ...]}
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from qortex_mcp.errors import QortexError
from qortex_mcp.learning import ArmOutcome, Learner, LearnerConfig, SelectionSigner
from qortex_mcp.learning.postgres import PostgresLearningStore

LEARNER = "shared"


async def handle(learner: Learner, req: dict[str, Any]) -> dict[str, Any]:
    op = req["op"]
    if op == "select":
        ids = []
        for _ in range(req["n"]):
            result = await learner.select(req["arms"], context=req.get("context"), k=1)
            ids.append([result.selection_id, result.selected[0].id])
        return {"ids": ids}
    if op == "observe":
        try:
            fb = await learner.observe(ArmOutcome(arm_id=req["arm"], reward=req["reward"],
                                                  selection_id=req["sid"]))
        except QortexError as exc:
            return {"error": exc.code}
        return {"status": fb.status}
    if op == "posteriors":
        return {"arms": [[p.id, p.alpha, p.beta, p.pulls] for p in await learner.posteriors()]}
    return {"error": "UNKNOWN_OP"}


async def main(dsn: str, schema: str, secret: str) -> None:
    store = PostgresLearningStore(dsn, schema=schema)
    learner = await Learner.create(LearnerConfig(name=LEARNER), store,
                                   signer=SelectionSigner([bytes.fromhex(secret)]))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout

    def reply(req_id: object, body: dict[str, Any]) -> None:
        out.write(json.dumps({"id": req_id, **body}) + "\n")
        out.flush()

    async def run(req: dict[str, Any]) -> None:
        reply(req["id"], await handle(learner, req))

    tasks: set[asyncio.Task[None]] = set()
    reply(None, {"ready": True})
    try:
        while line := await reader.readline():
            task = asyncio.create_task(run(json.loads(line)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        await learner.close()
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
