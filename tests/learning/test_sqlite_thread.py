"""The SQLite store's database threads: one hand-off per unit of work, order kept, group
commit, errors delivered to the caller, nothing left running."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from qortex_mcp.learning.stores.sqlite import SqliteLearningStore
from qortex_mcp.learning.stores.sqlite.thread import Batch, DbThread, settle
from qortex_mcp.learning.types import FeedbackRow

pytestmark = pytest.mark.anyio


def _memory() -> sqlite3.Connection:
    return sqlite3.connect(":memory:", isolation_level=None)


async def test_calls_run_in_order_and_errors_reach_the_caller() -> None:
    db: DbThread[int] = DbThread("t", _memory)
    await db.start()
    try:
        await db.call(lambda c: c.execute("CREATE TABLE t (x)"))
        def insert(i: int) -> Any:
            return lambda c: c.execute("INSERT INTO t VALUES (?)", (i,))

        futures = [db.submit(insert(i)) for i in range(50)]
        await asyncio.gather(*futures)
        assert await db.call(lambda c: [r[0] for r in c.execute("SELECT x FROM t")]) == \
            list(range(50))
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await db.call(lambda c: c.execute("SELECT * FROM missing"))
        assert await db.call(lambda c: 7) == 7  # the thread goes on after a failure
    finally:
        await db.stop()
    assert not db._thread.is_alive()


async def test_queued_items_are_grouped_up_to_the_limit_and_a_call_splits_groups() -> None:
    groups: list[list[int]] = []
    gate = threading.Event()

    def run(conn: sqlite3.Connection, items: list[int]) -> None:
        groups.append(items)

    db: DbThread[int] = DbThread("t", _memory, Batch(int, run, 4))
    await db.start()
    try:
        blocker = db.submit(lambda c: gate.wait(10))  # everything below queues behind it
        for i in range(6):
            db.put(i)
        between = db.submit(lambda c: "between")
        for i in range(6, 8):
            db.put(i)
        gate.set()
        await blocker
        assert await between == "between"
        await db.call(lambda c: None)
        assert groups == [[0, 1, 2, 3], [4, 5], [6, 7]]
    finally:
        await db.stop()


async def test_a_connection_that_cannot_open_raises_at_start_and_ends_the_thread(
    tmp_path: Path,
) -> None:
    (tmp_path / "dir.db").mkdir()
    db: DbThread[int] = DbThread("t", lambda: sqlite3.connect(tmp_path / "dir.db"))
    with pytest.raises(sqlite3.OperationalError):
        await db.start()
    assert not db._thread.is_alive()


def test_an_answer_after_its_loop_closed_is_dropped_quietly() -> None:
    loop = asyncio.new_event_loop()
    future: asyncio.Future[int] = loop.create_future()
    loop.close()
    settle(loop, [(future, 1, None)])  # no RuntimeError: nobody is waiting any more
    assert not future.done()


def _row(key: str) -> FeedbackRow:
    return FeedbackRow(key=key, arm="a", ctx="", ctx_body=None, reward=1.0, weight=1.0,
                       outcome="success", at=1.0)


async def test_a_feedback_transaction_is_one_hand_off_to_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 11: not one hand-off per statement (aiosqlite's eight per feedback) but one per
    request, and concurrent requests committed together."""
    handed: list[str] = []
    real_put, real_submit = DbThread.put, DbThread.submit

    def put(self: DbThread[Any], item: Any) -> None:
        handed.append(self._thread.name)
        real_put(self, item)

    def submit(self: DbThread[Any], fn: Any) -> Any:
        handed.append(self._thread.name)
        return real_submit(self, fn)

    store = SqliteLearningStore(tmp_path / "s.db")
    await store.initialize()
    try:
        monkeypatch.setattr(DbThread, "put", put)
        monkeypatch.setattr(DbThread, "submit", submit)
        result = await store.apply("x", [_row("k1")], None)
        assert result.statuses == ("applied",)
        assert handed == ["qortex-sqlite-writer"]
        results = await asyncio.gather(*(store.apply("x", [_row(f"c{i}")], None)
                                         for i in range(20)))
        assert handed == ["qortex-sqlite-writer"] * 21
        assert all(r.statuses == ("applied",) for r in results)
        handed.clear()
        snapshot = await store.load("x")  # a snapshot read: one read transaction, one call
        assert handed == ["qortex-sqlite-reader"]
        assert {e.n for e in snapshot.evidence} == {21}
    finally:
        monkeypatch.undo()
        await store.close()


def test_a_store_dropped_unclosed_leaves_no_database_thread(tmp_path: Path) -> None:
    code = (
        "import asyncio, gc, sys, threading, warnings\n"
        "warnings.simplefilter('ignore', ResourceWarning)\n"
        "from qortex_mcp.learning.stores.sqlite import SqliteLearningStore\n"
        "async def main():\n"
        "    store = SqliteLearningStore(sys.argv[1])\n"
        "    await store.initialize()\n"
        "    await store.ensure_learner('x', '{}')\n"
        "    del store\n"
        "    gc.collect()\n"
        "    for _ in range(100):\n"
        "        if not any(t.name.startswith('qortex-sqlite') for t in threading.enumerate()):\n"
        "            print('gone'); return\n"
        "        await asyncio.sleep(0.05)\n"
        "    print('still running')\n"
        "asyncio.run(main())\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.db")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "gone"
    assert done.stderr == ""
