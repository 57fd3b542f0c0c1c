"""Stores written by the previous release (schema 1, qortex-mcp 0.1.0) open, migrate to
schema 2 in one transaction with a backup beside them, and keep everything they learned.

The files in ``tests/fixtures/v1/`` were written by 0.1.0 itself
(``tests/fixtures/write_v1_stores.py``), with the posteriors it reported for them in
``expected.json``."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from qortex_mcp.errors import StoreError
from qortex_mcp.learning import (
    ArmOutcome,
    JsonLearningStore,
    Learner,
    LearnerConfig,
    LearningStore,
    SqliteLearningStore,
)
from qortex_mcp.learning.stores import SCHEMA_VERSION
from qortex_mcp.learning.stores.sqlite import sql

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent.parent / "fixtures" / "v1"
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text())
CONFIGS = {"prompts": LearnerConfig(name="prompts", arm_priors={"p1": (2.0, 1.0)}),
           "tools": LearnerConfig(name="tools", half_life_s=3600.0)}
# When the fixture asked each learner for its posteriors (one clock, 41 minutes a learner):
# a half-life learner's posteriors decay to the time they are read.
READ_AT = {"prompts": 1_764_806_400.0 + 41 * 60.0, "tools": 1_764_806_400.0 + 82 * 60.0}


def assert_close(got: dict[str, list[float]], want: dict[str, list[float]]) -> None:
    assert sorted(got) == sorted(want)
    for arm, values in want.items():
        assert got[arm] == pytest.approx(values, rel=1e-9), arm


async def assert_learned_what_01_reported(store: LearningStore, expected: dict[str, Any]) -> None:
    for name, want in expected.items():
        learner = await Learner.create(CONFIGS[name], store,
                                       now=lambda at=READ_AT[name]: at)  # type: ignore[misc]
        got = {p.id: [p.alpha, p.beta, p.pulls, p.selections]
               for p in await learner.posteriors()}
        assert_close(got, want["global"])
        code = {p.id: [p.alpha, p.beta, p.pulls]
                for p in await learner.posteriors(context={"task": "code"})}
        assert_close(code, want["code"])
        events = await store.events(name, 0, 10_000)
        assert len(events) == want["events"]
        assert all(e.propensity is None and e.policy is None for e in events)
        # And it keeps learning, now with the decision log.
        sel = await learner.select(sorted(want["global"]))
        await learner.observe(ArmOutcome(sel.selected[0].id, reward=1.0,
                                         selection_id=sel.selection_id))
        await learner.flush()
        (d,) = await store.decisions(name)
        assert d.chosen == (sel.selected[0].id,)
        last = (await store.events(name, 0, 10_000))[-1]
        assert last.policy == CONFIGS[name].policy_version()
        assert last.propensity is not None
        assert 0.0 < last.propensity <= 1.0
        await learner.close()


def schema_of(path: Path) -> tuple[str, set[str]]:
    conn = sqlite3.connect(path)
    try:
        version = conn.execute(
            "SELECT value FROM qortex_meta WHERE key = 'schema_version'").fetchone()[0]
        columns = {r[1] for r in conn.execute("PRAGMA table_info(events)")}
    finally:
        conn.close()
    return str(version), columns


def backups(directory: Path, name: str) -> list[str]:
    return sorted(p.name for p in directory.glob(f"{name}.*bak"))


def fixture_copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copy(FIXTURES / name, target)
    return target


async def test_a_sqlite_file_of_01_migrates_with_a_backup(tmp_path: Path) -> None:
    path = fixture_copy("store.sqlite3", tmp_path)
    assert schema_of(path) == ("1", schema_of(path)[1])
    async with SqliteLearningStore(path) as store:
        assert (await store.info()).schema_version == SCHEMA_VERSION == 2
        await assert_learned_what_01_reported(store, EXPECTED["sqlite"])
    version, columns = schema_of(path)
    assert version == "2"
    assert {"propensity", "policy"} <= columns
    backup = tmp_path / "store.sqlite3.schema1.bak"
    assert schema_of(backup)[0] == "1"
    assert "propensity" not in schema_of(backup)[1]
    # The backup is the whole 0.1 state: opening it (a copy) migrates it the same way.
    again = tmp_path / "restored.sqlite3"
    shutil.copy(backup, again)
    async with SqliteLearningStore(again) as store:
        learner = await Learner.create(CONFIGS["prompts"], store,
                                       now=lambda: READ_AT["prompts"])
        got = {p.id: [p.alpha, p.beta, p.pulls, p.selections]
               for p in await learner.posteriors()}
        assert_close(got, EXPECTED["sqlite"]["prompts"]["global"])
        await learner.close()
    # Opening the migrated file again migrates nothing and takes no second backup.
    async with SqliteLearningStore(path) as store:
        assert (await store.info()).schema_version == 2
    assert backups(tmp_path, "store.sqlite3") == [backup.name]


async def test_a_failed_sqlite_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = fixture_copy("store.sqlite3", tmp_path)
    before = sqlite3.connect(path)
    rows_before = before.execute("SELECT count(*) FROM events").fetchone()
    before.close()
    # The second step fails: the first (already run) must be rolled back with it.
    monkeypatch.setattr(sql, "MIGRATE_1_2", (sql.MIGRATE_1_2[0], "ALTER TABLE nowhere ADD x"))
    with pytest.raises(StoreError):
        await SqliteLearningStore(path).initialize()
    version, columns = schema_of(path)
    assert version == "1"
    assert "propensity" not in columns
    assert "decisions" not in {r[0] for r in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    after = sqlite3.connect(path)
    assert after.execute("SELECT count(*) FROM events").fetchone() == rows_before
    after.close()
    monkeypatch.undo()
    async with SqliteLearningStore(path) as store:  # and a later open migrates it
        await assert_learned_what_01_reported(store, EXPECTED["sqlite"])


async def test_a_json_file_of_01_migrates_with_a_backup(tmp_path: Path) -> None:
    path = fixture_copy("store.json", tmp_path)
    original = path.read_bytes()
    assert json.loads(original)["schema_version"] == 1
    async with JsonLearningStore(path) as store:
        assert json.loads(path.read_bytes())["schema_version"] == 2
        await assert_learned_what_01_reported(store, EXPECTED["json"])
    assert (tmp_path / "store.json.schema1.bak").read_bytes() == original
    async with JsonLearningStore(path) as store:
        assert (await store.info()).schema_version == 2
    assert backups(tmp_path, "store.json") == ["store.json.schema1.bak"]


async def test_an_export_of_01_imports(tmp_path: Path) -> None:
    """An export written by 0.1 (format version 1: events without propensity or policy,
    no decision records) imports into a schema-2 store, lossless."""
    from qortex_mcp.learning import MemoryLearningStore
    from qortex_mcp.learning.transfer import export_jsonl, import_jsonl

    path = fixture_copy("store.sqlite3", tmp_path)
    async with SqliteLearningStore(path) as store:
        lines = [line async for line in export_jsonl(store)]
    v1 = []
    for line in lines:
        rec = json.loads(line)
        if rec["type"] == "header":
            rec["version"], rec["schema_version"] = 1, 1
        rec.pop("propensity", None)
        rec.pop("policy", None)
        if rec["type"] != "decision":
            v1.append(json.dumps(rec))
    target = MemoryLearningStore()
    report = await import_jsonl(target, v1, half_life=lambda n: CONFIGS[n].half_life_s)
    assert report.ok
    assert report.applied > 0
    assert report.decisions == 0
    await assert_learned_what_01_reported(target, EXPECTED["sqlite"])


async def test_a_write_between_backup_and_migration_is_in_the_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process commits after the backup and before the migration: that backup is
    dropped and taken again, so the backup holds exactly what was migrated."""
    path = fixture_copy("store.sqlite3", tmp_path)
    original = SqliteLearningStore._backup_before_migration
    calls = []

    def backup_then_another_write(self: SqliteLearningStore,
                                  conn: sqlite3.Connection) -> tuple[Path | None, int | None]:
        taken = original(self, conn)
        calls.append(taken[0])
        if len(calls) == 1:  # another process (0.1 still running) commits right now
            other = sqlite3.connect(path)
            other.execute("INSERT INTO qortex_meta (key, value) VALUES ('late', 'write')")
            other.commit()
            other.close()
        return taken

    monkeypatch.setattr(SqliteLearningStore, "_backup_before_migration",
                        backup_then_another_write)
    async with SqliteLearningStore(path) as store:
        assert (await store.info()).schema_version == 2
    assert len(calls) == 2  # the first backup missed the write: taken again
    backup = tmp_path / "store.sqlite3.schema1.bak"
    assert backups(tmp_path, "store.sqlite3") == [backup.name]
    conn = sqlite3.connect(backup)
    try:
        assert conn.execute("SELECT value FROM qortex_meta WHERE key = 'late'").fetchone() \
            == ("write",)
    finally:
        conn.close()


async def test_two_stores_opening_a_01_file_together_migrate_it_once(tmp_path: Path) -> None:
    path = fixture_copy("store.sqlite3", tmp_path)
    first, second = SqliteLearningStore(path), SqliteLearningStore(path)
    try:
        await asyncio.gather(first.initialize(), second.initialize())
        assert schema_of(path)[0] == "2"
        # Both took a backup; the one that lost the race saw the file change under its
        # own, dropped it and found the file migrated: one backup stays (plain or dated,
        # depending on who took its backup first; the store_migrated line names it).
        (kept,) = backups(tmp_path, "store.sqlite3")
        assert schema_of(tmp_path / kept)[0] == "1"
        await assert_learned_what_01_reported(second, EXPECTED["sqlite"])
    finally:
        await first.close()
        await second.close()
