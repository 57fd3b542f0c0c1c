"""``kill -9`` of a serving process at random moments: nothing acknowledged is ever lost,
nothing is counted twice, and the store passes its integrity check after every crash.

Each cycle starts a server, lets the clients' retries of unanswered feedback through (same
selection id, arm and reward), lets the agent loop run, and kills the server with SIGKILL
at a random moment once a random number of feedbacks were acknowledged (every fourth cycle
while a ``select`` is in flight). After the last kill one more restart takes the last
retries; then the store is audited against everything the clients were told.

CI tier (QORTEX_FAULT_SCALE=1), about 40 s: SQLite over stdio (FULL and NORMAL) and over
HTTP with 4 clients, 3 cycles of 50-70 acknowledged feedbacks (2 for NORMAL); the JSON
store 3 cycles of 10-20; the ack-before-commit mutation 3 cycles. QORTEX_FAULT_SCALE=10:
20 cycles and >= 10,000 acknowledged per SQLite run, >= 2,000 for JSON.
"""

from __future__ import annotations

import random
import signal
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import anyio
import anyio.lowlevel
import pytest

from tests.reliability import report
from tests.reliability.loop import LEARNER, Feedback, FeedbackClient, Rpc, seed_for
from tests.reliability.oracle import Audit, Ledger, audit, read_store, temp_files
from tests.reliability.servers import (
    FAULTY_SERVER,
    HttpRpc,
    ServerProcess,
    StdioRpc,
    server_env,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

Transport = Literal["stdio", "http"]


@dataclass
class CrashRun:
    transport: Transport
    store: str
    cycles: int
    per_cycle: tuple[int, int]
    clients: int = 1
    faults: str = ""
    synchronous: str = "FULL"


@dataclass
class CrashReport:
    audit: Audit | None = None
    kills: int = 0
    integrity_ok: int = 0
    lost_per_cycle: list[int] = field(default_factory=list)
    orphans_per_kill: list[int] = field(default_factory=list)
    first_call_s: list[float] = field(default_factory=list)
    temp_before_restart: list[int] = field(default_factory=list)
    temp_after_restart: list[int] = field(default_factory=list)
    mid_select_kills: int = 0
    retried: int = 0
    errors: list[str] = field(default_factory=list)


async def _serve_cycle(server: ServerProcess, run: CrashRun, ledger: Ledger,
                       pending: list[Feedback], rng: random.Random, kill_after: int | None,
                       mid_select: bool, rep: CrashReport, state_dir: Path) -> list[Feedback]:
    """One server lifetime: retries, then the loop, then a kill (or a clean stop)."""
    spawned = time.monotonic()
    await server.start()
    async with _connections(server, run) as rpcs:
        clients = [FeedbackClient(rpc, ledger, random.Random(rng.random())) for rpc in rpcs]
        rep.retried += len(pending)
        # Retries first, spread over the clients, as agents would resend after reconnecting.
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i, client in enumerate(clients):
                    tg.start_soon(client.retry, pending[i::len(clients)])
        pending.clear()
        firsts = [c.first_ok_at for c in clients if c.first_ok_at is not None]
        if run.store == "json":
            rep.temp_after_restart.append(temp_files(state_dir))
        if kill_after is None:
            if not firsts:  # nothing to retry: prove the server answers
                await clients[0].select()
                firsts = [clients[0].first_ok_at or time.monotonic()]
            rep.first_call_s.append(min(firsts) - spawned)
            for client in clients:
                rep.errors += client.errors
            return [o for c in clients for o in c.orphans]
        start_acks = sum(c.acked for c in clients)
        armed, killed = anyio.Event(), anyio.Event()

        def watch(_: FeedbackClient) -> None:
            # Armed once enough feedback was acknowledged (and, on mid-select cycles,
            # while a select is on the wire).
            if sum(c.acked for c in clients) - start_acks >= kill_after and (
                not mid_select or any(c.phase == "select" for c in clients)
            ):
                armed.set()

        for client in clients:
            client.on_event = watch

        async def killer() -> None:
            await armed.wait()
            if mid_select:
                rep.mid_select_kills += 1
            await anyio.sleep(rng.uniform(0, 0.001 if mid_select else 0.003))
            await server.kill()
            killed.set()

        with anyio.fail_after(300):
            async with anyio.create_task_group() as tg:
                tg.start_soon(killer)
                for client in clients:
                    tg.start_soon(client.run, killed.is_set)
        firsts = [c.first_ok_at for c in clients if c.first_ok_at is not None]
        rep.first_call_s.append(min(firsts) - spawned)
        for client in clients:
            rep.errors += client.errors
        return [o for c in clients for o in c.orphans]


@asynccontextmanager
async def _connections(server: ServerProcess, run: CrashRun) -> AsyncIterator[list[Rpc]]:
    """One stdio connection, or ``run.clients`` HTTP sessions."""
    async with AsyncExitStack() as stack:
        if run.transport == "stdio":
            yield [await stack.enter_async_context(StdioRpc.connect(server))]
        else:
            yield [await stack.enter_async_context(HttpRpc(server.url))
                   for _ in range(run.clients)]


async def crash_cycles(tmp_path: Path, run: CrashRun, name: str) -> CrashReport:
    rng = random.Random(seed_for(name))
    state_dir = tmp_path / "state"
    env = server_env(state_dir, store=run.store, extra={
        "QORTEX_SQLITE_SYNCHRONOUS": run.synchronous,
        **({"QORTEX_TEST_FAULTS": run.faults} if run.faults else {}),
    })
    ledger = Ledger()
    rep = CrashReport()
    pending: list[Feedback] = []
    port = 0
    for cycle in range(run.cycles + 1):
        last = cycle == run.cycles
        server = ServerProcess(env, tmp_path / "server.log", transport=run.transport, port=port,
                               argv=FAULTY_SERVER if run.faults else None)
        try:
            orphans = await _serve_cycle(
                server, run, ledger, pending, rng,
                None if last else rng.randint(*run.per_cycle), cycle % 4 == 1, rep, state_dir)
            if last:
                # A clean stop: EOF for stdio, SIGTERM for HTTP.
                if run.transport == "stdio":
                    assert server.proc is not None
                    assert server.proc.stdin is not None
                    await server.proc.stdin.aclose()
                    await server.wait_exit(time.monotonic())
                else:
                    await server.signal_and_wait(signal.SIGTERM)
        finally:
            await server.aclose()
        port = server.port
        pending.extend(orphans)
        if last:
            break
        rep.kills += 1
        state = read_store(run.store, state_dir, LEARNER)
        rep.integrity_ok += state.integrity == "ok"
        now = audit(state, ledger)
        rep.lost_per_cycle.append(now.lost)
        rep.orphans_per_kill.append(now.unacknowledged)
        if run.store == "json":
            rep.temp_before_restart.append(temp_files(state_dir))
    assert not pending, "the final restart must take every retry"
    rep.audit = audit(read_store(run.store, state_dir, LEARNER), ledger)
    return rep


def _line(rep: CrashReport) -> str:
    a = rep.audit
    assert a is not None
    firsts = rep.first_call_s
    line = (f"{a.acknowledged} acknowledged, {a.lost} lost, {a.double_counted} double-counted, "
            f"{rep.integrity_ok}/{rep.kills} integrity ok; orphans before retry "
            f"{sum(rep.orphans_per_kill)} (max {max(rep.orphans_per_kill, default=0)}/kill), "
            f"{a.unacknowledged} after {rep.retried} retries; {rep.mid_select_kills} kills "
            f"mid-select; restart to "
            f"first successful call median {statistics.median(firsts):.2f} s, "
            f"max {max(firsts):.2f} s")
    if rep.temp_before_restart:
        line += (f"; temp files before restart max {max(rep.temp_before_restart)}, after "
                 f"{max(rep.temp_after_restart, default=0)}")
    return line


def _assert_clean(rep: CrashReport, run: CrashRun) -> None:
    a = rep.audit
    assert a is not None
    assert rep.errors == []
    assert a.lost == 0, "acknowledged feedback was lost"
    assert a.double_counted == 0
    assert a.lost_updates == 0
    assert a.sum_mismatches == 0
    assert a.unacknowledged == 0, "every orphan must be acknowledged after the retries"
    assert a.integrity == "ok"
    assert rep.integrity_ok == rep.kills == run.cycles
    assert rep.lost_per_cycle == [0] * run.cycles
    assert a.rows == a.applied == a.acknowledged
    # A sequential stdio client has at most one feedback in flight when the server dies.
    assert max(rep.orphans_per_kill) <= run.clients
    assert max(rep.first_call_s) < 30  # generous; the figure itself is in the summary


_CYCLES = report.tier(3, 20, cap=20)
_SQLITE_ACKS = (report.tier(50, 500), report.tier(70, 700))


@pytest.mark.parametrize(("transport", "clients", "synchronous"), [
    ("stdio", 1, "FULL"), ("stdio", 1, "NORMAL"), ("http", 4, "FULL"),
])
async def test_kill_9_of_a_sqlite_server_loses_and_double_counts_nothing(
    tmp_path: Path, transport: Transport, clients: int, synchronous: str,
) -> None:
    cycles = _CYCLES if synchronous == "FULL" else report.tier(2, 20, cap=20)
    run = CrashRun(transport, "sqlite", cycles, _SQLITE_ACKS, clients,
                   synchronous=synchronous)
    name = f"crash {transport} sqlite {synchronous}"
    rep = await crash_cycles(tmp_path, run, name)
    report.record(name, _line(rep), kills=rep.kills, first_call_s=rep.first_call_s)
    _assert_clean(rep, run)


async def test_kill_9_of_a_json_store_server_loses_and_double_counts_nothing(
    tmp_path: Path,
) -> None:
    run = CrashRun("stdio", "json", _CYCLES, (report.tier(10, 100), report.tier(20, 200)))
    rep = await crash_cycles(tmp_path, run, "crash stdio json")
    report.record("crash stdio json", _line(rep), kills=rep.kills)
    _assert_clean(rep, run)
    assert max(rep.temp_before_restart) <= 1
    assert max(rep.temp_after_restart) == 0


async def test_the_crash_test_catches_a_store_that_acknowledges_before_commit(
    tmp_path: Path,
) -> None:
    """Proof the crash test has teeth: with the ``ack_before_commit`` test fault the
    same harness must report acknowledged feedback as lost."""
    run = CrashRun("stdio", "sqlite", 3, (10, 20), faults="ack_before_commit")
    rep = await crash_cycles(tmp_path, run, "crash mutation ack_before_commit")
    a = rep.audit
    assert a is not None
    report.record("crash mutation ack_before_commit",
                  f"caught: {a.lost} acknowledged feedback(s) lost over {rep.kills} kills "
                  f"({a.acknowledged} acknowledged); integrity {rep.integrity_ok}/{rep.kills} ok",
                  lost=a.lost)
    assert a.lost > 0, "a store that acknowledges before COMMIT must lose acknowledged feedback"
