"""Feedback: checking it (reward, selection id, chosen arms), the propensity and strategy
version it carries, rate caps, and applying it durably (one store transaction) before the
cache takes the committed rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Sequence

import numpy as np

from qortex_mcp.errors import (
    ArmNotChosen,
    ArmNotInSelection,
    InvalidInput,
    InvalidOutcome,
    InvalidSelection,
    LimitExceeded,
    QortexError,
    SelectionConflict,
    StoreError,
    preview,
)
from qortex_mcp.learning.changes import CHANGE_DETECTED
from qortex_mcp.learning.choosing import Choosing
from qortex_mcp.learning.context import CanonicalContext, canonical_context
from qortex_mcp.learning.limits import (
    ARM_BYTES,
    CONTEXT_BYTES,
    CONTEXT_ROW_BYTES,
)
from qortex_mcp.learning.stores.base import apply_many
from qortex_mcp.learning.tokens import SelectionClaims
from qortex_mcp.learning.types import (
    GLOBAL_CONTEXT,
    ApplyResult,
    ArmOutcome,
    Decision,
    FeedbackResult,
    FeedbackRow,
    RowStatus,
    ToolExecution,
)
from qortex_mcp.learning.validation import (
    check_name,
    check_reward,
    check_weight,
)
from qortex_mcp.logging import get_logger

__all__ = ["Observing", "decision_propensity"]

log = get_logger(__name__)
_debug_on = logging.getLogger(__name__).isEnabledFor


def decision_propensity(decision: Decision, arm: str) -> float | None:
    """The propensity ``decision`` logged for ``arm`` (None: not chosen, or unknown)."""
    try:
        return decision.propensities[decision.chosen.index(arm)]
    except ValueError:
        return None


class Observing(Choosing):
    """``observe``, ``batch_observe``, ``observe_many``."""

    def verify_selection(self, selection_id: str) -> SelectionClaims:
        """The claims of an unexpired selection id this learner issued.

        Raises:
            InvalidSelection: not an id this learner issued.
            SelectionExpired: older than ``config.selection_ttl_s`` (0: never expires).
        """
        return self._signer.verify(selection_id, self.name, ttl_s=self.config.selection_ttl_s)

    def _reward(self, outcome: ArmOutcome) -> tuple[float, str | None]:
        raw = outcome.outcome
        text: str | None
        if raw is None:
            text = None
        elif isinstance(raw, str):
            text = raw
        elif isinstance(raw, ToolExecution):
            text = json.dumps({"success": raw.success, "latency_ms": raw.latency_ms,
                               "rating": raw.rating}, separators=(",", ":"))
        else:
            raise InvalidOutcome(f"outcome must be a word or a ToolExecution: {preview(raw)}")
        if outcome.reward is not None:
            if raw is not None:
                self._reward_model(raw)  # still refuse unknown words
            return check_reward(outcome.reward), text
        if raw is None:
            raise InvalidOutcome("give an outcome word or a reward in [0, 1]")
        return check_reward(self._reward_model(raw)), text

    def _prepare(self, outcome: ArmOutcome, now: float, selects: set[str],
                 unknown: set[str]) -> FeedbackRow:
        """Check one feedback and build its row; the nonce of a select it quotes goes into
        ``selects``, the nonce of a decision this learner's log does not hold (its
        propensity is read from the store) into ``unknown``."""
        if not isinstance(outcome, ArmOutcome):
            raise InvalidInput("feedback must be an ArmOutcome")
        arm = check_name(outcome.arm_id, "arm id")
        reward, text = self._reward(outcome)
        weight = check_weight(outcome.weight)
        propensity: float | None = None
        policy: str | None = None
        if outcome.selection_id is not None:
            claims = self.verify_selection(outcome.selection_id)
            if not claims.chose(arm):
                if not claims.covers(arm):
                    raise ArmNotInSelection(
                        f"arm {preview(arm)} was not part of this selection; feedback applies "
                        "only to the arms it chose"
                    )
                if not self.config.accept_unchosen_feedback:
                    raise ArmNotChosen(
                        f"arm {preview(arm)} was offered but not chosen; only the chosen arms "
                        "of a select can get feedback on that selection"
                    )
            if claims.kind == "next":
                raise InvalidSelection(
                    "this selection_id is a next-tool suggestion; send its feedback with "
                    "NextToolModel.feedback (qortex_feedback routes it there)"
                )
            ctx = canonical_context(json.loads(claims.context)) if claims.context else None
            key = claims.nonce
            if claims.kind == "select":
                selects.add(key)
            policy = claims.policy
            decision = self._decisions.find(key)
            if decision is not None:
                propensity = decision_propensity(decision, arm)
                policy = decision.policy
            elif self._logging:
                unknown.add(key)
        else:
            ctx = canonical_context(outcome.context)
            if outcome.idempotency_key is not None:
                key = "key:" + check_name(outcome.idempotency_key, "idempotency_key")
            else:
                key = "bare:" + secrets.token_urlsafe(16)
        slot = self._index.get(arm)
        a0 = b0 = None
        if slot is not None and slot in self._custom_prior:
            a0, b0 = float(self._a0[slot]), float(self._b0[slot])
        return FeedbackRow(
            key=key, arm=arm, ctx=ctx.key if ctx else GLOBAL_CONTEXT,
            ctx_body=ctx.body if ctx else None, reward=reward, weight=weight, outcome=text,
            at=now, a0=a0, b0=b0, propensity=propensity, policy=policy,
        )

    async def _logged(self, unknown: set[str]) -> dict[str, Decision]:
        """The decisions under ``unknown`` keys in the store's decision log: those this
        learner's log did not hold (one not written yet, e.g. made by another instance
        less than a flush ago, or lost in a crash, is missing: its rows keep None)."""
        return {d.key: d for d in await self.store.decisions(self.name, keys=sorted(unknown))}

    @staticmethod
    def _with_logged(rows: list[FeedbackRow], found: dict[str, Decision]) -> list[FeedbackRow]:
        if not found:
            return rows
        return [r if r.key not in found else dataclasses.replace(
            r, propensity=decision_propensity(found[r.key], r.arm),
            policy=found[r.key].policy) for r in rows]

    async def observe(self, outcome: ArmOutcome) -> FeedbackResult:
        """Apply one feedback; returns after it is durable.

        Raises:
            InvalidReward, InvalidOutcome, InvalidName, InvalidContext: bad input.
            InvalidSelection, SelectionExpired, ArmNotInSelection: a bad selection id.
            SelectionConflict: this arm of this selection was answered with another reward.
            StoreError: the store failed (retryable codes are safe to retry).
        """
        return (await self.batch_observe([outcome]))[0]

    async def batch_observe(self, outcomes: Sequence[ArmOutcome]) -> list[FeedbackResult]:
        """Apply many feedbacks in one transaction: all are checked first, and if any is
        invalid or conflicts, nothing is applied. Order does not matter."""
        started = time.perf_counter()
        self._check_open()
        if isinstance(outcomes, ArmOutcome) or not isinstance(outcomes, Sequence):
            raise InvalidInput("batch_observe takes a list of ArmOutcome")
        if not outcomes:
            return []
        now = self._now()
        selects: set[str] = set()
        unknown: set[str] = set()
        rows = [self._prepare(o, now, selects, unknown) for o in outcomes]
        if unknown:
            rows = self._with_logged(rows, await self._logged(unknown))
        result = await self._apply_rows(rows)
        # Selections (of select, not rerank) answered for the first time: feedback rate.
        first = len(result.new_keys & selects) if selects else 0
        self._answered += first
        self._pending_answered += first
        out = []
        for status, row in zip(result.statuses, rows, strict=True):
            slot = self._slot(row.arm)
            ctx = None if row.ctx == GLOBAL_CONTEXT else CanonicalContext(row.ctx, "")
            s, f = self._evidence(np.array([slot]), ctx, now)
            alpha, beta = float(self._a0[slot] + s[0]), float(self._b0[slot] + f[0])
            pulls = int(self._n[slot]) if ctx is None else int(
                self._ctx.get(row.ctx, {}).get(slot, [0, 0, 0])[2])
            out.append(FeedbackResult(
                arm_id=row.arm, status="applied" if status == "applied" else "duplicate",
                reward=row.reward, alpha=alpha, beta=beta, mean=alpha / (alpha + beta),
                pulls=pulls, selection_id=None if row.key.startswith(("key:", "bare:")) else
                row.key, context_key=row.ctx,
            ))
        if _debug_on(logging.DEBUG):
            log.debug("observe", learner=self.name, arms=[r.arm for r in rows],
                      rewards=[r.reward for r in rows], statuses=list(result.statuses),
                      latency_ms=round((time.perf_counter() - started) * 1e3, 3))
        return out

    def _admit(self, rows: Sequence[FeedbackRow], rated: Sequence[FeedbackRow]) -> None:
        """Refuse, before anything is written, feedback the limits do not take: a context
        past ``max_contexts``, new state past the memory budget, or a rate cap (checked
        last, so a call refused for another reason costs no rate)."""
        index = self._index
        if all(r.ctx == GLOBAL_CONTEXT and r.arm in index for r in rows):
            # The common case (known arms, no context) needs no new state: only the rate.
            self._limiter.take([r.arm for r in rated])
            return
        new_ctx = {r.ctx for r in rows if r.ctx != GLOBAL_CONTEXT and r.ctx not in self._ctx}
        cap = self.config.max_contexts
        if new_ctx and len(self._ctx) + len(new_ctx) > cap:
            raise LimitExceeded(
                f"learner {self.name!r} already keeps evidence in {len(self._ctx)} contexts "
                f"(max_contexts {cap}); use a coarser context, or none"
            )
        nbytes = sum(CONTEXT_BYTES + len(c) for c in new_ctx)
        fresh = {r.arm for r in rows if r.arm not in self._index}
        nbytes += sum(ARM_BYTES + len(a) for a in fresh)
        nbytes += CONTEXT_ROW_BYTES * len({
            (r.ctx, r.arm) for r in rows if r.ctx != GLOBAL_CONTEXT and (
                r.arm in fresh or index[r.arm] not in self._ctx.get(r.ctx, {}))
        })
        self._budget.require(nbytes, f"feedback for learner {self.name!r}")
        self._limiter.take([r.arm for r in rated])

    async def _apply_rows(
        self, rows: Sequence[FeedbackRow], rated: Sequence[FeedbackRow] | None = None
    ) -> ApplyResult:
        """Admit, durably apply and absorb checked feedback rows (all or none).

        ``rated`` are the rows the rate caps count (default: all); the next-tool model
        writes one row per n-gram level of a transition and counts the transition once.

        Raises:
            LimitExceeded, RateLimited: refused before anything is written.
            SelectionConflict: a row was answered before with another reward.
            StoreError: the store failed.
        """
        self._admit(rows, rows if rated is None else rated)
        await self._ensure_stored()
        result = await self.store.apply(self.name, rows, self._half_life)
        for status, row, standing in zip(result.statuses, rows, result.standing, strict=True):
            if status == "conflict":
                raise SelectionConflict(
                    f"arm {preview(row.arm)} of this selection was already answered with reward "
                    f"{standing}; the first answer stands"
                )
        self._absorb(result.rows)
        if self._changes is not None:
            await self._detect_changes(rows, result.statuses)
        return result

    async def _detect_changes(self, rows: Sequence[FeedbackRow],
                              statuses: Sequence[RowStatus]) -> None:
        """Feed the committed rewards to the arms' change tests; shrink the evidence of an
        arm whose test alarms (``qortex_mcp.learning.changes``). The feedback is already
        durable: a store failure here is logged and does not fail the feedback."""
        tests = self._changes
        assert tests is not None
        fired = [row.arm for row, status in zip(rows, statuses, strict=True)
                 if status == "applied" and tests.observe(row.arm, row.reward)]
        if not fired:
            return
        # What to shrink ("" = every arm: one global restart) -> the arm that alarmed.
        targets = {arm: arm for arm in fired}
        if tests.test.all_arms:
            targets = {"": fired[0]}
            tests.clear()
        for arm, cause in targets.items():
            log.info(CHANGE_DETECTED, learner=self.name, arm=cause,
                     scope="arm" if arm else "all arms", shrink=tests.test.shrink)
            try:
                await self._decay(arm, tests.test.shrink, CHANGE_DETECTED)
            except StoreError as exc:
                log.warning("change_decay_failed", learner=self.name, arm=arm, code=exc.code)

    async def observe_many(
        self, requests: Sequence[Sequence[ArmOutcome]]
    ) -> list[tuple[RowStatus, ...] | QortexError]:
        """Apply independent feedback requests together (the stream consumers' batch path).

        Each request is checked and applied as by ``batch_observe``, on its own: one that
        is invalid or conflicts changes nothing and its error takes its place in the
        result; the others are handed to the store at once, which commits them in one
        transaction when it group-commits (SQLite, PostgreSQL). Returns, per request, its
        per-arm statuses (``applied`` or ``duplicate``) or its error, after the commit.
        Unlike ``batch_observe`` it builds no posterior per arm (a stream has no one to
        answer).

        Raises:
            StoreError: the store failed; which requests committed is unknown (retrying
                them all is safe: each is deduplicated by its keys).
        """
        self._check_open()
        now = self._now()
        out: list[tuple[RowStatus, ...] | QortexError] = []
        ready: list[tuple[int, list[FeedbackRow], set[str]]] = []
        unknown: set[str] = set()
        for i, outcomes in enumerate(requests):
            selects: set[str] = set()
            try:
                if not outcomes:
                    raise InvalidInput("a feedback request needs at least one outcome")
                rows = [self._prepare(o, now, selects, unknown) for o in outcomes]
                self._admit(rows, rows)
            except QortexError as exc:
                out.append(exc)
                continue
            out.append(())
            ready.append((i, rows, selects))
        if not ready:
            return out
        if unknown:
            found = await self._logged(unknown)
            ready = [(i, self._with_logged(rows, found), sel) for i, rows, sel in ready]
        await self._ensure_stored()
        # First as one request (one decision, one write): a request with a conflicting row
        # writes nothing, so if any conflicts, nothing was written and the requests are
        # applied again each on its own, the conflicting ones then alone refused.
        merged = await self.store.apply(self.name, [r for _, rows, _ in ready for r in rows],
                                        self._half_life)
        if "conflict" not in merged.statuses:
            self._absorb(merged.rows)
            if self._changes is not None:
                await self._detect_changes([r for _, rows, _ in ready for r in rows],
                                           merged.statuses)
            selects = set().union(*(sel for _, _, sel in ready))
            first = len(merged.new_keys & selects) if selects else 0
            self._answered += first
            self._pending_answered += first
            k = 0
            for i, rows, _ in ready:
                out[i] = merged.statuses[k:k + len(rows)]
                k += len(rows)
            return out
        results = await apply_many(self.store, self.name, [r for _, r, _ in ready],
                                   self._half_life)
        for (i, rows, selects), result in zip(ready, results, strict=True):
            if "conflict" in result.statuses:
                k = result.statuses.index("conflict")
                out[i] = SelectionConflict(
                    f"arm {preview(rows[k].arm)} of this selection was already answered with "
                    f"reward {result.standing[k]}; the first answer stands")
                continue
            self._absorb(result.rows)
            if self._changes is not None:
                await self._detect_changes(rows, result.statuses)
            first = len(result.new_keys & selects) if selects else 0
            self._answered += first
            self._pending_answered += first
            out[i] = result.statuses
        return out

