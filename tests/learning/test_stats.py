"""Tests of the pure-Python Beta CDF / quantile module against closed forms.

No scipy: every expected value comes from a distribution whose CDF or quantile is known
exactly (uniform, power laws, arcsine, Beta(2, 2), the binomial-sum identity for integer
parameters) or from identities (symmetry, round trip through the CDF, monotonicity).
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qortex_mcp.learning.stats import beta_interval, beta_ppf, betainc

PROPS = settings(max_examples=300, deadline=None, derandomize=True)

# Probabilities: uniform-ish on (0, 1) plus both tails down to 1e-6.
probs = st.one_of(
    st.floats(min_value=1e-6, max_value=1.0 - 1e-6),
    st.floats(min_value=-6.0, max_value=-0.31).map(lambda e: 10.0**e),
    st.floats(min_value=-6.0, max_value=-0.31).map(lambda e: 1.0 - 10.0**e),
)
unit = st.floats(min_value=0.0, max_value=1.0)


def log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Floats spread evenly over decades, plus the end points."""
    return st.one_of(
        st.floats(min_value=math.log10(lo), max_value=math.log10(hi)).map(
            lambda e: min(max(10.0**e, lo), hi)
        ),
        st.sampled_from([lo, hi, 1.0]),
    )


shapes = log_uniform(0.01, 1e4)


def quantile_ok(a: float, b: float, q: float, x: float, tol: float = 1e-9) -> bool:
    """True when x is the q-quantile up to ``tol`` in probability or 4 ulps in x.

    Where the CDF is steep relative to float spacing (quantiles a few ulps from 0 or 1)
    no float has I_x = q; there the quantile must lie within 4 ulps of x.
    """
    if abs(betainc(a, b, x) - q) <= tol:
        return True
    x_lo = max(0.0, x - 4.0 * math.ulp(x))
    x_hi = min(1.0, x + 4.0 * math.ulp(x))
    return betainc(a, b, x_lo) - tol <= q <= betainc(a, b, x_hi) + tol


def log_pdf(a: float, b: float, x: float) -> float:
    return (
        (a - 1.0) * math.log(x)
        + (b - 1.0) * math.log1p(-x)
        - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    )


# --- betainc against closed-form CDFs ------------------------------------------------


@PROPS
@given(x=unit)
def test_betainc_beta_2_2_closed_form(x: float) -> None:
    assert betainc(2.0, 2.0, x) == pytest.approx(3 * x**2 - 2 * x**3, rel=1e-12, abs=1e-15)


@PROPS
@given(x=unit)
def test_betainc_uniform_and_arcsine(x: float) -> None:
    assert betainc(1.0, 1.0, x) == pytest.approx(x, rel=1e-13, abs=1e-16)
    # (2 / pi) asin(sqrt(x)), evaluated from the nearer end (asin is steep at 1).
    if x <= 0.5:
        arcsine = 2.0 / math.pi * math.asin(math.sqrt(x))
    else:
        arcsine = 1.0 - 2.0 / math.pi * math.asin(math.sqrt(1.0 - x))
    assert betainc(0.5, 0.5, x) == pytest.approx(arcsine, rel=1e-12, abs=1e-15)


@PROPS
@given(a=shapes, x=unit)
def test_betainc_power_laws(a: float, x: float) -> None:
    # Beta(a, 1) has CDF x^a, Beta(1, b) has CDF 1 - (1 - x)^b.
    assert betainc(a, 1.0, x) == pytest.approx(x**a, rel=1e-11, abs=1e-15)
    expected = -math.expm1(a * math.log1p(-x)) if x < 1.0 else 1.0
    assert betainc(1.0, a, x) == pytest.approx(expected, rel=1e-11, abs=1e-15)


@PROPS
@given(a=st.integers(1, 150), b=st.integers(1, 150), x=unit)
def test_betainc_integer_parameters_binomial_tail(a: int, b: int, x: float) -> None:
    # For integers, I_x(a, b) = P(Binomial(a + b - 1, x) >= a).
    n = a + b - 1
    tail = math.fsum(math.comb(n, j) * x**j * (1.0 - x) ** (n - j) for j in range(a, n + 1))
    assert betainc(float(a), float(b), x) == pytest.approx(tail, rel=1e-10, abs=1e-14)


@PROPS
@given(a=shapes, b=shapes, x=unit)
def test_betainc_reflection_and_range(a: float, b: float, x: float) -> None:
    # I_x(a, b) + I_{1-x}(b, a) = 1, with x and 1 - x both exact floats.
    y = 1.0 - x
    x = 1.0 - y
    value = betainc(a, b, x)
    assert 0.0 <= value <= 1.0
    assert value + betainc(b, a, y) == pytest.approx(1.0, abs=1e-12)


