"""Propensities: P(slot j holds the arm chosen for it), checked against choice frequencies."""

from __future__ import annotations

import numpy as np
import pytest

from qortex_mcp.errors import InvalidCandidates, InvalidInput
from qortex_mcp.learning.policies import POLICIES, make_policy
from qortex_mcp.learning.policies.simple import EpsilonGreedy
from tests.learning.policies.support import learned_stats

NAMES = list(POLICIES)
MU = [0.3, 0.4, 0.45, 0.5]


def state(name: str) -> np.ndarray:
    return learned_stats(make_policy(name), MU, 40, seed=2)


@pytest.mark.parametrize("name", NAMES)
def test_first_slot_propensities_sum_to_one_over_the_candidates(name: str) -> None:
    policy, stats = make_policy(name), state(name)
    probs = policy.choice_probabilities(stats, np.random.default_rng(0), t=40)
    assert probs.shape == (4,)
    assert probs.sum() == pytest.approx(1.0)
    each = [policy.propensities(stats, [a], np.random.default_rng(0), t=40)[0]
            for a in range(4)]
    assert sum(each) == pytest.approx(1.0, abs=0.12)  # Monte Carlo for Thompson types
    if policy.deterministic or name in ("eps_greedy", "softmax", "exp3", "random"):
        np.testing.assert_allclose(each, probs)  # exact


@pytest.mark.parametrize("name", NAMES)
def test_propensities_match_how_often_each_arm_lands_in_each_slot(name: str) -> None:
    policy, stats = make_policy(name), state(name)
    rng = np.random.default_rng(1)
    n = 1500
    picks = np.array([policy.select(stats, 2, rng, t=40) for _ in range(n)])
    for slot in (0, 1):
        freq = np.bincount(picks[:, slot], minlength=4) / n
        for arm in range(4):
            chosen = [arm, (arm + 1) % 4] if slot == 0 else [(arm + 1) % 4, arm]
            p = policy.propensities(stats, chosen, np.random.default_rng(7), t=40,
                                    draws=1024)[slot]
            assert p == pytest.approx(freq[arm], abs=0.07), (slot, arm, freq)


def test_deterministic_ties_are_split_equally_in_the_choice_and_its_propensity() -> None:
    policy = make_policy("ucb1")
    stats = np.array([[10.0, 5.0], [10.0, 5.0], [10.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    # two untried arms (infinite index) tie for the first slot, then for the second
    np.testing.assert_allclose(policy.propensities(stats, [3, 4], np.random.default_rng(0)),
                               [0.5, 0.5])
    np.testing.assert_allclose(policy.propensities(stats, [0, 1], np.random.default_rng(0)),
                               [0.0, 0.0])
    probs = policy.choice_probabilities(stats, np.random.default_rng(0))
    np.testing.assert_allclose(probs, [0, 0, 0, 0.5, 0.5])
    rng = np.random.default_rng(5)
    firsts = np.bincount([int(policy.select(stats, 1, rng)[0]) for _ in range(400)],
                         minlength=5)
    assert firsts[:3].sum() == 0
    assert 150 <= firsts[3] <= 250
    third = [policy.select(stats, 4, rng)[2:4].tolist() for _ in range(200)]
    assert {tuple(sorted(x)) for x in third} == {(0, 1)}


def test_eps_greedy_propensity_is_epsilon_over_k_plus_the_greedy_share() -> None:
    policy = make_policy("eps_greedy", {"epsilon": 0.2})
    stats = np.array([[10.0, 9.0], [10.0, 1.0], [10.0, 2.0], [10.0, 3.0]])
    # means 0.9, 0.1, 0.2, 0.3: the greedy list is 0, 3, 2, 1
    got = policy.propensities(stats, [0, 3], np.random.default_rng(0), t=40)
    np.testing.assert_allclose(got, [0.2 / 4 + 0.8, 0.2 / 4 + 0.8])
    got = policy.propensities(stats, [3, 1], np.random.default_rng(0), t=40)
    np.testing.assert_allclose(got, [0.2 / 4, 0.2 / 4])
    decayed = make_policy("eps_greedy", {"epsilon": 0.2, "decay": 0.1, "floor": 0.05})
    assert isinstance(decayed, EpsilonGreedy)
    assert decayed.epsilon(1000.0) == 0.05


def test_chosen_positions_are_checked() -> None:
    policy, stats = make_policy("softmax"), state("softmax")
    with pytest.raises(InvalidCandidates):
        policy.propensities(stats, [0, 0], np.random.default_rng(0))
    with pytest.raises(InvalidCandidates):
        policy.propensities(stats, [4], np.random.default_rng(0))
    with pytest.raises(InvalidInput):
        policy.select(stats, 0, np.random.default_rng(0))


@pytest.mark.parametrize("name", NAMES)
def test_select_returns_k_distinct_positions_best_first(name: str) -> None:
    policy, stats = make_policy(name), state(name)
    got = policy.select(stats, 3, np.random.default_rng(0), t=40)
    assert len(set(got.tolist())) == 3
    assert policy.select(stats, 10, np.random.default_rng(0), t=40).shape == (4,)
