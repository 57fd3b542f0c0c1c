"""Deliberate store bugs, for the reliability suite's proof that its checks can fail.

``FaultySqliteStore`` is the real SQLite store with one or both bugs put back in:

* ``ack_before_commit``: answers feedback before its COMMIT (a crash then loses feedback
  that was acknowledged), by replacing ``_write_batch``;
* ``read_modify_write``: computes evidence in Python from a read taken before the write
  lock (two processes then lose updates), by replacing ``_write_batch`` and ``_fold_plain``.

The production store has no switch for them. The crash and two-process suites run the
server as ``python -m qortex_mcp.testing.faults [qortex-mcp arguments]`` with
``QORTEX_TEST_FAULTS`` naming the bugs: this launcher puts the faulty store in place of the
server's SQLite store, then hands over to the real command line.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Final

from qortex_mcp import runtime
from qortex_mcp.config import Settings
from qortex_mcp.learning.stores.base import LearningStore
from qortex_mcp.learning.stores.dedup import ApplyRequest
from qortex_mcp.learning.stores.factory import configured_store
from qortex_mcp.learning.stores.sqlite import SqliteLearningStore
from qortex_mcp.learning.stores.sqlite.thread import settle
from qortex_mcp.learning.types import ApplyResult
from qortex_mcp.logging import get_logger

__all__ = ["FAULTS", "FaultySqliteStore", "main"]

log = get_logger(__name__)

FAULTS: Final = frozenset({"ack_before_commit", "read_modify_write"})
_ACK_BEFORE_COMMIT_DELAY_S: Final = 0.02
"""How long an early answer stays ahead of its COMMIT: a kill in between loses it."""
# Absolute values computed in Python from the stale read.
_FOLD_STALE: Final = (
    "INSERT INTO evidence (learner, ctx, arm, s, f, n, rsum, t, v) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (learner, ctx, arm) DO UPDATE SET "
    "s = excluded.s, f = excluded.f, n = excluded.n, rsum = excluded.rsum, "
    "t = max(t, excluded.t), v = excluded.v"
)
_Stale = dict[tuple[str, str, str], tuple[float, float, int, float]]


class FaultySqliteStore(SqliteLearningStore):
    """``SqliteLearningStore`` with the deliberate bugs in ``faults`` (see the module)."""

    def __init__(self, path: str | Path, faults: frozenset[str], **options: Any) -> None:
        if not faults or not faults <= FAULTS:
            raise ValueError(f"test faults must be some of {sorted(FAULTS)}, got "
                             f"{sorted(faults)}")
        super().__init__(path, **options)
        self.faults = faults
        self._stale: _Stale | None = None
        log.warning("TEST_FAULTS_ENABLED", faults=sorted(faults),
                    danger="acknowledged feedback may be lost; tests only")

    def _write_batch(
        self, conn: sqlite3.Connection, batch: list[ApplyRequest]
    ) -> list[ApplyResult]:
        if "read_modify_write" in self.faults:  # read before the lock
            self._stale = self._read_evidence(conn, {req.learner for req in batch})
        conn.execute("BEGIN IMMEDIATE")
        results = self._apply_batch(conn, batch)
        if "ack_before_commit" in self.faults:  # answer, then commit
            assert self._loop is not None
            settle(self._loop, [(req.future, early, None)
                                for req, early in zip(batch, results, strict=True)])
            time.sleep(_ACK_BEFORE_COMMIT_DELAY_S)
        conn.execute("COMMIT")
        return results

    def _fold_plain(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        stale = self._stale
        if stale is None:
            super()._fold_plain(conn, rows)
            return
        conn.executemany(_FOLD_STALE, [_stale_fold(stale, *r) for r in rows])

    @staticmethod
    def _read_evidence(conn: sqlite3.Connection, learners: set[str]) -> _Stale:
        out = {}
        for learner in learners:
            for ctx, arm, s, f, n, rsum in conn.execute(
                "SELECT ctx, arm, s, f, n, rsum FROM evidence WHERE learner = ?", (learner,)
            ):
                out[(learner, ctx, arm)] = (s, f, n, rsum)
        return out


def _stale_fold(stale: _Stale, learner: str, ctx: str, arm: str, ws: float, wf: float,
                count: int, reward: float, at: float, v: int) -> tuple[Any, ...]:
    s, f, n, rsum = stale.get((learner, ctx, arm), (0.0, 0.0, 0, 0.0))
    new = (s + ws, f + wf, n + count, rsum + reward)
    stale[(learner, ctx, arm)] = new
    return (learner, ctx, arm, *new, at, v)


def main() -> None:
    """``qortex-mcp`` with the SQLite store replaced by ``FaultySqliteStore``."""
    from qortex_mcp.cli import main as cli_main

    faults = frozenset(f.strip() for f in os.environ.get("QORTEX_TEST_FAULTS", "").split(",")
                       if f.strip())

    def faulty_store(settings: Settings) -> LearningStore:
        if settings.store != "sqlite":
            return configured_store(settings)
        return FaultySqliteStore(settings.sqlite_path, faults,
                                 synchronous=settings.sqlite_synchronous)

    runtime.configured_store = faulty_store  # type: ignore[attr-defined]  # (imported name, replaced)
    raise SystemExit(cli_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
