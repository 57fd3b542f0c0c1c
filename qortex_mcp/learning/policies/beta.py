"""Beta-Bernoulli strategies: ``thompson`` (the default), ``mean`` and ``top_two_thompson``.

Statistics per arm: (successes, failures); a reward r in [0, 1] adds (r, 1 - r), so graded
rewards stay graded (never binarised at 0.5). The posterior is Beta(alpha0 + successes,
beta0 + failures) with the prior (alpha0, beta0) per arm (``prior``, shape (K, 2)) or from
the parameters.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from qortex_mcp.learning.policies.base import Estimate, Policy
from qortex_mcp.learning.policies.params import Param
from qortex_mcp.learning.policies.ranking import FloatArray
from qortex_mcp.learning.stats import beta_interval

__all__ = ["BetaPolicy", "PosteriorMean", "Thompson", "TopTwoThompson", "beta_draws"]


def beta_draws(alpha: FloatArray, beta: FloatArray, rng: np.random.Generator) -> FloatArray:
    """One Beta(alpha, beta) draw per element, arrays of shape (..., K).

    ``X / (X + Y)`` with X ~ Gamma(alpha), Y ~ Gamma(beta) from one ``standard_gamma`` call,
    U(0, 1) when every shape is 1, numpy's log-space Beta sampler where both gamma variates
    underflow. On 1-D input this is exactly ``strategies.ThompsonSampling`` (same draws for
    the same generator state), so the learner's decisions do not change when it moves here.
    """
    size = alpha.shape[-1]
    shapes = np.concatenate((alpha, beta), axis=-1)
    out: FloatArray
    if not np.count_nonzero(shapes != 1.0):
        out = rng.random(alpha.shape)
        return out
    draws = rng.standard_gamma(shapes)
    x = draws[..., :size]
    total = x + draws[..., size:]
    if not total.all():
        zero = total == 0.0
        x[zero] = rng.beta(np.broadcast_to(alpha, x.shape)[zero],
                           np.broadcast_to(beta, x.shape)[zero])
        total[zero] = 1.0
    return np.divide(x, total, out=x)


_PRIOR = (
    Param("alpha0", 1.0, "prior pseudo-successes of an arm without its own prior",
          low=1e-6, high=1e6),
    Param("beta0", 1.0, "prior pseudo-failures of an arm without its own prior",
          low=1e-6, high=1e6),
)


class BetaPolicy(Policy):
    """Shared layout of the Beta-Bernoulli strategies."""

    category = "bayesian"
    stats = ("successes", "failures")
    prior_names = ("alpha0", "beta0")
    parameters: ClassVar[tuple[Param, ...]] = _PRIOR

    def _setup(self) -> None:
        self._a0 = self.number("alpha0")
        self._b0 = self.number("beta0")

    def _increment(self, row: FloatArray, reward: float, propensity: float | None,
                   t: float | None, n_arms: int | None) -> FloatArray:
        return np.array([reward, 1.0 - reward])

    def pulls(self, stats: FloatArray) -> FloatArray:
        out: FloatArray = stats[:, 0] + stats[:, 1]
        return out

    def shapes(self, stats: FloatArray, prior: FloatArray | None) -> tuple[FloatArray, FloatArray]:
        """The posterior (alpha, beta) of every candidate."""
        if prior is None:
            return stats[:, 0] + self._a0, stats[:, 1] + self._b0
        return stats[:, 0] + prior[:, 0], stats[:, 1] + prior[:, 1]

    def draws(self, stats: FloatArray, rng: np.random.Generator, n: int,
              t: float | None = None, prior: FloatArray | None = None) -> FloatArray:
        alpha, beta = self.shapes(stats, prior)
        size = (n, alpha.shape[0])
        return beta_draws(np.broadcast_to(alpha, size), np.broadcast_to(beta, size), rng)

    def estimate(self, row: FloatArray, prior: FloatArray | None = None,
                 level: float = 0.95) -> Estimate:
        a0, b0 = (self._a0, self._b0) if prior is None else (float(prior[0]), float(prior[1]))
        alpha, beta = a0 + float(row[0]), b0 + float(row[1])
        low, high = beta_interval(alpha, beta, level)
        return Estimate(alpha / (alpha + beta), low, high, "credible", level,
                        float(row[0] + row[1]), {"alpha": alpha, "beta": beta})


class Thompson(BetaPolicy):
    name = "thompson"
    summary = "Beta-Bernoulli Thompson sampling: one posterior draw per arm (the default)"

    def scores(self, stats: FloatArray, rng: np.random.Generator, t: float | None = None,
               prior: FloatArray | None = None) -> FloatArray:
        alpha, beta = self.shapes(stats, prior)
        return beta_draws(alpha, beta, rng)


class PosteriorMean(BetaPolicy):
    name = "mean"
    summary = "greedy on the Beta posterior mean (no exploration beyond the prior's)"
    deterministic = True
    split_ties = True

    def scores(self, stats: FloatArray, rng: np.random.Generator, t: float | None = None,
               prior: FloatArray | None = None) -> FloatArray:
        alpha, beta = self.shapes(stats, prior)
        out: FloatArray = alpha / (alpha + beta)
        return out


class TopTwoThompson(BetaPolicy):
    """Top-two Thompson sampling (Russo 2016), for best-arm identification.

    Draw a posterior sample; its best arm (the leader) is played with probability
    ``beta``; otherwise samples are redrawn until one has another best arm (the
    challenger), at most ``max_resamples`` of them (then the leader's runner-up in the
    first sample). The scores are the first sample with the challenger, when there is
    one, moved to the top, so further slots follow the first sample's order.
    """

    name = "top_two_thompson"
    summary = "top-two Thompson sampling: best-arm identification (leader or challenger)"
    parameters = (
        *_PRIOR,
        Param("beta", 0.5, "probability of playing the leader rather than a challenger",
              low=0.0, high=1.0, low_open=True),
        Param("max_resamples", 64, "posterior samples drawn at most to find a challenger",
              kind="int", low=1, high=10_000),
    )

    def _setup(self) -> None:
        super()._setup()
        self._leader = self.number("beta")
        self._cap = int(self.number("max_resamples"))

    def scores(self, stats: FloatArray, rng: np.random.Generator, t: float | None = None,
               prior: FloatArray | None = None) -> FloatArray:
        # One choice: the vectorised rule of ``draws`` written out (cheaper for one row).
        alpha, beta = self.shapes(stats, prior)
        theta = beta_draws(alpha, beta, rng)
        if theta.shape[0] < 2 or rng.random() < self._leader:
            return theta
        leader, k = int(np.argmax(theta)), theta.shape[0]
        tried, batch = 0, 1
        while tried < self._cap:  # resample in doubling batches: 1, 2, 4, ... draws
            batch = min(batch, self._cap - tried)
            if batch == 1:  # usually enough: plain 1-D arrays, no batch machinery
                best = np.argmax(beta_draws(alpha, beta, rng), keepdims=True)
            else:
                size = (batch, k)
                best = np.argmax(beta_draws(np.broadcast_to(alpha, size),
                                            np.broadcast_to(beta, size), rng), axis=1)
            other = np.flatnonzero(best != leader)
            if other.size:
                theta[best[other[0]]] = np.inf
                return theta
            tried, batch = tried + batch, 2 * batch
        runner = theta.copy()
        runner[leader] = -np.inf
        theta[int(np.argmax(runner))] = np.inf
        return theta

    def draws(self, stats: FloatArray, rng: np.random.Generator, n: int,
              t: float | None = None, prior: FloatArray | None = None) -> FloatArray:
        alpha, beta = self.shapes(stats, prior)
        k = alpha.shape[0]
        first = beta_draws(np.broadcast_to(alpha, (n, k)), np.broadcast_to(beta, (n, k)), rng)
        if k < 2:
            return first
        leader = np.argmax(first, axis=1)
        pending = np.flatnonzero(rng.random(n) >= self._leader)
        challenger = np.full(n, -1)
        tries = 0
        while pending.size and tries < self._cap:
            m = pending.size
            best = np.argmax(beta_draws(np.broadcast_to(alpha, (m, k)),
                                        np.broadcast_to(beta, (m, k)), rng), axis=1)
            found = best != leader[pending]
            challenger[pending[found]] = best[found]
            pending = pending[~found]
            tries += 1
        if pending.size:
            runner = first[pending].copy()
            runner[np.arange(pending.size), leader[pending]] = -np.inf
            challenger[pending] = np.argmax(runner, axis=1)
        rows = np.flatnonzero(challenger >= 0)
        first[rows, challenger[rows]] = np.inf
        return first
