"""Property tests of the posterior math (hypothesis), on the memory and SQLite stores."""

from __future__ import annotations

import asyncio
import math
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qortex_mcp.errors import QortexError
from qortex_mcp.learning import (
    ArmOutcome,
    Learner,
    LearnerConfig,
    LearningStore,
    MemoryLearningStore,
    SelectionSigner,
    SqliteLearningStore,
)

T = TypeVar("T")
SIGNER = SelectionSigner.random()
PROPS = settings(max_examples=60, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])

rewards = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
binary = st.sampled_from([0.0, 1.0])


def run(kind: str, body: Callable[[Learner], Awaitable[T]], **config: object) -> T:
    """Run ``body`` against a fresh learner on a fresh store of ``kind``."""

    async def main() -> T:
        with tempfile.TemporaryDirectory() as tmp:
            store: LearningStore = (MemoryLearningStore() if kind == "memory"
                                    else SqliteLearningStore(Path(tmp) / "p.db"))
            learner = await Learner.create(LearnerConfig(name="p", **config), store,  # type: ignore[arg-type]
                                           signer=SIGNER)
            try:
                return await body(learner)
            finally:
                await learner.close()
                await store.close()

    return asyncio.run(main())


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@PROPS
@given(values=st.lists(rewards, min_size=1, max_size=30))
def test_evidence_is_conserved(kind: str, values: list[float]) -> None:
    async def body(learner: Learner) -> tuple[float, float, int]:
        for i, r in enumerate(values):
            await learner.observe(ArmOutcome("a", reward=r, idempotency_key=f"k{i}"))
        (p,) = await learner.posteriors(["a"])
        return p.alpha, p.beta, p.pulls

    alpha, beta, pulls = run(kind, body)
    assert pulls == len(values)
    assert math.isclose(alpha - 1.0, math.fsum(values), rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose((alpha - 1.0) + (beta - 1.0), len(values), rel_tol=1e-12)
    assert alpha > 0
    assert beta > 0


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@PROPS
@given(data=st.data(), values=st.lists(st.tuples(st.sampled_from("abc"), rewards),
                                        min_size=1, max_size=25))
def test_batch_observe_does_not_depend_on_order(
    kind: str, data: st.DataObject, values: list[tuple[str, float]]
) -> None:
    shuffled = data.draw(st.permutations(list(enumerate(values))))

    async def body(learner: Learner, items: list[tuple[int, tuple[str, float]]]) -> list[
        tuple[str, float, float, int]
    ]:
        await learner.batch_observe([ArmOutcome(arm, reward=r, idempotency_key=f"k{i}")
                                     for i, (arm, r) in items])
        return [(p.id, p.alpha, p.beta, p.pulls) for p in await learner.posteriors()]

    first = run(kind, lambda lr: body(lr, list(enumerate(values))))
    second = run(kind, lambda lr: body(lr, shuffled))
    assert [(a, n) for a, _, _, n in first] == [(a, n) for a, _, _, n in second]
    for (_, a1, b1, _), (_, a2, b2, _) in zip(first, second, strict=True):
        assert math.isclose(a1, a2, rel_tol=1e-12)
        assert math.isclose(b1, b2, rel_tol=1e-12)


# One step of a random history: (action, selection index, arm, reward).
steps = st.lists(
    st.tuples(st.sampled_from(["select", "feedback", "feedback", "bad", "decay", "reset"]),
              st.integers(0, 5), st.sampled_from("abcd"),
              st.one_of(binary, st.sampled_from([0.5, math.nan, 2.0, -1.0]))),
    min_size=1, max_size=40,
)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@PROPS
@given(history=steps)
def test_state_matches_a_plain_model_and_the_event_replay(
    kind: str, history: list[tuple[str, int, str, float]]
) -> None:
    """Every sequence of valid and invalid operations leaves the store equal to a plain
    Python model of the contract, and to the replay of its own event log."""

    async def body(learner: Learner) -> None:
        model: dict[str, list[float]] = {}       # arm -> [s, f, n]
        answered: dict[tuple[int, str], float] = {}
        selections: list[tuple[str, tuple[str, ...]]] = []
        for action, idx, arm, reward in history:
            if action == "select" or not selections:
                # only the chosen arms of a select may get feedback on it
                sel = await learner.select(["a", "b", "c"], k=2)
                selections.append((sel.selection_id, tuple(a.id for a in sel.selected)))
                continue
            sid, shown = selections[idx % len(selections)]
            valid = 0.0 <= reward <= 1.0
            key = (idx % len(selections), arm)
            if action in ("feedback", "bad"):
                expect_error = (not valid or arm not in shown
                                or (key in answered and answered[key] != reward))
                try:
                    fb = await learner.observe(ArmOutcome(arm, reward=reward, selection_id=sid))
                except QortexError:
                    assert expect_error
                    continue
                assert not expect_error
                if key in answered:
                    assert fb.status == "duplicate"
                else:
                    assert fb.status == "applied"
                    answered[key] = reward
                    row = model.setdefault(arm, [0.0, 0.0, 0])
                    row[0] += reward
                    row[1] += 1.0 - reward
                    row[2] += 1
            elif action == "decay":
                await learner.decay(0.5)
                for row in model.values():
                    row[0] *= 0.5
                    row[1] *= 0.5
            elif action == "reset" and arm in model:
                await learner.reset([arm])
                model[arm] = [0.0, 0.0, 0]
        got = {p.id: p for p in await learner.posteriors()}
        for arm, (s, f, n) in model.items():
            assert math.isclose(got[arm].alpha, 1.0 + s, abs_tol=1e-9)
            assert math.isclose(got[arm].beta, 1.0 + f, abs_tol=1e-9)
            assert got[arm].pulls == n
        report = await learner.replay()
        assert report.ok, report.mismatches

    run(kind, body)
