"""Shared helpers of the bench scripts: the numpy reference, interleaved timing, figures.

Every ``bench/bench_*.py`` follows one command-line convention, which
``tests/test_bench_smoke.py`` relies on::

    python bench/bench_<name>.py [PART ...] [--quick | --smoke] [--json FILE]

* ``--quick``: a smoke run of the real benchmark (under a minute).
* ``--smoke``: tiny sizes, a few seconds; the test suite runs every script this way so the
  scripts never rot. Figures from it mean nothing.
* Exit status 0 when the benchmark ran; a missed target is printed as ``MISS``, not an
  error (the machine is shared and noisy). ``--strict`` turns a missed target into exit 1.

Timings are medians of one-call-at-a-time measurements. The reference and the project are
measured in alternating blocks (the order flips every round) within one process, so a noisy
neighbour slows both alike; ratios are project / reference.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
ANCHORS_ENV = "QORTEX_ANCHORS"
DEFAULT_ANCHORS = REPO_ROOT.parent / "shared" / "bench" / "anchors.py"
BUNDLED_REFERENCE = REPO_ROOT / "bench" / "reference.py"
reference_used: str | None = None
"""The path of the reference ``load_anchors`` loaded (also in ``machine_notes``)."""


def reference_path() -> Path:
    """Which numpy reference the scripts compare against.

    ``QORTEX_ANCHORS`` if set (it must exist); else the shared yardstick
    ``../shared/bench/anchors.py`` next to the checkout when it is there (side-by-side runs
    across projects use it); else the project's own ``bench/reference.py``, so a plain
    clone runs its benchmarks (and its tests) with nothing beside it.

    Raises:
        SystemExit: ``QORTEX_ANCHORS`` names a file that does not exist.
    """
    if chosen := os.environ.get(ANCHORS_ENV):
        path = Path(chosen)
        if not path.is_file():
            raise SystemExit(f"bench: {ANCHORS_ENV}={chosen} is not a file; unset it to use "
                             f"{DEFAULT_ANCHORS} when present, else {BUNDLED_REFERENCE}")
        return path
    return DEFAULT_ANCHORS if DEFAULT_ANCHORS.is_file() else BUNDLED_REFERENCE


def load_anchors() -> ModuleType:
    """Import the numpy reference (``RefTS``, ``make_problem``, ...) by path (see
    ``reference_path``) and say on stderr which one it is."""
    global reference_used
    path = reference_path()
    spec = importlib.util.spec_from_file_location("qortex_bench_anchors", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reference_used = str(path)
    print(f"bench: numpy reference: {path}", file=sys.stderr, flush=True)
    return module


def base_parser(description: str, parts: Sequence[str], default: str = "all") -> (
    argparse.ArgumentParser
):
    """The common command line: ``[PART ...] --quick --smoke --json FILE --strict``."""
    ap = argparse.ArgumentParser(description=description)

    def part(name: str) -> str:
        # (choices= with nargs="*" rejects an empty command line: Python bug 9625)
        if name not in parts:
            raise argparse.ArgumentTypeError(f"{name!r} is not one of {', '.join(parts)}")
        return name

    ap.add_argument("part", nargs="*", type=part, metavar="PART",
                    help=f"one or more of {', '.join(parts)} (default {default})")
    ap.set_defaults(default_part=default)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    size.add_argument("--smoke", action="store_true",
                      help="tiny sizes, a few seconds: only checks that the script runs")
    ap.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return ap


def chosen_parts(args: argparse.Namespace, parts: Sequence[str]) -> list[str]:
    """The parts to run, in ``parts`` order ("all" means every part after it)."""
    wanted = set(args.part or [args.default_part])
    return [p for p in parts if p != "all" and ("all" in wanted or p in wanted)]


# --- timing ---------------------------------------------------------------------------------

Call = Callable[[], Any]


@dataclass
class Case:
    """One thing to time: ``fn()`` (awaited when it returns an awaitable).

    ``prep`` (optional, may be async) runs before each call, outside the timed region, and
    its result is passed to ``fn`` (e.g. a freshly built candidate list).
    """

    fn: Callable[..., Any]
    prep: Callable[[], Any] | None = None
    samples: list[int] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)

    async def block(self, n: int) -> None:
        fn, prep, out = self.fn, self.prep, []
        clock = time.perf_counter_ns
        for _ in range(n):
            if prep is None:
                t0 = clock()
                res = fn()
                if inspect.isawaitable(res):
                    await res
            else:
                arg = prep()
                if inspect.isawaitable(arg):
                    arg = await arg
                t0 = clock()
                res = fn(arg)
                if inspect.isawaitable(res):
                    await res
            out.append(clock() - t0)
        self.samples.extend(out)
        self.round_medians.append(statistics.median(out) / 1000.0)

    @property
    def p50_us(self) -> float:
        return statistics.median(self.samples) / 1000.0

    @property
    def p90_us(self) -> float:
        s = sorted(self.samples)
        return s[int(len(s) * 0.9)] / 1000.0


async def interleave(
    cases: dict[str, Case], *, block: int, rounds: int, budget_s: float, min_rounds: int = 3
) -> None:
    """Time every case in blocks of ``block`` calls, round after round, flipping the order
    each round, until ``rounds`` rounds or ``budget_s`` seconds (at least ``min_rounds``).

    Between blocks the event loop gets a turn, so the learner's background tasks (selection
    flush, refresh) run as they would in a server, but never inside a timed call.
    """
    names = list(cases)
    end = time.perf_counter() + budget_s
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            await cases[name].block(block)
            await asyncio.sleep(0)
        if r + 1 >= min_rounds and time.perf_counter() > end:
            break


def ratio(x: float, ref: float) -> float:
    return x / ref if ref > 0 else float("nan")


def round_ratio(case: Case, ref: Case) -> float:
    """Median over rounds of (case median / reference median) within the same round: the
    noise-robust ratio (a slow patch of the machine hits both sides of one round)."""
    pairs = zip(case.round_medians, ref.round_medians, strict=False)
    return statistics.median(c / r for c, r in pairs if r > 0)


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}x"


def verdict(value: float, limit: float, higher_is_better: bool = False) -> str:
    ok = value >= limit if higher_is_better else value <= limit
    return "ok" if ok else "MISS"


# --- reporting ------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            models = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
    except OSError:  # not Linux
        models = []
    return models[0] if models else platform.processor() or "unknown"


def filesystem_of(path: Path) -> str:
    """The filesystem type (and device) that holds ``path``, from /proc/mounts."""
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            mounts = [line.split()[:3] for line in fh]
    except OSError:
        return "unknown"
    best = ("", "unknown", "")
    resolved = str(path.resolve())
    for dev, mnt, fstype in mounts:
        if (resolved == mnt or resolved.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(
            best[0]
        ):
            best = (mnt, fstype, dev)
    return f"{best[1]} ({best[2]} on {best[0]})"


def machine_notes() -> dict[str, Any]:
    import numpy as np

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return "?"
        return done.stdout.strip() or "?"

    notes = {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "commit": git("rev-parse", "--short", "HEAD"),
        "tree_dirty": git("status", "--porcelain", "--untracked-files=no") not in ("", "?"),
    }
    if reference_used is not None:  # the scripts that compare against the numpy reference
        notes["reference"] = reference_used
    return notes


def print_notes(notes: dict[str, Any], argv: Sequence[str]) -> None:
    print(f"\ncommand: python {' '.join(argv)}")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in notes.items()), flush=True)


def write_json(path: str | None, results: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")


def run(main: Callable[[], Awaitable[int]]) -> None:
    """Run an async bench ``main`` and exit with its status."""
    sys.exit(asyncio.run(main()))
