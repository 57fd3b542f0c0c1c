"""Beta-distribution CDF and quantiles in pure Python, for posterior inspection.

Each arm's posterior is a Beta(alpha, beta) distribution. Inspecting it means showing
equal-tailed credible intervals, and those need the Beta quantile function. The usual
source for it is scipy, a large dependency to pull in for three functions, so this
module implements them with the standard library alone:

* :func:`betainc` is the regularized incomplete beta function I_x(a, b), i.e. the
  Beta(a, b) CDF, evaluated with its continued fraction (modified Lentz).
* :func:`beta_ppf` inverts it with Newton steps safeguarded by a bracket that always
  contains the root (bisection when a step leaves it), so it always terminates.
* :func:`beta_interval` is the equal-tailed credible interval built from two quantiles.

Quantiles are accurate to about 1e-12 or better in x for ordinary parameters (an
interval needs 1e-10 absolute at most). When both parameters exceed 1e5 the continued
fraction gets slow near the mean (its length grows with the smaller parameter) while
the distribution is almost normal, so :func:`beta_ppf` then uses a Cornish-Fisher
expansion built from the exact mean, variance, skewness and kurtosis. Only :mod:`math`
and :mod:`statistics` (for the normal quantile) are used.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Final

__all__ = ["beta_interval", "beta_ppf", "betainc"]

_STD_NORMAL: Final = NormalDist()
_LN_SQRT_2PI: Final = 0.5 * math.log(2.0 * math.pi)

# Continued fraction: relative tolerance on the last convergent's change, a floor that
# keeps Lentz's denominators away from zero, and an iteration cap. The number of terms
# grows with min(a, b): at the mean about 25 at 1e2, 120 at 1e4, 500 at 1e6 and 5,000
# at 1e9; two standard deviations out, under 100 even at 1e9.
_CF_EPS: Final = 1e-15
_CF_TINY: Final = 1e-300
_CF_MAX_ITER: Final = 100_000

# beta_ppf: above this smaller parameter the Cornish-Fisher expansion is used, as is for
# q within 3 standard deviations (error < 3e-11), as a starting point farther out.
# Beyond _HUGE (outside the intended range) the expansion is used alone everywhere.
_LARGE: Final = 1e5
_CF_Q_POLISH: Final = 0.00135
_HUGE: Final = 1e12
_PPF_REL_TOL: Final = 1e-13
# Stop once |I_x - q| is at the level of the CDF's own rounding error.
_PPF_ERR_TOL: Final = 1e-14
_PPF_MAX_ITER: Final = 200

# Smallest positive float, and the distance from 1 of the largest float below 1: the
# ends of the range beta_ppf searches.
_X_MIN: Final = math.ulp(0.0)
_Y_MIN: Final = 1.0 - math.nextafter(1.0, 0.0)
_X_MAX: Final = 1.0 - _Y_MIN

# Largest argument math.exp accepts without OverflowError (exp(709.78...) is the max).
_EXP_MAX: Final = 709.0


def _exp(v: float) -> float:
    """``math.exp`` that saturates instead of raising OverflowError."""
    return math.exp(min(v, _EXP_MAX))


def _check_shape(a: float, b: float) -> tuple[float, float]:
    a = float(a)
    b = float(b)
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0.0 or b <= 0.0:
        raise ValueError(f"Beta parameters must be finite and > 0, got a={a!r}, b={b!r}")
    return a, b


def _stirling_corr(x: float) -> float:
    """lgamma(x) minus its Stirling approximation (x - 1/2) ln x - x + ln sqrt(2 pi)."""
    if x >= 10.0:
        # Asymptotic series sum B_2k / (2k (2k - 1) x^(2k - 1)); the first omitted term
        # is below 2e-14 at x = 10.
        r = 1.0 / x
        r2 = r * r
        return r * (
            1.0 / 12.0
            - r2 * (1.0 / 360.0 - r2 * (1.0 / 1260.0 - r2 * (1.0 / 1680.0 - r2 / 1188.0)))
        )
    return math.lgamma(x) - ((x - 0.5) * math.log(x) - x + _LN_SQRT_2PI)


def _log_beta(a: float, b: float) -> float:
    """ln B(a, b), without the cancellation of lgamma(a) + lgamma(b) - lgamma(a + b)."""
    p, q = (a, b) if a <= b else (b, a)
    s = p + q
    if p >= 10.0:
        # Stirling on all three gamma functions; the leading terms combine exactly.
        corr = _stirling_corr(p) + _stirling_corr(q) - _stirling_corr(s)
        return (
            _LN_SQRT_2PI
            - 0.5 * math.log(q)
            + (p - 0.5) * math.log(p / s)
            + q * math.log1p(-p / s)
            + corr
        )
    if q >= 10.0:
        # Stirling on Gamma(q) / Gamma(p + q) only.
        corr = _stirling_corr(q) - _stirling_corr(s)
        return math.lgamma(p) + corr + p - p * math.log(s) + (q - 0.5) * math.log1p(-p / s)
    return math.lgamma(p) + math.lgamma(q) - math.lgamma(s)


def _log_pair(x: float, y: float) -> tuple[float, float]:
    """(ln x, ln y) for y = 1 - x, both from the smaller of the two (the accurate one)."""
    if x <= y:
        return math.log(x), math.log1p(-x)
    return math.log1p(-y), math.log(y)


def _log_front(a: float, b: float, x: float, y: float) -> float:
    """ln(x^a (1 - x)^b / B(a, b)) for 0 < x < 1, with y = 1 - x."""
    if min(a, b) < 10.0:
        log_x, log_y = _log_pair(x, y)
        return a * log_x + b * log_y - _log_beta(a, b)
    # Both large: write the factors relative to the mean mu = a / s, so that the two
    # O(s) terms do not cancel catastrophically:
    #   a ln(x / mu) + b ln((1 - x) / (1 - mu)) + 1/2 ln(a b / s) - ln sqrt(2 pi) - corr.
    # d = x - mu is taken from whichever of x, y is small, so it keeps its accuracy.
    s = a + b
    d = x - a / s if x <= 0.5 else b / s - y
    u = d * s / a  # x / mu - 1
    v = d * s / b  # 1 - (1 - x) / (1 - mu)
    la = math.log1p(u) if abs(u) < 0.5 else _log_pair(x, y)[0] - math.log(a / s)
    lb = math.log1p(-v) if abs(v) < 0.5 else _log_pair(x, y)[1] - math.log(b / s)
    corr = _stirling_corr(a) + _stirling_corr(b) - _stirling_corr(s)
    return a * la + b * lb + 0.5 * (math.log(a) + math.log(b / s)) - _LN_SQRT_2PI - corr


def _cont_frac(a: float, b: float, x: float, y: float) -> float:
    """Continued fraction for I_x(a, b) without its prefactor, by modified Lentz.

    I_x(a, b) = x^a (1 - x)^b / (a B(a, b)) * 1 / (1 + d1 / (1 + d2 / (1 + ...))) with
    d(2m + 1) = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)) and
    d(2m) = m (b - m) x / ((a + 2m - 1)(a + 2m)). It converges quickly for
    x < (a + 1) / (a + b + 2). ``y`` is 1 - x, passed separately so that it keeps its
    relative accuracy when x is close to 1.

    The fraction is evaluated in its even-contracted form (two levels per step)
    1 / (beta_0 + alpha_1 / (beta_1 + alpha_2 / (beta_2 + ...))) with
    beta_m = 1 + d(2m) + d(2m + 1) and alpha_m = -d(2m - 1) d(2m). For large a and x
    near 1, 1 + d(2m + 1) is a tiny difference of numbers close to 1, which the plain
    fraction would compute with catastrophic cancellation; the contracted form lets
    beta_m be computed from the exact identity (with A = a + 2m)
    beta_m = [(b - 2m - 1)(1 - A) + 2m (b - m)] / ((A - 1)(A + 1)) + y * g_m,
    g_m = (a + m)(a + b + m) / (A (A + 1)) - m (b - m) / ((A - 1) A),
    in which no such cancellation happens.
    """
    s = a + b
    near_one = x > 0.5
    # beta_0 = 1 - (a + b) x / (a + 1).
    f = y + (1.0 - b) * x / (a + 1.0) if near_one else 1.0 - s * x / (a + 1.0)
    # Lentz with leading numerator 1: f_0 = tiny, C_0 = f_0, D_0 = 0, then the first
    # level gives D_1 = 1 / beta_0 and C_1 = beta_0 + 1 / tiny, i.e. f_1 = 1 / beta_0.
    if abs(f) < _CF_TINY:
        f = _CF_TINY
    dd = 1.0 / f
    f = dd
    cc = math.inf
    m = 0
    while m < _CF_MAX_ITER:
        m += 1
        # Integer offsets are formed before adding a: (a + 2) - 2 != a for tiny a, and
        # the alpha_1 factor a / a must cancel exactly.
        m1 = m - 1.0
        a2m = a + 2.0 * m
        a2m_m1 = a + (2.0 * m - 1.0)
        a2m_p1 = a + (2.0 * m + 1.0)
        # Products are grouped into bounded ratios so that none overflows for huge a, b.
        alpha = (
            (a + m1) / (a + 2.0 * m1) * ((s + m1) * x / a2m_m1) * (m / a2m) * ((b - m) * x / a2m_m1)
        )
        if near_one:
            odd = (a + m) / a2m * ((s + m) / a2m_p1)
            even = m / a2m * ((b - m) / a2m_m1)
            beta = (2.0 * m * ((b - m) / a2m_m1) - (b - (2.0 * m + 1.0))) / a2m_p1 + y * (
                odd - even
            )
        else:
            odd = (a + m) / a2m * ((s + m) * x / a2m_p1)
            even = m / a2m * ((b - m) * x / a2m_m1)
            beta = 1.0 + (even - odd)
        dd = beta + alpha * dd
        if abs(dd) < _CF_TINY:
            dd = _CF_TINY
        cc = beta + alpha / cc
        if abs(cc) < _CF_TINY:
            cc = _CF_TINY
        dd = 1.0 / dd
        delta = dd * cc
        f *= delta
        if abs(delta - 1.0) < _CF_EPS:
            break
    return f


def _betainc_both(a: float, b: float, x: float) -> tuple[float, float]:
    """(I_x(a, b), 1 - I_x(a, b)).

    The continued fraction is applied to whichever tail converges fast, and that value
    has full relative accuracy; the other is one minus it (full absolute accuracy).
    Assumes validated a, b > 0 and 0 < x < 1.
    """
    y = 1.0 - x
    if x < (a + 1.0) / (a + b + 2.0):
        lower = _exp(_log_front(a, b, x, y)) * _cont_frac(a, b, x, y) / a
        lower = min(max(lower, 0.0), 1.0)
        return lower, 1.0 - lower
    upper = _exp(_log_front(b, a, y, x)) * _cont_frac(b, a, y, x) / b
    upper = min(max(upper, 0.0), 1.0)
    return 1.0 - upper, upper


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b), the CDF of Beta(a, b) at x.

    Evaluated with the continued fraction for I_x(a, b) (modified Lentz), switching to
    1 - I_{1-x}(b, a) when x > (a + 1) / (a + b + 2), where the direct fraction would
    converge slowly. The prefactor x^a (1 - x)^b / B(a, b) is computed in log space.
    The cost grows with min(a, b) near the mean: about 120 terms at a = b = 1e4 and
    5,000 at a = b = 1e9 (a few dozen in the tails).

    Args:
        a: First shape parameter, finite and > 0.
        b: Second shape parameter, finite and > 0.
        x: Point at which to evaluate, in [0, 1].

    Returns:
        I_x(a, b), in [0, 1].

    Raises:
        ValueError: If ``a`` or ``b`` is not finite or not > 0, or ``x`` is not in
            [0, 1] (NaN included).
    """
    a, b = _check_shape(a, b)
    x = float(x)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x!r}")
    if x == 0.0:
        return 0.0
    if x == 1.0:
        return 1.0
    return _betainc_both(a, b, x)[0]


