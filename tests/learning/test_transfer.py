"""Export and import as JSON lines: lossless into an empty store, and idempotent."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from qortex_mcp.errors import (
    InvalidContext,
    InvalidInput,
    InvalidName,
    InvalidPrior,
    InvalidReward,
    LimitExceeded,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
    UnknownLearner,
)
from qortex_mcp.learning import (
    Arm,
    ArmOutcome,
    Learner,
    LearnerConfig,
    LearningStore,
    MemoryLearningStore,
    SelectionSigner,
    SqliteLearningStore,
)
from qortex_mcp.learning.transfer import MAX_LINE_BYTES, export_jsonl, import_file, import_jsonl
from tests.conftest import make_store

pytestmark = pytest.mark.anyio

SIGNER = SelectionSigner.random()


async def history(store: LearningStore, name: str = "prompts",
                  half_life_s: float | None = None) -> None:
    """Selections, feedback in and out of contexts, priors, a decay and a reset."""
    cfg = LearnerConfig(name=name, seed=3, half_life_s=half_life_s)
    async with await Learner.create(cfg, store, signer=SIGNER) as learner:
        sel = await learner.select([Arm("a", prior=(8, 2)), Arm("b"), Arm("c")], k=2,
                                   context={"task": "x"})
        await learner.batch_observe([
            ArmOutcome(a.id, outcome="accepted", selection_id=sel.selection_id)
            for a in sel.selected])
        await learner.observe(ArmOutcome("c", reward=0.25, context={"task": "y"},
                                         idempotency_key="k1"))
        await learner.decay_arm("a", 0.5)
        await learner.observe(ArmOutcome("b", reward=0.0, weight=0.5))
        await learner.reset(["c"], {"task": "y"})
        await learner.select(["a", "b"], k=1)


async def state(store: LearningStore) -> dict[str, Any]:
    """Everything the format carries, without store-internal versions and sequence numbers."""
    out: dict[str, Any] = {}
    for summary in await store.learners():
        snap = await store.load(summary.name)
        out[summary.name] = {
            "counters": (snap.selections, snap.explored, snap.answered),
            "arms": sorted((a.arm, a.a0, a.b0, a.selections, a.last_selected)
                           for a in snap.arms),
            "evidence": sorted((r.ctx, r.arm, round(r.s, 12), round(r.f, 12), r.n,
                                round(r.rsum, 12), r.t) for r in await store.evidence(
                summary.name)),
            "events": [(e.kind, e.key, e.arm, e.ctx, e.reward, e.weight, e.outcome, e.at,
                        e.factor, e.propensity, e.policy)
                       for e in await store.events(summary.name)],
            "decisions": [dataclasses.replace(d, seq=0)
                          for d in await store.decisions(summary.name)],
        }
    return out


def plain(lines: list[str]) -> list[dict[str, Any]]:
    return [{k: v for k, v in json.loads(x).items() if k not in ("seq", "source")}
            for x in lines]


async def lines_of(store: LearningStore, learners: list[str] | None = None) -> list[str]:
    return [line async for line in export_jsonl(store, learners)]


async def test_an_export_imported_into_an_empty_store_is_the_same_state(
    store: LearningStore, tmp_path: Path,
) -> None:
    await history(store)
    await history(store, "other")
    exported = await lines_of(store)
    target = await make_store("sqlite", tmp_path / "target")
    try:
        report = await import_jsonl(target, exported)
        assert report.ok, report
        assert report.learners == ("other", "prompts")
        assert report.applied == 2 * 4
        assert report.duplicates == 0
        assert report.maintenance == 2 * 2
        source = await state(store)
        assert len(source["prompts"]["decisions"]) == 2  # the decision log moves too
        assert source["prompts"]["events"][0][-1] is not None  # with feedback's version
        assert await state(target) == source
        # and it exports the same records, but for the store kind and sequence numbers
        assert plain(await lines_of(target)) == plain(exported)
    finally:
        await target.close()


async def test_importing_the_same_file_twice_changes_nothing_the_second_time(
    store: LearningStore,
) -> None:
    source = MemoryLearningStore()
    await history(source)
    exported = await lines_of(source)
    first = await import_jsonl(store, exported)
    after_first = await state(store)
    second = await import_jsonl(store, exported)
    assert first.applied == 4
    assert second.applied == 0
    assert second.duplicates == 4
    assert second.maintenance == 0
    assert second.ok
    assert await state(store) == after_first


async def test_the_half_life_used_to_fold_evidence_is_the_learners(tmp_path: Path) -> None:
    source = MemoryLearningStore()
    await history(source, half_life_s=3600.0)
    exported = await lines_of(source)
    matched = await import_jsonl(MemoryLearningStore(), exported, half_life=lambda _: 3600.0)
    assert matched.ok
    mismatched = await import_jsonl(MemoryLearningStore(), exported)
    assert mismatched.mismatches
    assert not mismatched.ok


async def test_an_import_into_a_store_with_other_history_merges_and_reports(
    tmp_path: Path,
) -> None:
    source, target = MemoryLearningStore(), MemoryLearningStore()
    await history(source)
    async with await Learner.create(LearnerConfig(name="prompts"), target,
                                    signer=SIGNER) as learner:
        await learner.observe(ArmOutcome("z", reward=1.0))
    report = await import_jsonl(target, await lines_of(source))
    assert report.applied == 4
    assert report.mismatches == ()  # z is not in the export; the exported rows match


async def test_export_of_selected_learners_and_unknown_names(tmp_path: Path) -> None:
    source = MemoryLearningStore()
    await history(source)
    await history(source, "other")
    records = [json.loads(x) for x in await lines_of(source, ["other"])]
    assert {r.get("learner") for r in records[1:]} == {"other"}
    with pytest.raises(UnknownLearner):
        await lines_of(source, ["nobody"])


@pytest.mark.parametrize(("lines", "error", "message"), [
    ([], InvalidInput, "empty input"),
    (['{"type":"learner","learner":"x"}'], InvalidInput, "line 1: not a qortex-mcp-export"),
    (['{"type":"header","format":"qortex-mcp-export","version":9}'], SchemaTooNew, "upgrade"),
    (["HEADER", "{nope"], InvalidInput, "line 2: not valid JSON"),
    (["HEADER", '{"type":"learner","learner":""}'], InvalidName, "line 2: learner name"),
    (["HEADER", '{"type":"event","learner":"x","kind":"feedback","key":"k","arm":"a",'
      '"ctx":"","reward":1.5,"weight":1,"at":1.0}'], InvalidReward, "line 2: reward"),
    (["HEADER", '{"type":"event","learner":"x","kind":"feedback","key":"k","arm":"a",'
      '"ctx":"c123","ctx_body":"{}","reward":1,"weight":1,"at":1.0}'], InvalidInput,
     "does not match its body"),
    (["HEADER", '{"type":"event","learner":"x","kind":"teleport","at":1.0}'], InvalidInput,
     "unknown event kind"),
    (["HEADER", '{"type":"gossip","learner":"x"}'], InvalidInput, "unknown record type"),
])
async def test_a_file_that_is_not_an_export_is_refused_by_line(
    lines: list[str], error: type[Exception], message: str,
) -> None:
    header = '{"type":"header","format":"qortex-mcp-export","version":1,"schema_version":1}'
    with pytest.raises(error, match=message):
        await import_jsonl(MemoryLearningStore(), [header if x == "HEADER" else x
                                                   for x in lines])


def test_the_library_and_transfer_import_without_mcp() -> None:
    code = ("import sys; sys.modules['mcp'] = None\n"
            "import qortex_mcp.learning, qortex_mcp.learning.transfer, qortex_mcp.rerank\n"
            "assert not any(m == 'mcp' or m.startswith('mcp.') for m in sys.modules "
            "if sys.modules[m] is not None)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


# --- all or nothing ------------------------------------------------------------------------

HEADER = '{"type":"header","format":"qortex-mcp-export","version":1,"schema_version":1}'


def feedback(i: int, learner: str = "x", **fields: Any) -> str:
    return json.dumps({"type": "event", "learner": learner, "kind": "feedback", "key": f"k{i}",
                       "arm": "a", "ctx": "", "reward": 1, "weight": 1, "at": 1.0, **fields})


def good_events(n: int = 600) -> list[str]:
    """More events than one apply batch (500), so a partial import would have committed."""
    return [HEADER, '{"type":"learner","learner":"x","selections":3,"explored":1}',
            '{"type":"arm","learner":"x","arm":"a","a0":2,"b0":3,"selections":3,'
            '"last_selected":5.0}'] + [feedback(i) for i in range(n)]


DECISION = json.dumps({
    "type": "decision", "learner": "x", "key": "n1", "kind": "select", "ctx": "", "at": 2.0,
    "policy": "thompson.0123abcd", "chosen": ["a"], "propensities": [0.5],
    "candidates": ["a", "b"], "n_candidates": 2})


# Each: a bad line after 600 good events, the error it raises and the line it names.
REFUSED = {
    "not JSON": ("{bad", InvalidInput, "not valid JSON"),
    "prior <= 0": ('{"type":"arm","learner":"y","arm":"a","a0":-5,"b0":1}', InvalidPrior,
                   "prior alpha and beta must be in"),
    "prior 0": ('{"type":"arm","learner":"y","arm":"a","a0":0,"b0":0}', InvalidPrior, "prior"),
    "half a prior": ('{"type":"arm","learner":"y","arm":"a","a0":2}', InvalidPrior, "prior"),
    "count too large": ('{"type":"learner","learner":"y","selections":' + str(2**64) + "}",
                        InvalidInput, "selections must be a count"),
    "negative count": ('{"type":"arm","learner":"y","arm":"a","selections":-1}', InvalidInput,
                       "selections must be a count"),
    "NaN time": (feedback(9999).replace('"at": 1.0', '"at": NaN'), InvalidInput,
                 "at must be a finite number"),
    "huge time": (feedback(9999).replace('"at": 1.0', '"at": 1e999'), InvalidInput,
                  "at must be a finite number"),
    "deep line": ("[" * 100_000 + "]" * 100_000, InvalidInput, "nested too deeply"),
    "nested field": ('{"type":"learner","learner":"y","selections":[[[1]]]}', InvalidInput,
                     "a record's fields must be plain values"),
    "deep context body": (feedback(9999, ctx="c1", ctx_body="[" * 50_000 + "]" * 50_000),
                          InvalidContext, "the context body is nested deeper than 32"),
    "context body too deep": (feedback(9999, ctx="c1", ctx_body='{"a":' * 40 + "1" + "}" * 40),
                              InvalidContext, "context is nested deeper than 32"),
    "decay factor": ('{"type":"event","learner":"x","kind":"decay","arm":"","at":1,'
                     '"factor":2}', InvalidInput, "factor must be a finite number in"),
    "learner after its events": ('{"type":"learner","learner":"x","selections":1}',
                                 InvalidInput, "learner records must come before"),
    "bad header field": ('{"type":"header"}', InvalidInput, "unknown record type"),
    "decision propensity": (DECISION.replace('"propensities": [0.5]', '"propensities": [2]'),
                            InvalidInput, "a propensity must be null or a number in"),
    "decision propensities": (DECISION.replace('"propensities": [0.5]',
                                               '"propensities": [0.5, 0.5]'),
                              InvalidInput, "propensities must be a list with one value"),
    "decision nested": (DECISION.replace('"chosen": ["a"]', '"chosen": [["a"]]'),
                        InvalidInput, "a record's fields must be plain values"),
    "decision kind": (DECISION.replace('"kind": "select"', '"kind": "next"'), InvalidInput,
                      "a decision.s kind must be select or rerank"),
    "decision count": (DECISION.replace('"n_candidates": 2', '"n_candidates": 3'),
                       InvalidInput, "n_candidates must count"),
    "decision key": (DECISION.replace('"key": "n1"', '"key": "n\\u0000x"'), InvalidInput,
                     "a decision needs its key"),
    "decision surrogate": (DECISION.replace('"key": "n1"', '"key": "\\ud800"'), InvalidInput,
                           "a decision needs its key"),
    "decision ctx": (DECISION.replace('"ctx": ""', '"ctx": "not a key"'), InvalidInput,
                     "a decision.s ctx must be a context key"),
    "decision policy": (DECISION.replace('"thompson.0123abcd"', '"th\\u0007x"'), InvalidInput,
                        "policy must be a strategy version"),
    "decision not offered": (DECISION.replace('"chosen": ["a"]', '"chosen": ["z"]'),
                             InvalidInput, "a decision.s chosen arms must be distinct and among"),
    "list outside a decision": (feedback(9999).replace('"arm": "a"', '"arm": ["a"]'),
                                InvalidInput, "a record's fields must be plain values"),
    "event propensity": (feedback(9999, propensity=1.5), InvalidInput,
                         "propensity must be a finite number in"),
}


@pytest.mark.parametrize("case", REFUSED)
async def test_a_bad_line_after_600_good_events_changes_nothing(
    store: LearningStore, case: str,
) -> None:
    await history(store)
    before = await state(store)
    line, error, message = REFUSED[case]
    with pytest.raises(error, match=f": line 604: {message}"):
        await import_jsonl(store, [*good_events(), line])
    assert await state(store) == before  # no learner x, no counters, none of the 600 events


async def test_a_file_that_is_not_utf8_is_refused_by_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    bad = b'{"type":"learner","learner":"x\xff"}'  # the byte is the 31st
    path.write_bytes("\n".join(good_events(3)).encode() + b"\n" + bad + b"\n")
    target = MemoryLearningStore()
    with pytest.raises(InvalidInput, match=r": line 7: not UTF-8 text \(byte 0xff at column 31\)"):
        await import_file(target, path)
    assert await state(target) == {}


async def test_a_line_over_the_limit_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    path.write_bytes(HEADER.encode() + b"\n" + b" " * (MAX_LINE_BYTES * 3))
    with pytest.raises(InvalidInput, match=r": line 2 is longer than 1048576 bytes"):
        await import_file(MemoryLearningStore(), path)


async def test_an_import_beyond_the_learner_cap_is_refused(store: LearningStore) -> None:
    await history(store, "one")
    before = await state(store)
    lines = [HEADER] + [json.dumps({"type": "learner", "learner": f"l{i}"}) for i in range(4)]
    with pytest.raises(LimitExceeded, match=r"would create 4 learners; one import creates "
                                            r"at most 3 \(split the file\)"):
        await import_jsonl(store, lines, max_learners=3)
    assert await state(store) == before
    # learners already there do not count against an import that creates none
    assert (await import_jsonl(store, await lines_of(store), max_learners=1)).ok


async def test_a_refused_file_does_not_even_create_the_store(tmp_path: Path) -> None:
    target = SqliteLearningStore(tmp_path / "new" / "state.db")
    try:
        with pytest.raises(InvalidPrior):
            await import_jsonl(target, [HEADER, REFUSED["prior <= 0"][0]])
    finally:
        await target.close()
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("kind", ["memory", "sqlite", "json"])
async def test_a_store_failure_midway_applies_nothing(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first batch of 500 is applied, the second fails: the transaction rolls back."""
    target = await make_store(kind, tmp_path)
    try:
        await history(target)
        before = await state(target)
        real = target.apply
        calls = 0

        async def failing(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise StoreUnavailable("the disk went away")
            return await real(*args, **kwargs)

        monkeypatch.setattr(target, "apply", failing)
        with pytest.raises(StoreUnavailable):
            await import_jsonl(target, good_events())
        assert calls == 2
        monkeypatch.undo()
        assert await state(target) == before
        report = await import_jsonl(target, good_events())  # and the retry applies it all
        assert report.applied == 600
    finally:
        await target.close()


async def test_a_sqlite_error_inside_the_import_transaction_rolls_it_all_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = SqliteLearningStore(tmp_path / "state.db")
    await target.initialize()
    try:
        await history(target)
        before = await state(target)
        real = target._apply_batch
        calls = 0

        def failing(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise sqlite3.OperationalError("disk I/O error")
            return real(*args, **kwargs)

        monkeypatch.setattr(target, "_apply_batch", failing)
        with pytest.raises(StoreError, match="saving feedback"):
            await import_jsonl(target, good_events())
        monkeypatch.undo()
        assert await state(target) == before
        # the writer is still usable afterwards
        assert (await import_jsonl(target, good_events())).applied == 600
    finally:
        await target.close()


async def test_one_shot_iterators_files_and_streams_are_read_twice(tmp_path: Path) -> None:
    source = MemoryLearningStore()
    await history(source)
    exported = await lines_of(source)
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(exported) + "\n")

    async def agen() -> AsyncIterator[str]:
        for line in exported:
            yield line + "\n"

    want = await state(source)
    for lines in (iter(exported), agen()):
        target = MemoryLearningStore()
        assert (await import_jsonl(target, lines)).applied == 4
        assert await state(target) == want
    for file in (path, str(path)):
        target = MemoryLearningStore()
        assert (await import_file(target, file)).applied == 4
        assert await state(target) == want
    with path.open("rb") as stream:
        target = MemoryLearningStore()
        assert (await import_file(target, stream)).applied == 4
        assert await state(target) == want
