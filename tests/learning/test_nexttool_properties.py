"""Properties of the next-tool model (hypothesis), and learning on a seeded workflow."""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qortex_mcp.learning import Learner, LearnerConfig, MemoryLearningStore
from qortex_mcp.learning.nexttool import NextToolModel

VOCAB = ["a", "b", "c", "d"]
PROPS = settings(max_examples=40, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])

sessions = st.lists(st.lists(st.tuples(st.sampled_from(VOCAB), st.sampled_from([0.0, 1.0])),
                             min_size=1, max_size=6), min_size=1, max_size=5)


@PROPS
@given(sessions=sessions, candidates=st.lists(st.sampled_from([*VOCAB, "new"]), min_size=1,
                                              max_size=5, unique=True),
       weight=st.sampled_from([0.0, 0.5, 1.0]))
def test_counts_equal_the_applied_transitions_and_smoothing_is_a_distribution(
    sessions: list[list[tuple[str, float]]], candidates: list[str], weight: float,
) -> None:
    async def main() -> None:
        async with MemoryLearningStore() as store:
            lrn = await Learner.create(LearnerConfig(name="p", seed=1), store)
            model = NextToolModel.of(lrn)
            expected: dict[tuple[str | None, str | None], Counter[str]] = {}
            for session in sessions:
                history: list[str] = []
                for tool, reward in session:
                    got = model.suggest(history, VOCAB)
                    # a retry of the same answer counts once
                    for _ in range(2):
                        await model.feedback(got.selection_id, {tool: reward})
                    padded = [None, None, *history]
                    state = (padded[-2], padded[-1])
                    expected.setdefault(state, Counter())[tool] += 1
                    history.append(tool)
            for state, counter in expected.items():
                hist = [h for h in state if h is not None]
                assert model.counts(hist) == {t: float(n) for t, n in counter.items()}
            total = sum(sum(c.values()) for c in expected.values())
            rows = {r.arm: r.n for r in await store.evidence("p")
                    if r.ctx == model._levels_of((None, None), None)[0].key}
            assert sum(rows.values()) == total  # the unigram level saw every transition
            # the model's arrays, updated in place feedback after feedback, equal arrays
            # built afresh from the learner's rows (a new model), also after a decay
            for step in ("after feedback", "after decay"):
                fresh = NextToolModel(lrn)
                for hist in ([], ["a"], ["c", "b"]):
                    ours = model.suggest(hist, candidates, k=len(candidates), explore=False)
                    theirs = fresh.suggest(hist, candidates, k=len(candidates), explore=False)
                    assert [s.tool for s in ours.suggestions] == [
                        s.tool for s in theirs.suggestions], step
                    for mine, other in zip(ours.suggestions, theirs.suggestions, strict=True):
                        assert mine.probability == pytest.approx(other.probability), step
                        assert mine.success_mean == pytest.approx(other.success_mean), step
                await lrn.decay(0.5)
            blend = NextToolModel(lrn, sequence_weight=weight)
            for hist in ([], ["a"], ["b", "a"], ["d", "d", "c"]):
                out = blend.suggest(hist, candidates, k=len(candidates), explore=False)
                probs = [s.probability for s in out.suggestions]
                assert sum(probs) == pytest.approx(1.0)
                assert all(0.0 < p <= 1.0 for p in probs)
                assert sorted(s.tool for s in out.suggestions) == sorted(candidates)
                scores = [s.score for s in out.suggestions]
                assert scores == sorted(scores, reverse=True)
            await lrn.close()

    asyncio.run(main())


# --- learning ----------------------------------------------------------------------------

# A workflow: after (read, test) the agent edits 70% of the time, else greps; "lint" is
# called as often as "edit" after (read, test) but fails 90% of the time.
def _next(rng: np.random.Generator, state: tuple[str, str]) -> tuple[str, float]:
    if state == ("read", "test"):
        tool = str(rng.choice(["edit", "lint", "grep"], p=[0.4, 0.4, 0.2]))
        ok = rng.random() < (0.1 if tool == "lint" else 0.85)
        return tool, float(ok)
    follow = {"start": "read", "read": "test", "edit": "test", "lint": "test", "grep": "read",
              "test": "read"}
    return follow[state[1]], 1.0


def test_it_learns_the_workflow_and_success_weighting_vetoes_the_failing_tool() -> None:
    async def main() -> tuple[Counter[str], Counter[str]]:
        async with MemoryLearningStore() as store:
            lrn = await Learner.create(LearnerConfig(name="wf", seed=11), store)
            model = NextToolModel.of(lrn)
            rng = np.random.default_rng(5)
            tools = ["read", "test", "edit", "lint", "grep"]
            for _ in range(40):
                history = ["start", "read", "test"]
                for _ in range(4):
                    tool, reward = _next(rng, (history[-2], history[-1]))
                    got = model.suggest(history, tools)
                    await model.feedback(got.selection_id, {tool: reward})
                    history.append(tool)
            weighted: Counter[str] = Counter()
            plain: Counter[str] = Counter()
            sequence_only = NextToolModel(lrn, sequence_weight=1.0)
            for _ in range(200):
                weighted[model.suggest(["read", "test"], tools, k=1).suggestions[0].tool] += 1
                plain[sequence_only.suggest(["read", "test"], tools, k=1,
                                            explore=False).suggestions[0].tool] += 1
            assert model.suggest(["edit", "test"], tools, k=1, explore=False) \
                .suggestions[0].tool == "read"
            await lrn.close()
            return weighted, plain

    weighted, plain = asyncio.run(main())
    # Exploring (Thompson draws), edit wins most of the time; lint (frequent, failing)
    # rarely: wide margins around ~90% / ~5%.
    assert weighted["edit"] >= 140, weighted
    assert weighted["lint"] <= 30, weighted
    # Without success weighting the order is by frequency alone: edit or lint, never grep.
    assert plain["grep"] == 0
    assert plain["edit"] + plain["lint"] == 200
