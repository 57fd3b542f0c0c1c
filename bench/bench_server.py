"""Benchmarks of the MCP server: stdio round trips, cold start, HTTP feedback throughput.

    python bench/bench_server.py [all | roundtrip breakdown coldstart http] [--quick | --smoke]
                                 [--json FILE] [--strict] [--tmpdir DIR]

The reference is a no-op tool on the same server, in the same run: ``bench/serve_with_noop.py``
runs ``qortex-mcp``'s own entry point plus bench-only tools that do no work (``noop``, and
no-ops answering with a fixed select- or feedback-shaped result; see its docstring).
Parts (``all`` runs every part; the figures in bench/RESULTS.md come from it):

* ``roundtrip``: ``mcp.Client`` over stdio (the SDK's stdio client spawning the server,
  protocol negotiated as the SDK client does by default), one call at a time, six cases
  interleaved in blocks whose order flips every round: ``noop`` (the reference); ``noop``
  carrying the same 100 candidates as the select (moving the payload); a no-op answering
  with a fixed select-shaped result (what the SDK and its client charge for such an answer
  when nothing is learned); ``qortex_select`` with K = 100 candidates; the same pair for
  feedback; ``qortex_feedback`` quoting a fresh selection each time (the select that makes
  it is not timed) on SQLite with synchronous=FULL in a temp state dir on disk. p50 / p90,
  ratios to the no-op's p50 (targets: select <= 1.3x, feedback <= 1.5x), the per-round
  ratio, the ratio to the same-shaped no-op answer (what the qortex layer itself adds),
  the time spent inside the tool boundary (the server's ``tool_call`` log events), and CPU
  per call of the server process and of the client process. The store must then hold
  exactly the acknowledged feedbacks.
* ``breakdown``: where a call's time goes, step by step, in this process (no transport):
  in-memory ``mcp.Client(server)`` round trips of the same tools; the tool boundary's strict
  argument check; the SDK's own argument validation and output re-validation; the output
  model and compact text; the log event; the client's output-schema validation;
  ``Learner.select`` / ``verify_selection`` / ``batch_observe``; and a plain sqlite3 durable
  commit as the floor of a durable feedback on this disk.
* ``coldstart``: spawn to first answer, median over runs, three variants interleaved: the
  installed ``qortex-mcp`` console script on an existing state dir and on a new one (first
  call ``qortex_select`` with 100 candidates), and, as the floor, a bare SDK ``MCPServer``
  with one no-op tool. Target: under 1 s. Then the breakdown: interpreter start, import
  time (``python -X importtime``), opening the registry and building the server.
* ``http``: ``serve --transport http --port 0`` on 127.0.0.1 (the same launcher), 16
  concurrent ``mcp.Client`` sessions each looping select then feedback for a fixed time,
  vs one session; no-op calls with 16 and 1 sessions as the transport's ceiling. Phases
  alternate, order flipping each round. Acknowledged feedbacks per second, p50 / p99
  latency, CPU per feedback of the server and of the client process.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
from common import Case, interleave, round_ratio, table, verdict
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

PARTS = ("all", "roundtrip", "breakdown", "coldstart", "http")

# Targets from issue 3.
SELECT_MAX_RATIO = 1.3
FEEDBACK_MAX_RATIO = 1.5
COLD_START_MAX_S = 1.0

K = 100
CANDIDATES = [f"variant-{i:03d}" for i in range(K)]
LEARNER = "bench"
NOOP = "noop"
NOOP_SELECT = "noop_select_answer"
NOOP_FEEDBACK = "noop_feedback_answer"
SELECT = "qortex_select"
FEEDBACK = "qortex_feedback"
STATUS = "qortex_status"
TIMEOUT_S = 60.0

BENCH = Path(__file__).resolve().parent
LAUNCHER = BENCH / "serve_with_noop.py"
SCRIPT = Path(sys.executable).with_name("qortex-mcp")
if not SCRIPT.exists():  # pragma: no cover - a venv without the script is a broken install
    found = shutil.which("qortex-mcp")
    if found is None:
        raise SystemExit("bench: the qortex-mcp console script is not installed (pip install -e .)")
    SCRIPT = Path(found)

# The floor for the cold start: the SDK alone, one no-op tool, served over stdio.
BARE_SERVER = """
from mcp.server.mcpserver import MCPServer
server = MCPServer("bare")
@server.tool()
async def noop() -> dict:
    return {}
