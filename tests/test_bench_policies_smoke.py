"""bench/bench_policies.py still runs: its ``--quick`` mode (every part at small sizes, well
under a minute), so the policy benchmark and its numpy references never rot. Figures from
it mean nothing; only that it runs and prints every table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_bench_policies_runs_in_quick_mode() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "bench_policies.py"), "--quick"],
        cwd=BENCH.parent, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, f"bench_policies.py --quick failed:\n{done.stderr[-3000:]}"
    out = done.stdout
    for heading in ("### Regret K10", "### Regret K100", "### Lure-and-switch adversary",
                    "### select(k=1) p50", "### First-slot propensity"):
        assert heading in out, f"missing {heading!r} in:\n{out[-3000:]}"
    for name in ("thompson", "kl_ucb", "exp3", "gaussian_thompson", "top_two_thompson"):
        assert f"| {name} |" in out
    assert "targets missed:" in out
