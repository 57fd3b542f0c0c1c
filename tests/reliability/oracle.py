"""The oracle of the fault tests: the store's own files, compared with what clients saw.

``read_store`` reads a SQLite or JSON store straight from disk (no server involved) and
runs its integrity check. ``Ledger`` is what the harness saw acknowledged. ``audit`` checks
the plan's invariants between the two:

* I1/I2 per arm and context: the evidence counter ``n`` equals the number of feedback rows,
  and ``s``/``f`` equal the sums of ``r``/``1 - r`` over them (exact for binary rewards,
  1e-9 relative otherwise). Fewer than the rows is a *lost update*, more is *double counted*.
* I3 each (selection, arm) has at most one feedback row.
* I4 every acknowledged feedback is present with the acknowledged reward (else *lost*).
* I5 rows nobody saw acknowledged are counted (orphans of a kill; 0 after retries).
* I6 ``PRAGMA integrity_check`` = ok / the JSON file parses as a qortex state file.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from qortex_mcp.learning.stores.tables import Tables

__all__ = ["Audit", "Ledger", "StoreState", "audit", "read_store", "temp_files"]

Key = tuple[str, str]
"""(dedup key = selection nonce, arm id)"""


@dataclass
class StoreState:
    integrity: str
    answers: dict[Key, list[tuple[float, str]]]
    """(key, arm) -> [(reward, ctx)] feedback rows (one, unless dedup is broken)."""
    evidence: dict[tuple[str, str], tuple[float, float, int]]
    """(ctx, arm) -> (s, f, n)"""

    @property
    def rows(self) -> int:
        return sum(len(v) for v in self.answers.values())

    @property
    def applied(self) -> int:
        """Feedback the posterior counts (the global context's counters)."""
        return sum(n for (ctx, _), (_, _, n) in self.evidence.items() if ctx == "")

    def checksum(self) -> tuple[object, ...]:
        return (tuple(sorted(self.evidence.items())),
                tuple(sorted((k, tuple(v)) for k, v in self.answers.items())))


def _sqlite(db: Path, learner: str) -> StoreState:
    conn = sqlite3.connect(db, timeout=10)
    try:
        integrity = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        answers: dict[Key, list[tuple[float, str]]] = {}
        for key, arm, reward, ctx in conn.execute(
            "SELECT key, arm, reward, ctx FROM events WHERE learner = ? AND kind = 'feedback'",
            (learner,),
        ):
            answers.setdefault((key, arm), []).append((reward, ctx))
        evidence = {(ctx, arm): (s, f, n) for ctx, arm, s, f, n in conn.execute(
            "SELECT ctx, arm, s, f, n FROM evidence WHERE learner = ?", (learner,))}
    finally:
        conn.close()
    return StoreState(integrity, answers, evidence)


def _json(path: Path, learner: str) -> StoreState:
    try:
        tables = Tables.parse(json.loads(path.read_bytes()))
    except (ValueError, KeyError, TypeError) as exc:
        return StoreState(f"unreadable: {exc}", {}, {})
    answers: dict[Key, list[tuple[float, str]]] = {}
    for ev in tables.event_page(learner, 0, 10**9):
        if ev.kind == "feedback":
            assert ev.key is not None
            assert ev.reward is not None
            answers.setdefault((ev.key, ev.arm), []).append((ev.reward, ev.ctx or ""))
    evidence = {(r.ctx, r.arm): (r.s, r.f, r.n) for r in tables.evidence(learner)}
    return StoreState("ok", answers, evidence)


def read_store(kind: str, state_dir: Path, learner: str) -> StoreState:
    """The store's state, read from its file (the server may be dead or alive)."""
    if kind == "sqlite":
        path = state_dir / "qortex.db"
        if not path.exists():
            return StoreState("ok", {}, {})
        return _sqlite(path, learner)
    path = state_dir / "qortex.json"
    if not path.exists():
        return StoreState("ok", {}, {})
    return _json(path, learner)


def temp_files(state_dir: Path) -> int:
    """Temp files a JSON store write left behind."""
    return len(list(state_dir.glob(".qortex.json.*.tmp")))


@dataclass
class Ledger:
    """What clients were told: acknowledged answers and how often each was 'applied'."""

    acked: dict[Key, float] = field(default_factory=dict)
    applied_seen: Counter[Key] = field(default_factory=Counter)
    duplicates_seen: int = 0

    def ack(self, key: Key, reward: float, status: str) -> None:
        previous = self.acked.setdefault(key, reward)
        assert previous == reward, f"{key} acknowledged with {previous} and {reward}"
        if status == "applied":
            self.applied_seen[key] += 1
        else:
            assert status == "duplicate", status
            self.duplicates_seen += 1


@dataclass
class Audit:
    acknowledged: int
    rows: int
    applied: int
    lost: int
    double_counted: int
    lost_updates: int
    unacknowledged: int
    sum_mismatches: int
    integrity: str

    @property
    def ok(self) -> bool:
        return (self.lost == self.double_counted == self.lost_updates == self.sum_mismatches
                == 0 and self.integrity == "ok")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def audit(state: StoreState, ledger: Ledger) -> Audit:
    lost = sum(1 for key, reward in ledger.acked.items()
               if [r for r, _ in state.answers.get(key, [])] != [reward])
    double = sum(len(v) - 1 for v in state.answers.values() if len(v) > 1)
    double += sum(n - 1 for n in ledger.applied_seen.values() if n > 1)
    expected: dict[tuple[str, str], list[float]] = {}
    for (_, arm), rows in state.answers.items():
        for reward, ctx in rows:
            for scope in {"", ctx}:
                expected.setdefault((scope, arm), []).append(reward)
    lost_updates = mismatches = 0
    for row in set(expected) | set(state.evidence):
        rewards = expected.get(row, [])
        s, f, n = state.evidence.get(row, (0.0, 0.0, 0))
        if n > len(rewards):
            double += n - len(rewards)
        elif n < len(rewards):
            lost_updates += len(rewards) - n
        elif not (_close(s, math.fsum(rewards)) and _close(f, math.fsum(1 - r for r in rewards))):
            mismatches += 1
    unacked = sum(1 for key in state.answers if key not in ledger.acked)
    return Audit(acknowledged=len(ledger.acked), rows=state.rows, applied=state.applied,
                 lost=lost, double_counted=double, lost_updates=lost_updates,
                 unacknowledged=unacked, sum_mismatches=mismatches, integrity=state.integrity)
