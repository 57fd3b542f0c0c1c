"""The ``qortex-mcp`` commands: status, inspect, export, import, replay, and exit codes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import anyio
import pytest

from qortex_mcp import __version__, cli
from qortex_mcp.config import Settings
from qortex_mcp.learning import ArmOutcome, Learner, LearnerConfig, SelectionSigner
from qortex_mcp.learning.stores.factory import open_store
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
        s = open_store(Settings.build(store=store, state_dir=state))
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
                       "schema version: 1", "learners: 1"]
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
        s = open_store(Settings.build(store="sqlite", state_dir=environment))
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
