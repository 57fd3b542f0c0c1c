"""Index strategies (optimism under uncertainty): ``ucb1``, ``ucb1_tuned``, ``kl_ucb``, ``moss``.

Statistics per arm: (pulls, reward_sum), plus reward_sq_sum for ``ucb1_tuned``. Each
strategy plays the arm with the highest index (ties split at random); an arm never pulled
has an infinite index, so every candidate is tried once first. ``t`` is the number of
pulls in the context. Rewards are binary or graded in [0, 1] (the Bernoulli KL bound of
``kl_ucb`` holds for any reward in [0, 1]).
"""

from __future__ import annotations

import math
from typing import ClassVar, Final

import numpy as np

from qortex_mcp.learning.policies.base import Estimate, Policy, hoeffding_estimate
from qortex_mcp.learning.policies.params import Param
from qortex_mcp.learning.policies.ranking import FloatArray

__all__ = ["KLUCB", "MOSS", "UCB1", "UCB1Tuned", "kl_bernoulli", "kl_upper_bound"]

_NEWTON_STEPS: Final = 20
_NEWTON_TOL: Final = 1e-12  # on y = -log(1 - q)


def kl_bernoulli(p: FloatArray, q: FloatArray) -> FloatArray:
    """KL(Bernoulli(p) || Bernoulli(q)), elementwise, with 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(p / q), 0.0)
        b = np.where(p < 1, (1 - p) * np.log((1 - p) / (1 - q)), 0.0)
    out: FloatArray = a + b
    return out


def kl_upper_bound(p: FloatArray, d: FloatArray) -> FloatArray:
    """The largest q in [p, 1] with KL(p || q) <= d, elementwise (the KL-UCB index).

    Newton's method on y = -log(1 - q), where KL(p || q(y)) is convex and increasing, from
    a start to the right of the root (the smaller of Pinsker's bound p + sqrt(d / 2) and
    (d + H(p)) / (1 - p)): the iterates decrease monotonically to the root, never below
    it, and the map is nearly linear as q nears 1. At most 20 steps; 4 to 6 in practice
    (quadratic convergence), stopping once no y moves by more than 1e-12.
    """
    if not p.size:
        return p.copy()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        omp = 1.0 - p
        # -H(p) - d, with 0 log 0 = 0
        base = (np.where(p > 0, p * np.log(p), 0.0) + np.where(omp > 0, omp * np.log(omp), 0.0)
                - d)
        y = np.fmin(-np.log1p(-(p + np.sqrt(d / 2.0))), -base / omp)
        done = (omp <= 0.0) | (d <= 0.0)
        if done.any():
            y[done] = 1.0  # any finite value; replaced below
        for _ in range(_NEWTON_STEPS):
            q = -np.expm1(-y)
            step = np.fmax((base + omp * y - p * np.log(q)) * q / (q - p), 0.0)
            y -= step
            if step.max() < _NEWTON_TOL:
                break
        out: FloatArray = np.fmax(-np.expm1(-y), p)
    if done.any():
        out[done] = np.where(omp[done] <= 0.0, 1.0, p[done])
    return out


class _Index(Policy):
    category = "stochastic"
    stats: ClassVar[tuple[str, ...]] = ("pulls", "reward_sum")
    deterministic = True
    split_ties = True

    def _increment(self, row: FloatArray, reward: float, propensity: float | None,
                   t: float | None, n_arms: int | None) -> FloatArray:
        return np.array([1.0, reward])

    def scores(self, stats: FloatArray, rng: np.random.Generator, t: float | None = None,
               prior: FloatArray | None = None) -> FloatArray:
        n = stats[:, 0]
        time = self._time(stats, t)
        if n.all():  # the common case, one reduction cheaper than masking
            return self._index(stats, n, time)
        untried = n <= 0.0
        index = self._index(stats, n + untried, time)
        index[untried] = np.inf
        return index

    def _index(self, stats: FloatArray, n: FloatArray, t: float) -> FloatArray:
        raise NotImplementedError

    def estimate(self, row: FloatArray, prior: FloatArray | None = None,
                 level: float = 0.95) -> Estimate:
        base = hoeffding_estimate(row, level, float(row[0]), float(row[1]))
        return Estimate(base.mean, base.low, base.high, base.interval, level, base.pulls,
                        dict(zip(self.stats, map(float, row), strict=True)))


class UCB1(_Index):
    name = "ucb1"
    summary = "UCB1 (Auer et al. 2002): mean + sqrt(c log t / n)"
    parameters = (Param("c", 2.0, "exploration weight in sqrt(c log t / n)", low=0.0),)

    def _setup(self) -> None:
        self._c = self.number("c")

    def _index(self, stats: FloatArray, n: FloatArray, t: float) -> FloatArray:
        out: FloatArray = stats[:, 1] / n + np.sqrt(self._c * math.log(t) / n)
        return out


class UCB1Tuned(_Index):
    name = "ucb1_tuned"
    summary = "UCB1-Tuned: UCB1 with the bonus scaled by an upper bound of the variance"
    stats = ("pulls", "reward_sum", "reward_sq_sum")
    parameters = (Param("variance_cap", 0.25, "largest variance of a reward (1/4 on [0, 1])",
                        low=0.0, low_open=True),)

    def _increment(self, row: FloatArray, reward: float, propensity: float | None,
                   t: float | None, n_arms: int | None) -> FloatArray:
        return np.array([1.0, reward, reward * reward])

    def _setup(self) -> None:
        self._cap = self.number("variance_cap")

    def _index(self, stats: FloatArray, n: FloatArray, t: float) -> FloatArray:
        mean = stats[:, 1] / n
        log_t = math.log(t)
        var = stats[:, 2] / n - mean * mean + np.sqrt(2.0 * log_t / n)
        # var >= 0 up to rounding; the cap keeps the bonus within the [0, 1] range's
        out: FloatArray = mean + np.sqrt(log_t / n * np.clip(var, 0.0, self._cap))
        return out


class KLUCB(_Index):
    name = "kl_ucb"
    summary = "KL-UCB (Garivier & Cappe 2011): max q with n KL(mean, q) <= log t + c log log t"
    parameters = (Param("c", 0.0, "weight of log(log(t)) in the exploration level (0 is "
                        "the usual practical choice, 3 the theoretical one)", low=0.0),)

    def _setup(self) -> None:
        self._c = self.number("c")

    def _index(self, stats: FloatArray, n: FloatArray, t: float) -> FloatArray:
        log_t = math.log(t)
        level = log_t + self._c * math.log(log_t) if log_t > 1.0 else log_t
        return kl_upper_bound(stats[:, 1] / n, level / n)

    def estimate(self, row: FloatArray, prior: FloatArray | None = None,
                 level: float = 0.95) -> Estimate:
        """The KL confidence interval {q : n KL(mean, q) <= log(2 / (1 - level))}."""
        n, total = float(row[0]), float(row[1])
        if n <= 0:
            return super().estimate(row, prior, level)
        mean = min(max(total / n, 0.0), 1.0)
        d = np.array([math.log(2.0 / (1.0 - level)) / n])
        high = float(kl_upper_bound(np.array([mean]), d)[0])
        low = 1.0 - float(kl_upper_bound(np.array([1.0 - mean]), d)[0])
        return Estimate(mean, low, high, "confidence", level, n,
                        {"pulls": n, "reward_sum": total})


class MOSS(_Index):
    name = "moss"
    summary = ("MOSS-anytime (Degenne & Perchet 2016): "
               "mean + sqrt((1 + alpha) / 2 * max(log(t / (K n)), 0) / n)")
    parameters = (Param("alpha", 1.35, "exploration weight (1.35 as in Degenne & Perchet)",
                        low=0.0),)

    def _setup(self) -> None:
        self._weight = (1.0 + self.number("alpha")) / 2.0

    def _index(self, stats: FloatArray, n: FloatArray, t: float) -> FloatArray:
        bonus = np.sqrt(self._weight * np.maximum(np.log(t / (stats.shape[0] * n)), 0.0) / n)
        out: FloatArray = stats[:, 1] / n + bonus
        return out
