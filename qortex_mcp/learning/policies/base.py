"""The policy base class: a strategy over additive sufficient statistics.

Each (context, arm) holds one row vector of statistics (``Policy.stats`` names its
columns). One reward adds an increment to the row (``increment``, a pure function), and
forgetting multiplies the row by a scalar, so the only state operation is the fold
``row * decay + increment`` whatever the strategy: the store never knows which strategy
it holds. A Bayesian strategy keeps its prior apart from the row (``prior_names``; per arm
through the ``prior`` argument, else its parameters), so a decay shrinks toward the prior.

The public methods check their input and call the small ones (river's ``pull`` ->
``_pull``): ``scores`` / ``select`` over a ``(K, width)`` statistics matrix with one
injected generator, ``propensities`` for the chosen slots, ``estimate`` for inspection.
``t`` is the total number of pulls in the context (default: the candidates' own total).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from qortex_mcp.errors import InvalidInput, InvalidReward, preview
from qortex_mcp.learning.policies import ranking
from qortex_mcp.learning.policies.params import Param, ParamValue, check_params
from qortex_mcp.learning.policies.ranking import DEFAULT_DRAWS, FloatArray, IntArray

__all__ = ["Category", "Estimate", "Policy", "RewardType", "fold", "hoeffding_estimate"]

RewardType = Literal["binary", "graded", "continuous"]
Category = Literal["bayesian", "stochastic", "adversarial", "baseline"]


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a strategy believes about one arm: a mean with an interval at ``level``.

    ``interval`` says which kind: ``credible`` (Bayesian posterior) or ``confidence``
    (frequentist). ``mean`` is None while a frequentist strategy has no evidence (the
    interval is then the whole reward range). ``params`` are the strategy's own numbers,
    e.g. ``alpha`` / ``beta`` of a Beta posterior.
    """

    mean: float | None
    low: float
    high: float
    interval: Literal["credible", "confidence"]
    level: float
    pulls: float
    params: Mapping[str, float] = field(default_factory=dict)


def fold(row: FloatArray, increment: FloatArray, decay: float = 1.0) -> FloatArray:
    """The one state update: decayed statistics plus the new increment."""
    out: FloatArray = row * decay + increment
    return out


def hoeffding_estimate(row: FloatArray, level: float, pulls: float, total: float) -> Estimate:
    """Sample mean ``total / pulls`` with a Hoeffding confidence interval on [0, 1]."""
    if pulls <= 0:
        return Estimate(None, 0.0, 1.0, "confidence", level, 0.0, {})
    mean = total / pulls
    half = math.sqrt(math.log(2.0 / (1.0 - level)) / (2.0 * pulls))
    return Estimate(mean, max(0.0, mean - half), min(1.0, mean + half), "confidence", level,
                    pulls, {})