server.run()
"""


class Sizes:
    """How much of everything to do, per mode."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        smoke, quick = mode == "smoke", mode == "quick"
        self.rt_warmup = 3 if smoke else 50 if quick else 200
        self.rt_block = 3 if smoke else 10 if quick else 20
        self.rt_rounds = 2 if smoke else 1000
        self.rt_budget_s = 0.0 if smoke else 8.0 if quick else 45.0
        self.bd_block = 5 if smoke else 100 if quick else 200
        self.bd_rounds = 2 if smoke else 6 if quick else 15
        self.cold_runs = 1 if smoke else 4 if quick else 10
        self.import_runs = 0 if smoke else 2 if quick else 5  # 0: no import breakdown
        self.http_clients = 4 if smoke else 16
        self.http_phase_s = 0.2 if smoke else 1.5 if quick else 4.0
        self.http_rounds = 1 if smoke else 1 if quick else 3


# --- helpers --------------------------------------------------------------------------------


def server_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """A minimal, explicit environment for a server subprocess (as a desktop host gives)."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(state_dir.parent),
           "QORTEX_STATE_DIR": str(state_dir), "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def call_ok(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Call a tool that must succeed; its structured content."""
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {text_of(result)}")
    return result.structured_content or {}


def feedback_args(selection: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Feedback on a selection's chosen arm: accepted with probability 0.4."""
    outcome = "accepted" if rng.random() < 0.4 else "rejected"
    return {"learner": LEARNER, "selection_id": selection["selection_id"],
            "outcomes": {selection["selected"][0]["id"]: outcome}}


SELECT_ARGS = {"learner": LEARNER, "candidates": CANDIDATES}


async def select_then_feedback_args(client: Client, rng: random.Random) -> dict[str, Any]:
    return feedback_args(await call_ok(client, SELECT, SELECT_ARGS), rng)


async def feedback_ok(client: Client, arguments: dict[str, Any]) -> None:
    out = await call_ok(client, FEEDBACK, arguments)
    if out.get("applied") != 1:
        raise RuntimeError(f"feedback not applied: {out}")


async def stored_feedback(client: Client) -> int:
    """The learner's feedback count as the store reports it (``qortex_status``)."""
    status = await call_ok(client, STATUS, {})
    return sum(s["feedback"] for s in status["learners"] if s["name"] == LEARNER)


_LOG_FIELD = re.compile(r"(\w+)=('[^']*'|\S+)")


def tool_latencies(log: Path) -> dict[str, list[float]]:
    """Per tool, the ``latency_ms`` of every ``tool_call`` event the server logged."""
    out: dict[str, list[float]] = {}
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if "event='tool_call'" not in line:
            continue
        fields = {k: v.strip("'") for k, v in _LOG_FIELD.findall(line)}
        out.setdefault(fields.get("tool", "?"), []).append(float(fields["latency_ms"]))
    return out


def pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))] if s else float("nan")


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICKS


def child_pid(marker: str) -> int:
    """The pid of this process's child whose command line contains ``marker`` (0: none)."""
    me = str(os.getpid())
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text(encoding="ascii")
            cmdline = (entry / "cmdline").read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] == me and marker in cmdline:
            return int(entry.name)
    return 0


@dataclass
class Metered(Case):
    """A ``Case`` that also charges to itself the CPU time the server process and this
    (client) process spend during its blocks (its untimed ``prep`` included)."""

    pid: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    calls: int = 0

    async def block(self, n: int) -> None:
        s0, c0 = cpu_seconds(self.pid), time.process_time()
        await super().block(n)
        self.server_cpu_s += cpu_seconds(self.pid) - s0
        self.client_cpu_s += time.process_time() - c0
        self.calls += n


# --- roundtrip ------------------------------------------------------------------------------


