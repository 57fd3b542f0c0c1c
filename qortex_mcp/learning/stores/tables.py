"""Plain-Python tables: the state model of the memory and JSON stores.

The same rules as the SQL stores (dedup on (learner, key, arm), evidence folded in place,
versions that only grow), written once so the two in-process stores cannot drift apart.
The caller holds whatever lock makes a call atomic.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from qortex_mcp.learning.stores.base import (
    SCHEMA_VERSION,
    LearnerSnapshot,
    LearnerSummary,
    fold,
)
from qortex_mcp.learning.stores.dedup import decide
from qortex_mcp.learning.types import (
    GLOBAL_CONTEXT,
    ApplyResult,
    ArmRow,
    Decision,
    Event,
    EvidenceRow,
    FeedbackRow,
)

__all__ = ["Tables"]


@dataclass
class _Learner:
    config: str
    version: int = 0
    selections: int = 0
    explored: int = 0
    # (ctx, arm) -> [s, f, n, rsum, t, v]
    evidence: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # arm -> [a0, b0, selections, last_selected, v]   (a0/b0/last may be None)
    arms: dict[str, list[Any]] = field(default_factory=dict)
    # (key, arm) -> reward
    answered: dict[tuple[str, str], float] = field(default_factory=dict)
    contexts: dict[str, str] = field(default_factory=dict)
    answered_selections: int = 0
    # the keys of ``answered`` (not stored: rebuilt on parse)
    keys: set[str] = field(default_factory=set)
    # key -> decision, in log order (the first one logged under a key stays)
    decisions: dict[str, Decision] = field(default_factory=dict)


class Tables:
    """All learners' state in dicts; ``events`` is the global append-only log."""

    def __init__(self) -> None:
        self.learners: dict[str, _Learner] = {}
        self.events: dict[str, list[Event]] = {}
        self.seq = 0
        self.decision_seq = 0
        self.version = SCHEMA_VERSION
        """The schema version the tables were read as (``dump`` writes the current one)."""

    # --- reading ---------------------------------------------------------------------------

    def _get(self, learner: str) -> _Learner:
        rec = self.learners.get(learner)
        if rec is None:
            rec = self.learners[learner] = _Learner(config="{}")
            self.events[learner] = []
        return rec

    def ensure_learner(self, learner: str, config_json: str) -> bool:
        if learner in self.learners:
            return False
        self.learners[learner] = _Learner(config=config_json)
        self.events[learner] = []
        return True

    @staticmethod
    def _ev(key: tuple[str, str], row: list[float]) -> EvidenceRow:
        return EvidenceRow(key[0], key[1], row[0], row[1], int(row[2]), row[3], row[4],
                           int(row[5]))

    @staticmethod
    def _arm(arm: str, row: list[Any]) -> ArmRow:
        return ArmRow(arm, row[0], row[1], int(row[2]), row[3], int(row[4]))

    def snapshot(self, learner: str) -> LearnerSnapshot:
        rec = self.learners.get(learner) or _Learner(config="{}")  # reading creates nothing
        return LearnerSnapshot(
            name=learner,
            evidence=tuple(self._ev(k, r) for k, r in rec.evidence.items()),
            arms=tuple(self._arm(a, r) for a, r in rec.arms.items()),
            selections=rec.selections,
            explored=rec.explored,
            cursor=rec.version,
            answered=rec.answered_selections,
        )

    def changes(self, learner: str, cursor: int) -> tuple[int, list[EvidenceRow], list[ArmRow]]:
        rec = self.learners.get(learner) or _Learner(config="{}")
        if rec.version <= cursor:
            return rec.version, [], []
        ev = [self._ev(k, r) for k, r in rec.evidence.items() if r[5] > cursor]
        arms = [self._arm(a, r) for a, r in rec.arms.items() if r[4] > cursor]
        return rec.version, ev, arms

    def summaries(self) -> list[LearnerSummary]:
        out = []
        for name, rec in sorted(self.learners.items()):
            feedback = sum(int(r[2]) for (c, _), r in rec.evidence.items() if c == GLOBAL_CONTEXT)
            times = [r[4] for r in rec.evidence.values()]
            out.append(LearnerSummary(name, len(rec.arms), rec.selections, rec.explored,
                                      feedback, max(times) if times else None))
        return out

    # --- writing ---------------------------------------------------------------------------

    def _bump(self, rec: _Learner) -> int:
        rec.version += 1
        return rec.version

    def _log(self, learner: str, **fields: Any) -> None:
        self.seq += 1
        self.events[learner].append(Event(seq=self.seq, **fields))

    def apply(
        self, learner: str, rows: Sequence[FeedbackRow], half_life_s: float | None
    ) -> ApplyResult:
        rec = self._get(learner)
        standing = {(learner, r.key, r.arm): rec.answered[(r.key, r.arm)]
                    for r in rows if (r.key, r.arm) in rec.answered}
        (d,) = decide([(learner, rows)], standing)
        statuses, fresh = d.statuses, d.fresh
        if "conflict" in statuses:
            return ApplyResult(tuple(statuses), tuple(d.standing), ())
        touched: dict[tuple[str, str], list[float]] = {}
        new_keys = frozenset(row.key for row in fresh if row.key not in rec.keys)
        if fresh:
            v = self._bump(rec)
            for row in fresh:
                rec.answered[(row.key, row.arm)] = row.reward
                rec.keys.add(row.key)
                ws, wf = row.weight * row.reward, row.weight * (1.0 - row.reward)
                for ctx in {GLOBAL_CONTEXT, row.ctx}:
                    key = (ctx, row.arm)
                    cur = rec.evidence.get(key)
                    if cur is None:
                        cur = rec.evidence[key] = [0.0, 0.0, 0, 0.0, row.at, v]
                    cur[0], cur[1], cur[4] = fold(cur[0], cur[1], cur[4], row.at, ws, wf,
                                                  half_life_s)
                    cur[2] += 1
                    cur[3] += row.reward
                    cur[5] = v
                    touched[key] = cur
                arm = rec.arms.get(row.arm)
                if arm is None:
                    rec.arms[row.arm] = [row.a0, row.b0, 0, None, v]
                elif row.a0 is not None:
                    arm[0], arm[1], arm[4] = row.a0, row.b0, v
                if row.ctx_body is not None:
                    rec.contexts.setdefault(row.ctx, row.ctx_body)
                self._log(learner, kind="feedback", key=row.key, arm=row.arm, ctx=row.ctx,
                          reward=row.reward, weight=row.weight, outcome=row.outcome, at=row.at,
                          ctx_body=row.ctx_body, propensity=row.propensity, policy=row.policy)
        return ApplyResult(tuple(statuses), tuple(d.standing),
                           tuple(self._ev(k, r) for k, r in touched.items()), new_keys)

    def record_selections(
        self,
        learner: str,
        counts: Mapping[str, tuple[int, float]],
        priors: Mapping[str, tuple[float, float]],
        selections: int,
        explored: int,
        answered: int = 0,
        decisions: Sequence[Decision] = (),
    ) -> None:
        rec = self._get(learner)
        for d in decisions:
            if d.key not in rec.decisions:
                self.decision_seq += 1
                rec.decisions[d.key] = dataclasses.replace(d, seq=self.decision_seq)
        v = self._bump(rec)
        rec.selections += selections
        rec.explored += explored
        rec.answered_selections += answered
        for arm in set(counts) | set(priors):
            cur = rec.arms.setdefault(arm, [None, None, 0, None, v])
            n, last = counts.get(arm, (0, None))
            cur[2] += n
            if last is not None:
                cur[3] = max(last, cur[3] or 0.0)
            if arm in priors:
                cur[0], cur[1] = priors[arm]
            cur[4] = v

    def decay(self, learner: str, arm: str, factor: float, at: float,
              reason: str | None = None) -> list[EvidenceRow]:
        rec = self._get(learner)
        v = self._bump(rec)
        out = []
        for key, cur in rec.evidence.items():
            if not arm or key[1] == arm:
                cur[0] *= factor
                cur[1] *= factor
                cur[5] = v
                out.append(self._ev(key, cur))
        self._log(learner, kind="decay", key=None, arm=arm, ctx=None, reward=None, weight=None,
                  outcome=reason, at=at, factor=factor)
        return out

    def reset(
        self, learner: str, arms: Sequence[str] | None, ctx: str | None, at: float,
        dry_run: bool,
    ) -> tuple[tuple[str, ...], int, float]:
        rec = self._get(learner)
        wanted = None if arms is None else set(arms)
        hits = [
            (key, cur) for key, cur in rec.evidence.items()
            if (wanted is None or key[1] in wanted) and (ctx is None or key[0] == ctx)
            and (cur[0] or cur[1] or cur[2])
        ]
        touched = tuple(sorted({key[1] for key, _ in hits}))
        removed = sum(cur[0] + cur[1] for key, cur in hits if key[0] == (ctx or GLOBAL_CONTEXT))
        if dry_run or not hits:
            return touched, len(hits), removed
        v = self._bump(rec)
        for _, cur in hits:
            cur[0] = cur[1] = cur[3] = 0.0
            cur[2] = 0
            cur[5] = v
        for arm in touched:
            self._log(learner, kind="reset", key=None, arm=arm, ctx=ctx, reward=None,
                      weight=None, outcome=None, at=at)
        return touched, len(hits), removed

    def event_page(self, learner: str, after_seq: int, limit: int) -> list[Event]:
        return [e for e in self.events.get(learner, []) if e.seq > after_seq][:limit]

    def decision_page(self, learner: str, after_seq: int, limit: int,
                      keys: Sequence[str] | None) -> list[Decision]:
        rec = self.learners.get(learner)
        if rec is None:
            return []
        if keys is not None:
            wanted = set(keys)
            return sorted((rec.decisions[k] for k in wanted if k in rec.decisions),
                          key=lambda d: d.seq)
        return [d for d in rec.decisions.values() if d.seq > after_seq][:limit]

    def contexts(self, learner: str, keys: Sequence[str]) -> dict[str, str]:
        rec = self.learners.get(learner)
        return {} if rec is None else {k: rec.contexts[k] for k in keys if k in rec.contexts}

    def evidence(self, learner: str) -> list[EvidenceRow]:
        rec = self.learners.get(learner)
        return [] if rec is None else [self._ev(k, r) for k, r in rec.evidence.items()]

    # --- serialisation (the JSON store's file format) --------------------------------------

    def dump(self) -> dict[str, Any]:
        return {
            "format": "qortex-mcp",
            "schema_version": SCHEMA_VERSION,
            "seq": self.seq,
            "decision_seq": self.decision_seq,
            "learners": {
                name: {
                    "config": rec.config,
                    "version": rec.version,
                    "selections": rec.selections,
                    "explored": rec.explored,
                    "answered_selections": rec.answered_selections,
                    "evidence": [[c, a, *r] for (c, a), r in rec.evidence.items()],
                    "arms": [[a, *r] for a, r in rec.arms.items()],
                    "answered": [[k, a, r] for (k, a), r in rec.answered.items()],
                    "contexts": rec.contexts,
                    "events": [list(e.row()) for e in self.events[name]],
                    "decisions": [
                        [d.seq, d.key, d.kind, d.ctx, d.at, d.policy, list(d.chosen),
                         list(d.propensities),
                         None if d.candidates is None else list(d.candidates), d.n_candidates]
                        for d in rec.decisions.values()
                    ],
                }
                for name, rec in self.learners.items()
            },
        }

    @classmethod
    def parse(cls, data: Any) -> Tables:
        """Rebuild from ``dump()`` output; raises ``ValueError`` naming what is wrong.

        The whole document is checked (types, arity, finite non-negative evidence, priors
        > 0, rewards in [0, 1]) before any of it is used: a damaged file must be refused at
        open, not found later by a select or by the shutdown flush.
        """
        if not isinstance(data, dict) or data.get("format") != "qortex-mcp":
            raise ValueError("not a qortex-mcp state file")
        version = data.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError("schema_version is missing")
        if version > SCHEMA_VERSION:
            raise OverflowError(f"schema version {version} is newer than {SCHEMA_VERSION}")
        out = cls()
        out.version = version
        out.seq = _count(data.get("seq"), "seq")
        out.decision_seq = _count(data.get("decision_seq", 0), "decision_seq")
        learners = data.get("learners")
        if not isinstance(learners, dict):
            raise ValueError(f"learners must be an object, got {type(learners).__name__}")
        for name, rec in learners.items():
            where = f"learner {name!r}"
            out.learners[name], out.events[name] = _parse_learner(rec, where)
            for e in out.events[name]:
                if e.seq > out.seq:
                    raise ValueError(f"{where}: event seq {e.seq} is beyond the file's seq")
            for d in out.learners[name].decisions.values():
                if d.seq > out.decision_seq:
                    raise ValueError(f"{where}: decision seq {d.seq} is beyond the file's "
                                     "decision_seq")
        return out


