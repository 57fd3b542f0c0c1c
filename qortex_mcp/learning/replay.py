"""Rebuild posteriors from the event log: the store's state must equal prior + events.

The event log is the oracle. Folding every ``feedback`` event (with ``stores.base.fold``),
applying ``decay`` and ``reset`` events in log order, must reproduce each stored evidence
row; anything else is a mismatch worth reporting (and a bug worth a test).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from qortex_mcp.learning.stores.base import fold
from qortex_mcp.learning.types import (
    GLOBAL_CONTEXT,
    Event,
    EvidenceRow,
    ReplayMismatch,
    ReplayReport,
)

__all__ = ["fold_events", "replay_events"]

_REL_TOL = 1e-9


def fold_events(
    events: Iterable[Event], half_life_s: float | None
) -> dict[tuple[str, str], list[float]]:
    """(ctx, arm) -> [s, f, n, t] from the events, in log order."""
    rows: dict[tuple[str, str], list[float]] = {}
    for ev in sorted(events, key=lambda e: e.seq):
        if ev.kind == "feedback":
            assert ev.reward is not None
            assert ev.weight is not None
            ws, wf = ev.weight * ev.reward, ev.weight * (1.0 - ev.reward)
            for ctx in {GLOBAL_CONTEXT, ev.ctx or GLOBAL_CONTEXT}:
                cur = rows.setdefault((ctx, ev.arm), [0.0, 0.0, 0, ev.at])
                cur[0], cur[1], cur[3] = fold(cur[0], cur[1], cur[3], ev.at, ws, wf, half_life_s)
                cur[2] += 1
        elif ev.kind == "decay":
            assert ev.factor is not None
            for (_, arm), cur in rows.items():
                if not ev.arm or arm == ev.arm:
                    cur[0] *= ev.factor
                    cur[1] *= ev.factor
        elif ev.kind == "reset":
            for (ctx, arm), cur in rows.items():
                if (not ev.arm or arm == ev.arm) and (ev.ctx is None or ctx == ev.ctx):
                    cur[0] = cur[1] = 0.0
                    cur[2] = 0
    return rows


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=1e-9)


def replay_events(
    learner: str,
    events: Sequence[Event],
    stored: Sequence[EvidenceRow],
    half_life_s: float | None,
) -> ReplayReport:
    """Compare stored evidence with the fold of ``events``."""
    replayed = fold_events(events, half_life_s)
    have = {(r.ctx, r.arm): r for r in stored}
    mismatches = []
    for key in sorted(set(replayed) | set(have)):
        want = replayed.get(key, [0.0, 0.0, 0, 0.0])
        row = have.get(key)
        got = (row.s, row.f, row.n) if row else (0.0, 0.0, 0)
        if not (_close(got[0], want[0]) and _close(got[1], want[1]) and got[2] == want[2]):
            mismatches.append(ReplayMismatch(
                context_key=key[0], arm_id=key[1], stored=got,
                replayed=(want[0], want[1], int(want[2])),
            ))
    return ReplayReport(learner=learner, events=len(events), rows=len(have),
                        mismatches=tuple(mismatches))
