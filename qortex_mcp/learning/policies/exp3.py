"""``exp3``: EXP3-IX (Neu 2015), for adversarial or gamed rewards.

EXP3 makes no stochastic assumption: it competes with the best fixed arm on any reward
sequence fixed in advance (regret O(sqrt(K T log K))), where Thompson sampling or UCB can
be locked onto an arm that stopped paying. It plays arm i with probability proportional
to exp(-eta * L_i), where L_i estimates the arm's cumulative loss (1 - reward) over every
round, played or not, by importance weighting with implicit exploration (IX): a pull with
propensity p adds (1 - r) / (p + gamma). The gamma in the denominator keeps the estimate
bounded and biases it down (optimistic) for rarely played arms.

Statistics per arm: (iw_reward, iw_weight, pulls), adding (r / (p + gamma),
1 / (p + gamma), 1) per pull, so L_i = iw_weight - iw_reward, and iw_reward / iw_weight
is a self-normalised estimate of the arm's mean reward. Unlike the other strategies, an
update needs the decision's propensity, and with the anytime gamma its t and number of
candidates (what the decision log records).

Anytime defaults: eta_t = sqrt(2 log K / (K t)) and gamma_t = eta_t / 2 (Neu 2015's
tuning with the horizon T replaced by the current t).
"""

from __future__ import annotations

import math

import numpy as np

from qortex_mcp.errors import InvalidInput
from qortex_mcp.learning.policies.base import Estimate, hoeffding_estimate
from qortex_mcp.learning.policies.params import Param
from qortex_mcp.learning.policies.ranking import FloatArray
from qortex_mcp.learning.policies.simple import LogitPolicy

__all__ = ["Exp3IX"]


class Exp3IX(LogitPolicy):
    name = "exp3"
    category = "adversarial"
    summary = "EXP3-IX: exponential weights on importance-weighted losses (adversarial)"
    stats = ("iw_reward", "iw_weight", "pulls")
    parameters = (
        Param("eta", None, "learning rate; None: anytime sqrt(2 log K / (K t))",
              low=0.0, low_open=True, nullable=True),
        Param("gamma", None, "implicit exploration added to the propensity; None: eta_t / 2",
              low=0.0, nullable=True),
    )

    def pulls(self, stats: FloatArray) -> FloatArray:
        out: FloatArray = stats[:, 2]
        return out

    def eta(self, t: float, n_arms: int) -> float:
        eta = self.params["eta"]
        if eta is not None:
            return float(eta)
        return math.sqrt(2.0 * math.log(max(n_arms, 1)) / (max(n_arms, 1) * max(t, 1.0)))

    def gamma(self, t: float, n_arms: int) -> float:
        gamma = self.params["gamma"]
        return float(gamma) if gamma is not None else self.eta(t, n_arms) / 2.0

    def logits(self, stats: FloatArray, t: float | None) -> FloatArray:
        eta = self.eta(self._time(stats, t), stats.shape[0])
        out: FloatArray = eta * (stats[:, 0] - stats[:, 1])
        return out

    def _increment(self, row: FloatArray, reward: float, propensity: float | None,
                   t: float | None, n_arms: int | None) -> FloatArray:
        if propensity is None or not 0.0 < propensity <= 1.0:
            raise InvalidInput(
                f"strategy 'exp3' needs the propensity of the choice, a number in (0, 1], "
                f"got {propensity!r}")
        if self.params["gamma"] is None and (t is None or n_arms is None):
            raise InvalidInput(
                "strategy 'exp3' with the anytime gamma needs the decision's t and n_arms")
        gamma = self.gamma(t or 0.0, n_arms or 1)
        w = 1.0 / (propensity + gamma)
        return np.array([reward * w, w, 1.0])

    def estimate(self, row: FloatArray, prior: FloatArray | None = None,
                 level: float = 0.95) -> Estimate:
        """Self-normalised importance-weighted mean with a Hoeffding interval on the pulls
        (approximate: the pulls are adaptively chosen)."""
        iw_reward, weight, pulls = float(row[0]), float(row[1]), float(row[2])
        mean = iw_reward / weight if weight > 0 else None
        base = hoeffding_estimate(row, level, pulls, (mean or 0.0) * pulls)
        return Estimate(mean if pulls > 0 else None, base.low, base.high, base.interval,
                        level, pulls, {"iw_reward": iw_reward, "iw_weight": weight,
                                       "pulls": pulls})
