"""Sixteen concurrent HTTP clients on one server: distinct feedback, duplicate retries and
invalid calls interleaved; exact totals, every invalid call refused with its code and
changing nothing, no internal error; and the same selection id sent by eight clients at
once is applied exactly once.

CI tier: 1,000 distinct, 200 duplicates, 100 invalid; 10 race rounds.
QORTEX_FAULT_SCALE=10: 10,000 distinct, 2,000 duplicates, 1,000 invalid; 50 race rounds.
"""

from __future__ import annotations

import random
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.reliability import report
from tests.reliability.loop import LEARNER, Feedback, FeedbackClient, seed_for
from tests.reliability.oracle import Ledger, audit, read_store
from tests.reliability.servers import HttpRpc, RpcError, ServerProcess, ToolReply, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CLIENTS = 16
VICTIM = "victim"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@dataclass
class Victim:
    """Selections of a learner that only invalid calls touch (its checksum must not move)."""

    open_sid: str
    open_arm: str
    answered: Feedback

    def corpus(self) -> list[tuple[str, dict[str, Any], str]]:
        """(what, arguments, expected code): the plan's section 3 through ``feedback``."""
        sid, arm = self.open_sid, self.open_arm
        flipped = sid[:40] + ("A" if sid[40] != "A" else "B") + sid[41:]

        def fb(**extra: Any) -> dict[str, Any]:
            return {"learner": VICTIM, "selection_id": sid, **extra}

        return [
            ("reward above 1", fb(outcomes={arm: 1.5}), "INVALID_REWARD"),
            ("negative reward", fb(outcomes={arm: -0.01}), "INVALID_REWARD"),
            ("reward as a string", fb(outcomes={arm: "0.5"}), "INVALID_REWARD"),
            ("boolean reward", fb(outcomes={arm: True}), "INVALID_REWARD"),
            ("NaN literal", fb(outcomes={arm: float("nan")}), "INVALID_REWARD"),
            ("Infinity literal", fb(outcomes={arm: float("inf")}), "INVALID_REWARD"),
            ("null reward", fb(outcomes={arm: None}), "INVALID_REWARD"),
            ("400-digit reward", fb(outcomes={arm: 10**400}), "INVALID_REWARD"),
            ("unknown outcome word", fb(outcomes={arm: "great"}), "INVALID_OUTCOME"),
            ("altered selection id", {**fb(outcomes={arm: 1}), "selection_id": flipped},
             "INVALID_SELECTION"),
            ("empty selection id", {**fb(outcomes={arm: 1}), "selection_id": ""},
             "INVALID_SELECTION"),
            ("selection id as a number", {**fb(outcomes={arm: 1}), "selection_id": 42},
             "INVALID_ARGUMENT"),
            ("SQL in the selection id",
             {**fb(outcomes={arm: 1}), "selection_id": "' OR 1=1--"}, "INVALID_SELECTION"),
            ("unknown argument", fb(outcomes={arm: 1}, rewrd=1), "INVALID_ARGUMENT"),
            ("arm outside the selection", fb(outcomes={"zulu": 1}), "ARM_NOT_IN_SELECTION"),
            ("a different answer", self.answered.arguments() | {
                "learner": VICTIM, "outcomes": {self.answered.arm: 1.0 - self.answered.reward}},
             "SELECTION_CONFLICT"),
            ("NUL in the learner name", fb(outcomes={arm: 1}) | {"learner": "bad\x00name"},
             "INVALID_NAME"),
            ("empty outcomes", fb(outcomes={}), "INVALID_ARGUMENT"),
            ("both forms at once", fb(outcomes={arm: 1}, arm_id=arm, outcome=1),
             "INVALID_ARGUMENT"),
            ("no outcome at all", fb(), "INVALID_ARGUMENT"),
            ("context beside a selection", fb(outcomes={arm: 1}, context={"a": 1}),
             "INVALID_ARGUMENT"),
            ("learner as a number", fb(outcomes={arm: 1}) | {"learner": 7}, "INVALID_ARGUMENT"),
        ]


@dataclass
class LoadReport:
    applied: int = 0
    duplicates: int = 0
    refused_as_expected: int = 0
    refused_otherwise: list[str] = field(default_factory=list)
    internal: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)


async def _setup_victim(rpc: HttpRpc, rng: random.Random) -> Victim:
    agent = FeedbackClient(rpc, Ledger(), rng, learner=VICTIM)
    answered = await agent.select()
    reply = await agent.send(answered)
    assert reply.ok
    open_one = await agent.select()
    return Victim(open_one.selection_id, open_one.arm, answered)


async def _load_client(rpc: HttpRpc, jobs: list[str], corpus: list[tuple[str, dict[str, Any],
                       str]], pool: list[Feedback], ledger: Ledger, rep: LoadReport,
                       rng: random.Random) -> None:
    agent = FeedbackClient(rpc, ledger, rng)
    deferred = 0
    queue = list(jobs)
    while queue:
        job = queue.pop(0)
        try:
            if job == "new":
                fb = await agent.select()
                reply = await agent.send(fb)
                if reply.ok and reply.data["arms"][0]["status"] == "applied":
                    rep.applied += 1
                    pool.append(fb)
                else:
                    rep.unexpected.append(f"new: {reply.code} {reply.text}")
            elif job == "dup":
                if not pool and deferred < 10_000:
                    deferred += 1
                    queue.append(job)  # nothing acknowledged yet: later
                    await anyio.sleep(0.01)
                    continue
                reply = await agent.send(rng.choice(pool))
                if reply.ok and reply.data["arms"][0]["status"] == "duplicate":
                    rep.duplicates += 1
                else:
                    rep.unexpected.append(f"dup: {reply.code} {reply.text}")
            else:
                what, arguments, expected = corpus[int(job[3:]) % len(corpus)]
                reply = await rpc.call_tool("qortex_feedback", arguments)
                _judge(rep, what, expected, reply)
        except RpcError as exc:
            rep.internal.append(f"{job}: {exc}")
    rep.unexpected += agent.errors