async def part_roundtrip(sz: Sizes, tmp: Path) -> dict[str, Any]:
    state = tmp / "roundtrip" / "state"
    state.mkdir(parents=True)
    log = tmp / "roundtrip" / "server.log"
    params = StdioServerParameters(command=sys.executable, args=[str(LAUNCHER)],
                                   env=server_env(state), cwd=str(tmp))
    rng = random.Random(11)
    acked = 0
    with log.open("w", encoding="utf-8") as errlog:
        # The SDK's stdio client, given the StdioServerParameters, with the server's stderr
        # going to a file as a desktop host's does (not to this terminal).
        async with Client(stdio_client(params, errlog=errlog),
                          read_timeout_seconds=TIMEOUT_S) as client:
            protocol = client.protocol_version
            await client.list_tools()
            pid = child_pid(LAUNCHER.name)

            async def noop() -> None:
                await call_ok(client, NOOP, {})

            async def noop_payload() -> None:
                await call_ok(client, NOOP, {"candidates": CANDIDATES})

            async def select_floor() -> None:
                await call_ok(client, NOOP_SELECT, SELECT_ARGS)

            async def feedback_floor(arguments: dict[str, Any]) -> None:
                await call_ok(client, NOOP_FEEDBACK, arguments)

            async def select() -> None:
                await call_ok(client, SELECT, SELECT_ARGS)

            async def prep_feedback() -> dict[str, Any]:
                return await select_then_feedback_args(client, rng)

            async def feedback(arguments: dict[str, Any]) -> None:
                nonlocal acked
                await feedback_ok(client, arguments)
                acked += 1

            cases = {
                "noop": Metered(noop, pid=pid),
                "noop + 100 candidates": Metered(noop_payload, pid=pid),
                "select-shaped answer, no work": Metered(select_floor, pid=pid),
                "select": Metered(select, pid=pid),
                "feedback-shaped answer, no work": Metered(feedback_floor, prep=prep_feedback,
                                                           pid=pid),
                "feedback": Metered(feedback, prep=prep_feedback, pid=pid),
            }
            for _ in range(sz.rt_warmup):
                for case in cases.values():
                    arg = None if case.prep is None else await case.prep()
                    await (case.fn() if arg is None else case.fn(arg))
            warm_acked = acked
            await interleave(cases, block=sz.rt_block, rounds=sz.rt_rounds,
                             budget_s=sz.rt_budget_s, min_rounds=2)
            in_store = await stored_feedback(client)
    server_ms = tool_latencies(log)
    ref = cases["noop"]
    sel = cases["select"]
    floors = {"select": cases["select-shaped answer, no work"],
              "feedback": cases["feedback-shaped answer, no work"]}
    res: dict[str, Any] = {"protocol": protocol, "K": K, "acked": acked,
                           "feedback_in_store": in_store, "warmup_calls": sz.rt_warmup,
                           "timed_feedbacks": acked - warm_acked, "cases": {}}
    for name, case in cases.items():
        tool = {"select": SELECT, "feedback": FEEDBACK}.get(name)
        inside = server_ms.get(tool or "", [])
        prepped = case.prep is not None  # its blocks also ran the select making its id
        floor = floors.get(name)
        res["cases"][name] = {
            "p50_us": case.p50_us, "p90_us": case.p90_us, "n": len(case.samples),
            "ratio": case.p50_us / ref.p50_us, "round_ratio": round_ratio(case, ref),
            "server_p50_us": statistics.median(inside) * 1e3 if inside else None,
            "floor_ratio": None if floor is None else case.p50_us / floor.p50_us,
            # CPU per timed call; a prepped block's selects are taken off at select's rate.
            "server_cpu_us": (case.server_cpu_s - prepped * sel.server_cpu_s
                              / sel.calls * case.calls) / case.calls * 1e6,
            "client_cpu_us": (case.client_cpu_s - prepped * sel.client_cpu_s
                              / sel.calls * case.calls) / case.calls * 1e6,
        }
    return res


def print_roundtrip(res: dict[str, Any]) -> list[str]:
    targets = {"select": SELECT_MAX_RATIO, "feedback": FEEDBACK_MAX_RATIO}
    print(f"\n### Round trip over stdio (mcp.Client, protocol {res['protocol']}), K = {res['K']}"
          "\n")
    rows = []
    for name, v in res["cases"].items():
        limit = targets.get(name)
        mark = f" {verdict(v['ratio'], limit)} (<= {limit}x)" if limit else ""
        inside = "-" if v["server_p50_us"] is None else f"{v['server_p50_us']:.0f}"
        floor = "-" if v["floor_ratio"] is None else f"{v['floor_ratio']:.2f}x"
        rows.append([name, f"{v['p50_us']:.0f}", f"{v['p90_us']:.0f}",
                     f"{v['ratio']:.2f}x{mark}", f"{v['round_ratio']:.2f}x", floor, inside,
                     f"{v['server_cpu_us']:.0f}", f"{v['client_cpu_us']:.0f}", v["n"]])
    print(table(["call", "p50 us", "p90 us", "p50 / no-op p50", "per-round ratio",
                 "p50 / same-shaped answer p50", "inside the tool boundary, p50 us",
                 "server CPU us per call", "client CPU us per call", "calls"], rows))
    print(f"\nThe store held {res['feedback_in_store']:,} feedbacks for "
          f"{res['acked']:,} acknowledged (warm-up included): "
          + ("exact." if res["feedback_in_store"] == res["acked"] else "MISMATCH."))
    return [f"roundtrip {n}" for n, limit in targets.items()
            if res["cases"][n]["ratio"] > limit] + (
        ["roundtrip store count"] if res["feedback_in_store"] != res["acked"] else [])