def _normal_quantile(q: float) -> float:
    return _STD_NORMAL.inv_cdf(q)


def _ppf_cornish_fisher(q: float, a: float, b: float) -> float:
    """Beta quantile from the Cornish-Fisher expansion around the exact moments.

    With both parameters large the Beta law is nearly normal; the skewness and kurtosis
    terms bring the error down to O((a + b)^(-3/2)) standard deviations.
    """
    if not math.isfinite(a + b):
        a, b = a / 4.0, b / 4.0  # same law to far below float resolution
    s = a + b
    # Moments written with p = a / s and r = b / s, so nothing overflows for huge a, b.
    p = a / s
    r = b / s
    mean = p
    sd = math.sqrt(p * r / (s + 1.0))
    skew = 2.0 * (r - p) * math.sqrt(s + 1.0) / ((s + 2.0) * math.sqrt(p * r))
    kurt = 6.0 * ((r - p) ** 2 * ((s + 1.0) / (s + 2.0)) - p * r) / (p * r * (s + 3.0))
    z = _normal_quantile(q)
    z2 = z * z
    w = (
        z
        + (z2 - 1.0) * skew / 6.0
        + z * (z2 - 3.0) * kurt / 24.0
        - z * (2.0 * z2 - 5.0) * skew * skew / 36.0
    )
    return min(max(mean + sd * w, 0.0), 1.0)


