"""Cancellation and disconnects mid-feedback: each selection ends with 0 or 1 applied
feedback (never a partial one: the event and the posterior move together), the retry with
the same selection id settles it at exactly 1, and the next call succeeds.

* In process, against the library: an ``observe`` task cancelled at a random point (before
  it runs, after a few loop turns, or after a short sleep), for SQLite, JSON and
  PostgreSQL (skipped, loudly, when PostgreSQL is unreachable).
* Over HTTP: the client drops the connection at a random moment after sending feedback.
* Over HTTP and stdio: ``notifications/cancelled`` for the in-flight feedback.

CI tier: 150 library trials per store, 40 per protocol case; QORTEX_FAULT_SCALE=10: 1,000.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Literal

import anyio
import pytest

from qortex_mcp.learning import ArmOutcome, Learner, LearnerConfig, SelectionSigner
from qortex_mcp.learning.stores.base import LearningStore
from tests.conftest import make_store
from tests.reliability import report
from tests.reliability.loop import ARMS, LEARNER, FeedbackClient, reward_for, seed_for
from tests.reliability.oracle import Ledger, audit, read_store
from tests.reliability.servers import (
    PROTOCOL,
    HttpRpc,
    ServerProcess,
    StdioRpc,
    nonce_of,
    parse_http_body,
    server_env,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def _rows(store: LearningStore, key: tuple[str, str]) -> int:
    rows = 0
    after = 0
    while True:
        page = await store.events(LEARNER, after, 10_000)
        rows += sum(1 for e in page if e.kind == "feedback" and (e.key, e.arm) == key)
        if len(page) < 10_000:
            return rows
        after = page[-1].seq


@pytest.mark.parametrize("kind", ["sqlite", "json", "postgres"])
async def test_a_cancelled_observe_applies_zero_or_one_times_and_the_retry_settles_it(
    tmp_path: Path, kind: str,
) -> None:
    store = await make_store(kind, tmp_path)
    rng = random.Random(seed_for(f"cancel {kind}"))
    trials = report.tier(150, 1000)
    outcomes: Counter[str] = Counter()
    before_retry: Counter[int] = Counter()
    try:
        learner = await Learner.create(LearnerConfig(name=LEARNER), store,
                                       signer=SelectionSigner.random())
        try:
            for i in range(trials):
                sel = await learner.select(ARMS)
                arm = sel.selected[0].id
                outcome = ArmOutcome(arm, reward=reward_for(rng), selection_id=sel.selection_id)
                key = (nonce_of(sel.selection_id), arm)
                task = asyncio.create_task(learner.observe(outcome))
                if i % 3 == 1:
                    for _ in range(rng.randint(1, 30)):
                        await asyncio.sleep(0)
                elif i % 3 == 2:
                    await asyncio.sleep(rng.uniform(0, 0.004))
                task.cancel()
                try:
                    await task
                    outcomes["completed"] += 1
                except asyncio.CancelledError:
                    outcomes["cancelled"] += 1
                rows = await _rows(store, key)
                before_retry[rows] += 1
                assert rows in (0, 1)
                with anyio.fail_after(10):
                    retry = await learner.observe(outcome)  # the next call succeeds
                outcomes[f"retry {retry.status}"] += 1
                assert await _rows(store, key) == 1
            replay = await learner.replay()
        finally:
            await learner.close()
        if kind == "sqlite":
            # No transaction was left open: another connection takes the write lock at once.
            conn = sqlite3.connect(tmp_path / "state.db", timeout=0)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            finally:
                conn.close()
    finally:
        await store.close()
    report.record(f"cancellation library {kind}",
                  f"{trials} observe calls cancelled at random points: "
                  f"{dict(sorted(outcomes.items()))}; rows before retry "
                  f"{dict(sorted(before_retry.items()))}, exactly 1 after every retry; replay "
                  f"{'ok' if replay.ok else 'MISMATCH'} ({replay.events} events)")
    assert replay.ok
    assert replay.events == trials


def _raw_post(port: int, session: str, body: bytes) -> bytes:
    return (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            f"Mcp-Session-Id: {session}\r\nMcp-Protocol-Version: {PROTOCOL}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.mark.parametrize("how", ["disconnect", "cancel-http", "cancel-stdio"])
async def test_feedback_interrupted_over_the_wire_is_applied_once_after_the_retry(
    tmp_path: Path, how: Literal["disconnect", "cancel-http", "cancel-stdio"],
) -> None:
    state_dir = tmp_path / "state"
    transport: Literal["stdio", "http"] = "stdio" if how == "cancel-stdio" else "http"
    server = ServerProcess(server_env(state_dir), tmp_path / "server.log", transport=transport)
    rng = random.Random(seed_for(f"interrupt {how}"))
    ledger = Ledger()
    trials = report.tier(40, 1000)
    seen: Counter[str] = Counter()
    try:
        await server.start()
        if transport == "stdio":
            async with StdioRpc.connect(server, keep=True) as rpc:
                agent = FeedbackClient(rpc, ledger, rng)
                for i in range(trials):
                    fb = await agent.select()
                    rid = 100_000 + i
                    await rpc.send_raw(json.dumps({
                        "jsonrpc": "2.0", "id": rid, "method": "tools/call",
                        "params": {"name": "qortex_feedback", "arguments": fb.arguments()},
                    }).encode() + b"\n")
                    await anyio.sleep(0.0 if i % 3 == 0 else rng.uniform(0, 0.004))
                    await rpc.notify("notifications/cancelled",
                                     {"requestId": rid, "reason": "reliability test"})
                    reply = await agent.send(fb)  # the retry; also the next call
                    assert reply.ok, reply.text
                    seen[reply.data["arms"][0]["status"]] += 1
                await rpc.ping()
                answered = sum(1 for m in rpc.messages if m.get("id", 0) >= 100_000)
                seen["answered despite the cancel"] = answered
        else:
            async with HttpRpc(server.url) as http:
                await http.initialize()
                agent = FeedbackClient(http, ledger, rng)
                for i in range(trials):
                    fb = await agent.select()
                    body = json.dumps({"jsonrpc": "2.0", "id": 100_000 + i,
                                       "method": "tools/call",
                                       "params": {"name": "qortex_feedback",
                                                  "arguments": fb.arguments()}}).encode()
                    delay = 0.0 if i % 3 == 0 else rng.uniform(0, 0.004)
                    if how == "disconnect":
                        request = _raw_post(server.port, http.session or "", body)
                        if i % 4 == 0:  # gone before the body was complete
                            request = request[:rng.randrange(len(request) - len(body),
                                                             len(request))]
                        with anyio.fail_after(10):
                            stream = await anyio.connect_tcp("127.0.0.1", server.port)
                            await stream.send(request)
                            await anyio.sleep(delay)
                            await stream.aclose()
                    else:
                        async def original(body: bytes = body) -> None:
                            answer = parse_http_body(await http.post(json.loads(body)))
                            cancelled = any(m.get("error", {}).get("code") == -32800
                                            for m in answer)
                            seen["answered 'Request cancelled'" if cancelled else
                                 "answered despite the cancel"] += 1

                        async with anyio.create_task_group() as tg:
                            tg.start_soon(original)
                            await anyio.sleep(delay)
                            await http.post({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                            "params": {"requestId": 100_000 + i,
                                                       "reason": "reliability test"}})
                    reply = await agent.send(fb)  # the retry; also the next call
                    assert reply.ok, reply.text
                    seen[reply.data["arms"][0]["status"]] += 1
        state = read_store("sqlite", state_dir, LEARNER)
    finally:
        await server.aclose()
    a = audit(state, ledger)
    report.record(f"cancellation {how}",
                  f"{trials} feedbacks interrupted, then retried: retries answered "
                  f"{dict(sorted(seen.items()))}; {a.rows} rows for {a.acknowledged} "
                  f"selections, {a.lost} lost, {a.double_counted} double-counted")
    assert a.ok
    assert a.rows == a.acknowledged == trials
    assert a.unacknowledged == 0
