"""Export, replay and load at scale: `qortex-mcp export`, `Learner.replay()`, `Learner.create`.

Issue 11's rows, each next to its floor in the same run:

- export: `qortex-mcp export` of a SQLite store with N feedback events, as a process, against
  a plain `sqlite3` + `json.dumps` dump of the same events (the floor), alternating; wall time
  and peak memory (max RSS) of each process. Flat memory means the same peak at every N.
- replay: `Learner.replay()` (read the whole log, fold it, compare with the stored rows), next
  to the bare `sqlite3` read of the same rows.
- load: a fresh process opening a learner whose store holds R (context, arm) evidence rows:
  seconds in `Learner.create` and the memory it adds (max RSS after minus before).

Stores are built with `store.apply_many` (setup, not timed). Usage:

    python bench/bench_export.py            # N = 10k, 100k, 1M; R = 100k (about 3 minutes)
    python bench/bench_export.py --quick    # N = 10k, 100k; R = 10k
    python bench/bench_export.py export     # one part
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from qortex_mcp.learning import Learner, LearnerConfig
from qortex_mcp.learning.stores.sqlite import SqliteLearningStore
from qortex_mcp.learning.types import FeedbackRow

PARTS = ("all", "export", "replay", "load")
LEARNER = "bench"
EXPORT_MAX = 2.0  # issue 11: export <= 2x the plain dump
REPLAY_MAX_S = 2.0  # issue 11: replay of 1M events <= 2 s
LOAD_MAX_S, LOAD_MAX_MB = 0.25, 30.0  # issue 11: load of 100k rows

REFERENCE_DUMP = textwrap.dedent("""
    import json, sqlite3, sys
    con = sqlite3.connect(sys.argv[1])
    cols = ("seq", "kind", "key", "arm", "ctx", "reward", "weight", "outcome", "at", "factor")
    with open(sys.argv[2], "w", encoding="utf-8") as out:
        for row in con.execute("SELECT seq, kind, key, arm, ctx, reward, weight, outcome, at, "
                               "factor FROM events ORDER BY seq"):
            out.write(json.dumps(dict(zip(cols, row))) + "\\n")
""")

# Runs a script or module and reports its own peak memory on stderr. VmHWM, not ru_maxrss:
# Linux carries a process's peak across exec, so ru_maxrss would count the forked bench.
PEAK_WRAPPER = textwrap.dedent("""
    import atexit, runpy, sys

    def peak() -> None:
        with open("/proc/self/status", encoding="ascii") as fh:
            kb = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
        sys.stderr.write(f"\\nPEAK_RSS_KB {kb}\\n")

    atexit.register(peak)
    how, target = sys.argv[1], sys.argv[2]
    sys.argv = [target, *sys.argv[3:]]
    if how == "module":
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(target, run_name="__main__")
""")

LOAD_PROBE = textwrap.dedent("""
    import asyncio, resource, sys, time
    from pathlib import Path
    from qortex_mcp.learning import Learner, LearnerConfig
    from qortex_mcp.learning.stores.sqlite import SqliteLearningStore

    async def main() -> None:
        store = SqliteLearningStore(Path(sys.argv[1]))
        await store.initialize()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        learner = await Learner.create(LearnerConfig(name=sys.argv[2]), store=store)
        took = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(took, (after - before) / 1024)
        await learner.close()
        await store.close()

    asyncio.run(main())
