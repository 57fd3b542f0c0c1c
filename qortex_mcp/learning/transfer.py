"""Export and import a store's learning as JSON lines: to back up, or to move between stores.

The format (one JSON object per line, ``"type"`` first)::

    {"type": "header", "format": "qortex-mcp-export", "version": 1, ...}
    {"type": "learner", "learner": "prompts", "selections": 12, "explored": 3, "answered": 9}
    {"type": "arm", "learner": "prompts", "arm": "concise-v1", "a0": 8.0, "b0": 2.0, ...}
    {"type": "event", "learner": "prompts", "kind": "feedback", "key": ..., "at": ...}
    {"type": "decision", "learner": "prompts", "key": ..., "chosen": ["concise-v1"], ...}
    {"type": "evidence", "learner": "prompts", "ctx": "", "arm": "concise-v1", "s": ...}

Import is all or nothing, lossless and idempotent. The whole file is validated first (the
first bad line is refused by number and nothing is written), then applied, in one transaction
where the store has them (``AtomicStore``). Feedback events are re-applied through
``store.apply`` with their original dedup keys, times, weights, outcomes and context
bodies, so the target folds exactly the same evidence and a second import finds every one
a duplicate. Decay and reset events are re-applied in log order unless the target already
holds the same event. Decisions (the decision log; format version 2) are added unless the
target already logged the same key. Arm priors and selection counters are raised to the
exported values (never added twice). Finally the target's evidence is compared with the exported
rows; an import into an empty store matches them exactly. Importing into a store that
already learned other things merges the two histories (and reports the rows that differ).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import IO, Any, Final

from qortex_mcp.errors import (
    InvalidContext,
    InvalidInput,
    InvalidName,
    LimitExceeded,
    SchemaTooNew,
    UnknownLearner,
    preview,
)
from qortex_mcp.learning.context import MAX_CONTEXT_DEPTH, canonical_context
from qortex_mcp.learning.jsonlines import MAX_LINE_BYTES, LineSource, source_of
from qortex_mcp.learning.stores.base import (
    SCHEMA_VERSION,
    AtomicStore,
    LearningStore,
    event_pages,
)
from qortex_mcp.learning.stores.decision_rows import MAX_LOGGED
from qortex_mcp.learning.types import GLOBAL_CONTEXT, Decision, Event, FeedbackRow
from qortex_mcp.learning.validation import check_name, check_prior, check_reward, check_weight

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_COUNT",
    "MAX_IMPORT_LEARNERS",
    "MAX_LINE_BYTES",
    "ImportReport",
    "export_chunks",
    "export_jsonl",
    "import_file",
    "import_jsonl",
]

FORMAT: Final = "qortex-mcp-export"
FORMAT_VERSION: Final = 2
"""1: 0.1. 2: decision records, and feedback events' ``propensity`` and ``policy``."""
_BATCH: Final = 500
_DECISION_PAGE: Final = 5000
# A selection nonce (base64url; room for other encodings) and a context key ("" or "c" and
# hex digits, as canonical_context makes them).
_DECISION_KEY: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CONTEXT_KEY: Final = re.compile(r"(c[0-9a-f]{1,63})?")
_REL_TOL: Final = 1e-9


# Built once: ``json.dumps`` with any non-default option builds a new encoder per call,
# which costs more than encoding a short record.
_line: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                                allow_nan=False).encode


async def export_jsonl(
    store: LearningStore, learners: Iterable[str] | None = None
) -> AsyncIterator[str]:
    """Every record of ``learners`` (all when None) as JSON lines (without newlines).

    Raises:
        UnknownLearner: a named learner is not in the store.
        StoreError: the store failed.
    """
    async for page in _export_pages(store, learners):
        for line in page:
            yield line


async def export_chunks(
    store: LearningStore, learners: Iterable[str] | None = None
) -> AsyncIterator[str]:
    """The export as text chunks of many newline-terminated lines (a page of events each).

    What a writer wants: one write per chunk, not per record, and memory bounded by one
    page whatever the number of events. Same records, order and errors as ``export_jsonl``.
    """
    async for page in _export_pages(store, learners):
        if page:
            page.append("")
            yield "\n".join(page)