# --- breakdown ------------------------------------------------------------------------------


async def part_breakdown(sz: Sizes, tmp: Path) -> dict[str, Any]:
    import logging

    import serve_with_noop
    from jsonschema import exceptions as jsonschema_exceptions  # type: ignore[import-untyped]

    from qortex_mcp.config import Settings
    from qortex_mcp.learning import ArmOutcome
    from qortex_mcp.logging import configure_logging
    from qortex_mcp.runtime import close_registry, open_registry
    from qortex_mcp.schemas import SelectOutput
    from qortex_mcp.tools.base import reply
    from qortex_mcp.tools.boundary import arguments_model
    from qortex_mcp.tools.boundary import log as tool_log

    state = tmp / "breakdown" / "state"
    state.mkdir(parents=True)
    saved_stderr = sys.stderr
    log_file = (tmp / "breakdown" / "server.log").open("w", encoding="utf-8")
    sys.stderr = log_file  # the server's log goes to a file, as in the stdio part
    configure_logging("info")
    logging.getLogger("mcp.server.mcpserver").setLevel(logging.WARNING)
    settings = Settings.from_env({"QORTEX_STATE_DIR": str(state)})
    registry = await open_registry(settings)
    rng = random.Random(5)
    try:
        server = serve_with_noop.build_server_with_noop(settings, registry=registry)
        select_tool = server._tool_manager.get_tool(SELECT)  # the SDK's view of the tool
        strict = arguments_model(SELECT, select_tool.fn)
        learner = await registry.get(LEARNER)
        raw = sqlite3.connect(tmp / "breakdown" / "raw.db", isolation_level=None)
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=FULL")
        raw.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")

        async with Client(server, read_timeout_seconds=TIMEOUT_S) as client:
            await client.list_tools()
            session = client.session
            sample_select = await client.call_tool(SELECT, SELECT_ARGS)
            sample_noop = await client.call_tool(NOOP, {})
            result = await learner.select(list(CANDIDATES), None, 1, None)
            built = reply(SelectOutput.model_validate(result))
            token = result.selection_id

            def fresh_ids() -> list[str]:
                # What the tool hands the learner: new strings decoded from JSON each call.
                return [f"variant-{i:03d}" for i in range(K)]

            async def learner_select(ids: list[str]) -> None:
                await learner.select(ids, None, 1, None)

            async def prep_observe() -> ArmOutcome:
                sel = await learner.select(CANDIDATES, None, 1, None)
                return ArmOutcome(sel.selected[0].id, outcome="accepted",
                                  selection_id=sel.selection_id)

            async def observe(outcome: ArmOutcome) -> None:
                await learner.batch_observe([outcome])

            async def prep_feedback() -> dict[str, Any]:
                return await select_then_feedback_args(client, rng)

            async def client_feedback(arguments: dict[str, Any]) -> None:
                await feedback_ok(client, arguments)

            def raw_commit(counter: list[int] = [0]) -> None:  # noqa: B006 - a counter
                counter[0] += 1
                raw.execute("BEGIN IMMEDIATE")
                raw.execute("INSERT INTO t VALUES (?, ?)", (counter[0], "x" * 40))
                raw.execute("COMMIT")

            def validate_output(name: str, res: Any) -> Callable[[], None]:
                schema = session._tool_output_schemas[name]
                if schema is None:
                    raise RuntimeError(f"{name} has no output schema")
                validator = session._output_schema_validator(name, schema)

                def run() -> None:
                    if jsonschema_exceptions.best_match(
                            validator.iter_errors(res.structured_content)) is not None:
                        raise RuntimeError("output does not match its schema")
                return run

            def log_event() -> None:
                tool_log.info("tool_call", tool=SELECT, learner=LEARNER, latency_ms=0.5,
                              code="OK")

            cases: dict[str, Case] = {
                "in-memory round trip: noop": Case(lambda: client.call_tool(NOOP, {})),
                "in-memory round trip: noop + 100 candidates": Case(
                    lambda: client.call_tool(NOOP, {"candidates": CANDIDATES})),
                "in-memory round trip: qortex_select": Case(
                    lambda: client.call_tool(SELECT, SELECT_ARGS)),
                "in-memory round trip: qortex_feedback": Case(client_feedback,
                                                             prep=prep_feedback),
                "tool boundary: strict argument check (select)": Case(
                    lambda: strict.model_validate(SELECT_ARGS)),
                "SDK: argument validation (select)": Case(
                    lambda: select_tool.fn_metadata.validate_arguments(SELECT_ARGS)),
                "Learner.select, K = 100, ids decoded afresh": Case(learner_select,
                                                                   prep=fresh_ids),
                "output: SelectOutput + compact text (reply)": Case(
                    lambda: reply(SelectOutput.model_validate(result))),
                "SDK: output re-validation (select)": Case(
                    lambda: select_tool.fn_metadata.convert_result(built)),
                "log: one tool_call event (stderr to a file)": Case(log_event),
                "client: output-schema check, select result": Case(
                    validate_output(SELECT, sample_select)),
                "client: output-schema check, noop result": Case(
                    validate_output(NOOP, sample_noop)),
                "Learner.verify_selection (twice per feedback)": Case(
                    lambda: learner.verify_selection(token)),
                "Learner.batch_observe, one feedback, SQLite FULL": Case(observe,
                                                                        prep=prep_observe),
                "reference: sqlite3 BEGIN IMMEDIATE / INSERT / COMMIT, WAL, FULL": Case(
                    raw_commit),
            }
            await interleave(cases, block=sz.bd_block, rounds=sz.bd_rounds, budget_s=0.0,
                             min_rounds=sz.bd_rounds)
        raw.close()
    finally:
        await close_registry(registry)
        sys.stderr = saved_stderr
        log_file.close()
        configure_logging("warning")
    return {"token_chars": len(token), "steps": {
        name: {"p50_us": c.p50_us, "p90_us": c.p90_us, "n": len(c.samples)}
        for name, c in cases.items()}}