def test_betainc_endpoints_and_monotone() -> None:
    for a, b in [(0.01, 0.01), (0.5, 3.0), (2.0, 2.0), (40.0, 7.0), (1e4, 1e4)]:
        assert betainc(a, b, 0.0) == 0.0
        assert betainc(a, b, 1.0) == 1.0
        values = [betainc(a, b, i / 200) for i in range(201)]
        assert all(v0 <= v1 for v0, v1 in itertools.pairwise(values))


def test_betainc_large_parameters_near_one() -> None:
    # Beta(1e8, 1): the CDF is x^a, evaluated where 1 - x ~ 1e-8 (the continued
    # fraction's first denominator cancels catastrophically unless formed carefully).
    for x in (1 - 3e-8, 1 - 1e-8, 1 - 2e-9):
        assert betainc(1e8, 1.0, x) == pytest.approx(x**1e8, rel=1e-9)


# --- beta_ppf against closed-form quantiles ------------------------------------------


@PROPS
@given(q=probs)
def test_ppf_uniform(q: float) -> None:
    assert beta_ppf(q, 1.0, 1.0) == pytest.approx(q, rel=1e-14)


@PROPS
@given(q=probs)
def test_ppf_arcsine(q: float) -> None:
    expected = math.sin(math.pi * q / 2.0) ** 2
    assert beta_ppf(q, 0.5, 0.5) == pytest.approx(expected, rel=1e-10, abs=1e-15)


@PROPS
@given(a=log_uniform(0.05, 1e4), q=probs)
def test_ppf_beta_a_1(a: float, q: float) -> None:
    expected = q ** (1.0 / a)
    assert math.isclose(beta_ppf(q, a, 1.0), expected, rel_tol=1e-9)


@PROPS
@given(b=log_uniform(0.05, 1e9), q=probs)
def test_ppf_beta_1_b(b: float, q: float) -> None:
    # 1 - (1 - q)^(1/b), written without cancellation for large b.
    expected = -math.expm1(math.log1p(-q) / b)
    x = beta_ppf(q, 1.0, b)
    assert math.isclose(x, expected, rel_tol=1e-9)
    # Near 1 (small b) compare the distance to 1 as well, where float spacing allows.
    distance = (1.0 - q) ** (1.0 / b)
    assert math.isclose(1.0 - x, distance, rel_tol=1e-9, abs_tol=4e-16)


def test_ppf_beta_2_2_closed_form() -> None:
    # Median of a symmetric law, and the CDF 3x^2 - 2x^3 at the computed quantiles.
    assert beta_ppf(0.5, 2.0, 2.0) == pytest.approx(0.5, abs=1e-15)
    for q in (1e-9, 0.001, 0.025, 0.3, 0.77, 0.975, 0.999999):
        x = beta_ppf(q, 2.0, 2.0)
        assert 3 * x**2 - 2 * x**3 == pytest.approx(q, rel=1e-11)


@PROPS
@given(a=shapes, b=shapes, q=probs)
def test_ppf_symmetry(a: float, b: float, q: float) -> None:
    assert beta_ppf(q, a, b) == pytest.approx(1.0 - beta_ppf(1.0 - q, b, a), abs=1e-10)


@PROPS
@given(a=shapes, b=shapes, q=probs)
def test_ppf_round_trip(a: float, b: float, q: float) -> None:
    x = beta_ppf(q, a, b)
    assert 0.0 <= x <= 1.0
    assert quantile_ok(a, b, q, x), (x, betainc(a, b, x))


@PROPS
@given(a=shapes, b=shapes, qs=st.lists(probs, min_size=2, max_size=8, unique=True))
def test_ppf_monotone_in_q(a: float, b: float, qs: list[float]) -> None:
    qs.sort()
    xs = [beta_ppf(q, a, b) for q in qs]
    # Non-decreasing up to the solver's own tolerance (1e-10 relative here).
    for x0, x1 in itertools.pairwise(xs):
        assert x0 <= x1 + 1e-10 * x1


def test_ppf_strictly_increasing_on_a_grid() -> None:
    for a, b in [(0.3, 0.7), (1.0, 5.0), (3.0, 3.0), (250.0, 40.0), (2e4, 3e4)]:
        xs = [beta_ppf(i / 100, a, b) for i in range(1, 100)]
        assert all(x0 < x1 for x0, x1 in itertools.pairwise(xs))