async def _export_pages(
    store: LearningStore, learners: Iterable[str] | None
) -> AsyncIterator[list[str]]:
    known = {s.name for s in await store.learners()}
    names = sorted(known) if learners is None else list(dict.fromkeys(learners))
    for name in names:
        if name not in known:
            raise UnknownLearner(f"no learner named {preview(name)} in the store")
    info = await store.info()
    yield [_line({"type": "header", "format": FORMAT, "version": FORMAT_VERSION,
                  "schema_version": info.schema_version, "source": info.kind})]
    for name in names:
        snap = await store.load(name)
        head = [_line({"type": "learner", "learner": name, "selections": snap.selections,
                       "explored": snap.explored, "answered": snap.answered})]
        head.extend(_line({"type": "arm", "learner": name, "arm": arm.arm, "a0": arm.a0,
                           "b0": arm.b0, "selections": arm.selections,
                           "last_selected": arm.last_selected})
                    for arm in sorted(snap.arms, key=lambda a: a.arm))
        yield head
        async for page in event_pages(store, name):
            yield [_line({"type": "event", "learner": name, "seq": seq, "kind": kind,
                          "key": key, "arm": arm, "ctx": ctx,
                          # only feedback needs the body (stores differ on the others)
                          "ctx_body": body if kind == "feedback" else None,
                          "reward": reward, "weight": weight,
                          "outcome": outcome, "at": at, "factor": factor,
                          "propensity": propensity, "policy": policy})
                   for seq, kind, key, arm, ctx, reward, weight, outcome, at, factor, body,
                   propensity, policy in page]
        after = 0
        while page_of := await store.decisions(name, after, _DECISION_PAGE):
            yield [_line({"type": "decision", "learner": name, "key": d.key, "kind": d.kind,
                          "ctx": d.ctx, "at": d.at, "policy": d.policy,
                          "chosen": list(d.chosen), "propensities": list(d.propensities),
                          "candidates": None if d.candidates is None else list(d.candidates),
                          "n_candidates": d.n_candidates})
                   for d in page_of]
            if len(page_of) < _DECISION_PAGE:
                break
            after = page_of[-1].seq
        yield [_line({"type": "evidence", "learner": name, "ctx": row.ctx, "arm": row.arm,
                      "s": row.s, "f": row.f, "n": row.n, "rsum": row.rsum, "t": row.t})
               for row in sorted(await store.evidence(name), key=lambda r: (r.ctx, r.arm))]


MAX_COUNT: Final = 2**53
"""Largest count an import accepts: exact as a float and in every JSON reader, and far
below the stores' 64-bit integers even when added to the counts already stored."""
MAX_IMPORT_LEARNERS: Final = 1000
"""Most new learners one import may create (a server keeps any number, but opens at most
``LearnerRegistry``'s default ``max_open`` at once): a file naming more is split by the
operator, so a mistaken or hostile file cannot flood a store with names."""
_MAX_CTX_KEY: Final = 64


@dataclass(frozen=True)
class ImportReport:
    """What an import did. ``ok`` when nothing conflicted and the state matches."""

    learners: tuple[str, ...]
    records: int
    applied: int
    """Feedback events newly applied."""
    duplicates: int
    """Feedback events the target already held (a repeated import has only these)."""
    conflicts: int
    """Feedback events skipped: the target holds another reward for the same key and arm."""
    maintenance: int
    """Decay and reset events applied (those already present are skipped)."""
    mismatches: tuple[str, ...]
    """Evidence rows that differ from the exported state after the import."""
    decisions: int = 0
    """Decision records read (one whose key the target already logged is kept as it was)."""

    @property
    def ok(self) -> bool:
        return not self.conflicts and not self.mismatches


@dataclass
class _Learner:
    name: str
    half_life_s: float | None
    selections: int = 0
    explored: int = 0
    answered: int = 0
    arms: list[dict[str, Any]] = field(default_factory=list)
    arms_done: bool = False
    batch: list[FeedbackRow] = field(default_factory=list)
    existing: Counter[tuple[Any, ...]] | None = None
    seen: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    evidence: dict[tuple[str, str], tuple[float, float, int, float]] = field(
        default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)