def _fail(where: str, what: str, value: object) -> ValueError:
    shown = repr(value)
    return ValueError(f"{where}: {what}, got {shown[:40]}{'...' if len(shown) > 40 else ''}")


def _count(value: object, where: str) -> int:
    # Counts may have been written as floats (3.0) by earlier versions: integral is enough.
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not (math.isfinite(value) and value.is_integer())
    ) or value < 0:
        raise _fail(where, "must be an integer >= 0", value)
    return int(value)


def _number(value: object, where: str, low: float = -math.inf, high: float = math.inf,
            above: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, "must be a number", value)
    x = float(value)
    if not math.isfinite(x) or x < low or x > high or (above and x <= low):
        bound = (f" > {low:g}" if above else f" in [{low:g}, {high:g}]" if math.isfinite(high)
                 else f" >= {low:g}" if math.isfinite(low) else "")
        raise _fail(where, f"must be a finite number{bound}", value)
    return x


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, "must be text", value)
    return value


def _maybe_text(value: object, where: str) -> str | None:
    return None if value is None else _text(value, where)


def _rows(value: object, where: str, sizes: tuple[int, ...]) -> list[list[Any]]:
    if not isinstance(value, list):
        raise _fail(where, "must be a list", value)
    for i, row in enumerate(value):
        if not isinstance(row, list) or len(row) not in sizes:
            raise _fail(f"{where}[{i}]", f"must be a list of {sizes[-1]} fields", row)
    return value