class Policy(ABC):
    """A bandit strategy. Subclasses set the class attributes and the small methods."""

    name: ClassVar[str]
    category: ClassVar[Category]
    summary: ClassVar[str]
    stats: ClassVar[tuple[str, ...]]
    reward_types: ClassVar[tuple[RewardType, ...]] = ("binary", "graded")
    parameters: ClassVar[tuple[Param, ...]] = ()
    prior_names: ClassVar[tuple[str, ...]] = ()
    # Scores are a function of the statistics: ties split at random, exact propensities.
    deterministic: ClassVar[bool] = False
    split_ties: ClassVar[bool] = False

    def __init__(self, params: Mapping[str, object] | None = None) -> None:
        """Raises ``ConfigError`` for an unknown parameter or a value out of range."""
        self.params: dict[str, ParamValue] = check_params(self.name, self.parameters, params)
        self._setup()

    def _setup(self) -> None:  # noqa: B027 (an optional hook; most have nothing to cache)
        """Cache derived values of the parameters (called once by ``__init__``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    @property
    def width(self) -> int:
        return len(self.stats)

    def zeros(self, k: int) -> FloatArray:
        """Statistics of ``k`` arms without evidence."""
        return np.zeros((k, self.width))

    def prior(self) -> FloatArray:
        """The default prior row (the parameters named in ``prior_names``)."""
        return np.array([self.number(n) for n in self.prior_names])

    def number(self, name: str) -> float:
        """A parameter that is never None, as a float."""
        value = self.params[name]
        assert value is not None, name
        return float(value)

    # --- learning -----------------------------------------------------------------------

    def check_reward(self, value: object) -> float:
        """The reward as a float. Raises ``InvalidReward`` outside ``reward_types``."""
        bounded = "continuous" not in self.reward_types
        what = "a finite number in [0, 1]" if bounded else "a finite number"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidReward(f"reward for strategy {self.name!r} must be {what}, "
                                f"got {type(value).__name__} {preview(value)}")
        try:
            r = float(value)
        except OverflowError:
            raise InvalidReward(f"reward for strategy {self.name!r} must be {what}") from None
        if not math.isfinite(r) or (bounded and not 0.0 <= r <= 1.0):
            raise InvalidReward(f"reward for strategy {self.name!r} must be {what}, "
                                f"got {preview(value)}")
        return r + 0.0  # -0.0 becomes 0.0

    def increment(self, row: FloatArray, reward: object, *, propensity: float | None = None,
                  t: float | None = None, n_arms: int | None = None) -> FloatArray:
        """What one reward adds to an arm's statistics ``row`` (additive: fold it in with
        ``fold``). Only EXP3 reads ``propensity``, ``t`` and ``n_arms`` (the decision's).

        Raises:
            InvalidReward: the reward is not of one of the strategy's reward types.
        """
        return self._increment(row, self.check_reward(reward), propensity, t, n_arms)

    def _increment(self, row: FloatArray, reward: float, propensity: float | None,
                   t: float | None, n_arms: int | None) -> FloatArray:
        raise NotImplementedError

    def pulls(self, stats: FloatArray) -> FloatArray:
        """Number of (decayed) observations of each arm."""
        out: FloatArray = stats[:, 0]
        return out

    def _time(self, stats: FloatArray, t: float | None) -> float:
        return max(float(self.pulls(stats).sum()) if t is None else float(t), 1.0)

    # --- choosing -----------------------------------------------------------------------

    @abstractmethod
    def scores(self, stats: FloatArray, rng: np.random.Generator, t: float | None = None,
               prior: FloatArray | None = None) -> FloatArray:
        """One score per candidate (a row of ``stats``); the k highest are chosen."""

    def select(self, stats: FloatArray, k: int, rng: np.random.Generator,
               t: float | None = None, prior: FloatArray | None = None) -> IntArray:
        """Positions of the ``k`` chosen candidates, best first."""
        if k < 1:
            raise InvalidInput(f"k must be at least 1, got {k}")
        return ranking.top_k(self.scores(stats, rng, t, prior), k, rng, self.split_ties)

    def draws(self, stats: FloatArray, rng: np.random.Generator, n: int,
              t: float | None = None, prior: FloatArray | None = None) -> FloatArray:
        """``n`` independent score vectors ``(n, K)`` (Monte-Carlo propensities)."""
        return np.stack([self.scores(stats, rng, t, prior) for _ in range(n)])

    def propensities(self, stats: FloatArray, chosen: Sequence[int] | IntArray,
                     rng: np.random.Generator, t: float | None = None,
                     prior: FloatArray | None = None, draws: int = DEFAULT_DRAWS) -> FloatArray:
        """``P(slot j holds chosen[j])`` for each slot j; exact for a deterministic
        strategy, else a Monte-Carlo estimate from ``draws`` score vectors."""
        picked = ranking.check_chosen(chosen, stats.shape[0])
        if self.deterministic:
            return ranking.tie_slot_propensities(self.scores(stats, rng, t, prior), picked)
        return ranking.mc_slot_propensities(self.draws(stats, rng, draws, t, prior), picked)

    def choice_probabilities(self, stats: FloatArray, rng: np.random.Generator,
                             t: float | None = None, prior: FloatArray | None = None,
                             draws: int = DEFAULT_DRAWS) -> FloatArray:
        """Probability of each candidate in the first slot (sums to 1)."""
        if self.deterministic:
            scores = self.scores(stats, rng, t, prior)
            best = scores == scores.max()
            out: FloatArray = best / np.count_nonzero(best)
            return out
        return ranking.mc_choice_probabilities(self.draws(stats, rng, draws, t, prior))

    # --- inspection ---------------------------------------------------------------------

    @abstractmethod
    def estimate(self, row: FloatArray, prior: FloatArray | None = None,
                 level: float = 0.95) -> Estimate:
        """The strategy's estimate of one arm's mean reward, with an interval."""
