"""The next-tool model: counts per n-gram level, smoothing, success weighting, feedback
exactly once, bad input refused with the store unchanged, every store, export and replay."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from qortex_mcp.errors import (
    ArmNotInSelection,
    InvalidCandidates,
    InvalidInput,
    InvalidName,
    InvalidSelection,
    LimitExceeded,
    QortexError,
    SelectionConflict,
)
from qortex_mcp.learning import (
    ArmOutcome,
    Learner,
    LearnerConfig,
    LearningStore,
    MemoryLearningStore,
)
from qortex_mcp.learning.context import canonical_context
from qortex_mcp.learning.nexttool import MAX_HISTORY, MAX_TOOLS, NextToolModel
from qortex_mcp.learning.sequences import levels_for
from qortex_mcp.learning.transfer import export_jsonl, import_jsonl
from tests.conftest import make_store

pytestmark = pytest.mark.anyio

TOOLS = ["read_file", "run_tests", "edit_file", "grep", "commit"]


@pytest.fixture
async def model() -> AsyncIterator[NextToolModel]:
    async with MemoryLearningStore() as store:
        lrn = await Learner.create(LearnerConfig(name="tools", seed=7), store)
        try:
            yield NextToolModel.of(lrn)
        finally:
            await lrn.close()


async def teach(model: NextToolModel, history: list[str], tool: str, outcome: str | float,
                times: int = 1, context: dict[str, str] | None = None) -> None:
    for _ in range(times):
        got = model.suggest(history, TOOLS, context=context)
        await model.feedback(got.selection_id, {tool: outcome})


async def fingerprint(store: LearningStore, learner: str = "tools") -> tuple[object, ...]:
    evidence = sorted((r.ctx, r.arm, r.s, r.f, r.n) for r in await store.evidence(learner)) \
        if await store.learners() else []
    events = await store.events(learner) if await store.learners() else []
    return tuple(evidence), len(events)


async def test_the_tool_that_followed_a_history_comes_first_with_its_reason(
    model: NextToolModel,
) -> None:
    await teach(model, ["read_file", "run_tests"], "edit_file", "accepted", times=6)
    await teach(model, ["read_file", "run_tests"], "edit_file", "rejected", times=1)
    await teach(model, ["read_file", "run_tests"], "grep", "accepted", times=1)
    got = model.suggest(["read_file", "run_tests"], TOOLS, k=2, explore=False)
    top = got.suggestions[0]
    assert top.tool == "edit_file"
    assert top.rank == 1
    assert top.count == 7
    assert top.reason == "after read_file -> run_tests, edit_file followed 7 times, 86% went well"
    assert got.suggestions[1].tool == "grep"
    assert top.probability > 0.5 > got.suggestions[1].probability
    assert got.history == ("read_file", "run_tests")


async def test_only_the_last_two_tools_matter_and_short_histories_are_padded(
    model: NextToolModel,
) -> None:
    await teach(model, ["grep", "read_file", "run_tests"], "edit_file", 1.0, times=3)
    long = ["commit"] * 50 + ["read_file", "run_tests"]
    assert model.counts(long) == {"edit_file": 3.0}
    assert model.counts(["run_tests"]) == {}  # (start, run_tests) is another state
    await teach(model, [], "read_file", 1.0, times=2)
    opening = model.suggest([], TOOLS, k=1, explore=False)
    assert opening.history == (None, None)
    assert opening.suggestions[0].tool == "read_file"
    assert opening.suggestions[0].reason.startswith("read_file opened a session 2 times")


async def test_probabilities_are_a_distribution_over_the_candidates(
    model: NextToolModel,
) -> None:
    await teach(model, ["read_file", "run_tests"], "edit_file", 1.0, times=4)
    await teach(model, ["grep", "run_tests"], "commit", 0.0, times=2)
    for cands in (TOOLS, ["grep", "commit"], ["unknown-tool", "edit_file"]):
        got = model.suggest(["read_file", "run_tests"], cands, k=len(cands), explore=False)
        probs = [s.probability for s in got.suggestions]
        assert sum(probs) == pytest.approx(1.0)
        assert all(0.0 < p < 1.0 for p in probs)


async def test_a_frequent_tool_that_keeps_failing_drops_below_one_that_works(
    model: NextToolModel,
) -> None:
    await teach(model, ["read_file", "run_tests"], "grep", "rejected", times=12)
    await teach(model, ["read_file", "run_tests"], "edit_file", "accepted", times=6)
    weighted = model.suggest(["read_file", "run_tests"], TOOLS, k=1, explore=False)
    assert weighted.suggestions[0].tool == "edit_file"
    sequence_only = NextToolModel(model.learner, sequence_weight=1.0)
    plain = sequence_only.suggest(["read_file", "run_tests"], TOOLS, k=1, explore=False)
    assert plain.suggestions[0].tool == "grep"


async def test_feedback_may_name_any_candidate_and_counts_once(model: NextToolModel) -> None:
    got = model.suggest(["read_file"], TOOLS, k=1, explore=False)
    unsuggested = next(t for t in TOOLS if t != got.suggestions[0].tool)
    first = await model.feedback(got.selection_id, {unsuggested: "accepted"})
    assert [r.status for r in first] == ["applied"]
    before = await fingerprint(model.learner.store)
    again = await model.feedback(got.selection_id, {unsuggested: "accepted"})
    assert [r.status for r in again] == ["duplicate"]
    assert await fingerprint(model.learner.store) == before
    assert model.counts(["read_file"]) == {unsuggested: 1.0}
    with pytest.raises(SelectionConflict):
        await model.feedback(got.selection_id, {unsuggested: "rejected"})
    assert await fingerprint(model.learner.store) == before


async def test_each_transition_writes_one_row_per_level_and_global_counts_stay_exact(
    model: NextToolModel,
) -> None:
    await teach(model, ["a-tool", "read_file"], "grep", 1.0, times=2,
                context={"task": "fix"})
    rows = await model.learner.store.evidence("tools")
    by_ctx = {r.ctx: r.n for r in rows if r.arm == "grep"}
    fix = canonical_context({"task": "fix"})
    assert fix is not None
    levels = levels_for(("a-tool", "read_file"), fix.body)
    assert [by_ctx[lv.key] for lv in levels] == [2, 2, 2, 2]
    # the level bodies are what canonical_context makes of them
    for lv in levels:
        level = canonical_context(json.loads(lv.body))
        assert level is not None
        assert level.key == lv.key
    assert model.counts(["a-tool", "read_file"], {"task": "fix"}) == {"grep": 2.0}
    assert model.counts(["a-tool", "read_file"]) == {"grep": 2.0}


async def test_a_new_context_starts_from_the_global_sequence_model(model: NextToolModel) -> None:
    await teach(model, ["read_file", "run_tests"], "edit_file", 1.0, times=5)
    got = model.suggest(["read_file", "run_tests"], TOOLS, k=1, context={"task": "new"},
                        explore=False)
    assert got.suggestions[0].tool == "edit_file"
    assert got.context_key
    await teach(model, ["read_file", "run_tests"], "commit", 1.0, times=12,
                context={"task": "release"})
    release = model.suggest(["read_file", "run_tests"], TOOLS, k=1,
                            context={"task": "release"}, explore=False)
    assert release.suggestions[0].tool == "commit"
    assert release.suggestions[0].reason.startswith("in this context, after read_file")


@pytest.mark.parametrize(("call", "error"), [
    (lambda m: m.suggest("read_file", TOOLS), InvalidInput),
    (lambda m: m.suggest(["x"] * (MAX_HISTORY + 1), TOOLS), LimitExceeded),
    (lambda m: m.suggest(["bad\x00name"], TOOLS), InvalidName),
    (lambda m: m.suggest([7], TOOLS), InvalidName),
    (lambda m: m.suggest([], []), InvalidCandidates),
    (lambda m: m.suggest([], ["a", "a"]), InvalidCandidates),
    (lambda m: m.suggest([], [f"t{i}" for i in range(MAX_TOOLS + 1)]), InvalidCandidates),
    (lambda m: m.suggest([], [" padded"]), InvalidName),
    (lambda m: m.suggest([], TOOLS, k=0), InvalidInput),
    (lambda m: m.suggest([], TOOLS, explore=1), InvalidInput),
])
async def test_bad_suggest_input_is_refused_with_its_code(
    model: NextToolModel, call: object, error: type[QortexError],
) -> None:
    with pytest.raises(error):
        call(model)  # type: ignore[operator]


async def test_bad_feedback_is_refused_and_the_store_is_unchanged(model: NextToolModel) -> None:
    await teach(model, ["read_file"], "grep", 1.0)
    before = await fingerprint(model.learner.store)
    got = model.suggest(["read_file"], ["grep", "commit"])
    sel = await model.learner.select(["grep", "commit"])
    cases: list[tuple[object, type[QortexError]]] = [
        (model.feedback(got.selection_id, {"edit_file": 1.0}), ArmNotInSelection),
        (model.feedback(got.selection_id, {}), InvalidInput),
        (model.feedback(got.selection_id, {"grep": 1.5}), QortexError),
        (model.feedback(got.selection_id, {"grep": "great"}), QortexError),
        (model.feedback(sel.selection_id, {"grep": 1.0}), InvalidSelection),
        (model.feedback(got.selection_id[:-2] + "AA", {"grep": 1.0}), InvalidSelection),
        (model.learner.observe(ArmOutcome("grep", reward=1.0,
                                          selection_id=got.selection_id)), InvalidSelection),
    ]
    for coro, error in cases:
        with pytest.raises(error):
            await coro  # type: ignore[misc]
    assert await fingerprint(model.learner.store) == before


async def test_counts_survive_a_restart_and_replay_in_every_store(
    store: LearningStore,
) -> None:
    config = LearnerConfig(name="tools", seed=3)
    async with await Learner.create(config, store) as lrn:
        m = NextToolModel.of(lrn)
        await teach(m, ["read_file", "run_tests"], "edit_file", "accepted", times=3)
        await teach(m, ["read_file", "run_tests"], "grep", "rejected", times=1)
        await teach(m, [], "read_file", "partial", times=2, context={"task": "fix"})
        expected = m.suggest(["read_file", "run_tests"], TOOLS, k=5, explore=False)
    async with await Learner.create(config, store) as lrn:
        m = NextToolModel.of(lrn)
        assert m.counts(["read_file", "run_tests"]) == {"edit_file": 3.0, "grep": 1.0}
        assert m.counts([], {"task": "fix"}) == {"read_file": 2.0}
        again = m.suggest(["read_file", "run_tests"], TOOLS, k=5, explore=False)
        assert [(s.tool, round(s.probability, 12), round(s.success_mean, 12))
                for s in again.suggestions] == [
            (s.tool, round(s.probability, 12), round(s.success_mean, 12))
            for s in expected.suggestions]
        assert (await lrn.replay()).ok


async def test_an_export_imported_elsewhere_suggests_the_same(tmp_path: Path) -> None:
    source = MemoryLearningStore()
    target = await make_store("sqlite", tmp_path)
    try:
        await source.initialize()
        async with await Learner.create(LearnerConfig(name="tools"), source) as lrn:
            m = NextToolModel.of(lrn)
            await teach(m, ["grep", "read_file"], "edit_file", 1.0, times=4)
            await teach(m, ["grep", "read_file"], "commit", 0.0, times=2)
            want = m.suggest(["grep", "read_file"], TOOLS, k=5, explore=False)
        lines = [line async for line in export_jsonl(source)]
        report = await import_jsonl(target, lines)
        assert report.ok, report
        async with await Learner.create(LearnerConfig(name="tools"), target) as lrn:
            m = NextToolModel.of(lrn)
            got = m.suggest(["grep", "read_file"], TOOLS, k=5, explore=False)
            assert [(s.tool, s.reason) for s in got.suggestions] == [
                (s.tool, s.reason) for s in want.suggestions]
            assert (await lrn.replay()).ok
    finally:
        await source.close()
        await target.close()


async def test_old_transitions_fade_with_the_half_life(tmp_path: Path) -> None:
    """Events dated one half-life ago (imported) count half; new ones count fully."""
    day = 86400.0
    source = MemoryLearningStore()
    target = MemoryLearningStore()
    try:
        await source.initialize()
        await target.initialize()
        async with await Learner.create(LearnerConfig(name="tools"), source) as lrn:
            await teach(NextToolModel.of(lrn), ["grep"], "edit_file", 1.0, times=4)
        lines = []
        for line in [x async for x in export_jsonl(source)]:
            rec = json.loads(line)
            for field in ("at", "t"):  # events and the evidence they left, a day older
                if rec.get("type") in ("event", "evidence") and field in rec:
                    rec[field] -= day
            lines.append(json.dumps(rec))
        assert (await import_jsonl(target, lines)).ok
        config = LearnerConfig(name="tools", half_life_s=day)
        async with await Learner.create(config, target) as lrn:
            m = NextToolModel.of(lrn)
            assert m.counts(["grep"])["edit_file"] == pytest.approx(2.0, rel=1e-3)
            await teach(m, ["grep"], "commit", 1.0, times=2)
            assert m.counts(["grep"])["commit"] == pytest.approx(2.0, rel=1e-3)
            got = m.suggest(["grep"], ["edit_file", "commit"], k=2, explore=False)
            # equal decayed counts: equal probabilities
            assert got.suggestions[0].probability == pytest.approx(0.5, rel=1e-3)
    finally:
        await source.close()
        await target.close()


async def test_limits_refuse_new_histories_and_rate_caps_count_a_transition_once() -> None:
    from qortex_mcp.errors import RateLimited

    async with MemoryLearningStore() as store:
        config = LearnerConfig(name="tools", max_contexts=4, feedback_per_arm_per_minute=2)
        async with await Learner.create(config, store) as lrn:
            model = NextToolModel.of(lrn)
            await teach(model, ["grep"], "edit_file", 1.0)  # 3 levels: 3 contexts
            got = model.suggest(["commit", "read_file"], TOOLS)  # 2 new: 1 would fit
            before = await fingerprint(store)
            with pytest.raises(LimitExceeded):
                await model.feedback(got.selection_id, {"edit_file": 1.0})
            assert await fingerprint(store) == before
            # the same state again: no new context; the second transition to edit_file
            # is within a cap of 2 per minute, the third is not
            await teach(model, ["grep"], "edit_file", 1.0)
            again = model.suggest(["grep"], TOOLS)
            with pytest.raises(RateLimited):
                await model.feedback(again.selection_id, {"edit_file": 1.0})
            assert model.counts(["grep"]) == {"edit_file": 2.0}


async def test_answers_follow_new_feedback_and_new_priors_at_once(model: NextToolModel) -> None:
    first = model.suggest(["grep"], TOOLS, k=5, explore=False)
    assert [s.probability for s in first.suggestions] == [pytest.approx(0.2)] * 5
    await teach(model, ["grep"], "commit", 1.0)
    after = model.suggest(["grep"], TOOLS, k=5, explore=False)
    assert after.suggestions[0].tool == "commit"
    assert after.suggestions[0].probability > 0.2
    before = {s.tool: s.success_mean for s in after.suggestions}
    from qortex_mcp.learning import Arm
    await model.learner.select([Arm("edit_file", prior=(9.0, 1.0))])
    primed = {s.tool: s.success_mean for s in model.suggest(
        ["grep"], TOOLS, k=5, explore=False).suggestions}
    assert primed["edit_file"] == pytest.approx(0.9)
    assert before["edit_file"] == pytest.approx(0.5)


async def test_exploring_among_many_candidates_ranks_like_drawing_for_all() -> None:
    """With 40 candidates only the likeliest get draws (``_draw``); the top-3 by score must
    still be what a draw for every candidate gives: compare the frequencies."""
    many = [f"tool_{i:02d}" for i in range(40)]
    async with MemoryLearningStore() as store, await Learner.create(
            LearnerConfig(name="tools", seed=5), store) as lrn:
            model = NextToolModel.of(lrn)
            for tool, times, reward in (("tool_03", 9, 1.0), ("tool_07", 6, 0.0),
                                        ("tool_11", 4, 1.0), ("tool_20", 2, 1.0)):
                for _ in range(times):
                    got = model.suggest(["tool_00"], many)
                    await model.feedback(got.selection_id, {tool: reward})
            pruned: dict[tuple[str, ...], int] = {}
            full: dict[tuple[str, ...], int] = {}
            levels = model._levels_of(model._state(["tool_00"]), None)
            est = model._estimate(levels, tuple(many))
            mean = est.alpha / (est.alpha + est.beta)
            for _ in range(3000):
                top = tuple(s.tool for s in model.suggest(["tool_00"], many, k=3).suggestions)
                pruned[top] = pruned.get(top, 0) + 1
                draws = lrn.rng.beta(est.alpha, est.beta)
                order = np.argsort(-model._blend(est.p, draws), kind="stable")[:3]
                key = tuple(many[i] for i in order)
                full[key] = full.get(key, 0) + 1
            assert model._blend(est.p, mean).argmax() == many.index("tool_03")
    for key in set(pruned) | set(full):
        a, b = pruned.get(key, 0) / 3000, full.get(key, 0) / 3000
        assert abs(a - b) < 0.05, (key, a, b)
