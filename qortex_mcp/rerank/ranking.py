"""Ranking arithmetic, pure numpy: the robust posterior of an item (a retrieval prior it may
not deserve, mixed with a nearly flat one) and the cap on how far one item moves per call."""

from __future__ import annotations

import heapq
import math
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["DOUBT_STRENGTH", "cap_moves", "matched_beta", "robust_posterior"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DOUBT_STRENGTH: Final = 0.25
"""Strength of the prior an item falls back on when the retriever is wrong about it: nearly
flat, so its evidence decides. Chosen with ``prior_trust`` (0.8) on bench/bench_rerank.py
(100 seeds) and the rise/drop targets (tests/test_rerank.py); see bench/RESULTS.md."""

_LN_SQRT_2PI: Final = 0.5 * math.log(2.0 * math.pi)


def cap_moves(order: IntArray, base_rank: IntArray, cap: int) -> IntArray:
    """The order closest to ``order`` in which no item is more than ``cap`` places from its
    base rank: positions are filled top-down with the best-placed eligible item, except
    that an item about to exceed its cap downwards is placed first."""
    n = len(order)
    want = np.empty(n, dtype=np.int64)
    want[order] = np.arange(n)
    by_base = np.argsort(base_rank, kind="stable").tolist()
    want_l = want.tolist()
    placed = [False] * n
    heap: list[tuple[int, int]] = []
    out: list[int] = []
    admitted = 0
    for pos in range(n):
        while admitted < n and admitted <= pos + cap:
            item = by_base[admitted]
            heapq.heappush(heap, (want_l[item], item))
            admitted += 1
        due = pos - cap
        if due >= 0 and not placed[by_base[due]]:
            item = by_base[due]
        else:
            item = heapq.heappop(heap)[1]
            while placed[item]:
                item = heapq.heappop(heap)[1]
        placed[item] = True
        out.append(item)
    return np.asarray(out, dtype=np.int64)


def _log_gamma(x: FloatArray) -> FloatArray:
    """ln Gamma(x) for x > 0, vectorised (numpy has none): shifted by 3, then Stirling's
    series to x^-7 (within 1e-7 of ``math.lgamma`` for x in [1e-3, 1e3]; the mixture weights
    only need a few digits)."""
    z = x + 3.0
    iz = 1.0 / z
    iz2 = iz * iz
    series = iz * (1.0 / 12 - iz2 * (1.0 / 360 - iz2 * (1.0 / 1260 - iz2 / 1680)))
    return ((z - 0.5) * np.log(z) - z + _LN_SQRT_2PI + series
            - np.log(x * (x + 1.0) * (x + 2.0)))


def _log_beta_ratio(a: FloatArray, b: FloatArray, succ: FloatArray,
                    fail: FloatArray) -> FloatArray:
    """ln B(a + succ, b + fail) - ln B(a, b): the log marginal likelihood of the evidence
    under ``Beta(a, b)`` (the same for fractional, weighted evidence)."""
    g = _log_gamma(np.concatenate((a + succ, b + fail, a + b, a, b, a + b + succ + fail)))
    ga_s, gb_f, gab, ga, gb, gab_n = np.split(g, 6)
    return ga_s + gb_f - gab_n - ga - gb + gab


def robust_posterior(
    a0: FloatArray, b0: FloatArray, succ: FloatArray, fail: FloatArray, trust: float,
) -> tuple[FloatArray, FloatArray, tuple[FloatArray, FloatArray, FloatArray, FloatArray]]:
    """Posterior of each item under the mixture prior ``trust * Beta(a0, b0) + (1 - trust)
    * Beta(d mu, d (1 - mu))`` (``mu = a0 / (a0 + b0)``, ``d = DOUBT_STRENGTH``) after
    ``succ`` successes and ``fail`` failures.

    Returns:
        The posterior means, the posterior weights of the ``Beta(a0, b0)`` part, and the
        parameters of both parts' posteriors ``(alpha, beta, alpha_doubt, beta_doubt)``.
    """
    n0 = a0 + b0
    mu = a0 / n0
    ad, bd = DOUBT_STRENGTH * mu, DOUBT_STRENGTH * (1.0 - mu)
    alpha, beta = a0 + succ, b0 + fail
    alpha_d, beta_d = ad + succ, bd + fail
    weight = np.full(len(a0), trust)
    mean = mu.copy()
    ev = np.nonzero((succ + fail) > 0.0)[0]
    if len(ev) and 0.0 < trust < 1.0:
        s, f = succ[ev], fail[ev]
        # log of (1 - trust) p(evidence | doubt) / (trust p(evidence | retrieval prior))
        odds = (math.log((1.0 - trust) / trust)
                + _log_beta_ratio(ad[ev], bd[ev], s, f) - _log_beta_ratio(a0[ev], b0[ev], s, f))
        weight[ev] = 1.0 / (1.0 + np.exp(np.minimum(odds, 700.0)))
    if len(ev):
        w = weight[ev]
        mean[ev] = (w * alpha[ev] / (alpha[ev] + beta[ev])
                    + (1.0 - w) * alpha_d[ev] / (alpha_d[ev] + beta_d[ev]))
    return mean, weight, (alpha, beta, alpha_d, beta_d)


def matched_beta(mean: FloatArray, weight: FloatArray,
                  parts: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
                  ) -> tuple[FloatArray, FloatArray]:
    """The Beta with the mixture posterior's mean and variance (for explanations)."""
    alpha, beta, alpha_d, beta_d = parts

    def second_moment(a: FloatArray, b: FloatArray) -> FloatArray:
        return a * (a + 1.0) / ((a + b) * (a + b + 1.0))

    var = (weight * second_moment(alpha, beta) + (1.0 - weight) * second_moment(alpha_d, beta_d)
           - mean * mean)
    var = np.clip(var, 1e-300, mean * (1.0 - mean) * (1.0 - 1e-12))
    strength = mean * (1.0 - mean) / var - 1.0
    return mean * strength, (1.0 - mean) * strength