def print_breakdown(res: dict[str, Any]) -> None:
    print("\n### Where the time goes (in this process, no transport), p50 us\n")
    print(table(["step", "p50 us", "p90 us", "calls"],
                [[n, f"{v['p50_us']:.1f}", f"{v['p90_us']:.1f}", v["n"]]
                 for n, v in res["steps"].items()]))
    print(f"\nA K = {K} selection id is {res['token_chars']:,} characters (it signs every "
          "candidate offered): the select answer carries it twice (text and structured "
          "content) and the feedback request once.")


# --- cold start -----------------------------------------------------------------------------


async def cold_once(params: StdioServerParameters, errlog: Any, tool: str,
                    arguments: dict[str, Any]) -> dict[str, float]:
    t0 = time.perf_counter()
    async with Client(stdio_client(params, errlog=errlog),
                      read_timeout_seconds=TIMEOUT_S) as client:
        t1 = time.perf_counter()
        await call_ok(client, tool, arguments)
        t2 = time.perf_counter()
    t3 = time.perf_counter()  # stdin closed, the server exited (the SDK waits for it)
    return {"handshake_s": t1 - t0, "first_answer_s": t2 - t0, "close_s": t3 - t2}


_PHASES = """
import json, sys, time
t0 = time.perf_counter()
import anyio
from qortex_mcp.config import Settings
from qortex_mcp.runtime import close_registry, open_registry
from qortex_mcp.server import build_server
from qortex_mcp.stdio import serve_stdio
t1 = time.perf_counter()
async def main():
    settings = Settings.from_env()
    t2 = time.perf_counter()
    registry = await open_registry(settings)
    t3 = time.perf_counter()
    build_server(settings, registry=registry)
    t4 = time.perf_counter()
    await close_registry(registry)
    return {"import_s": t1 - t0, "open_registry_s": t3 - t2, "build_server_s": t4 - t3}
print(json.dumps(anyio.run(main)))
"""


def _run_python(
    args: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=True)


