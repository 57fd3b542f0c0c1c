"""Rewards and the statistics they add: validation, additivity, decay."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qortex_mcp.errors import InvalidInput, InvalidReward
from qortex_mcp.learning.policies import POLICIES, fold, make_policy
from tests.learning.policies.support import Decision

NAMES = list(POLICIES)
BOUNDED = [n for n in NAMES if n != "gaussian_thompson"]
PROPS = settings(max_examples=40, deadline=None, derandomize=True)
EXP3_KW: Decision = {"propensity": 0.25, "t": 10, "n_arms": 4}


def kw(name: str) -> Decision:
    return EXP3_KW if name == "exp3" else Decision()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "1", True, None])
def test_non_finite_or_non_numeric_rewards_are_refused(name: str, bad: object) -> None:
    policy = make_policy(name)
    row = policy.zeros(1)[0]
    with pytest.raises(InvalidReward) as err:
        policy.increment(row, bad, **kw(name))
    assert err.value.code == "INVALID_REWARD"
    assert name in err.value.message
    assert not row.any()


@pytest.mark.parametrize("name", BOUNDED)
@pytest.mark.parametrize("bad", [-0.01, 1.01, 7])
def test_bounded_strategies_refuse_rewards_outside_0_1(name: str, bad: float) -> None:
    with pytest.raises(InvalidReward, match=r"\[0, 1\]"):
        make_policy(name).increment(make_policy(name).zeros(1)[0], bad, **kw(name))


def test_gaussian_thompson_takes_any_finite_reward() -> None:
    policy = make_policy("gaussian_thompson")
    row = policy.zeros(1)[0]
    assert policy.increment(row, -250.5).tolist() == [1.0, -250.5, 250.5**2]


def test_graded_rewards_stay_graded() -> None:
    row = make_policy("thompson").zeros(1)[0]
    assert make_policy("thompson").increment(row, 0.3).tolist() == [0.3, 0.7]
    assert make_policy("ucb1").increment(row, 0.3).tolist() == [1.0, 0.3]


def test_exp3_needs_the_propensity_and_with_the_anytime_gamma_the_decision() -> None:
    policy = make_policy("exp3")
    row = policy.zeros(1)[0]
    with pytest.raises(InvalidInput, match="propensity"):
        policy.increment(row, 1.0)
    with pytest.raises(InvalidInput, match="propensity"):
        policy.increment(row, 1.0, propensity=0.0, t=1, n_arms=2)
    with pytest.raises(InvalidInput, match="t and n_arms"):
        policy.increment(row, 1.0, propensity=0.5)
    fixed = make_policy("exp3", {"gamma": 0.5})
    assert fixed.increment(row, 1.0, propensity=0.5).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("name", NAMES)
@PROPS
@given(rewards=st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), min_size=1,
                        max_size=30), seed=st.integers(0, 2**16))
def test_folding_increments_in_any_order_gives_the_same_statistics(
    name: str, rewards: list[float], seed: int
) -> None:
    policy = make_policy(name)
    incs = [policy.increment(policy.zeros(1)[0], r, **kw(name)) for r in rewards]
    order = np.random.default_rng(seed).permutation(len(incs))
    forward, shuffled = policy.zeros(1)[0], policy.zeros(1)[0]
    for i in range(len(incs)):
        forward = fold(forward, incs[i])
        shuffled = fold(shuffled, incs[order[i]])
    np.testing.assert_allclose(forward, shuffled, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(forward, np.sum(incs, axis=0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@PROPS
@given(rewards=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=10),
       decays=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=10))
def test_decay_then_add_is_the_formula_and_decays_compose(
    name: str, rewards: list[float], decays: list[float]
) -> None:
    policy = make_policy(name)
    row = np.sum([policy.increment(policy.zeros(1)[0], r, **kw(name)) for r in rewards], axis=0)
    inc = policy.increment(row, rewards[0], **kw(name))
    np.testing.assert_allclose(fold(row, inc, decays[0]), decays[0] * row + inc)
    stepwise = row
    for d in decays:
        stepwise = fold(stepwise, np.zeros_like(row), d)
    np.testing.assert_allclose(stepwise, row * float(np.prod(decays)), rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize("name", NAMES)
def test_an_increment_depends_on_the_reward_not_on_the_row(name: str) -> None:
    policy = make_policy(name)
    empty, full = policy.zeros(1)[0], policy.zeros(1)[0] + 50.0
    np.testing.assert_array_equal(policy.increment(empty, 0.5, **kw(name)),
                                  policy.increment(full, 0.5, **kw(name)))
