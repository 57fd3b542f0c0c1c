"""Opening a store: what is refused, with which code, and that the refusal changes nothing.
And ``atomically()``: a block of calls commits together or not at all."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qortex_mcp.errors import CorruptState, StoreError, StoreInaccessible
from qortex_mcp.learning import (
    JsonLearningStore,
    LearningStore,
    SqliteLearningStore,
)
from qortex_mcp.learning.stores.base import AtomicStore
from qortex_mcp.learning.types import FeedbackRow
from tests.conftest import make_store
from tests.readonly import read_only_directory

pytestmark = pytest.mark.anyio


def files_of(directory: Path) -> dict[str, tuple[bytes | None, int]]:
    """Everything in ``directory``, recursively: each file's bytes and every mtime."""
    return {str(p.relative_to(directory)): (None if p.is_dir() else p.read_bytes(),
                                            p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*"))}


async def refused_open(store: LearningStore) -> StoreError:
    try:
        with pytest.raises(StoreError) as caught:
            await store.initialize()
    finally:
        await store.close()
    assert not caught.value.retryable
    return caught.value


# --- SQLite ----------------------------------------------------------------------------------


def foreign_database(path: Path, *, wal: bool, checkpointed: bool = True) -> sqlite3.Connection:
    """Another program's database: its own ``learners`` table, one row."""
    db = sqlite3.connect(path)
    if wal:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA wal_autocheckpoint = 0")
    db.execute("CREATE TABLE learners (id INTEGER PRIMARY KEY, email TEXT)")
    db.execute("INSERT INTO learners (email) VALUES ('bob@example.com')")
    db.commit()
    if checkpointed:
        db.close()
    return db


@pytest.mark.parametrize("mode", ["rollback journal", "WAL"])
async def test_another_programs_database_is_refused_and_left_untouched(
    tmp_path: Path, mode: str,
) -> None:
    foreign_database(tmp_path / "app.db", wal=mode == "WAL")
    before = files_of(tmp_path)
    error = await refused_open(SqliteLearningStore(tmp_path / "app.db"))
    assert isinstance(error, StoreInaccessible)
    assert error.code == "STORE_INACCESSIBLE"
    assert "another program's SQLite database (tables learners; no qortex_meta)" in str(error)
    assert files_of(tmp_path) == before  # same bytes, same mtimes, no -wal or -shm left


async def test_a_foreign_database_whose_tables_are_still_in_its_wal_is_refused(
    tmp_path: Path,
) -> None:
    """The zero-footprint check reads only the main file; the schema transaction sees the
    WAL too, and rolls back before creating anything."""
    owner = foreign_database(tmp_path / "app.db", wal=True, checkpointed=False)
    try:
        error = await refused_open(SqliteLearningStore(tmp_path / "app.db"))
        assert isinstance(error, StoreInaccessible)
        names = {r[0] for r in owner.execute("SELECT name FROM sqlite_master")}
        assert names == {"learners"}
    finally:
        owner.close()


async def test_an_empty_sqlite_file_and_a_qortex_database_still_open(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    sqlite3.connect(tmp_path / "blank.db").close()  # a database with no tables
    for name in ("empty.db", "blank.db", "empty.db"):  # the last: now a qortex database
        store = SqliteLearningStore(tmp_path / name)
        await store.initialize()
        await store.ensure_learner("x", "{}")
        await store.close()


@pytest.mark.parametrize("problem", ["database path is a directory", "state dir under a file"])
async def test_a_location_that_can_never_hold_the_database_is_not_retryable(
    tmp_path: Path, problem: str,
) -> None:
    if problem == "database path is a directory":
        (tmp_path / "qortex.db").mkdir()
        path, hint = tmp_path / "qortex.db", "is a directory, where the SQLite store needs a file"
    else:
        (tmp_path / "file").write_text("not a directory")
        path, hint = tmp_path / "file" / "sub" / "qortex.db", "Not a directory"
    before = files_of(tmp_path)
    error = await refused_open(SqliteLearningStore(path))
    assert error.code == "STORE_INACCESSIBLE"
    assert hint in str(error)
    assert "retry" not in str(error)
    assert files_of(tmp_path) == before


async def test_a_read_only_state_directory_without_a_database_is_not_retryable(
    tmp_path: Path,
) -> None:
    with read_only_directory(tmp_path / "state"):
        error = await refused_open(SqliteLearningStore(tmp_path / "state" / "qortex.db"))
        assert error.code == "STORE_INACCESSIBLE"
        assert "is read-only and holds no database yet" in str(error)
        assert "retry" not in str(error)
        assert list((tmp_path / "state").iterdir()) == []


# --- JSON ------------------------------------------------------------------------------------


def state_file(**learner: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "config": "{}", "version": 2, "selections": 1, "explored": 0,
        "evidence": [["", "a", 1.0, 0.0, 1.0, 1.0, 10.0, 1.0]],
        "arms": [["a", 2.0, 3.0, 1, 9.0, 2]],
        "answered": [["key:k", "a", 1.0]],
        "contexts": {},
        "events": [[1, "feedback", "key:k", "a", "", 1.0, 1.0, None, 10.0, None, None]],
    }
    rec.update(learner)
    return {"format": "qortex-mcp", "schema_version": 1, "seq": 1, "learners": {"x": rec}}


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return change


CORRUPTIONS = {
    "learners is a string": (_set("learners", "abc"), "learners must be an object"),
    "a learner is a list": (_set("learners.x", []), "learner 'x': must be an object"),
    "NaN evidence": (_set("learners.x.evidence.0.2", math.nan), "evidence[0] s: must be a "
                     "finite number >= 0, got nan"),
    "infinite evidence": (_set("learners.x.evidence.0.3", math.inf), "evidence[0] f"),
    "negative evidence": (_set("learners.x.evidence.0.2", -1.0), "evidence[0] s"),
    "fractional count": (_set("learners.x.evidence.0.4", 1.5), "evidence[0] n: must be an "
                         "integer >= 0"),
    "short evidence row": (_set("learners.x.evidence.0", ["", "a", 1.0]), "evidence[0]: must "
                           "be a list of 8 fields"),
    "prior <= 0": (_set("learners.x.arms.0.1", -5.0), "arms[0] a0: must be a finite number > 0"),
    "half a prior": (_set("learners.x.arms.0.2", None), "a prior needs both alpha and beta"),
    "boolean count": (_set("learners.x.selections", True), "selections: must be an integer"),
    "reward above 1": (_set("learners.x.answered.0.2", 2.0), "answered[0] reward"),
    "unknown event kind": (_set("learners.x.events.0.1", "teleport"), "kind must be feedback"),
    "event beyond seq": (_set("seq", 0), "event seq 1 is beyond the file's seq"),
    "contexts a list": (_set("learners.x.contexts", []), "contexts: must map context keys"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
async def test_a_damaged_json_state_file_is_corrupt_state_at_open(
    tmp_path: Path, case: str,
) -> None:
    change, message = CORRUPTIONS[case]
    doc = state_file()
    change(doc)
    path = tmp_path / "qortex.json"
    path.write_text(json.dumps(doc))  # NaN and Infinity as Python writes them
    before = path.read_bytes()
    error = await refused_open(JsonLearningStore(path))
    assert isinstance(error, CorruptState)
    assert message in str(error)
    assert "\n" not in str(error)
    assert path.read_bytes() == before


async def test_a_json_state_file_nested_too_deeply_is_corrupt_state(tmp_path: Path) -> None:
    path = tmp_path / "qortex.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    error = await refused_open(JsonLearningStore(path))
    assert isinstance(error, CorruptState)
    assert "nested too deeply" in str(error)


async def test_a_valid_json_state_file_still_loads(tmp_path: Path) -> None:
    """Counts written as 3.0 by earlier versions are integers all the same."""
    path = tmp_path / "qortex.json"
    path.write_text(json.dumps(state_file()))
    store = JsonLearningStore(path)
    await store.initialize()
    try:
        snap = await store.load("x")
        assert (snap.selections, snap.arms[0].a0, snap.arms[0].b0) == (1, 2.0, 3.0)
        assert [(e.kind, e.key) for e in await store.events("x")] == [("feedback", "key:k")]
    finally:
        await store.close()


# --- atomically() ----------------------------------------------------------------------------


def row(key: str, arm: str = "a") -> FeedbackRow:
    return FeedbackRow(key=key, arm=arm, ctx="", ctx_body=None, reward=1.0, weight=1.0,
                       outcome=None, at=1.0)


async def contents(store: LearningStore) -> Any:
    return [(s.name, s.selections, sorted((r.arm, r.s, r.n) for r in await store.evidence(s.name)),
             [(e.kind, e.key) for e in await store.events(s.name)]) for s in await store.learners()]


@pytest.mark.parametrize("kind", ["memory", "sqlite", "json"])
async def test_a_failed_atomic_block_leaves_nothing_and_a_good_one_commits(
    kind: str, tmp_path: Path,
) -> None:
    store = await make_store(kind, tmp_path)
    try:
        assert isinstance(store, AtomicStore)
        await store.apply("x", [row("k0")], None)
        before = await contents(store)
        seen: list[Any] = []

        async def block() -> None:
            async with store.atomically():
                await store.ensure_learner("y", "{}")
                await store.apply("x", [row("k1")], None)
                await store.record_selections("x", {"a": (3, 5.0)}, {"a": (2.0, 2.0)}, 3, 1)
                await store.decay("x", "", 0.5, 2.0)
                seen.append([e.key for e in await store.events("x")])
                seen.append((await store.load("x")).selections)
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await block()
        assert seen == [["k0", "k1", None], 3]  # reads inside the block see its own writes
        assert await contents(store) == before
        async with store.atomically():
            await store.apply("x", [row("k1")], None)
            await store.ensure_learner("y", "{}")
        assert [s.name for s in await store.learners()] == ["x", "y"]
        assert [e.key for e in await store.events("x")] == ["k0", "k1"]
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite", "json"])
@pytest.mark.parametrize("block_fails", [False, True])
async def test_other_writers_wait_for_the_block_and_keep_their_writes(
    kind: str, block_fails: bool, tmp_path: Path,
) -> None:
    store = await make_store(kind, tmp_path)
    assert isinstance(store, AtomicStore)
    outside: asyncio.Future[Any] | None = None

    async def block() -> None:
        nonlocal outside
        async with store.atomically():
            await store.apply("x", [row("inside")], None)
            outside = asyncio.ensure_future(store.apply("x", [row("outside")], None))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not outside.done()  # waiting for the block to end
            if block_fails:
                raise RuntimeError("boom")

    try:
        if block_fails:
            with pytest.raises(RuntimeError):
                await block()
        else:
            await block()
        assert outside is not None
        await asyncio.wait_for(outside, 10)
        want = ["outside"] if block_fails else ["inside", "outside"]
        assert [e.key for e in await store.events("x")] == want
    finally:
        await store.close()


async def test_a_cancelled_sqlite_block_rolls_back_and_the_store_keeps_working(
    tmp_path: Path,
) -> None:
    store = SqliteLearningStore(tmp_path / "state.db")
    await store.initialize()
    try:
        entered = asyncio.Event()

        async def block() -> None:
            async with store.atomically():
                await store.apply("x", [row("lost")], None)
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.ensure_future(block())
        await asyncio.wait_for(entered.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(store.apply("x", [row("kept")], None), 10)
        assert [e.key for e in await store.events("x")] == ["kept"]
    finally:
        await store.close()


def test_a_connection_sqlite_cannot_open_leaves_no_thread_behind(tmp_path: Path) -> None:
    """With the checks before opening skipped, SQLite itself meets the directory: the error
    is still STORE_INACCESSIBLE, and the database thread has ended before the loop
    closes. (Its "Event loop is closed" traceback was a race: the thread's last callback
    landing after the loop closed; not every run shows it, hence several runs.)"""
    (tmp_path / "qortex.db").mkdir()
    code = (
        "import asyncio, sys\n"
        "from qortex_mcp.learning.stores.sqlite import store as sqlite\n"
        "sqlite.preflight = lambda path: None\n"
        "async def main():\n"
        "    store = sqlite.SqliteLearningStore(sys.argv[1])\n"
        "    try:\n"
        "        await store.initialize()\n"
        "    except Exception as exc:\n"
        "        print(exc)\n"
        "    finally:\n"
        "        await store.close()\n"
        "for _ in range(5):\n"
        "    asyncio.run(main())\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "qortex.db")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert len(lines) == 5
    assert all(x.startswith("STORE_INACCESSIBLE: cannot open ") for x in lines), lines
    assert done.stderr == ""