def import_breakdown(env: dict[str, str], cwd: Path, runs: int) -> dict[str, Any]:
    """Interpreter start, ``-X importtime`` of what ``qortex-mcp`` loads to serve stdio,
    and the in-process phases (imports, open the registry, build the server)."""
    wall: dict[str, list[float]] = {"python -c pass": [], "imports (qortex-mcp stdio)": []}
    stmt = ("import qortex_mcp.cli, qortex_mcp.commands, qortex_mcp.server, "
            "qortex_mcp.stdio, qortex_mcp.http_server")
    for _ in range(runs):
        for name, code in (("python -c pass", "pass"), ("imports (qortex-mcp stdio)", stmt)):
            t0 = time.perf_counter()
            _run_python(["-c", code], env, cwd)
            wall[name].append(time.perf_counter() - t0)
    per_module: dict[str, list[float]] = {}
    phases: dict[str, list[float]] = {}
    for _ in range(runs):
        done = _run_python(["-X", "importtime", "-c", stmt], env, cwd)
        for line in done.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
            if m and len(m.group(3)) <= 4:  # top-level imports and two levels below
                key = f"{'  ' * (len(m.group(3)) // 2)}{m.group(4)}"
                per_module.setdefault(key, []).append(int(m.group(2)) / 1e6)
        out = json.loads(_run_python(["-c", _PHASES], env, cwd).stdout)
        for k, v in out.items():
            phases.setdefault(k, []).append(v)
    heavy = {k: statistics.median(v) for k, v in per_module.items()
             if statistics.median(v) >= 0.010}
    return {"wall_s": {k: statistics.median(v) for k, v in wall.items()},
            "importtime_s": heavy,
            "phases_s": {k: statistics.median(v) for k, v in phases.items()}}