def _parse_learner(rec: object, where: str) -> tuple[_Learner, list[Event]]:
    if not isinstance(rec, dict):
        raise _fail(where, "must be an object", rec)
    lr = _Learner(config=_text(rec.get("config"), f"{where}.config"),
                  version=_count(rec.get("version"), f"{where}.version"),
                  selections=_count(rec.get("selections"), f"{where}.selections"),
                  explored=_count(rec.get("explored"), f"{where}.explored"),
                  # files written before the counter have none: 0
                  answered_selections=_count(rec.get("answered_selections", 0),
                                             f"{where}.answered_selections"))
    for i, row in enumerate(_rows(rec.get("evidence"), f"{where}.evidence", (8,))):
        at = f"{where}.evidence[{i}]"
        c, a = _text(row[0], f"{at} ctx"), _text(row[1], f"{at} arm")
        lr.evidence[(c, a)] = [
            _number(row[2], f"{at} s", 0.0), _number(row[3], f"{at} f", 0.0),
            float(_count(row[4], f"{at} n")), _number(row[5], f"{at} rsum", 0.0),
            _number(row[6], f"{at} t"), float(_count(row[7], f"{at} v"))]
    for i, row in enumerate(_rows(rec.get("arms"), f"{where}.arms", (6,))):
        at = f"{where}.arms[{i}]"
        arm = _text(row[0], f"{at} arm")
        a0, b0 = row[1], row[2]
        if (a0 is None) != (b0 is None):
            raise _fail(at, "a prior needs both alpha and beta", [a0, b0])
        if a0 is not None:  # a prior <= 0 would break every select
            a0, b0 = _number(a0, f"{at} a0", 0.0, above=True), \
                _number(b0, f"{at} b0", 0.0, above=True)
        last = None if row[4] is None else _number(row[4], f"{at} last_selected")
        lr.arms[arm] = [a0, b0, _count(row[3], f"{at} selections"), last,
                        _count(row[5], f"{at} v")]
    for i, row in enumerate(_rows(rec.get("answered"), f"{where}.answered", (3,))):
        at = f"{where}.answered[{i}]"
        key, arm = _text(row[0], f"{at} key"), _text(row[1], f"{at} arm")
        lr.answered[(key, arm)] = _number(row[2], f"{at} reward", 0.0, 1.0)
        lr.keys.add(key)
    contexts = rec.get("contexts")
    if not isinstance(contexts, dict) or not all(isinstance(v, str) for v in contexts.values()):
        raise _fail(f"{where}.contexts", "must map context keys to text", contexts)
    lr.contexts = dict(contexts)
    # schema 1 files have no decisions
    for i, row in enumerate(_rows(rec.get("decisions", []), f"{where}.decisions", (10,))):
        d = _parse_decision(row, f"{where}.decisions[{i}]")
        lr.decisions.setdefault(d.key, d)
    return lr, [_parse_event(row, f"{where}.events[{i}]") for i, row in
                enumerate(_rows(rec.get("events"), f"{where}.events", (9, 10, 11, 13)))]


