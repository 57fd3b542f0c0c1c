"""Two processes writing one SQLite file: nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from qortex_mcp.learning import SqliteLearningStore
from qortex_mcp.learning.replay import replay_events

ROOT = Path(__file__).resolve().parents[2]


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