async def part_coldstart(sz: Sizes, tmp: Path) -> dict[str, Any]:
    root = tmp / "coldstart"
    root.mkdir()
    existing = root / "existing" / "state"
    existing.mkdir(parents=True)
    select = {"candidates": CANDIDATES}
    variants: dict[str, Callable[[int], tuple[StdioServerParameters, str, dict[str, Any]]]] = {
        "bare SDK MCPServer, one no-op tool (floor)": lambda i: (StdioServerParameters(
            command=sys.executable, args=["-c", BARE_SERVER], env=server_env(existing),
            cwd=str(root)), "noop", {}),
        "qortex-mcp, existing state dir": lambda i: (StdioServerParameters(
            command=str(SCRIPT), env=server_env(existing), cwd=str(root)), SELECT, select),
        "qortex-mcp, new state dir": lambda i: (StdioServerParameters(
            command=str(SCRIPT), env=server_env(root / f"new-{i}" / "state"),
            cwd=str(root)), SELECT, select),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    with (root / "servers.log").open("w", encoding="utf-8") as errlog:
        params, tool, args = variants["qortex-mcp, existing state dir"](0)
        await cold_once(params, errlog, tool, args)  # creates the state; disk caches warm
        names = list(variants)
        for i in range(sz.cold_runs):
            for name in names if i % 2 == 0 else names[::-1]:
                params, tool, args = variants[name](i)
                runs[name].append(await cold_once(params, errlog, tool, args))
    res: dict[str, Any] = {"runs": sz.cold_runs, "variants": {}}
    for name, rs in runs.items():
        res["variants"][name] = {
            k: statistics.median(r[k] for r in rs) for k in rs[0]} | {
            "first_answer_all_s": [round(r["first_answer_s"], 3) for r in rs]}
    if sz.import_runs:
        res["imports"] = import_breakdown(server_env(existing), root, sz.import_runs)
    return res


def print_coldstart(res: dict[str, Any]) -> list[str]:
    print(f"\n### Cold start over stdio: spawn to first answer, median of {res['runs']} runs\n")
    rows = []
    for name, v in res["variants"].items():
        mark = "" if "floor" in name else f" {verdict(v['first_answer_s'], COLD_START_MAX_S)}"
        rows.append([name, f"{v['handshake_s'] * 1e3:.0f}",
                     f"{v['first_answer_s'] * 1e3:.0f}{mark}", f"{v['close_s'] * 1e3:.0f}",
                     ", ".join(f"{x * 1e3:.0f}" for x in v["first_answer_all_s"])])
    print(table(["server", "handshake done, ms", "first answer, ms",
                 "stdin closed to exit, ms", "every run, ms"], rows))
    imp = res.get("imports")
    if imp is None:
        return failed_cold(res)
    print("\nBreakdown (medians, ms):\n")
    rows = [[k, f"{v * 1e3:.0f}"] for k, v in imp["wall_s"].items()]
    rows += [[f"in process: {k.removesuffix('_s').replace('_', ' ')}", f"{v * 1e3:.0f}"]
             for k, v in imp["phases_s"].items()]
    print(table(["step", "ms"], rows))
    print("\n`python -X importtime` of what serving stdio imports (cumulative, >= 10 ms; a "
          "module's time is charged to whoever imports it first):\n")
    print(table(["module", "ms"], [[f"`{k}`", f"{v * 1e3:.0f}"]
                                   for k, v in imp["importtime_s"].items()]))
    return failed_cold(res)


def failed_cold(res: dict[str, Any]) -> list[str]:
    return [f"cold start {n}" for n, v in res["variants"].items()
            if "floor" not in n and v["first_answer_s"] > COLD_START_MAX_S]


# --- http -----------------------------------------------------------------------------------


def start_http(state: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The launcher serving HTTP on a free port of 127.0.0.1; (process, url). Blocking:
    nothing else runs while the server starts."""
    errlog = log.open("w", encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, str(LAUNCHER), "serve", "--transport", "http", "--host", "127.0.0.1",
         "--port", "0"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errlog,
        env=server_env(state), cwd=str(state.parent))
    errlog.close()
    deadline = time.perf_counter() + TIMEOUT_S
    while time.perf_counter() < deadline:
        found = re.search(r"event='http_listening'.*?url='([^']+)'|url='([^']+)'.*?"
                          r"event='http_listening'", log.read_text(encoding="utf-8"))
        if found:
            return proc, found.group(1) or found.group(2)
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait(10)
    raise RuntimeError(f"the HTTP server did not start:\n{log.read_text(encoding='utf-8')}")


async def http_phase(clients: Sequence[Client], kind: str, seconds: float, pid: int,
                     rng: random.Random) -> dict[str, Any]:
    """Every client loops (select then feedback, or noop) until ``seconds`` have passed."""
    lat: list[float] = []
    sel_lat: list[float] = []
    clock = time.perf_counter
    end = clock() + seconds

    async def loop_worker(client: Client) -> int:
        n = 0
        while clock() < end:
            t0 = clock()
            selection = await call_ok(client, SELECT, SELECT_ARGS)
            t1 = clock()
            await feedback_ok(client, feedback_args(selection, rng))
            lat.append(clock() - t1)
            sel_lat.append(t1 - t0)
            n += 1
        return n

    async def noop_worker(client: Client) -> int:
        n = 0
        while clock() < end:
            t0 = clock()
            await call_ok(client, NOOP, {})
            lat.append(clock() - t0)
            n += 1
        return n

    worker: Callable[[Client], Awaitable[int]] = loop_worker if kind == "loop" else noop_worker
    cpu_server, cpu_client, start = cpu_seconds(pid), time.process_time(), clock()
    counts = await asyncio.gather(*(worker(c) for c in clients))
    elapsed = clock() - start
    n = sum(counts)
    return {"count": n, "elapsed_s": elapsed, "per_s": n / elapsed,
            "p50_ms": statistics.median(lat) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3,
            "select_p50_ms": statistics.median(sel_lat) * 1e3 if sel_lat else None,
            "server_cpu_ms_per_call": (cpu_seconds(pid) - cpu_server) / n * 1e3,
            "client_cpu_ms_per_call": (time.process_time() - cpu_client) / n * 1e3}


async def part_http(sz: Sizes, tmp: Path) -> dict[str, Any]:
    root = tmp / "http"
    state = root / "state"
    state.mkdir(parents=True)
    log = root / "server.log"
    proc, url = start_http(state, log)
    rng = random.Random(17)
    phases: dict[str, list[dict[str, Any]]] = {}
    try:
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(Client(url, read_timeout_seconds=TIMEOUT_S))
                       for _ in range(sz.http_clients)]
            protocol = clients[0].protocol_version
            warm = 0
            for c in clients:  # every session warmed: first calls list tools, build caches
                for _ in range(3):
                    await feedback_ok(c, await select_then_feedback_args(c, rng))
                    await call_ok(c, NOOP, {})
                    warm += 1
            n = sz.http_clients
            plan = [(f"select + feedback, {n} clients", "loop", clients),
                    ("select + feedback, 1 client", "loop", clients[:1]),
                    (f"noop, {n} clients", "noop", clients),
                    ("noop, 1 client", "noop", clients[:1])]
            for r in range(sz.http_rounds):
                for name, kind, group in plan if r % 2 == 0 else plan[::-1]:
                    phases.setdefault(name, []).append(
                        await http_phase(group, kind, sz.http_phase_s, proc.pid, rng))
            acked = warm + sum(p["count"] for name, ps in phases.items() if "select" in name
                               for p in ps)
            in_store = await stored_feedback(clients[0])
    finally:
        proc.send_signal(signal.SIGTERM)
        t0 = time.perf_counter()
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(5)
        stop_s = time.perf_counter() - t0
    res: dict[str, Any] = {"protocol": protocol, "clients": sz.http_clients,
                           "phase_s": sz.http_phase_s, "rounds": sz.http_rounds,
                           "acked": acked, "feedback_in_store": in_store, "exit_code": code,
                           "stop_s": stop_s, "phases": {}}
    for name, ps in phases.items():
        merged = {k: statistics.median(p[k] for p in ps) for k in ps[0]
                  if ps[0][k] is not None}
        merged["per_s_all"] = [round(p["per_s"]) for p in ps]
        res["phases"][name] = merged
    return res


def print_http(res: dict[str, Any]) -> list[str]:
    print(f"\n### Streamable HTTP on 127.0.0.1 (protocol {res['protocol']}): "
          f"{res['rounds']} round(s) of {res['phase_s']:g} s per phase\n")
    rows = []
    for name, v in res["phases"].items():
        unit = "feedbacks" if "select" in name else "calls"
        select_p50 = v.get("select_p50_ms")
        rows.append([name, f"{v['per_s']:,.0f} {unit}/s",
                     ", ".join(f"{x:,}" for x in v["per_s_all"]),
                     f"{v['p50_ms']:.2f}", f"{v['p99_ms']:.2f}",
                     "-" if select_p50 is None else f"{select_p50:.2f}",
                     f"{v['server_cpu_ms_per_call']:.2f}", f"{v['client_cpu_ms_per_call']:.2f}"])
    print(table(["phase", "median rate", "every round", "p50 ms", "p99 ms",
                 "select p50 ms", "server CPU ms per item", "client CPU ms per item"], rows))
    exact = res["feedback_in_store"] == res["acked"]
    print(f"\nLatency columns are per feedback (select + feedback phases) or per call (noop). "
          f"The store held {res['feedback_in_store']:,} feedbacks for {res['acked']:,} "
          f"acknowledged: {'exact' if exact else 'MISMATCH'}. SIGTERM to exit: "
          f"{res['stop_s'] * 1e3:.0f} ms, exit code {res['exit_code']}.")
    return [] if exact and res["exit_code"] == 0 else ["http store count or exit"]


# --- main -----------------------------------------------------------------------------------


async def main() -> int:
    ap = common.base_parser(__doc__.splitlines()[0], PARTS)
    ap.add_argument("--tmpdir", default=None,
                    help="where the state dirs go (default: the system temp dir; must be a "
                         "real disk for the durable-feedback figures, not tmpfs)")
    args = ap.parse_args()
    sz = Sizes("smoke" if args.smoke else "quick" if args.quick else "full")
    parts = common.chosen_parts(args, PARTS)
    notes = common.machine_notes()
    results: dict[str, Any] = {"notes": notes, "mode": sz.mode, "argv": sys.argv}
    with tempfile.TemporaryDirectory(prefix="qortex-bench-server-", dir=args.tmpdir) as d:
        tmp = Path(d)
        notes["tmp_fs"] = common.filesystem_of(tmp)
        if "tmpfs" in notes["tmp_fs"]:
            print(f"WARNING: {tmp} is on {notes['tmp_fs']}: feedback figures are not disk "
                  "figures; pass --tmpdir on a real disk", file=sys.stderr)
        for p in parts:
            t0 = time.perf_counter()
            results[p] = await globals()[f"part_{p}"](sz, tmp)
            results[p + "_wall_s"] = round(time.perf_counter() - t0, 1)
    notes["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    common.print_notes(notes, sys.argv)
    failed: list[str] = []
    if "roundtrip" in results:
        failed += print_roundtrip(results["roundtrip"])
    if "breakdown" in results:
        print_breakdown(results["breakdown"])
    if "coldstart" in results:
        failed += print_coldstart(results["coldstart"])
    if "http" in results:
        failed += print_http(results["http"])
    print("\nTargets missed: " + (", ".join(failed) if failed else "none")
          + (" (smoke mode: sizes too small to mean anything)" if sz.mode == "smoke" else ""))
    common.write_json(args.json, results)
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    common.run(main)
