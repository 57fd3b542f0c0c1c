"""Export and import as JSON lines: lossless into an empty store, and idempotent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qortex_mcp.errors import InvalidInput, InvalidName, InvalidReward, SchemaTooNew, UnknownLearner
from qortex_mcp.learning import (
    Arm,
    ArmOutcome,
    Learner,
    LearnerConfig,
    LearningStore,
    MemoryLearningStore,
    SelectionSigner,
)
from qortex_mcp.learning.transfer import export_jsonl, import_jsonl
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
            "counters": (snap.selections, snap.explored),
            "arms": sorted((a.arm, a.a0, a.b0, a.selections, a.last_selected)
                           for a in snap.arms),
            "evidence": sorted((r.ctx, r.arm, round(r.s, 12), round(r.f, 12), r.n,
                                round(r.rsum, 12), r.t) for r in await store.evidence(
                summary.name)),
            "events": [(e.kind, e.key, e.arm, e.ctx, e.reward, e.weight, e.outcome, e.at,
                        e.factor) for e in await store.events(summary.name)],
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
        assert await state(target) == await state(store)
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
