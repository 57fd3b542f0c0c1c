"""The feedback batch writer: one group-committed transaction for many ``apply`` calls.

Runs on the writer thread inside ``BEGIN IMMEDIATE``: the standing answers are read and every
row's status decided under the write lock (nobody else can insert meanwhile), then the fresh
rows are written with one ``executemany`` per statement for the whole batch.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from qortex_mcp.learning.stores.dedup import ApplyRequest, decide, request_results
from qortex_mcp.learning.stores.sqlite import sql
from qortex_mcp.learning.types import GLOBAL_CONTEXT, ApplyResult, EvidenceRow

__all__ = ["FoldPlain", "apply_batch"]

FoldPlain = Callable[[sqlite3.Connection, list[tuple[Any, ...]]], None]
"""Adds increments without decay: (learner, ctx, arm, s, f, n, rsum, t, v) rows."""


def apply_batch(conn: sqlite3.Connection, batch: list[ApplyRequest],
                fold_plain: FoldPlain) -> list[ApplyResult]:
    """Write ``batch`` inside the open transaction; one result per request."""
    # 1. Decide every row's status under the write lock: nobody else can insert now.
    standing: dict[tuple[str, str, str], float] = {}
    for learner in {req.learner for req in batch}:
        keys = sorted({r.key for req in batch if req.learner == learner for r in req.rows})
        for i in range(0, len(keys), 500):
            for key, arm, reward in conn.execute(
                sql.ANSWERED, (learner, json.dumps(keys[i:i + 500]))
            ):
                standing[(learner, key, arm)] = reward
    verdicts = decide([(req.learner, req.rows) for req in batch], standing)
    # 2. Write the fresh rows of every learner, one version per learner, in one
    #    executemany per statement for the whole batch.
    versions: dict[str, int] = {}
    now = time.time()
    events: list[tuple[Any, ...]] = []
    # Without decay a cell's increments add up: one upsert per (learner, ctx, arm)
    # with the batch's sums (learner, ctx, arm, s, f, n, rsum, t, v).
    plain: dict[tuple[str, str, str], list[Any]] = {}
    decayed: list[tuple[Any, ...]] = []
    # One arm upsert per (learner, arm), not per row: a batch often repeats an arm.
    # As one by one would leave it: the last row's prior that has one (a0 and b0 come
    # together), else none (the PostgreSQL writer's DISTINCT ON does the same).
    arms: dict[tuple[str, str], tuple[Any, ...]] = {}
    bodies: list[tuple[Any, ...]] = []
    for req, d in zip(batch, verdicts, strict=True):
        if not d.fresh:
            continue
        if req.learner not in versions:
            bumped = conn.execute(sql.BUMP, (req.learner, now)).fetchone()
            assert bumped is not None
            versions[req.learner] = int(bumped[0])
        v = versions[req.learner]
        for r in d.fresh:
            events.append((req.learner, "feedback", r.key, r.arm, r.ctx, r.reward, r.weight,
                           r.outcome, r.at, None, r.propensity, r.policy))
            cell = (req.learner, r.arm)
            if r.a0 is not None or cell not in arms:
                arms[cell] = (req.learner, r.arm, r.a0, r.b0, v)
            if r.ctx_body is not None:
                bodies.append((req.learner, r.ctx, r.ctx_body))
            ws, wf = r.weight * r.reward, r.weight * (1.0 - r.reward)
            for ctx in ((GLOBAL_CONTEXT,) if r.ctx == GLOBAL_CONTEXT else (GLOBAL_CONTEXT,
                                                                           r.ctx)):
                if req.half_life_s is not None:
                    decayed.append((req.learner, ctx, r.arm, ws, wf, r.reward, r.at, v,
                                    req.half_life_s))
                elif (sums := plain.get(key := (req.learner, ctx, r.arm))) is None:
                    plain[key] = [*key, ws, wf, 1, r.reward, r.at, v]
                else:
                    sums[3] += ws
                    sums[4] += wf
                    sums[5] += 1
                    sums[6] += r.reward
                    sums[7] = max(sums[7], r.at)
    if events:
        conn.executemany(sql.INSERT_EVENT, events)
    if plain:
        fold_plain(conn, [tuple(sums) for sums in plain.values()])
    if decayed:
        conn.executemany(sql.FOLD_DECAY, decayed)
    if arms:
        conn.executemany(sql.UPSERT_ARM, arms.values())
    if bodies:
        conn.executemany(
            "INSERT OR IGNORE INTO contexts (learner, ctx, body) VALUES (?, ?, ?)", bodies
        )
    # 3. Read back what this transaction left (rows stamped with its versions).
    committed: dict[str, dict[tuple[str, str], EvidenceRow]] = {}
    for learner, v in versions.items():
        rows = [EvidenceRow(*r) for r in conn.execute(sql.EVIDENCE_AT, (learner, v))]
        committed[learner] = {(e.ctx, e.arm): e for e in rows}
    return request_results(batch, verdicts, committed)

