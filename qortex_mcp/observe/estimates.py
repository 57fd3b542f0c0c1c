"""What the views show for each arm: an estimate, its credible interval, P(best).

Every strategy today keeps a Beta-Bernoulli posterior per arm, so the estimate is the
posterior mean alpha / (alpha + beta) and the interval the central 95% of Beta(alpha,
beta). A strategy whose belief is another distribution registers its own ``Estimator``
(``register_estimator``) under its name; the views then ask it instead, unchanged.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

import numpy as np

from qortex_mcp.learning.stats import beta_interval

__all__ = ["BETA", "BetaEstimator", "Estimator", "estimator_for", "prob_best",
           "register_estimator"]

PROB_BEST_DRAWS: Final = 1000
PROB_BEST_TOP: Final = 64
"""P(best) is drawn among the arms with the highest upper interval ends: one below every
one of them is best in far fewer than 1 in 1,000 draws, and is reported as 0."""


class Estimator(Protocol):
    """How a strategy's belief about arms reads as numbers."""

    name: str

    def means(self, alpha: Any, beta: Any) -> Any:
        """The estimate of each arm (an array)."""
        ...

    def interval(self, alpha: float, beta: float, level: float) -> tuple[float, float]:
        """The central credible interval of one arm at ``level``."""
        ...

    def draws(self, alpha: Any, beta: Any, rng: np.random.Generator, n: int) -> Any:
        """``n`` joint posterior draws, shape (n, arms)."""
        ...


class BetaEstimator:
    """Beta(alpha, beta) per arm: the mean, the equal-tailed interval, Beta draws."""

    name = "beta"

    def means(self, alpha: Any, beta: Any) -> Any:
        return alpha / (alpha + beta)

    def interval(self, alpha: float, beta: float, level: float = 0.95) -> tuple[float, float]:
        return beta_interval(alpha, beta, level)

    def draws(self, alpha: Any, beta: Any, rng: np.random.Generator, n: int) -> Any:
        return rng.beta(alpha, beta, size=(n, len(alpha)))


BETA: Final = BetaEstimator()
_BY_STRATEGY: dict[str, Estimator] = {}


def register_estimator(strategy: str, estimator: Estimator) -> None:
    """Use ``estimator`` for learners whose strategy is named ``strategy``."""
    _BY_STRATEGY[strategy] = estimator


def estimator_for(strategy: str) -> Estimator:
    return _BY_STRATEGY.get(strategy, BETA)


def prob_best(estimator: Estimator, alpha: Any, beta: Any, rng: np.random.Generator,
              draws: int = PROB_BEST_DRAWS, top: int = PROB_BEST_TOP) -> Any:
    """Each arm's probability of having the highest value, by Monte Carlo."""
    count = len(alpha)
    out = np.zeros(count)
    if count == 0:
        return out
    if count > top:
        # Upper ends by a normal approximation of each posterior: cheap, and only used to
        # pick the contenders (the draws below use the real posteriors).
        mean = estimator.means(alpha, beta)
        sd = np.sqrt(mean * (1 - mean) / (alpha + beta + 1))
        pick = np.argpartition(-(mean + 3 * sd), top - 1)[:top]
    else:
        pick = np.arange(count)
    samples = estimator.draws(alpha[pick], beta[pick], rng, draws)
    wins = np.bincount(samples.argmax(axis=1), minlength=len(pick))
    out[pick] = wins / draws
    return out
