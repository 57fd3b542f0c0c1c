"""Baselines on sample means: ``eps_greedy``, ``softmax`` and ``random``; and the shared
machinery of strategies that sample from a softmax over logits (softmax, EXP3).

Statistics per arm: (pulls, reward_sum); a reward r in [0, 1] adds (1, r). An arm never
pulled counts as the best reward, 1.0 (an optimistic start: each arm gets tried early).

A softmax strategy chooses through the Gumbel-max trick: scores = logits + Gumbel noise, so
the best score is a draw from softmax(logits) and the k best a draw without replacement
(Plackett-Luce). Its first-slot propensity is the softmax itself (exact); later slots are
Monte-Carlo estimates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from qortex_mcp.learning.policies import ranking
from qortex_mcp.learning.policies.base import Estimate, Policy, hoeffding_estimate
from qortex_mcp.learning.policies.params import Param
from qortex_mcp.learning.policies.ranking import DEFAULT_DRAWS, FloatArray, IntArray

__all__ = ["EpsilonGreedy", "LogitPolicy", "RandomChoice", "Softmax", "sample_means"]


def sample_means(stats: FloatArray) -> FloatArray:
    """reward_sum / pulls per arm, 1.0 for an arm never pulled."""
    n = stats[:, 0]
    untried = n <= 0.0
    out: FloatArray = stats[:, 1] / (n + untried)
    if untried.any():
        out[untried] = 1.0
    return out


class _MeanStats(Policy):
    stats = ("pulls", "reward_sum")

    def _increment(self, row: FloatArray, reward: float, propensity: float | None,
                   t: float | None, n_arms: int | None) -> FloatArray:
        return np.array([1.0, reward])

    def estimate(self, row: FloatArray, prior: FloatArray | None = None,
                 level: float = 0.95) -> Estimate:
        base = hoeffding_estimate(row, level, float(row[0]), float(row[1]))
        return Estimate(base.mean, base.low, base.high, base.interval, level, base.pulls,
                        {"pulls": float(row[0]), "reward_sum": float(row[1])})


class EpsilonGreedy(_MeanStats):
    """With probability eps_t the k slots are a uniformly random ordered pick of the
    candidates, else the k best sample means (ties split at random);
    eps_t = max(floor, epsilon * exp(-decay * t))."""

    name = "eps_greedy"
    category = "stochastic"
    summary = "epsilon-greedy on sample means, with an optional decay and floor"
    split_ties = True
    parameters = (
        Param("epsilon", 0.1, "probability of a uniformly random choice at t = 0",
              low=0.0, high=1.0),
        Param("decay", 0.0, "rate of the exponential decay of epsilon per pull in the "
              "context", low=0.0),
        Param("floor", 0.0, "smallest epsilon the decay reaches", low=0.0, high=1.0),
    )

    def epsilon(self, t: float) -> float:
        eps = self.number("epsilon") * math.exp(-self.number("decay") * t)
        return max(self.number("floor"), eps)

    def scores(self, stats: FloatArray, rng: np.random.Generator, t: float | None = None,
               prior: FloatArray | None = None) -> FloatArray:
        if rng.random() < self.epsilon(self._time(stats, t)):
            out: FloatArray = rng.random(int(stats.shape[0]))
            return out
        return sample_means(stats)

    def propensities(self, stats: FloatArray, chosen: Sequence[int] | IntArray,
                     rng: np.random.Generator, t: float | None = None,
                     prior: FloatArray | None = None, draws: int = DEFAULT_DRAWS) -> FloatArray:
        picked = ranking.check_chosen(chosen, stats.shape[0])
        eps = self.epsilon(self._time(stats, t))
        greedy = ranking.tie_slot_propensities(sample_means(stats), picked)
        out: FloatArray = eps / stats.shape[0] + (1.0 - eps) * greedy
        return out

    def choice_probabilities(self, stats: FloatArray, rng: np.random.Generator,
                             t: float | None = None, prior: FloatArray | None = None,
                             draws: int = DEFAULT_DRAWS) -> FloatArray:
        means = sample_means(stats)
        best = means == means.max()
        eps = self.epsilon(self._time(stats, t))
        out: FloatArray = eps / means.size + (1.0 - eps) * best / np.count_nonzero(best)
        return out


class LogitPolicy(Policy):
    """A strategy that draws from softmax(logits) by the Gumbel-max trick."""

    def logits(self, stats: FloatArray, t: float | None) -> FloatArray:
        raise NotImplementedError

    def scores(self, stats: FloatArray, rng: np.random.Generator, t: float | None = None,
               prior: FloatArray | None = None) -> FloatArray:
        out: FloatArray = self.logits(stats, t) + rng.gumbel(size=stats.shape[0])
        return out

    def draws(self, stats: FloatArray, rng: np.random.Generator, n: int,
              t: float | None = None, prior: FloatArray | None = None) -> FloatArray:
        out: FloatArray = self.logits(stats, t) + rng.gumbel(size=(n, stats.shape[0]))
        return out

    def choice_probabilities(self, stats: FloatArray, rng: np.random.Generator,
                             t: float | None = None, prior: FloatArray | None = None,
                             draws: int = DEFAULT_DRAWS) -> FloatArray:
        z = self.logits(stats, t)
        w = np.exp(z - z.max())
        out: FloatArray = w / w.sum()
        return out

    def propensities(self, stats: FloatArray, chosen: Sequence[int] | IntArray,
                     rng: np.random.Generator, t: float | None = None,
                     prior: FloatArray | None = None, draws: int = DEFAULT_DRAWS) -> FloatArray:
        picked = ranking.check_chosen(chosen, stats.shape[0])
        out: FloatArray = np.empty(picked.shape[0])
        if picked.size:
            out[0] = self.choice_probabilities(stats, rng, t)[picked[0]]
        if picked.size > 1:
            out[1:] = ranking.mc_slot_propensities(self.draws(stats, rng, draws, t), picked)[1:]
        return out


class Softmax(LogitPolicy, _MeanStats):
    name = "softmax"
    category = "stochastic"
    summary = "Boltzmann exploration: P(arm) proportional to exp(mean / temperature)"
    parameters = (Param("temperature", 0.1, "softmax temperature (smaller is greedier)",
                        low=0.0, low_open=True),)

    def logits(self, stats: FloatArray, t: float | None) -> FloatArray:
        out: FloatArray = sample_means(stats) / self.number("temperature")
        return out


class RandomChoice(_MeanStats):
    name = "random"
    category = "baseline"
    summary = "uniformly random choice (a baseline; learns nothing)"

    def scores(self, stats: FloatArray, rng: np.random.Generator, t: float | None = None,
               prior: FloatArray | None = None) -> FloatArray:
        out: FloatArray = rng.random(int(stats.shape[0]))
        return out

    def propensities(self, stats: FloatArray, chosen: Sequence[int] | IntArray,
                     rng: np.random.Generator, t: float | None = None,
                     prior: FloatArray | None = None, draws: int = DEFAULT_DRAWS) -> FloatArray:
        picked = ranking.check_chosen(chosen, stats.shape[0])
        return np.full(picked.shape[0], 1.0 / stats.shape[0])

    def choice_probabilities(self, stats: FloatArray, rng: np.random.Generator,
                             t: float | None = None, prior: FloatArray | None = None,
                             draws: int = DEFAULT_DRAWS) -> FloatArray:
        return np.full(stats.shape[0], 1.0 / stats.shape[0])