@PROPS
@given(a=log_uniform(1.0, 1e9), b=log_uniform(1.0, 1e9), q=probs)
def test_ppf_huge_pseudo_counts(a: float, b: float, q: float) -> None:
    # Covers the Cornish-Fisher regime (both > 1e5). |I_x - q| / pdf(x) estimates the
    # error in x, which must stay at the 1e-10 level.
    x = beta_ppf(q, a, b)
    assert 0.0 < x < 1.0
    residual = abs(betainc(a, b, x) - q)
    assert residual <= 1e-10 * math.exp(log_pdf(a, b, x)) + 1e-12


def test_ppf_huge_symmetric_matches_normal_limit() -> None:
    a = b = 1e9
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    assert beta_ppf(0.5, a, b) == 0.5
    lo, hi = beta_interval(a, b)
    assert lo == pytest.approx(0.5 - 1.959963984540054 * sd, abs=1e-6 * sd)
    assert hi == pytest.approx(0.5 + 1.959963984540054 * sd, abs=1e-6 * sd)


@pytest.mark.parametrize("a", [1e-6, 1e-3, 1.0, 1e5, 1e9])
@pytest.mark.parametrize("b", [1e-6, 1e-3, 1.0, 1e5, 1e9])
@pytest.mark.parametrize("q", [1e-300, 1e-6, 0.025, 0.5, 0.975, 1.0 - 2.0**-53])
def test_ppf_extremes_are_finite_and_in_range(a: float, b: float, q: float) -> None:
    x = beta_ppf(q, a, b)
    assert math.isfinite(x)
    assert 0.0 <= x <= 1.0
    if min(a, b) >= 1.0 and 1e-6 <= q <= 0.975:
        assert quantile_ok(a, b, q, x, tol=1e-7)


# --- beta_interval -------------------------------------------------------------------


@PROPS
@given(a=log_uniform(1.0, 1e6), b=log_uniform(1.0, 1e6), level=st.floats(0.5, 0.999))
def test_interval_contains_mean(a: float, b: float, level: float) -> None:
    lo, hi = beta_interval(a, b, level)
    assert 0.0 <= lo < hi <= 1.0
    assert lo <= a / (a + b) <= hi


def test_interval_is_the_two_quantiles() -> None:
    for a, b, level in [(3.0, 9.0, 0.95), (0.2, 0.4, 0.5), (120.0, 4.0, 0.99)]:
        tail = (1.0 - level) / 2.0
        assert beta_interval(a, b, level) == (beta_ppf(tail, a, b), beta_ppf(1 - tail, a, b))
    # Uniform: the interval is exactly [tail, 1 - tail].
    assert beta_interval(1.0, 1.0) == pytest.approx((0.025, 0.975), abs=1e-15)


def test_interval_level_next_to_one() -> None:
    lo, hi = beta_interval(2.0, 3.0, math.nextafter(1.0, 0.0))
    assert 0.0 <= lo < hi <= 1.0


# --- validation ----------------------------------------------------------------------

BAD_SHAPES = [0.0, -1.0, math.nan, math.inf, -math.inf]
BAD_PROBS = [0.0, 1.0, -0.1, 1.5, math.nan, math.inf]


@pytest.mark.parametrize("bad", BAD_SHAPES)
def test_bad_shapes_raise(bad: float) -> None:
    with pytest.raises(ValueError, match="Beta parameters"):
        betainc(bad, 1.0, 0.5)
    with pytest.raises(ValueError, match="Beta parameters"):
        betainc(1.0, bad, 0.5)
    with pytest.raises(ValueError, match="Beta parameters"):
        beta_ppf(0.5, bad, 1.0)
    with pytest.raises(ValueError, match="Beta parameters"):
        beta_ppf(0.5, 1.0, bad)
    with pytest.raises(ValueError, match="Beta parameters"):
        beta_interval(bad, 1.0)


@pytest.mark.parametrize("bad", BAD_PROBS)
def test_bad_probabilities_raise(bad: float) -> None:
    with pytest.raises(ValueError, match="q must be"):
        beta_ppf(bad, 2.0, 3.0)
    with pytest.raises(ValueError, match="level must be"):
        beta_interval(2.0, 3.0, bad)


@pytest.mark.parametrize("bad", [-1e-12, 1.0 + 1e-12, math.nan, math.inf])
def test_betainc_x_out_of_range_raises(bad: float) -> None:
    with pytest.raises(ValueError, match="x must be"):
        betainc(2.0, 3.0, bad)
