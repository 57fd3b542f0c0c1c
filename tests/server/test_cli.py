"""The ``qortex-mcp`` commands: status, inspect, export, import, replay, and exit codes."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
from pathlib import Path

import anyio
import pytest

from qortex_mcp import __version__, cli
from qortex_mcp.config import Settings
from qortex_mcp.learning import ArmOutcome, Learner, LearnerConfig, SelectionSigner
from qortex_mcp.learning.stores.factory import configured_store
from tests.readonly import read_only_directory
from tests.server.support import SCRIPT, base_env


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A private state directory; logging left to pytest (the CLI would take it over)."""
    for name in ("QORTEX_STORE", "QORTEX_CONFIG", "QORTEX_TOOLS", "DATABASE_URL",
                 "QORTEX_SECRET", "QORTEX_HTTP_TOKEN", "QORTEX_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    state = tmp_path / "state"
    monkeypatch.setenv("QORTEX_STATE_DIR", str(state))
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)
    return state


def seed(state: Path, store: str = "sqlite") -> None:
    async def run() -> None:
        s = configured_store(Settings.build(store=store, state_dir=state))
        await s.initialize()
        try:
            cfg = LearnerConfig(name="prompts", seed=1)
            async with await Learner.create(cfg, s, signer=SelectionSigner.random()) as lrn:
                sel = await lrn.select(["concise", "detailed"], k=2, context={"task": "x"})
                await lrn.batch_observe([
                    ArmOutcome("detailed", "accepted", selection_id=sel.selection_id),
                    ArmOutcome("concise", "rejected", selection_id=sel.selection_id)])
                await lrn.observe(ArmOutcome("detailed", reward=1.0))
                await lrn.decay_arm("concise", 0.5)
        finally:
            await s.close()

    anyio.run(run)


