"""Two processes writing one SQLite file: nothing lost, nothing counted twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qortex_mcp.learning import SqliteLearningStore
from qortex_mcp.learning.replay import replay_events

pytestmark = pytest.mark.anyio


async def test_two_processes_on_one_file_lose_and_double_count_nothing(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    per_process, shared = 600, 200
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.learning.sqlite_worker", str(db), str(lo),
             str(lo + per_process), str(shared)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        for lo in (0, per_process)
    ]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [o["errors"] for o in outs] == [[], []]  # no "database is locked" reached a caller
    assert sum(o["applied"] for o in outs) == 2 * per_process + shared
    assert sum(o["duplicate"] for o in outs) == shared
    async with SqliteLearningStore(db) as store:
        rows = {(r.ctx, r.arm): r for r in await store.evidence("two")}
        assert sum(r.n for (ctx, _), r in rows.items() if ctx == "") == 2 * per_process + shared
        assert replay_events("two", await store.events("two"), list(rows.values()), None).ok
        assert await store.integrity_check() == "ok"
