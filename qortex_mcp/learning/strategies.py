"""Selection strategies: how candidates are scored from their Beta posteriors.

A strategy gets the candidates' ``alpha`` and ``beta`` arrays and the learner's one
``numpy.random.Generator`` and returns one score per candidate; the learner takes the k
best. ``ThompsonSampling`` (default) draws one posterior sample per arm; ``PosteriorMean``
is greedy (no exploration beyond the prior's optimism).
"""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from qortex_mcp.errors import ConfigError, preview

__all__ = ["LearningStrategy", "PosteriorMean", "ThompsonSampling", "strategy_by_name"]

FloatArray = npt.NDArray[np.float64]


@runtime_checkable
class LearningStrategy(Protocol):
    name: str

    def scores(self, alpha: FloatArray, beta: FloatArray, rng: np.random.Generator) -> FloatArray:
        """One score per candidate; higher is better."""
        ...


class ThompsonSampling:
    """Beta-Bernoulli Thompson Sampling: one exact posterior draw per arm.

    Arms still at Beta(1, 1) are drawn as U(0, 1) (the same distribution, several times
    cheaper than numpy's Beta sampler, which uses a slow rejection method for a, b <= 1).
    """

    name = "thompson"

    def scores(self, alpha: FloatArray, beta: FloatArray, rng: np.random.Generator) -> FloatArray:
        size: int = alpha.shape[0]
        flat = (alpha == 1.0) & (beta == 1.0)
        n_flat = int(np.count_nonzero(flat))
        if n_flat == 0:
            return rng.beta(alpha, beta)
        if n_flat == size:
            return rng.random(size)
        out = rng.random(size)
        rest = ~flat
        out[rest] = rng.beta(alpha[rest], beta[rest])
        return out


class PosteriorMean:
    """Greedy on the posterior mean; ties go to the earlier candidate."""

    name = "mean"

    def scores(self, alpha: FloatArray, beta: FloatArray, rng: np.random.Generator) -> FloatArray:
        result: FloatArray = alpha / (alpha + beta)
        return result


_BY_NAME: Final[dict[str, type[ThompsonSampling] | type[PosteriorMean]]] = {
    "thompson": ThompsonSampling,
    "mean": PosteriorMean,
}


def strategy_by_name(name: str) -> LearningStrategy:
    try:
        return _BY_NAME[name]()
    except KeyError:
        raise ConfigError(
            f"unknown strategy {preview(name)}; use one of {', '.join(_BY_NAME)}"
        ) from None