def _texts(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _fail(where, "must be a list", value)
    return tuple(_text(v, where) for v in value)


def _parse_decision(row: list[Any], at: str) -> Decision:
    seq, key, kind, ctx, when, policy, chosen, props, cands, n = row
    if kind not in ("select", "rerank"):
        raise _fail(at, "kind must be select or rerank", kind)
    picked = _texts(chosen, f"{at} chosen")
    if not isinstance(props, list) or len(props) != len(picked):
        raise _fail(at, "propensities must be a list, one per chosen arm", props)
    return Decision(
        key=_text(key, f"{at} key"), kind=kind, ctx=_text(ctx, f"{at} ctx"),
        at=_number(when, f"{at} at"), policy=_text(policy, f"{at} policy"), chosen=picked,
        propensities=tuple(None if p is None else _number(p, f"{at} propensity", 0.0, 1.0)
                           for p in props),
        candidates=None if cands is None else _texts(cands, f"{at} candidates"),
        n_candidates=_count(n, f"{at} n_candidates"), seq=_count(seq, f"{at} seq"))


_EVENT_KINDS: Final = ("feedback", "decay", "reset")


def _parse_event(row: list[Any], at: str) -> Event:
    seq, kind, key, arm, ctx, reward, weight, outcome, when, *rest = row
    factor, body, propensity, policy = [*rest, None, None, None, None][:4]
    if kind not in _EVENT_KINDS:
        raise _fail(at, "kind must be feedback, decay or reset", kind)
    return Event(
        seq=_count(seq, f"{at} seq"), kind=kind, key=_maybe_text(key, f"{at} key"),
        arm=_text(arm, f"{at} arm"), ctx=_maybe_text(ctx, f"{at} ctx"),
        reward=None if reward is None else _number(reward, f"{at} reward", 0.0, 1.0),
        weight=None if weight is None else _number(weight, f"{at} weight", 0.0, 1.0,
                                                   above=True),
        outcome=_maybe_text(outcome, f"{at} outcome"), at=_number(when, f"{at} at"),
        factor=None if factor is None else _number(factor, f"{at} factor", 0.0, 1.0),
        ctx_body=_maybe_text(body, f"{at} ctx_body"),
        propensity=None if propensity is None else _number(propensity, f"{at} propensity",
                                                           0.0, 1.0),
        policy=_maybe_text(policy, f"{at} policy"))