class _Importer:
    """Applies records that ``_check`` accepted, in file order."""

    def __init__(self, store: LearningStore,
                 half_life: Callable[[str], float | None] | None) -> None:
        self.store = store
        self.half_life = half_life
        self.learners: dict[str, _Learner] = {}
        self.counts: Counter[str] = Counter()

    async def learner(self, name: str) -> _Learner:
        state = self.learners.get(name)
        if state is None:
            hl = self.half_life(name) if self.half_life else None
            state = self.learners[name] = _Learner(name, hl)
            await self.store.ensure_learner(name, "{}")
        return state

    async def record(self, rec: dict[str, Any], row: FeedbackRow | None) -> None:
        kind = rec["type"]
        st = await self.learner(rec["learner"])
        if kind == "learner":
            st.selections, st.explored = _count(rec, "selections"), _count(rec, "explored")
            st.answered = _count(rec, "answered")  # 0 in exports older than this field
        elif kind == "arm":
            st.arms.append(rec)
        elif kind == "event":
            await self.arms(st)
            await self.event(st, rec, row)
        elif kind == "decision":
            await self.arms(st)
            st.decisions.append(_decision(rec))
            self.counts["decisions"] += 1
            if len(st.decisions) >= _BATCH:
                await self.flush_decisions(st)
        else:
            st.evidence[(rec["ctx"], rec["arm"])] = (_num(rec, "s"), _num(rec, "f"),
                                                     _count(rec, "n"), _num(rec, "rsum"))

    async def arms(self, st: _Learner) -> None:
        """Raise priors and counters to the exported values (before any feedback, so an
        arm keeps exactly the exported fields)."""
        if st.arms_done:
            return
        st.arms_done = True
        snap = await self.store.load(st.name)
        have = {a.arm: a for a in snap.arms}
        counts: dict[str, tuple[int, float]] = {}
        priors: dict[str, tuple[float, float]] = {}
        for rec in st.arms:
            arm, cur = rec["arm"], have.get(rec["arm"])
            sel, last = _count(rec, "selections"), rec.get("last_selected")
            delta = sel - (cur.selections if cur else 0)
            newer = last is not None and (cur is None or cur.last_selected is None
                                          or last > cur.last_selected)
            if delta > 0 or newer:
                # The store keeps the later of the two times, so sending the exported one
                # (or the one already there) never moves it back.
                when = _num(rec, "last_selected") if newer else (
                    cur.last_selected if cur and cur.last_selected is not None else 0.0)
                counts[arm] = (max(delta, 0), when)
            a0, b0 = rec.get("a0"), rec.get("b0")
            if a0 is not None and b0 is not None and (cur is None or (cur.a0, cur.b0) != (a0, b0)):
                priors[arm] = (_num(rec, "a0"), _num(rec, "b0"))
        sels = max(st.selections - snap.selections, 0)
        expl = max(st.explored - snap.explored, 0)
        answered = max(st.answered - snap.answered, 0)
        if counts or priors or sels or expl or answered:
            await self.store.record_selections(st.name, counts, priors, sels, expl, answered)

    async def event(self, st: _Learner, rec: dict[str, Any], row: FeedbackRow | None) -> None:
        if row is not None:
            st.batch.append(row)
            if len(st.batch) >= _BATCH:
                await self.flush(st)
            return
        kind, at = rec["kind"], _num(rec, "at")
        await self.flush(st)  # maintenance applies to what came before it, in log order
        arm = str(rec.get("arm") or "")
        ctx = rec.get("ctx")
        factor = _num(rec, "factor") if kind == "decay" else None
        sig = (kind, arm, ctx, at, factor)
        if st.existing is None:
            st.existing = Counter(_signature(e) for e in await _all_events(self.store, st.name)
                                  if e.kind != "feedback")
        st.seen[sig] += 1
        if st.seen[sig] <= st.existing[sig]:
            return
        if factor is not None:
            reason = rec.get("outcome")
            await self.store.decay(st.name, arm, factor, at,
                                   reason if isinstance(reason, str) else None)
        else:
            await self.store.reset(st.name, [arm] if arm else None,
                                   None if ctx is None else str(ctx), at, False)
        st.existing[sig] += 1
        self.counts["maintenance"] += 1

    async def flush(self, st: _Learner) -> None:
        rows, st.batch = st.batch, []
        while rows:
            result = await self.store.apply(st.name, rows, st.half_life_s)
            if "conflict" not in result.statuses:
                self.counts.update(result.statuses)
                return
            # A conflicting row blocks its whole batch: skip it, apply the others.
            self.counts["conflict"] += result.statuses.count("conflict")
            rows = [r for r, s in zip(rows, result.statuses, strict=True) if s != "conflict"]

    async def flush_decisions(self, st: _Learner) -> None:
        decisions, st.decisions = st.decisions, []
        if decisions:
            await self.store.record_selections(st.name, {}, {}, 0, 0, 0, decisions)

    async def finish(self) -> list[str]:
        mismatches = []
        for st in self.learners.values():
            await self.arms(st)
            await self.flush(st)
            await self.flush_decisions(st)
            have = {(r.ctx, r.arm): r for r in await self.store.evidence(st.name)}
            for key, (s, f, n, rsum) in sorted(st.evidence.items()):
                row = have.get(key)
                got = (row.s, row.f, row.n, row.rsum) if row else (0.0, 0.0, 0, 0.0)
                if got[2] != n or not all(math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=1e-9)
                                          for a, b in zip(got[:2] + got[3:], (s, f, rsum),
                                                          strict=True)):
                    mismatches.append(f"{st.name}/{key[0] or 'global'}/{key[1]}: stored "
                                      f"(s={got[0]:g}, f={got[1]:g}, n={got[2]}), exported "
                                      f"(s={s:g}, f={f:g}, n={n})")
        return mismatches