def _ppf_initial(q: float, a: float, b: float) -> float:
    """Starting point for the root search, from two classical approximations."""
    if a >= 1.0 and b >= 1.0:
        # Normal-deviate approximation of Abramowitz & Stegun 26.5.22 (for the upper
        # tail deviate y = -z).
        y = -_normal_quantile(q)
        lam = (y * y - 3.0) / 6.0
        ra = 1.0 / (2.0 * a - 1.0)
        rb = 1.0 / (2.0 * b - 1.0)
        h = 2.0 / (ra + rb)
        w = y * math.sqrt(h + lam) / h if h + lam > 0.0 else 0.0
        w -= (rb - ra) * (lam + 5.0 / 6.0 - 2.0 / (3.0 * h))
        return a / (a + b * _exp(2.0 * w))
    # Small a or b: the mass piles up at the ends, where the density behaves like
    # x^(a-1) and (1-x)^(b-1). Approximate the CDF by the two power laws, with weights
    # t and u, and invert the branch that q falls into.
    s = a + b
    log_s = math.log(s)
    log_t = a * (math.log(a) - log_s) - math.log(a)
    log_u = b * (math.log(b) - log_s) - math.log(b)
    top = max(log_t, log_u)
    t = math.exp(log_t - top)
    u = math.exp(log_u - top)
    log_w = math.log(t + u) + top  # ln(t + u) in absolute scale
    if q < t / (t + u):
        return _exp((math.log(a) + math.log(q) + log_w) / a)  # (a (t + u) q)^(1/a)
    return 1.0 - _exp((math.log(b) + math.log1p(-q) + log_w) / b)


