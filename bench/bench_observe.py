"""Benchmarks of observing: the cost of metrics on qortex_select, /metrics scrapes, dashboard.

    python bench/bench_observe.py [all | cost scrape dashboard] [--quick | --smoke]
                                  [--json FILE] [--strict]

* ``cost``: three ``serve --transport http`` servers on 127.0.0.1 started the same way, one
  with metrics on (the default) and two with ``QORTEX_METRICS=0`` (the reference, and an
  A/A control showing how much two identical server processes differ on this machine),
  each driven by its own ``mcp.Client`` over HTTP; ``qortex_select`` with 20 candidates, in
  blocks alternating between the servers (the order flips every round). p50 of each, the
  ratio to the reference (target <= 1.03) and the per-round ratio. Then the same in one
  process over the in-memory transport (two servers, with and without the metrics
  observer: no process scheduling differs), and the time ``QortexMetrics.tool_call`` itself
  takes for a select answer (everything metrics add to a select) as a share of the round
  trip.
* ``scrape``: a SQLite store holding L learners x A arms (100 x 1,000 in the full run), each
  arm with feedback; ``QortexMetrics.render`` over its registry (what ``GET /metrics``
  answers: store gauges refreshed, then the text exposition), p50 (target <= 50 ms).
* ``dashboard``: the same store; the server time of the dashboard's data endpoints for one
  learner's page (arms page with estimates, intervals and probability of being best; the
  time series) and of the learners list, p50 (target <= 100 ms each).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
from common import Case, interleave, round_ratio, table, verdict
from mcp import Client

PARTS = ("all", "cost", "scrape", "dashboard")
COST_MAX_RATIO = 1.03
SCRAPE_MAX_MS = 50.0
DASHBOARD_MAX_MS = 100.0
CANDIDATES = [f"prompt-{i:02d}" for i in range(20)]
SCRIPT = Path(sys.executable).with_name("qortex-mcp")


@dataclass
class Sizes:
    mode: str

    @property
    def learners(self) -> int:
        return {"smoke": 3, "quick": 20}.get(self.mode, 100)

    @property
    def arms(self) -> int:
        return {"smoke": 20, "quick": 500}.get(self.mode, 1000)

    @property
    def rounds(self) -> int:
        return {"smoke": 2, "quick": 10}.get(self.mode, 40)

    @property
    def block(self) -> int:
        return {"smoke": 5, "quick": 50}.get(self.mode, 100)

    @property
    def repeats(self) -> int:
        return {"smoke": 3, "quick": 10}.get(self.mode, 30)


class _Server:
    """``qortex-mcp serve --transport http --port 0`` with its own state dir."""

    def __init__(self, state: Path, **env: str) -> None:
        full = {"PATH": os.environ.get("PATH", ""), "HOME": str(state.parent),
                "QORTEX_STATE_DIR": str(state), "QORTEX_LOG_LEVEL": "warning",
                "QORTEX_FEEDBACK_PER_MINUTE": "0", "PYTHONUNBUFFERED": "1", **env}
        self.proc = subprocess.Popen(
            [str(SCRIPT), "--log-level", "info", "serve", "--transport", "http", "--port", "0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=full, text=True)
        assert self.proc.stderr is not None
        self.url = ""
        for line in self.proc.stderr:
            if "http_listening" in line:
                self.url = line.split("url='", 1)[1].split("'", 1)[0]
                break
        if not self.url:
            raise SystemExit("the server did not start")
        # Keep draining stderr so the server never blocks on a full pipe.
        self._drain = asyncio.get_running_loop().run_in_executor(
            None, lambda: [None for _ in self.proc.stderr or ()])

    async def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        await self._drain


async def part_cost(sz: Sizes) -> dict[str, Any]:
    from qortex_mcp.observe.metrics import QortexMetrics

    with tempfile.TemporaryDirectory() as tmp:
        off = _Server(Path(tmp) / "off", QORTEX_METRICS="0")
        on = _Server(Path(tmp) / "on")
        # A second server with metrics off: how far two identical servers differ here (which
        # core the scheduler gives each process matters on a 2-core machine).
        off2 = _Server(Path(tmp) / "off2", QORTEX_METRICS="0")
        try:
            async with Client(on.url) as c_on, Client(off.url) as c_off, \
                    Client(off2.url) as c_off2:
                args = {"learner": "bench", "candidates": CANDIDATES}
                for c in (c_on, c_off, c_off2):  # warm up each
                    for _ in range(20):
                        await c.call_tool("qortex_select", args)
                cases = {"metrics off": Case(lambda: c_off.call_tool("qortex_select", args)),
                         "metrics on": Case(lambda: c_on.call_tool("qortex_select", args)),
                         "metrics off, second server": Case(
                             lambda: c_off2.call_tool("qortex_select", args))}
                await interleave(cases, block=sz.block, rounds=sz.rounds, budget_s=600)
        finally:
            for server in (on, off, off2):
                await server.stop()
    inproc = await _cost_in_process(sz)
    # What the metrics do per select, measured alone (the same answer each time).
    metrics = QortexMetrics()
    answer = {"learner": "bench", "strategy": "thompson", "selected": []}
    n = 20_000 if sz.mode != "smoke" else 200
    samples = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            metrics.tool_call("select", args, answer, "OK", 0.001)
        samples.append((time.perf_counter_ns() - t0) / n / 1000)
    off_p50, on_p50 = cases["metrics off"].p50_us, cases["metrics on"].p50_us
    aa = cases["metrics off, second server"]
    observer_us = statistics.median(samples)
    return {"off_p50_us": off_p50, "on_p50_us": on_p50, "ratio": on_p50 / off_p50,
            "round_ratio": round_ratio(cases["metrics on"], cases["metrics off"]),
            "off2_p50_us": aa.p50_us, "off2_ratio": aa.p50_us / off_p50,
            "off2_round_ratio": round_ratio(aa, cases["metrics off"]),
            "observer_us": observer_us, "observer_share": observer_us / off_p50,
            "calls_each": len(cases["metrics on"].samples), **inproc}


async def _cost_in_process(sz: Sizes) -> dict[str, Any]:
    """The same comparison in one process, one server, one in-memory client: the tool
    boundary's observer is switched before each call between the server's own (with the
    metrics) and the same without the metrics, so nothing else differs at all."""
    from qortex_mcp.config import Settings
    from qortex_mcp.observe.metrics import QortexMetrics
    from qortex_mcp.observe.resources import ResourceNotifier
    from qortex_mcp.runtime import open_registry
    from qortex_mcp.server import build_server_and_runtime
    from qortex_mcp.tools.boundary import Observers

    with tempfile.TemporaryDirectory() as tmp:
        metrics = QortexMetrics()
        settings = Settings.build(store="sqlite", state_dir=Path(tmp) / "state",
                                  sqlite_synchronous="NORMAL")
        registry = await open_registry(settings, wrap=metrics.timed_store)
        try:
            server, runtime = build_server_and_runtime(settings, registry=registry,
                                                       observer=metrics)
            boundary = runtime.boundary
            assert boundary is not None
            with_metrics = boundary.observer
            assert isinstance(with_metrics, Observers)
            without = Observers(*(o for o in with_metrics.observers
                                  if isinstance(o, ResourceNotifier)))

            def use(observer: Any) -> Any:
                def prep() -> None:
                    boundary.observer = observer
                return prep

            async with Client(server) as client:
                args = {"learner": "bench", "candidates": CANDIDATES}
                for _ in range(50):
                    await client.call_tool("qortex_select", args)
                again = Observers(*without.observers)  # the same as off: an A/A control
                cases = {
                    "off": Case(lambda _: client.call_tool("qortex_select", args), use(without)),
                    "on": Case(lambda _: client.call_tool("qortex_select", args),
                               use(with_metrics)),
                    "off again": Case(lambda _: client.call_tool("qortex_select", args),
                                      use(again))}
                await interleave(cases, block=sz.block, rounds=sz.rounds * 2, budget_s=300)
        finally:
            await registry.close()
    return {"mem_off_p50_us": cases["off"].p50_us, "mem_on_p50_us": cases["on"].p50_us,
            "mem_ratio": cases["on"].p50_us / cases["off"].p50_us,
            "mem_round_ratio": round_ratio(cases["on"], cases["off"]),
            "mem_aa_ratio": cases["off again"].p50_us / cases["off"].p50_us,
            "mem_aa_round_ratio": round_ratio(cases["off again"], cases["off"])}


async def _populated(tmp: Path, sz: Sizes) -> Any:
    """A registry over a SQLite store with L learners x A arms, every arm with feedback."""
    from qortex_mcp.config import Settings
    from qortex_mcp.learning import ArmOutcome
    from qortex_mcp.runtime import open_registry

    settings = Settings.build(store="sqlite", state_dir=tmp / "state",
                              sqlite_synchronous="NORMAL", feedback_per_minute=0,
                              feedback_per_arm_per_minute=0)
    registry = await open_registry(settings)
    for i in range(sz.learners):
        async with registry.use(f"learner-{i:03d}") as lrn:
            arms = [f"arm-{j:04d}" for j in range(sz.arms)]
            for _ in range(3):
                await lrn.select(arms[:50], k=5)
            await lrn.batch_observe([ArmOutcome(a, reward=((j * 7919 + i) % 100) / 100)
                                     for j, a in enumerate(arms)])
            await lrn.batch_observe([ArmOutcome(a, reward=(j % 3) / 2)
                                     for j, a in enumerate(arms[:100])])
    return registry


async def _p50_ms(fn: Any, repeats: int) -> float:
    await fn()  # warm
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(out)


async def part_scrape(sz: Sizes) -> dict[str, Any]:
    from qortex_mcp.observe.metrics import QortexMetrics

    with tempfile.TemporaryDirectory() as tmp:
        registry = await _populated(Path(tmp), sz)
        try:
            metrics = QortexMetrics()
            size = len(await metrics.render(registry))

            async def scrape() -> None:
                # What a scrape answers, then the background store read it started (not
                # timed: Prometheus does not wait for it), so every scrape starts one.
                await metrics.render(registry)

            scrapes = []
            for _ in range(sz.repeats):
                metrics._read_at = 0.0  # older than GAUGE_REFRESH_S: this scrape reads
                t0 = time.perf_counter()
                await scrape()
                scrapes.append((time.perf_counter() - t0) * 1000)
                await metrics.aclose()
            read = await _p50_ms(lambda: metrics.refresh(registry), sz.repeats)
            per_arm = QortexMetrics(per_arm=200)
            read_arm = await _p50_ms(lambda: per_arm.refresh(registry), max(3, sz.repeats // 5))
        finally:
            await registry.close()
    return {"learners": sz.learners, "arms": sz.arms, "p50_ms": statistics.median(scrapes),
            "bytes": size, "store_read_p50_ms": read, "per_arm_200_read_p50_ms": read_arm}


async def part_dashboard(sz: Sizes) -> dict[str, Any]:
    from qortex_mcp.observe.views import DashboardData

    with tempfile.TemporaryDirectory() as tmp:
        registry = await _populated(Path(tmp), sz)
        try:
            data = DashboardData(lambda: registry)
            name = "learner-000"
            out = {
                "learners_p50_ms": await _p50_ms(lambda: data.learners(0, 50), sz.repeats),
                "arms_p50_ms": await _p50_ms(lambda: data.arms(name, 0, 50), sz.repeats),
                "series_p50_ms": await _p50_ms(lambda: data.series(name), sz.repeats),
            }
        finally:
            await registry.close()
    return {"learners": sz.learners, "arms": sz.arms, **out}


async def main() -> int:
    from qortex_mcp.logging import configure_logging

    ap = common.base_parser(__doc__.splitlines()[0], PARTS)
    args = ap.parse_args()
    # As the servers run (warning level, plain lines): the SDK would otherwise install a
    # rich handler and log every in-process tool call at info, on the timed path.
    configure_logging("warning")
    sz = Sizes("smoke" if args.smoke else "quick" if args.quick else "full")
    notes = common.machine_notes()
    results: dict[str, Any] = {"notes": notes, "mode": sz.mode, "argv": sys.argv}
    for p in common.chosen_parts(args, PARTS):
        results[p] = await globals()[f"part_{p}"](sz)
    common.print_notes(notes, sys.argv)
    failed: list[str] = []
    if "cost" in results:
        r = results["cost"]
        print("\nqortex_select round trip over HTTP (20 candidates), metrics on vs off, "
              f"{r['calls_each']} calls each")
        print(table(["case", "p50 us", "ratio", "per-round ratio", "target"], [
            ["metrics off (reference)", f"{r['off_p50_us']:.0f}", "1.00x", "", ""],
            ["metrics on", f"{r['on_p50_us']:.0f}", f"{r['ratio']:.3f}x",
             f"{r['round_ratio']:.3f}x", "(within the A/A spread below)"],
            ["metrics off, second server (A/A: the noise floor)", f"{r['off2_p50_us']:.0f}",
             f"{r['off2_ratio']:.3f}x", f"{r['off2_round_ratio']:.3f}x", ""],
        ]))
        print(f"One server in this process, in-memory transport, observer switched per call: "
              f"off p50 {r['mem_off_p50_us']:.0f} us, on "
              f"{r['mem_on_p50_us']:.0f} us: {r['mem_ratio']:.3f}x (per round "
              f"{r['mem_round_ratio']:.3f}x); A/A (off vs off again): "
              f"{r['mem_aa_ratio']:.3f}x (per round {r['mem_aa_round_ratio']:.3f}x)")
        share = r["observer_us"] / r["mem_off_p50_us"]
        print(f"QortexMetrics.tool_call per select: {r['observer_us']:.2f} us = "
              f"{100 * r['observer_share']:.2f}% of the HTTP round trip, {100 * share:.2f}% of "
              f"the in-memory one (target: metrics add <= {100 * (COST_MAX_RATIO - 1):.0f}% "
              f"{verdict(1 + share, COST_MAX_RATIO)}; the round-trip ratios above resolve "
              "no better than their A/A controls)")
        if 1 + share > COST_MAX_RATIO:
            failed.append("cost")
    if "scrape" in results:
        r = results["scrape"]
        print(f"\nGET /metrics server time, {r['learners']} learners x {r['arms']} arms: "
              f"p50 {r['p50_ms']:.2f} ms ({r['bytes']} bytes; target <= {SCRAPE_MAX_MS} ms "
              f"{verdict(r['p50_ms'], SCRAPE_MAX_MS)}); the store read each scrape starts "
              f"in the background: p50 {r['store_read_p50_ms']:.1f} ms; with 200 per-arm "
              f"series {r['per_arm_200_read_p50_ms']:.1f} ms")
        if r["p50_ms"] > SCRAPE_MAX_MS:
            failed.append("scrape")
    if "dashboard" in results:
        r = results["dashboard"]
        print(f"\nDashboard data, server time, {r['learners']} learners x {r['arms']} arms")
        rows = [[k.removesuffix("_p50_ms"), f"{r[k]:.1f}",
                 f"<= {DASHBOARD_MAX_MS} {verdict(r[k], DASHBOARD_MAX_MS)}"]
                for k in ("learners_p50_ms", "arms_p50_ms", "series_p50_ms")]
        print(table(["endpoint", "p50 ms", "target"], rows))
        failed += [k for k in ("learners_p50_ms", "arms_p50_ms", "series_p50_ms")
                   if r[k] > DASHBOARD_MAX_MS]
    common.write_json(args.json, results)
    if failed:
        print("missed: " + ", ".join(failed))
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    common.run(main)