def test_status_says_no_data_without_creating_anything(
    environment: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert f"location: {environment / 'qortex.db'}" in out
    assert "no data" in out
    assert not environment.exists()


def test_status_lists_learners_and_their_counts(
    environment: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    seed(environment)
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == ["store: sqlite", f"location: {environment / 'qortex.db'}",
                       "schema version: 2", "learners: 1"]
    assert out[4].split() == ["learner", "arms", "selections", "feedback", "last", "update"]
    assert out[5].split()[:4] == ["prompts", "2", "1", "3"]


def test_inspect_prints_a_table_of_posteriors(
    environment: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    seed(environment)
    assert cli.main(["inspect", "prompts"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "learner 'prompts': 2 arm(s), 3 feedback(s), context global"
    assert out[1].split() == ["arm", "mean", "95%", "CI", "pulls", "reward", "rate",
                              "selections"]
    assert out[2].split()[:2] == ["concise", "0.400"]  # Beta(1, 1.5): a rejection, halved
    assert out[3].split()[:2] == ["detailed", "0.750"]
    assert cli.main(["inspect", "prompts", "--context", '{"task": "x"}', "--limit", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith('context {"task": "x"}')
    assert len(out) == 4
    assert out[3] == "(1 more arm(s); raise --limit)"


def test_decisions_lists_the_log_page_by_page(
    environment: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    seed(environment)
    assert cli.main(["decisions", "prompts"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "learner 'prompts': decisions 1 to 1"
    assert out[1].split()[:4] == ["seq", "time", "kind", "context"]
    row = out[2]
    assert row.split()[0] == "1"
    assert " select " in row
    assert "concise (" in row
    assert "detailed (" in row
    assert row.split()[-2:] == ["2", LearnerConfig(name="prompts", seed=1).policy_version()]
    assert cli.main(["decisions", "prompts", "--after", "1"]) == 0
    assert capsys.readouterr().out.strip() == "learner 'prompts': no decisions after 1"
    assert cli.main(["decisions", "nobody"]) == 1
    assert capsys.readouterr().err.startswith("qortex-mcp: UNKNOWN_LEARNER: ")


def test_inspect_of_an_unknown_learner_exits_1(
    environment: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    seed(environment)
    assert cli.main(["inspect", "nobody"]) == 1
    assert capsys.readouterr().err.startswith("qortex-mcp: UNKNOWN_LEARNER: ")


def test_export_then_import_moves_everything_and_twice_changes_nothing(
    environment: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    seed(environment)
    dump = tmp_path / "backup.jsonl"
    assert cli.main(["export", "--output", str(dump)]) == 0
    records = [json.loads(x) for x in dump.read_text().splitlines()]
    assert [r["type"] for r in records][:2] == ["header", "learner"]
    assert sum(r["type"] == "event" for r in records) == 4
    capsys.readouterr()
    target = ["--store", "json", "--state-dir", str(tmp_path / "moved")]
    assert cli.main(["import", str(dump), *target]) == 0
    assert capsys.readouterr().out.startswith(
        f"imported {len(records)} record(s) for 1 learner(s): 3 feedback applied, "
        "0 already present, 0 conflicting, 1 decay/reset applied")
    assert cli.main(["import", str(dump), *target]) == 0
    assert "0 feedback applied, 3 already present, 0 conflicting, 0 decay/reset applied" \
        in capsys.readouterr().out
    assert cli.main(["replay", *target]) == 0
    assert capsys.readouterr().out == "prompts: 4 event(s), 4 row(s): ok\n"
    assert cli.main(["export", *target]) == 0  # to stdout
    moved = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    drop = ("seq", "source")
    assert [{k: v for k, v in r.items() if k not in drop} for r in moved] \
        == [{k: v for k, v in r.items() if k not in drop} for r in records]


def test_import_of_a_broken_file_names_the_line_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type":"header","format":"qortex-mcp-export","version":1}\n{oops\n')
    assert cli.main(["import", str(bad)]) == 1
    assert capsys.readouterr().err.startswith("qortex-mcp: INVALID_ARGUMENT: line 2: ")
    assert cli.main(["import", str(tmp_path / "missing.jsonl")]) == 1


def test_replay_reports_a_mismatch_and_exits_1(
    environment: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    seed(environment)
    assert cli.main(["replay"]) == 0
    assert capsys.readouterr().out == "prompts: 4 event(s), 4 row(s): ok\n"
    with sqlite3.connect(environment / "qortex.db") as db:  # corrupt one posterior
        db.execute("UPDATE evidence SET s = s + 5 WHERE arm = 'detailed' AND ctx = ''")
    assert cli.main(["replay", "prompts"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "prompts: 4 event(s), 4 row(s): 1 mismatch(es)"
    assert out[1] == "  global/detailed: stored (s=7, f=0, n=2), replayed (s=2, f=0, n=2)"


def test_a_bad_setting_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--state-dir", "relative"]) == 2
    assert capsys.readouterr().err == (
        "qortex-mcp: CONFIG_ERROR: QORTEX_STATE_DIR must be an absolute path\n")


def test_the_console_script_answers_version_and_help(tmp_path: Path) -> None:
    done = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True,
                          env=base_env(tmp_path / "state"), timeout=30)
    assert done.returncode == 0
    assert done.stdout == f"qortex-mcp {__version__}\n"
    done = subprocess.run([str(SCRIPT), "serve", "--help"], capture_output=True, text=True,
                          env=base_env(tmp_path / "state"), timeout=30)
    assert done.returncode == 0
    assert "--transport {stdio,http}" in done.stdout


def test_status_lists_at_most_limit_learners_and_counts_the_rest(
    environment: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    async def run() -> None:
        s = configured_store(Settings.build(store="sqlite", state_dir=environment))
        await s.initialize()
        try:
            for i in range(60):
                cfg = LearnerConfig(name=f"l{i:02d}")
                async with await Learner.create(cfg, s, signer=SelectionSigner.random()) as lrn:
                    await lrn.observe(ArmOutcome("a", reward=1.0))
        finally:
            await s.close()

    anyio.run(run)
    assert cli.main(["status"]) == 0  # before: one line per learner, however many
    out = capsys.readouterr().out.splitlines()
    assert "learners: 60" in out
    rows = [line for line in out if line[:2] in ("l0", "l1", "l2", "l3", "l4", "l5")]
    assert len(rows) == 50
    assert "(10 more learner(s); raise --limit)" in out
    assert any(line.startswith("limits: 1000 open learners, 1024 MiB") for line in out)
    assert cli.main(["status", "--limit", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out if line[:2] == "l0"] == ["l00", "l01", "l02"]
    assert "(57 more learner(s); raise --limit)" in out
    with pytest.raises(SystemExit):
        cli.main(["status", "--limit", "0"])


# --- import refusals and unusable stores, through the real console script ---------------------

# A secret the weak-secret check accepts (a repeated character is refused at start).
STRONG_SECRET = "7f3a9c1e5b2d8f4a6c0e9b7d3f1a5c8e2b4d6f8a0c2e4b6d"

HEADER = '{"type":"header","format":"qortex-mcp-export","version":1,"schema_version":1}'


def run_script(state: Path, *args: str, stdin: bytes | None = None,
               **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(SCRIPT), *args], input=stdin, capture_output=True, timeout=120,
                          env=base_env(state, QORTEX_SECRET=STRONG_SECRET, **env))
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(),
                                       done.stderr.decode())


def the_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of a refusal (no traceback, nothing else)."""
    assert "Traceback" not in done.stderr, done.stderr
    assert "Event loop is closed" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def snapshot(directory: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every file and directory below ``directory``: bytes and mtime."""
    return {str(p.relative_to(directory)): (None if p.is_dir() else p.read_bytes(),
                                            p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*"))}


def dump_of(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:  # closed: no -wal or -shm left
        return list(conn.iterdump())


def events(n: int, learner: str = "prompts") -> list[bytes]:
    return [json.dumps({"type": "event", "learner": learner, "kind": "feedback",
                        "key": f"import-{i}", "arm": "a", "ctx": "", "reward": 1, "weight": 1,
                        "at": 1.0}).encode() for i in range(n)]


BAD_FILES = {  # the bytes after the header and 600 good events; the code and message
    "a broken line": (b"{bad", "INVALID_ARGUMENT: line 602: not valid JSON"),
    "a prior <= 0": (b'{"type":"arm","learner":"p","arm":"a","a0":-5,"b0":1}',
                     "INVALID_PRIOR: line 602: prior alpha and beta must be in [1e-6, 1e6]"),
    "a count too large": (b'{"type":"learner","learner":"p","selections":' + b"9" * 30 + b"}",
                          "INVALID_ARGUMENT: line 602: selections must be a count"),
    "a line that is not UTF-8": (b'{"type":"learner","learner":"p\xff"}',
                                 "INVALID_ARGUMENT: line 602: not UTF-8 text (byte 0xff"),
    "JSON nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000,
                                 "INVALID_ARGUMENT: line 602: nested too deeply"),
    "1,001 learners": (b"\n".join(b'{"type":"learner","learner":"l%d"}' % i
                                  for i in range(1001)),
                       "LIMIT_EXCEEDED: the import would create 1001 learners; one import "
                       "creates at most 1000 (split the file)"),
}


@pytest.mark.parametrize(("case", "via"), [(case, "file") for case in BAD_FILES] + [
    ("a broken line", "stdin"), ("a line that is not UTF-8", "stdin")])
def test_a_refused_import_leaves_the_sqlite_file_unchanged(
    environment: Path, tmp_path: Path, case: str, via: str,
) -> None:
    seed(environment)
    tail, message = BAD_FILES[case]
    data = b"\n".join([HEADER.encode(), *events(600), tail]) + b"\n"
    path = tmp_path / "bad.jsonl"
    path.write_bytes(data)
    before, contents = snapshot(environment), dump_of(environment / "qortex.db")
    if via == "file":
        done = run_script(environment, "import", str(path))
    else:
        done = run_script(environment, "import", "-", stdin=data)
    assert done.returncode == 1
    assert done.stdout == ""
    assert the_line(done).startswith(f"qortex-mcp: {message}")
    assert snapshot(environment) == before
    assert dump_of(environment / "qortex.db") == contents  # none of the 600 events


def test_a_refused_import_creates_no_store(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join([HEADER.encode(), *events(600), b"{bad"]) + b"\n")
    done = run_script(tmp_path / "state", "import", str(path))
    assert done.returncode == 1
    assert not (tmp_path / "state").exists()


def test_a_good_import_from_stdin_applies_everything(tmp_path: Path) -> None:
    data = b"\n".join([HEADER.encode(), *events(600)]) + b"\n"
    done = run_script(tmp_path / "state", "import", "-", stdin=data)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported 601 record(s) for 1 learner(s): 600 feedback applied")
    assert len([r for r in dump_of(tmp_path / "state" / "qortex.db")
                if r.startswith('INSERT INTO "events"')]) == 600


@pytest.mark.parametrize("command", [["import", "GOOD"], ["status"], ["serve"]])
def test_another_programs_database_is_refused_and_left_untouched(
    tmp_path: Path, command: list[str],
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with sqlite3.connect(state / "qortex.db") as db:
        db.execute("CREATE TABLE learners (id INTEGER PRIMARY KEY, email TEXT)")
        db.execute("INSERT INTO learners (email) VALUES ('bob@example.com')")
    db.close()  # (the with block only commits)
    good = tmp_path / "good.jsonl"
    good.write_bytes(b"\n".join([HEADER.encode(), *events(3)]) + b"\n")
    before = snapshot(state)
    done = run_script(state, *[str(good) if c == "GOOD" else c for c in command],
                      stdin=b"")
    assert done.returncode == 2
    assert done.stdout == ""
    assert the_line(done) == (
        f"qortex-mcp: STORE_INACCESSIBLE: {state / 'qortex.db'} is another program's SQLite "
        "database (tables learners; no qortex_meta); it was left untouched: set "
        "QORTEX_STATE_DIR to another directory")
    assert snapshot(state) == before  # same bytes and mtime; no -wal, -shm or key file


@pytest.mark.parametrize("problem", ["read-only directory", "database is a directory",
                                     "directory under a file"])
@pytest.mark.parametrize("command", ["import", "serve"])
def test_a_store_location_that_cannot_work_is_refused_once_and_not_as_retryable(
    tmp_path: Path, problem: str, command: str,
) -> None:
    """Exit 2, one line saying what to fix, no "retry", no aiosqlite traceback."""
    good = tmp_path / "good.jsonl"
    good.write_bytes(b"\n".join([HEADER.encode(), *events(3)]) + b"\n")
    args = ["import", str(good)] if command == "import" else []
    state = tmp_path / "state"
    with contextlib.ExitStack() as stack:
        if problem == "read-only directory":
            stack.enter_context(read_only_directory(state))
            hint = f"the state directory {state} is read-only and holds no database yet"
        elif problem == "database is a directory":
            (state / "qortex.db").mkdir(parents=True)
            hint = f"{state / 'qortex.db'} is a directory, where the SQLite store needs a file"
        else:
            (tmp_path / "file").write_text("not a directory")
            state = tmp_path / "file" / "state"
            hint = f"cannot create the state directory {state}: Not a directory"
        done = run_script(state, *args, stdin=b"")
    assert done.returncode == 2
    assert done.stdout == ""
    line = the_line(done)
    assert line.startswith("qortex-mcp: STORE_INACCESSIBLE: " + hint), line
    assert "retry" not in line


@pytest.mark.parametrize(("content", "message"), [
    (b'{"format":"qortex-mcp","schema_version":1,"seq":0,"learners":"abc"}',
     "learners must be an object, got str"),
    (b'{"format":"qortex-mcp","schema_version":1,"seq":1,"learners":{"x":{"config":"{}",'
     b'"version":1,"selections":0,"explored":0,"evidence":[["","a",NaN,0,1,0,1,1]],'
     b'"arms":[],"answered":[],"contexts":{},"events":[]}}}',
     "evidence[0] s: must be a finite number >= 0, got nan"),
])
@pytest.mark.parametrize("command", ["status", "serve"])
def test_a_damaged_json_store_is_corrupt_state_exit_2_one_line(
    tmp_path: Path, content: bytes, message: str, command: str,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "qortex.json").write_bytes(content)
    done = run_script(state, *([command] if command == "status" else []), stdin=b"",
                      QORTEX_STORE="json")
    assert done.returncode == 2
    line = the_line(done)
    assert line.startswith("qortex-mcp: CORRUPT_STATE: qortex.json is not a valid qortex-mcp "
                           "state file"), line
    assert message in line
    assert (state / "qortex.json").read_bytes() == content
