"""How ``select`` resolves its candidates: the fast paths (the previous call's candidates,
the cache of recent id lists) must answer exactly what a first resolution answers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from qortex_mcp.errors import InvalidCandidates
from qortex_mcp.learning import (
    Arm,
    ArmOutcome,
    Learner,
    LearnerConfig,
    MemoryLearningStore,
    SelectionSigner,
    SqliteLearningStore,
)

pytestmark = pytest.mark.anyio


async def make() -> Learner:
    return await Learner.create(LearnerConfig(name="t", seed=1), MemoryLearningStore(),
                                signer=SelectionSigner.random())


async def priors(learner: Learner) -> dict[str, tuple[float, float]]:
    return {p.id: (p.alpha, p.beta) for p in await learner.posteriors()}


async def test_a_list_changed_in_place_between_calls_offers_its_new_candidates() -> None:
    learner = await make()
    cands = ["a", "b", "c"]
    await learner.select(cands, k=3)
    cands[1] = "d"
    got = await learner.select(cands, k=3)
    assert {s.id for s in got.selected} == {"a", "c", "d"}
    assert sorted(p.id for p in await learner.posteriors()) == ["a", "b", "c", "d"]
    await learner.close()


async def test_the_same_arm_objects_set_their_prior_again_on_every_call() -> None:
    learner = await make()
    mine = [Arm("x", prior=(8.0, 2.0)), Arm("y")]
    await learner.select(mine)
    await learner.select([Arm("x", prior=(2.0, 8.0)), Arm("y")])
    assert (await priors(learner))["x"] == (2.0, 8.0)
    await learner.select(mine)  # the previous call's candidates were the other list
    await learner.select(mine)  # the same list as the previous call
    assert (await priors(learner))["x"] == (8.0, 2.0)
    await learner.close()


async def test_new_but_equal_arm_lists_and_plain_ids_resolve_to_the_same_arms() -> None:
    learner = await make()
    await learner.observe(ArmOutcome("b", reward=1.0))
    lists: list[Sequence[Arm | str]] = [[Arm("a"), Arm("b")], [Arm("a"), Arm("b")], ["a", "b"],
                                        ["a", Arm("b")], ("a", "b")]
    for cands in lists:
        got = await learner.select(cands, k=2)
        assert {s.id: s.alpha for s in got.selected} == {"a": 1.0, "b": 2.0}
    assert len(await learner.posteriors()) == 2
    await learner.close()


async def test_metadata_and_token_cost_come_from_the_objects_of_this_call() -> None:
    learner = await make()
    await learner.select([Arm("a", metadata={"v": 1}), Arm("b")], k=2)
    got = await learner.select([Arm("a", token_cost=3, metadata={"v": 2}), Arm("b")], k=2)
    by_id = {s.id: s for s in got.selected}
    assert by_id["a"].metadata == {"v": 2}
    assert by_id["a"].token_cost == 3
    await learner.close()


async def test_a_bad_candidate_is_refused_after_a_good_list_was_cached() -> None:
    learner = await make()
    await learner.select(["a", "b"])
    with pytest.raises(InvalidCandidates):
        await learner.select(["a", "a"])
    with pytest.raises(InvalidCandidates):
        await learner.select([Arm("a"), 7])  # type: ignore[list-item]
    assert (await learner.select(["a", "b"])).candidates == 2
    await learner.close()


async def test_a_prior_changed_by_another_instance_is_set_again_by_the_same_list(
    tmp_path: Path,
) -> None:
    signer = SelectionSigner.random()
    config = LearnerConfig(name="t", seed=1)
    async with (
        SqliteLearningStore(tmp_path / "state.db") as s1,
        SqliteLearningStore(tmp_path / "state.db") as s2,
        await Learner.create(config, s1, signer=signer) as one,
        await Learner.create(config, s2, signer=signer) as two,
    ):
        mine = [Arm("x", prior=(8.0, 2.0))]
        await one.select(mine)
        await one.flush()
        await two.select([Arm("x", prior=(2.0, 8.0))])
        await two.flush()
        await one.refresh()
        assert (await priors(one))["x"] == (2.0, 8.0)
        await one.select(mine)  # the previous call's very candidates
        assert (await priors(one))["x"] == (8.0, 2.0)


@pytest.mark.parametrize("bad", ["", " lead", "trail ", "tab\there", "x" * 129, "nul\x00",
                                 "zero\u200bwidth", "e\u0301"])
async def test_a_bad_id_among_many_new_ones_is_refused_and_nothing_registers(
    bad: str,
) -> None:
    """Many new ids are checked in bulk (one pass for the usual printable ASCII ones); a bad
    one anywhere among them is still refused with check_name's own message, and no id of
    that call becomes an arm."""
    from qortex_mcp.errors import InvalidName
    from qortex_mcp.learning import Learner, LearnerConfig, MemoryLearningStore
    from qortex_mcp.learning.validation import check_name

    ids = [f"id-{i}" for i in range(500)]
    ids.insert(250, bad)
    with pytest.raises(InvalidName) as expected:
        check_name(bad, "arm id")
    async with MemoryLearningStore() as store:
        learner = await Learner.create(LearnerConfig(name="bulk"), store)
        with pytest.raises(InvalidName) as info:
            await learner.select(ids)
        assert str(info.value) == str(expected.value)
        assert (await learner.metrics()).arms == ()
        good = await learner.select(ids[:250] + ids[251:], k=3)
        assert len(good.selected) == 3
        assert len((await learner.metrics()).arms) == 500
        await learner.close()
