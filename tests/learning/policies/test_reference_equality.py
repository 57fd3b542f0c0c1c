"""thompson draws exactly what strategies.ThompsonSampling draws; kl_ucb's index is the KL
bound; estimates are the textbook intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qortex_mcp.learning.policies import make_policy
from qortex_mcp.learning.policies.gaussian import student_t_ppf
from qortex_mcp.learning.policies.ucb import kl_upper_bound
from qortex_mcp.learning.stats import beta_interval
from qortex_mcp.learning.strategies import ThompsonSampling, default_generator

shapes = st.lists(st.floats(1e-6, 1e4), min_size=1, max_size=50)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(alpha=shapes, beta=shapes, seed=st.integers(0, 2**32 - 1))
def test_thompson_draws_equal_thompson_sampling_for_the_same_generator(
    alpha: list[float], beta: list[float], seed: int
) -> None:
    k = min(len(alpha), len(beta))
    a, b = np.array(alpha[:k]), np.array(beta[:k])
    ours = make_policy("thompson").scores(np.zeros((k, 2)), default_generator(seed),
                                          prior=np.column_stack([a, b]))
    theirs = ThompsonSampling().scores(a, b, default_generator(seed))
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("alpha", [1.0, 1e-6])
def test_thompson_equality_covers_the_fresh_learner_and_underflow_paths(alpha: float) -> None:
    a = np.full(30, alpha)
    ours = make_policy("thompson").scores(np.zeros((30, 2)), default_generator(4),
                                          prior=np.column_stack([a, a]))
    np.testing.assert_array_equal(ours, ThompsonSampling().scores(a, a, default_generator(4)))


def test_thompson_with_counts_and_the_default_prior_equals_thompson_sampling() -> None:
    counts = np.random.default_rng(0).integers(0, 40, (25, 2)).astype(float)
    ours = make_policy("thompson").scores(counts, default_generator(9))
    theirs = ThompsonSampling().scores(counts[:, 0] + 1, counts[:, 1] + 1, default_generator(9))
    np.testing.assert_array_equal(ours, theirs)


def kl(p: float, q: float) -> float:
    out = 0.0
    if p > 0:
        out += p * math.log(p / q)
    if p < 1:
        out += (1 - p) * math.log((1 - p) / (1 - q))
    return out


def slow_index(p: float, d: float) -> float:
    """Scalar bisection, 200 halvings."""
    lo, hi = p, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid >= 1.0 or kl(p, mid) > d:
            hi = mid
        else:
            lo = mid
    return lo


@settings(max_examples=200, deadline=None, derandomize=True)
@given(p=st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0, 1e-12, 1 - 1e-12])),
       d=st.floats(1e-9, 50.0))
def test_kl_ucb_index_matches_a_slow_scalar_bisection(p: float, d: float) -> None:
    got = float(kl_upper_bound(np.array([p]), np.array([d]))[0])
    assert got == pytest.approx(slow_index(p, d), abs=1e-8)


def test_kl_ucb_scores_are_the_index_with_log_t_and_untried_arms_first() -> None:
    policy = make_policy("kl_ucb")
    stats = np.array([[10.0, 3.0], [4.0, 4.0], [0.0, 0.0], [100.0, 50.0]])
    got = policy.scores(stats, np.random.default_rng(0), t=500)
    assert got[2] == math.inf
    for i in (0, 1, 3):
        n, s = stats[i]
        assert got[i] == pytest.approx(slow_index(s / n, math.log(500) / n), abs=1e-8)
    with_c = make_policy("kl_ucb", {"c": 3.0}).scores(stats, np.random.default_rng(0), t=500)
    level = math.log(500) + 3 * math.log(math.log(500))
    assert with_c[0] == pytest.approx(slow_index(0.3, level / 10), abs=1e-8)


def test_beta_estimate_is_the_posterior_mean_and_credible_interval() -> None:
    est = make_policy("thompson").estimate(np.array([7.0, 3.0]))
    assert est.mean == pytest.approx(8 / 12)
    assert (est.low, est.high) == beta_interval(8.0, 4.0, 0.95)
    assert est.interval == "credible"
    assert est.params == {"alpha": 8.0, "beta": 4.0}
    per_arm = make_policy("thompson").estimate(np.array([0.0, 0.0]), prior=np.array([2.0, 6.0]))
    assert per_arm.mean == pytest.approx(0.25)


def test_frequentist_estimates_are_confidence_intervals_and_none_without_evidence() -> None:
    est = make_policy("ucb1").estimate(np.array([100.0, 60.0]))
    half = math.sqrt(math.log(2 / 0.05) / 200)
    assert (est.mean, est.interval) == (0.6, "confidence")
    assert (est.low, est.high) == pytest.approx((0.6 - half, 0.6 + half))
    kl_est = make_policy("kl_ucb").estimate(np.array([100.0, 60.0]))
    assert kl_est.low < 0.6 < kl_est.high
    assert kl(0.6, kl_est.high) * 100 == pytest.approx(math.log(2 / 0.05), rel=1e-6)
    empty = make_policy("eps_greedy").estimate(np.zeros(2))
    assert (empty.mean, empty.low, empty.high) == (None, 0.0, 1.0)


@pytest.mark.parametrize(("q", "df", "expected"), [(0.975, 10.0, 2.228138851986),
                                                   (0.95, 1.0, 6.313751514675),
                                                   (0.025, 30.0, -2.042272456301)])
def test_student_t_quantiles(q: float, df: float, expected: float) -> None:
    assert student_t_ppf(q, df) == pytest.approx(expected, abs=1e-9)


def test_gaussian_estimate_is_the_normal_inverse_gamma_posterior() -> None:
    xs = np.array([1.0, 2.0, 4.0])
    row = np.array([3.0, xs.sum(), (xs**2).sum()])
    est = make_policy("gaussian_thompson").estimate(row)
    kappa, mu = 4.0, xs.sum() / 4.0
    beta = 1.0 + 0.5 * (((xs - xs.mean()) ** 2).sum() + 3 * xs.mean() ** 2 / 4)
    assert est.params == pytest.approx({"mu": mu, "kappa": kappa, "alpha": 2.5, "beta": beta})
    half = student_t_ppf(0.975, 5.0) * math.sqrt(beta / (2.5 * kappa))
    assert (est.low, est.high) == pytest.approx((mu - half, mu + half))