def beta_ppf(q: float, a: float, b: float) -> float:
    """Quantile function (inverse CDF) of Beta(a, b).

    Newton iterations on :func:`betainc`, started from a classical approximation and
    taken in log coordinates (see ``_log_newton``), which makes them exact for the
    power-law tails of small a or b. Every evaluation shrinks a bracket [lo, hi] known
    to contain the root, and a step that would leave it is replaced by bisection
    (geometric when the bracket spans decades), so the search always terminates.
    It stops when the step is below 1e-13 relative to min(x, 1 - x) or the CDF residual
    is at rounding level, usually after 2 to 4 CDF evaluations.

    When ``min(a, b) > 1e5`` (very large pseudo-counts) the continued fraction is slow
    near the mean but the posterior is almost normal: a Cornish-Fisher expansion around
    the exact moments is returned (error below 3e-11 for q within three standard
    deviations); further out it only seeds the Newton iteration.

    Args:
        q: Probability, in the open interval (0, 1).
        a: First shape parameter (alpha), finite and > 0. Intended range 1e-6 to 1e9.
        b: Second shape parameter (beta), finite and > 0. Intended range 1e-6 to 1e9.

    Returns:
        The x in [0, 1] with I_x(a, b) = q. It may round to exactly 0 or 1 when the
        true quantile is closer to them than floating point can represent.

    Raises:
        ValueError: If ``q`` is not in (0, 1) (NaN included), or ``a`` or ``b`` is
            not finite or not > 0.
    """
    a, b = _check_shape(a, b)
    q = float(q)
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in the open interval (0, 1), got {q!r}")
    if a == 1.0 and b == 1.0:
        return q
    if min(a, b) > _LARGE:
        x = _ppf_cornish_fisher(q, a, b)
        if _CF_Q_POLISH < q < 1.0 - _CF_Q_POLISH or max(a, b) > _HUGE:
            return x
        # Far tails: the expansion degrades, but the continued fraction is fast there.
        return _ppf_solve(q, a, b, x)
    return _ppf_solve(q, a, b, _ppf_initial(q, a, b))