def _judge(rep: LoadReport, what: str, expected: str, reply: ToolReply) -> None:
    rep.codes[reply.code] += 1
    if reply.code == "INTERNAL_ERROR":
        rep.internal.append(f"{what}: {reply.text}")
    elif reply.code == expected:
        rep.refused_as_expected += 1
    else:
        rep.refused_otherwise.append(f"{what}: expected {expected}, got {reply.code} "
                                     f"{reply.text[:80]}")


async def test_sixteen_clients_get_exact_totals_and_every_invalid_call_refused(
    tmp_path: Path,
) -> None:
    distinct, dups, invalid = report.tier(1000, 10_000), report.tier(200, 2000), \
        report.tier(100, 1000)
    rng = random.Random(seed_for("load"))
    state_dir = tmp_path / "state"
    server = ServerProcess(server_env(state_dir), tmp_path / "server.log",
                           transport="http")
    rep = LoadReport()
    ledger = Ledger()
    try:
        await server.start()
        async with HttpRpc(server.url) as setup:
            victim = await _setup_victim(setup, rng)
            await setup.call_tool("qortex_status", {})
        victim_before = read_store("sqlite", state_dir, VICTIM).checksum()
        corpus = victim.corpus()
        jobs = ["new"] * distinct + ["dup"] * dups + [f"bad{i}" for i in range(invalid)]
        rng.shuffle(jobs)
        rss_before = _rss_kib(server.pid)
        pool: list[Feedback] = []
        rpcs = [HttpRpc(server.url) for _ in range(CLIENTS)]
        try:
            with anyio.fail_after(900):
                async with anyio.create_task_group() as tg:
                    for i, rpc in enumerate(rpcs):
                        tg.start_soon(_load_client, rpc, jobs[i::CLIENTS], corpus, pool,
                                      ledger, rep, random.Random(rng.random()))
        finally:
            for rpc in rpcs:
                await rpc.aclose()
        rss_growth_mib = (_rss_kib(server.pid) - rss_before) / 1024
        code, _ = await server.signal_and_wait(signal.SIGTERM)
    finally:
        await server.aclose()
    a = audit(read_store("sqlite", state_dir, LEARNER), ledger)
    victim_after = read_store("sqlite", state_dir, VICTIM).checksum()
    report.record(
        "load", f"{CLIENTS} clients: {rep.applied}/{distinct} distinct applied (store counts "
        f"{a.applied}), {rep.duplicates}/{dups} duplicates reported duplicate, "
        f"{rep.refused_as_expected}/{invalid} invalid calls refused with their code "
        f"({len(corpus)} kinds), victim posterior "
        f"{'unchanged' if victim_after == victim_before else 'CHANGED'}, {len(rep.internal)} "
        f"internal errors, RSS growth {rss_growth_mib:.1f} MiB",
        codes=dict(rep.codes), rss_growth_mib=rss_growth_mib)
    assert rep.internal == []
    assert rep.refused_otherwise == []
    assert rep.unexpected == []
    assert rep.applied == a.applied == a.rows == distinct
    assert rep.duplicates == dups
    assert rep.refused_as_expected == invalid
    assert victim_after == victim_before
    assert a.ok
    assert code == 0
    assert rss_growth_mib < 50


async def test_the_same_selection_sent_by_eight_clients_at_once_is_applied_once(
    tmp_path: Path,
) -> None:
    rounds = report.tier(10, 50, cap=50 if report.SCALE <= 10 else None)
    rng = random.Random(seed_for("race"))
    state_dir = tmp_path / "state"
    server = ServerProcess(server_env(state_dir), tmp_path / "server.log",
                           transport="http")
    exactly_once = 0
    outcomes: Counter[str] = Counter()
    try:
        await server.start()
        rpcs = [HttpRpc(server.url) for _ in range(8)]
        try:
            for rpc in rpcs:
                await rpc.initialize()
            for _ in range(rounds):
                fb = await FeedbackClient(rpcs[0], Ledger(), rng).select()
                # Six clients repeat the answer, two send another one: one wins, the rest
                # are duplicates (same answer) or conflicts (the other answer).
                answers = [fb] * 6 + [Feedback(fb.selection_id, fb.arm, 1.0 - fb.reward)] * 2
                go = anyio.Event()
                replies: list[ToolReply] = []

                async def send(rpc: HttpRpc, answer: Feedback,
                               go: anyio.Event = go, replies: list[ToolReply] = replies) -> None:
                    await go.wait()
                    replies.append(await rpc.call_tool("qortex_feedback", answer.arguments()))

                with anyio.fail_after(60):
                    async with anyio.create_task_group() as tg:
                        for rpc, answer in zip(rpcs, answers, strict=True):
                            tg.start_soon(send, rpc, answer)
                        await anyio.sleep(0.05)
                        go.set()
                statuses = [r.data["arms"][0]["status"] if r.ok else r.code for r in replies]
                outcomes.update(statuses)
                rows = read_store("sqlite", state_dir, LEARNER).answers.get(fb.key, [])
                exactly_once += statuses.count("applied") == 1 and len(rows) == 1 and \
                    set(statuses) <= {"applied", "duplicate", "SELECTION_CONFLICT"}
        finally:
            for rpc in rpcs:
                await rpc.aclose()
    finally:
        await server.aclose()
    report.record("same-selection race",
                  f"{exactly_once}/{rounds} rounds of 8 concurrent feedbacks with one selection "
                  f"id applied exactly once ({dict(outcomes)})")
    assert exactly_once == rounds
