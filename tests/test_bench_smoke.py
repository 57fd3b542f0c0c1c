"""Every bench script still runs: each ``bench/bench_*.py`` in its ``--smoke`` mode (tiny
sizes, a few seconds), so the benchmarks never rot between the runs that produce figures.

The scripts compare against ``../shared/bench/anchors.py`` (next to the checkout); without
it they exit with a message saying so, and this test fails with that message.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_UNAVAILABLE

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(BENCH.glob("bench_*.py"))


def test_there_is_a_bench_script_for_the_learning_core() -> None:
    assert BENCH / "bench_core.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_the_bench_script_runs_in_smoke_mode(script: Path, tmp_path: Path) -> None:
    if "postgres" in script.stem and PG_UNAVAILABLE:
        pytest.skip(f"PostgreSQL unavailable: {PG_UNAVAILABLE}")
    env = {**os.environ, "QORTEX_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=BENCH.parent, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, f"{script.name} --smoke failed:\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"{script.name} --smoke printed no figures"
