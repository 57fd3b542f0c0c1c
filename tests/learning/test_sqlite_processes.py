"""Two processes writing one SQLite file: nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path
from typing import Any

from qortex_mcp.learning import ArmOutcome, Learner, LearnerConfig, SqliteLearningStore
from qortex_mcp.learning.replay import replay_events
from qortex_mcp.learning.tokens import SelectionSigner

ROOT = Path(__file__).resolve().parents[2]


async def _feedback_count(db: Path, learner: str) -> int:
    async with SqliteLearningStore(db) as store:
        return sum(r.n for r in await store.evidence(learner) if r.ctx == "")


async def audit(db: Path) -> tuple[int, bool, str]:
    """Feedback count, replay agreement and integrity of the shared file."""
    async with SqliteLearningStore(db) as store:
        rows = await store.evidence("two")
        applied = sum(r.n for r in rows if r.ctx == "")
        replay_ok = replay_events("two", await store.events("two"), rows, None).ok
        return applied, replay_ok, await store.integrity_check()


def test_two_processes_on_one_file_lose_and_double_count_nothing(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    per_process, shared = 600, 200
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.learning.sqlite_worker", str(db), str(lo),
             str(lo + per_process), str(shared)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        for lo in (0, per_process)
    ]
    done = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in done]
    outs = [json.loads(out) for out, _ in done]
    assert [o["errors"] for o in outs] == [[], []]  # no "database is locked" reached a caller
    assert sum(o["applied"] for o in outs) == 2 * per_process + shared
    assert sum(o["duplicate"] for o in outs) == shared
    assert asyncio.run(audit(db)) == (2 * per_process + shared, True, "ok")


def _open_and_write(db: str, barrier: Any) -> None:
    """Open the store the moment every process is ready, then write at once."""

    async def run() -> None:
        store = SqliteLearningStore(Path(db))
        barrier.wait(timeout=60)
        async with await Learner.create(LearnerConfig(name="open"), store,
                                        signer=SelectionSigner([b"t" * 32])) as learner:
            await asyncio.gather(*(learner.observe(ArmOutcome(f"a{i % 3}", reward=1.0))
                                   for i in range(40)))
        await store.close()

    asyncio.run(run())


def test_processes_opening_a_new_file_while_others_write_all_succeed(tmp_path: Path) -> None:
    """Switching a fresh file to WAL answers BUSY at once (no busy handler) while another
    process holds a lock on it; opening must wait for it like any other writer."""
    ctx = multiprocessing.get_context("spawn")
    for round_ in range(10):
        db = str(tmp_path / f"fresh{round_}.db")
        barrier = ctx.Barrier(2)
        procs = [ctx.Process(target=_open_and_write, args=(db, barrier))
                 for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0, 0], f"round {round_}"
        assert asyncio.run(_feedback_count(Path(db), "open")) == 80
