"""The decision log's rows as the SQL stores keep them: lists as compact JSON text.

One codec for SQLite and PostgreSQL, so a decision reads back the same from either (and
from an export).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from qortex_mcp.learning.types import Decision

__all__ = ["MAX_LOGGED", "decision_from_row", "decision_values"]

MAX_LOGGED: Final = 256
"""A decision lists its candidates when it had at most this many (``candidates`` None
beyond, ``n_candidates`` still counts them): the log stays small for huge reranks."""


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def decision_values(learner: str, d: Decision) -> tuple[Any, ...]:
    """Column values: learner, key, kind, ctx, at, policy, chosen, propensities,
    candidates, n_candidates."""
    return (learner, d.key, d.kind, d.ctx, d.at, d.policy, _dumps(list(d.chosen)),
            _dumps(list(d.propensities)),
            None if d.candidates is None else _dumps(list(d.candidates)), d.n_candidates)


def decision_from_row(row: Sequence[Any]) -> Decision:
    """A ``Decision`` from (seq, key, kind, ctx, at, policy, chosen, propensities,
    candidates, n_candidates)."""
    seq, key, kind, ctx, at, policy, chosen, props, cands, n = row
    return Decision(key=key, kind=kind, ctx=ctx, at=float(at), policy=policy,
                    chosen=tuple(json.loads(chosen)),
                    propensities=tuple(json.loads(props)),
                    candidates=None if cands is None else tuple(json.loads(cands)),
                    n_candidates=int(n), seq=int(seq))