""")


def sizes(mode: str) -> tuple[list[int], int, int]:
    """(event counts, (context, arm) rows for load, rounds)."""
    if mode == "smoke":
        return [2_000], 500, 1
    if mode == "quick":
        return [10_000, 100_000], 10_000, 3
    return [10_000, 100_000, 1_000_000], 100_000, 3


async def build(path: Path, events: int, arms: int, contexts: int) -> None:
    """A SQLite store with ``events`` feedbacks over ``arms`` arms (and ``contexts``)."""
    store = SqliteLearningStore(path, synchronous="NORMAL")
    await store.initialize()
    rnd = random.Random(1)
    try:
        for start in range(0, events, 5_000):
            rows = []
            for i in range(start, min(events, start + 5_000)):
                c = rnd.randrange(contexts) if contexts else None
                rows.append(FeedbackRow(
                    f"k{i}", f"arm-{rnd.randrange(arms)}", "" if c is None else f"c{c:015d}",
                    None if c is None else f'{{"user":"u{c}"}}', float(rnd.random() < 0.4),
                    1.0, None, 1.7e9 + i))
            await store.apply_many(LEARNER, [rows], None)
    finally:
        await store.close()


def timed_process(wrapper: Path, how: str, target: str, *args: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process running ``target``."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(wrapper), how, target, *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False)
    took = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"{target} failed: {done.stderr[-2000:]}")
    peak = [line for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB ")]
    return took, int(peak[-1].split()[1]) / 1024


def count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


async def part_export(tmp: Path, mode: str) -> dict[str, Any]:
    counts, _, rounds = sizes(mode)
    out: dict[str, Any] = {}
    for n in counts:
        state = tmp / f"export-{n}"
        state.mkdir()
        db = state / "qortex.db"
        await build(db, n, 1_000, 0)
        ref_script = tmp / "reference_dump.py"
        ref_script.write_text(REFERENCE_DUMP, encoding="utf-8")
        wrapper = tmp / "peak.py"
        wrapper.write_text(PEAK_WRAPPER, encoding="utf-8")
        ours: list[tuple[float, float]] = []
        ref: list[tuple[float, float]] = []
        for r in range(rounds):
            order = ("ours", "ref") if r % 2 == 0 else ("ref", "ours")
            for who in order:
                if who == "ref":
                    ref.append(timed_process(wrapper, "path", str(ref_script), str(db),
                                             str(tmp / "ref.jsonl")))
                else:
                    ours.append(timed_process(
                        wrapper, "module", "qortex_mcp", "export", "--store", "sqlite",
                        "--state-dir", str(state), "-o", str(tmp / "ours.jsonl")))
        ours_s = statistics.median(x[0] for x in ours)
        ref_s = statistics.median(x[0] for x in ref)
        out[str(n)] = {"events": n, "export_s": ours_s, "reference_s": ref_s,
                       "ratio": ours_s / ref_s,
                       "export_rss_mb": max(x[1] for x in ours),
                       "reference_rss_mb": max(x[1] for x in ref),
                       "lines": count_lines(tmp / "ours.jsonl")}
        db.unlink()
    return out


def bare_read(db: Path) -> float:
    import sqlite3

    t0 = time.perf_counter()
    con = sqlite3.connect(db)
    after, n = 0, 0
    while True:  # the same keyset pages the store reads
        rows = con.execute("SELECT seq, kind, key, arm, ctx, reward, weight, outcome, at, factor "
                           "FROM events WHERE learner = ? AND seq > ? ORDER BY seq LIMIT 10000",
                           (LEARNER, after)).fetchall()
        n += len(rows)
        if len(rows) < 10_000:
            break
        after = rows[-1][0]
    con.close()
    return time.perf_counter() - t0


async def part_replay(tmp: Path, mode: str) -> dict[str, Any]:
    counts, _, rounds = sizes(mode)
    out: dict[str, Any] = {}
    for n in counts:
        db = tmp / f"replay-{n}.db"
        await build(db, n, 1_000, 10)
        store = SqliteLearningStore(db)
        ours, bare = [], []
        try:
            async with await Learner.create(LearnerConfig(name=LEARNER), store) as learner:
                for _ in range(rounds):
                    bare.append(bare_read(db))
                    t0 = time.perf_counter()
                    report = await learner.replay()
                    ours.append(time.perf_counter() - t0)
                    if not report.ok or report.events != n:
                        raise RuntimeError(f"replay of {n} events: {report}")
        finally:
            await store.close()
        out[str(n)] = {"events": n, "replay_s": statistics.median(ours),
                       "bare_read_s": statistics.median(bare)}
        db.unlink()
    return out


async def part_load(tmp: Path, mode: str) -> dict[str, Any]:
    _, rows, rounds = sizes(mode)
    contexts = rows // 1_000 or 1
    db = tmp / "load.db"
    # enough events that nearly every (context, arm) cell has evidence
    await build(db, rows * 4, min(rows, 1_000), contexts)
    con_rows = await _evidence_rows(db)
    probe = tmp / "load_probe.py"
    probe.write_text(LOAD_PROBE, encoding="utf-8")
    runs = [load_once(probe, db) for _ in range(rounds)]
    return {"rows": con_rows, "load_s": statistics.median(r[0] for r in runs),
            "added_mb": statistics.median(r[1] for r in runs)}


def load_once(probe: Path, db: Path) -> tuple[float, float]:
    done = subprocess.run([sys.executable, str(probe), str(db), LEARNER],
                          capture_output=True, text=True, check=True)
    took, mb = done.stdout.split()
    return float(took), float(mb)


async def _evidence_rows(db: Path) -> int:
    store = SqliteLearningStore(db)
    await store.initialize()
    try:
        return len(await store.evidence(LEARNER))
    finally:
        await store.close()


async def main() -> int:
    ap = common.base_parser(__doc__.splitlines()[0], PARTS)
    ap.add_argument("--tmpdir", default=None, help="where the SQLite files go")
    args = ap.parse_args()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    parts = common.chosen_parts(args, PARTS)
    notes = common.machine_notes()
    results: dict[str, Any] = {"notes": notes, "mode": mode, "argv": sys.argv}
    with tempfile.TemporaryDirectory(prefix="qortex-bench-export-", dir=args.tmpdir) as d:
        for p in parts:
            results[p] = await globals()[f"part_{p}"](Path(d), mode)
    common.print_notes(notes, sys.argv)
    failed = []
    if "export" in results:
        print("\n### export: `qortex-mcp export` vs plain sqlite3 + json.dumps (median s)\n")
        print(common.table(
            ["events", "reference dump", "qortex-mcp export", "ratio (target at 1M: <= 2x)",
             "peak RSS ref / ours MB"],
            [[f"{r['events']:,}", f"{r['reference_s']:.2f}", f"{r['export_s']:.2f}",
              f"{common.fmt_ratio(r['ratio'])} "
              + (common.verdict(r["ratio"], EXPORT_MAX) if r["events"] >= 1_000_000 else ""),
              f"{r['reference_rss_mb']:.0f} / {r['export_rss_mb']:.0f}"]
             for r in results["export"].values()]))
        failed += [f"export {k}" for k, r in results["export"].items()
                   if r["events"] >= 1_000_000 and r["ratio"] > EXPORT_MAX]
    if "replay" in results:
        print("\n### replay: `Learner.replay()` (median s; bare sqlite3 read of the log beside)\n")
        print(common.table(["events", "bare read", "replay", "verdict (<= 2 s at 1M)"],
                           [[f"{r['events']:,}", f"{r['bare_read_s']:.2f}", f"{r['replay_s']:.2f}",
                             common.verdict(r["replay_s"], REPLAY_MAX_S)
                             if r["events"] >= 1_000_000 else "-"]
                            for r in results["replay"].values()]))
        failed += [f"replay {k}" for k, r in results["replay"].items()
                   if r["events"] >= 1_000_000 and r["replay_s"] > REPLAY_MAX_S]
    if "load" in results:
        r = results["load"]
        print("\n### load: `Learner.create` over a store's (context, arm) rows (median)\n")
        print(common.table(["rows", "seconds", "memory added MB", "targets (100k rows)"],
                           [[f"{r['rows']:,}", f"{r['load_s']:.3f}", f"{r['added_mb']:.1f}",
                             f"<= {LOAD_MAX_S} s, <= {LOAD_MAX_MB:.0f} MB"]]))
        if r["rows"] >= 100_000 and (r["load_s"] > LOAD_MAX_S or r["added_mb"] > LOAD_MAX_MB):
            failed.append("load")
    common.write_json(args.json, results)
    if failed:
        print(f"\nmissed: {', '.join(failed)}")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    common.run(main)