def _signature(ev: Event) -> tuple[Any, ...]:
    return (ev.kind, ev.arm, ev.ctx, ev.at, ev.factor if ev.kind == "decay" else None)


async def _all_events(store: LearningStore, learner: str) -> list[Event]:
    out: list[Event] = []
    async for page in event_pages(store, learner):
        out.extend(Event(*row) for row in page)
    return out


# --- validation: every rule the apply step and the stores rely on --------------------------


def _num(rec: dict[str, Any], key: str, low: float | None = None,
         high: float | None = None) -> float:
    value = rec.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{key} must be a finite number, got {preview(value)}")
    try:
        x = float(value)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x) or (low is not None and x < low) or (high is not None and x > high):
        bounds = ("" if low is None else f" >= {low:g}" if high is None
                  else f" in [{low:g}, {high:g}]")
        raise InvalidInput(f"{key} must be a finite number{bounds}, got {preview(value)}")
    return x


def _count(rec: dict[str, Any], key: str) -> int:
    value = rec.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise InvalidInput(f"{key} must be a count (an integer in [0, 2**53]), "
                           f"got {preview(value)}")
    return value


def _ctx_key(value: object, what: str) -> None:
    if not isinstance(value, str) or len(value) > _MAX_CTX_KEY:
        raise InvalidInput(f"{what} must be a context key, got {preview(value)}")


@functools.lru_cache(maxsize=4096)
def _context_key(body: str) -> str | None:
    """The key of a context body (cached: an export repeats a few bodies many times)."""
    try:
        parsed = json.loads(body)
    except RecursionError:
        raise InvalidContext(
            f"the context body is nested deeper than {MAX_CONTEXT_DEPTH} levels") from None
    except ValueError:
        raise InvalidInput("a context body is not JSON") from None
    canon = canonical_context(parsed) if isinstance(parsed, dict) else None
    return None if canon is None else canon.key