def _ppf_solve(q: float, a: float, b: float, start: float) -> float:
    """Safeguarded Newton iteration for I_x(a, b) = q from ``start``."""
    q_upper = 1.0 - q  # exact for q >= 0.5, where it matters
    use_upper = q > 0.5
    q_ref = q_upper if use_upper else q
    lo, hi = 0.0, 1.0
    x = min(max(start, _X_MIN), _X_MAX)
    for _ in range(_PPF_MAX_ITER):
        lower, upper = _betainc_both(a, b, x)
        # err = I_x - q, taken from the side that is computed accurately.
        err = (q_upper - upper) if use_upper else (lower - q)
        if err < 0.0:
            lo = x
        else:
            hi = x
        # The CDF's rounding error is relative to the side computed directly.
        direct = lower if x < (a + 1.0) / (a + b + 2.0) else upper
        if abs(err) <= _PPF_ERR_TOL * max(q_ref, direct) or hi - lo <= math.ulp(x):
            return x
        new = _log_newton(q, q_upper, err, a, b, x)
        if abs(new - x) <= max(_PPF_REL_TOL * min(x, 1.0 - x), math.ulp(x)):
            return new if lo <= new <= hi else x  # converged
        if not lo < new < hi:
            new = _bisect(lo, hi)
            if not lo < new < hi:
                return x  # the bracket is down to adjacent floats
        x = new
    return x


def _log_newton(q: float, q_upper: float, err: float, a: float, b: float, x: float) -> float:
    """One Newton step for I_x(a, b) = q, in log coordinates.

    The equation is ln I_x = ln q for q <= 1/2 and ln(1 - I_x) = ln(1 - q) otherwise,
    and the unknown is ln x for x <= 1/2, else ln(1 - x). Near the root this is the
    plain Newton step; in the tails it is far better: exact for the power laws
    I ~ c x^a and 1 - I ~ c (1 - x)^b of small a or b, and free of the huge overshoots
    of plain Newton where the density is tiny. ``err`` is I_x - q, from the accurate
    side. Returns -1 when no step can be computed (underflow).
    """
    y = 1.0 - x
    log_x, log_y = _log_pair(x, y)
    log_pdf = _log_front(a, b, x, y) - log_x - log_y
    if q <= 0.5:
        sign, target = 1.0, q
    else:
        sign, target = -1.0, q_upper
    tail = target + sign * err  # I_x, or 1 - I_x
    if tail <= 0.0:
        return -1.0
    resid = math.log1p(sign * err / target)  # ln(tail / target)
    if x <= 0.5:
        slope = _exp(log_x + log_pdf - math.log(tail))  # |d ln tail / d ln x|
        if slope <= 0.0:
            return -1.0
        return _exp(log_x - sign * resid / slope)
    slope = _exp(log_y + log_pdf - math.log(tail))  # |d ln tail / d ln(1 - x)|
    if slope <= 0.0:
        return -1.0
    return 1.0 - _exp(log_y + sign * resid / slope)


def _bisect(lo: float, hi: float) -> float:
    """Split a bracket; geometrically (in x or in 1 - x) when it spans decades."""
    if hi <= 0.5:
        lo_eff = max(lo, _X_MIN)
        if hi > 4.0 * lo_eff:
            return math.sqrt(lo_eff) * math.sqrt(hi)  # no underflow of the product
    elif lo >= 0.5:
        lo_eff = max(1.0 - hi, _Y_MIN)
        if 1.0 - lo > 4.0 * lo_eff:
            return 1.0 - math.sqrt(lo_eff) * math.sqrt(1.0 - lo)
    return 0.5 * (lo + hi)


def beta_interval(a: float, b: float, level: float = 0.95) -> tuple[float, float]:
    """Equal-tailed credible interval of Beta(a, b).

    Args:
        a: First shape parameter (alpha), finite and > 0.
        b: Second shape parameter (beta), finite and > 0.
        level: Probability mass inside the interval, in (0, 1).

    Returns:
        ``(beta_ppf((1 - level) / 2, a, b), beta_ppf(1 - (1 - level) / 2, a, b))``.

    Raises:
        ValueError: If ``level`` is not in (0, 1), or ``a`` or ``b`` is not finite or
            not > 0.
    """
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in the open interval (0, 1), got {level!r}")
    tail = (1.0 - level) / 2.0
    if 1.0 - tail < 1.0:
        return beta_ppf(tail, a, b), beta_ppf(1.0 - tail, a, b)
    # level within 2**-53 of 1: 1 - tail rounds to 1; use the mirror image instead.
    return beta_ppf(tail, a, b), 1.0 - beta_ppf(tail, b, a)
