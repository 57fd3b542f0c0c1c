"""Deciding feedback rows against the answers already standing, the same way in every
SQL store: the caller holds the write lock, reads the standing answers, decides here, and
writes only the fresh rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from qortex_mcp.learning.types import (
    GLOBAL_CONTEXT,
    ApplyResult,
    EvidenceRow,
    FeedbackRow,
    RowStatus,
)

__all__ = ["ApplyRequest", "Verdict", "decide", "request_results"]


@dataclass
class ApplyRequest:
    """One queued ``apply`` call of a group-committing writer, answered through ``future``."""

    learner: str
    rows: Sequence[FeedbackRow]
    half_life_s: float | None
    future: asyncio.Future[ApplyResult]


@dataclass
class Verdict:
    """One request's per-row statuses, the standing rewards, and the rows to write."""

    statuses: list[RowStatus] = field(default_factory=list)
    standing: list[float | None] = field(default_factory=list)
    fresh: list[FeedbackRow] = field(default_factory=list)
    new_keys: set[str] = field(default_factory=set)
    """Keys with no standing answer for any arm before this request (when it applies)."""


def decide(
    requests: Sequence[tuple[str, Sequence[FeedbackRow]]],
    standing: dict[tuple[str, str, str], float],
) -> list[Verdict]:
    """Statuses for each ``(learner, rows)`` request, in order.

    A row whose (learner, key, arm) is unanswered is ``applied``; answered with the same
    reward, ``duplicate``; with another, ``conflict``, and then the whole request writes
    nothing. Answers of earlier requests in the batch count as standing for later ones;
    ``standing`` is updated in place with them.

    ``standing`` must hold every arm answered under the rows' keys (not only the rows'
    arms) for ``Verdict.new_keys`` to be right.
    """
    out = []
    keys = {(learner, key) for learner, key, _ in standing}
    for learner, rows in requests:
        d = Verdict()
        pending: dict[tuple[str, str, str], float] = {}
        for row in rows:
            k = (learner, row.key, row.arm)
            prior = standing.get(k, pending.get(k))
            if prior is None:
                d.statuses.append("applied")
                d.standing.append(None)
                pending[k] = row.reward
                d.fresh.append(row)
            else:
                d.statuses.append("duplicate" if prior == row.reward else "conflict")
                d.standing.append(prior)
        if "conflict" in d.statuses:
            d.fresh = []  # a request with a conflict changes nothing at all
        else:
            standing.update(pending)
            d.new_keys = {r.key for r in d.fresh if (learner, r.key) not in keys}
            keys.update((learner, r.key) for r in d.fresh)
        out.append(d)
    return out


def request_results(
    batch: Sequence[ApplyRequest], verdicts: Sequence[Verdict],
    committed: Mapping[str, Mapping[tuple[str, str], EvidenceRow]],
) -> list[ApplyResult]:
    """What each request of a committed batch left: its statuses and the evidence rows of
    the (context, arm) cells it wrote, from ``committed`` (learner -> (ctx, arm) -> row,
    read back in the batch's transaction). Cells are looked up, not scanned: a stream
    consumer's batch holds many small requests."""
    out = []
    for req, d in zip(batch, verdicts, strict=True):
        mine = {(GLOBAL_CONTEXT, r.arm) for r in d.fresh} | {(r.ctx, r.arm) for r in d.fresh}
        cells = committed.get(req.learner, {})
        rows = tuple(cells[c] for c in mine if c in cells)
        out.append(ApplyResult(tuple(d.statuses), tuple(d.standing), rows,
                               frozenset(d.new_keys)))
    return out