def _feedback_row(rec: dict[str, Any], at: float) -> FeedbackRow:
    key, ctx, body, outcome = rec.get("key"), rec.get("ctx"), rec.get("ctx_body"), \
        rec.get("outcome")
    if not isinstance(key, str) or not key:
        raise InvalidInput("a feedback event needs its dedup key")
    if ctx is None or ctx == GLOBAL_CONTEXT:
        ctx, body = GLOBAL_CONTEXT, None
    else:
        # The key is derived from the body; a body that does not hash to it is corrupt.
        if not isinstance(body, str) or _context_key(body) != ctx:
            raise InvalidInput(f"context {preview(ctx)} does not match its body")
    if outcome is not None and not isinstance(outcome, str):
        raise InvalidInput(f"outcome must be text, got {preview(outcome)}")
    propensity = rec.get("propensity")
    return FeedbackRow(key=key, arm=check_name(rec.get("arm"), "arm id"), ctx=str(ctx),
                       ctx_body=body, reward=check_reward(rec.get("reward")),
                       weight=check_weight(rec.get("weight")), outcome=outcome, at=at,
                       propensity=None if propensity is None else
                       _num(rec, "propensity", 0.0, 1.0),
                       policy=_policy(rec.get("policy"), optional=True))


def _policy(value: object, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    try:
        return check_name(value, "policy")  # what a strategy name and its hash satisfy
    except InvalidName as exc:
        raise InvalidInput(f"policy must be a strategy version: {exc.message}") from None


def _names(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidInput(f"{what} must be a list of arm ids, got {preview(value)}")
    return tuple(check_name(v, "arm id") for v in value)


def _decision(rec: dict[str, Any]) -> Decision:
    """A decision record as the store logs it (``InvalidInput`` naming what is wrong)."""
    key, kind, ctx = rec.get("key"), rec.get("kind"), rec.get("ctx")
    if not isinstance(key, str) or not _DECISION_KEY.fullmatch(key):
        raise InvalidInput(f"a decision needs its key (a selection nonce), got {preview(key)}")
    if kind not in ("select", "rerank"):
        raise InvalidInput(f"a decision's kind must be select or rerank, got {preview(kind)}")
    if not isinstance(ctx, str) or not _CONTEXT_KEY.fullmatch(ctx):
        raise InvalidInput(f"a decision's ctx must be a context key, got {preview(ctx)}")
    chosen = _names(rec.get("chosen"), "chosen")
    props = rec.get("propensities")
    if not isinstance(props, list) or len(props) != len(chosen):
        raise InvalidInput("propensities must be a list with one value per chosen arm")
    for p in props:
        if p is not None and (isinstance(p, bool) or not isinstance(p, int | float)
                              or not 0.0 <= p <= 1.0):
            raise InvalidInput(f"a propensity must be null or a number in [0, 1], got "
                               f"{preview(p)}")
    cands = rec.get("candidates")
    candidates = None if cands is None else _names(cands, "candidates")
    if candidates is not None and len(candidates) > MAX_LOGGED:
        raise InvalidInput(f"a decision lists at most {MAX_LOGGED} candidates")
    if len(set(chosen)) != len(chosen) or (candidates is not None and (
            len(set(candidates)) != len(candidates) or not set(chosen) <= set(candidates))):
        raise InvalidInput("a decision's chosen arms must be distinct and among its "
                           "candidates")
    n = _count(rec, "n_candidates")
    if n < len(chosen) or (candidates is not None and n != len(candidates)):
        raise InvalidInput("n_candidates must count the candidates (at least those chosen)")
    return Decision(key=key, kind=kind, ctx=ctx, at=_num(rec, "at"),
                    policy=str(_policy(rec.get("policy"))), chosen=chosen,
                    propensities=tuple(None if p is None else float(p) for p in props),
                    candidates=candidates, n_candidates=n)


def _check_event(rec: dict[str, Any]) -> FeedbackRow | None:
    kind = rec.get("kind")
    if kind not in ("feedback", "decay", "reset"):
        raise InvalidInput(f"unknown event kind {preview(kind)}")
    at = _num(rec, "at")
    if kind == "feedback":
        return _feedback_row(rec, at)
    arm = rec.get("arm")
    if arm is not None and arm != "":
        check_name(arm, "arm id")
    if kind == "decay":
        _num(rec, "factor", 0.0, 1.0)
        reason = rec.get("outcome")
        if reason is not None and not isinstance(reason, str):
            raise InvalidInput(f"a decay's outcome (its reason) must be text, got "
                               f"{preview(reason)}")
    elif rec.get("ctx") is not None:
        _ctx_key(rec.get("ctx"), "a reset's ctx")
    return None


_KINDS: Final = frozenset({"learner", "arm", "event", "decision", "evidence"})


def _check(rec: dict[str, Any], begun: set[str]) -> FeedbackRow | None:
    """Refuse (``InvalidInput``) anything the apply step or a store could not take as it is;
    ``begun`` holds the learners whose events have started. A feedback's row, built once."""
    kind = rec.get("type")
    if kind not in _KINDS:
        raise InvalidInput(f"unknown record type {preview(kind)}")
    name = check_name(rec.get("learner"), "learner name")
    if kind == "event":
        begun.add(name)
        return _check_event(rec)
    if kind == "decision":
        begun.add(name)
        _decision(rec)
        return None
    if kind == "evidence":
        _ctx_key(rec.get("ctx"), "an evidence record's ctx")
        check_name(rec.get("arm"), "arm id")
        for key in ("s", "f", "rsum"):
            _num(rec, key, 0.0)
        _count(rec, "n")
        return None
    if name in begun:
        raise InvalidInput(f"{kind} records must come before the learner's events")
    if kind == "learner":
        _count(rec, "selections")
        _count(rec, "explored")
        _count(rec, "answered")
        return None
    check_name(rec.get("arm"), "arm id")
    _count(rec, "selections")
    if rec.get("last_selected") is not None:
        _num(rec, "last_selected")
    a0, b0 = rec.get("a0"), rec.get("b0")
    if a0 is not None or b0 is not None:
        check_prior((a0, b0))  # a prior <= 0 would break every later select
    return None


_NESTED: Final = frozenset({dict, list})


def _parse(text: str) -> dict[str, Any]:
    try:
        rec = json.loads(text)
    except RecursionError:
        raise InvalidInput("nested too deeply: a record is one flat JSON object") from None
    except ValueError as exc:
        raise InvalidInput(f"not valid JSON ({exc})") from None
    if not isinstance(rec, dict):
        raise InvalidInput("a record must be a JSON object")
    # json.loads makes exact types. Only a decision has lists (of plain values): its
    # chosen arms, propensities and candidates.
    if not _NESTED.isdisjoint(map(type, rec.values())) and (
            rec.get("type") != "decision" or any(
                type(v) is dict or (type(v) is list and not _NESTED.isdisjoint(map(type, v)))
                for v in rec.values())):
        raise InvalidInput("a record's fields must be plain values, not objects or lists")
    return rec


def _check_header(rec: dict[str, Any]) -> None:
    if rec.get("type") != "header" or rec.get("format") != FORMAT:
        raise InvalidInput(f"not a {FORMAT} file (the first line is its header)")
    version, schema = rec.get("version"), rec.get("schema_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise InvalidInput("the header has no format version")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise InvalidInput(f"the header's schema_version must be an integer, got "
                           f"{preview(schema)}")
    if version > FORMAT_VERSION or schema > SCHEMA_VERSION:
        raise SchemaTooNew(f"the export has format version {version}, newer than this "
                           f"qortex-mcp reads ({FORMAT_VERSION}); upgrade qortex-mcp")


Handler = Callable[[dict[str, Any]], Awaitable[None]]


async def _each_record(source: LineSource, handle: Handler) -> int:
    """Every record after the header, to ``handle``; a refusal names its line. Returns the
    number of lines."""
    number = 0
    header = False
    async for number, text in source.lines():
        if not text.strip():
            continue
        try:
            rec = _parse(text)
            if header:
                await handle(rec)
            else:
                _check_header(rec)
                header = True
        except InvalidInput as exc:
            raise type(exc)(f"line {number}: {exc.message}") from None
    if not header:
        raise InvalidInput("empty input: not a qortex-mcp export")
    return number


async def _import(store: LearningStore, source: LineSource,
                  half_life: Callable[[str], float | None] | None,
                  max_learners: int) -> ImportReport:
    # 1. Validate the whole file, holding only the learners' names: a refused file never
    #    touches the store (not even to create it).
    begun: set[str] = set()
    named: set[str] = set()

    async def check(rec: dict[str, Any]) -> None:
        _check(rec, begun)
        named.add(rec["learner"])

    await _each_record(source, check)
    await store.initialize()
    existing = {s.name for s in await store.learners()}
    new = named - existing
    if len(new) > max_learners:
        raise LimitExceeded(f"the import would create {len(new)} learners; one import creates "
                            f"at most {max_learners} (split the file)")
    # 2. Apply it, reading the file again, in one transaction where the store has them.
    importer = _Importer(store, half_life)
    again: set[str] = set()

    async def apply(rec: dict[str, Any]) -> None:
        # Checked again: the file may have changed since; the transaction then rolls back.
        await importer.record(rec, _check(rec, again))

    scope: AbstractAsyncContextManager[object] = (
        store.atomically() if isinstance(store, AtomicStore) else contextlib.nullcontext())
    async with scope:
        number = await _each_record(source, apply)
        mismatches = await importer.finish()
    c = importer.counts
    return ImportReport(tuple(importer.learners), number, c["applied"], c["duplicate"],
                        c["conflict"], c["maintenance"], tuple(mismatches), c["decisions"])


async def import_jsonl(
    store: LearningStore,
    lines: Iterable[str] | AsyncIterable[str],
    *,
    half_life: Callable[[str], float | None] | None = None,
    max_learners: int = MAX_IMPORT_LEARNERS,
) -> ImportReport:
    """Apply an ``export_jsonl`` stream (lines, blank ones skipped) to ``store`` (see the
    module doc). Idempotent.

    All or nothing: the whole input is validated before anything is written (a refusal
    names the first bad line and leaves the store untouched: not even created), then applied
    in one transaction on stores that have them (SQLite, JSON, memory; other writers of the
    store wait meanwhile). On PostgreSQL it is applied call by call: a store failure midway
    leaves a prefix applied, which running the import again completes (it is idempotent).
    Memory stays bounded: the input is read twice, line by line (a one-shot iterator is
    spooled to a temporary file), and lines over ``MAX_LINE_BYTES`` are refused.

    Args:
        store: the target (initialized here once the input validates, if it is not yet).
        lines: the exported lines, with or without their line breaks.
        half_life: each learner's ``half_life_s``, which evidence folding depends on
            (default: none). Use the same settings as the source.
        max_learners: refuse an import that creates learners beyond this many in the store.

    Raises:
        InvalidInput: a line is not a record of this format (named by its number): not JSON,
            not UTF-8, too long or nested, a bad name, prior, count, reward or time.
        SchemaTooNew: the file comes from a newer format version.
        LimitExceeded: the import would create learners beyond ``max_learners``.
        StoreError: the store failed (nothing was applied on a transactional store; on
            PostgreSQL re-running the import completes it).
    """
    if isinstance(lines, str | bytes):
        raise TypeError("import_jsonl takes an iterable of lines; import_file takes a path")
    source = source_of(lines)
    try:
        return await _import(store, source, half_life, max_learners)
    finally:
        await source.aclose()


async def import_file(
    store: LearningStore,
    file: str | os.PathLike[str] | IO[bytes],
    *,
    half_life: Callable[[str], float | None] | None = None,
    max_learners: int = MAX_IMPORT_LEARNERS,
) -> ImportReport:
    """Apply an export file (a path, or a binary stream such as ``sys.stdin.buffer``) to
    ``store``, exactly as ``import_jsonl`` does. A path is read twice; a stream is spooled.

    Raises:
        InvalidInput: as ``import_jsonl``, and when the file cannot be read.
        SchemaTooNew, LimitExceeded, StoreError: as ``import_jsonl``.
    """
    source = source_of(file)
    try:
        return await _import(store, source, half_life, max_learners)
    finally:
        await source.aclose()

