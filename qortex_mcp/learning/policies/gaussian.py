"""``gaussian_thompson``: Thompson sampling for real-valued rewards of unknown variance.

Statistics per arm: (pulls, reward_sum, reward_sq_sum); a reward x adds (1, x, x^2), so
decay keeps the sample mean and variance and shrinks the evidence. Model: rewards
N(mu, sigma^2) with the conjugate normal-inverse-gamma prior (mu0, kappa0, alpha0, beta0);
after n rewards with sum S and sum of squares Q the posterior is

    kappa = kappa0 + n,   mu = (kappa0 mu0 + S) / kappa,   alpha = alpha0 + n / 2,
    beta = beta0 + (Q + kappa0 mu0^2 - kappa mu^2) / 2

(the pooled form of beta0 + SS/2 + kappa0 n (mean - mu0)^2 / (2 kappa), which needs no
division by n). A draw is sigma^2 = beta / Gamma(alpha), then mu + sigma / sqrt(kappa) Z.
Rewards are any finite number (latency, cost, a score); NaN and infinities are refused.
"""

from __future__ import annotations

import math

import numpy as np

from qortex_mcp.learning.policies.base import Estimate, Policy
from qortex_mcp.learning.policies.params import Param
from qortex_mcp.learning.policies.ranking import FloatArray
from qortex_mcp.learning.stats import beta_ppf

__all__ = ["GaussianThompson", "student_t_ppf"]


def student_t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom, through the Beta quantile:
    P(|T| > x) = I_{df / (df + x^2)}(df / 2, 1 / 2)."""
    if q == 0.5:
        return 0.0
    tail = 2.0 * min(q, 1.0 - q)
    z = beta_ppf(tail, df / 2.0, 0.5)
    x = math.sqrt(df * (1.0 - z) / z) if z > 0 else math.inf
    return x if q > 0.5 else -x


class GaussianThompson(Policy):
    name = "gaussian_thompson"
    category = "bayesian"
    summary = ("Gaussian Thompson sampling, normal-inverse-gamma prior (unknown variance): "
               "continuous rewards")
    stats = ("pulls", "reward_sum", "reward_sq_sum")
    reward_types = ("binary", "graded", "continuous")
    prior_names = ("mu0", "kappa0", "alpha0", "beta0")
    parameters = (
        Param("mu0", 0.0, "prior mean of an arm's reward"),
        Param("kappa0", 1.0, "prior weight of mu0, in observations", low=0.0, low_open=True),
        Param("alpha0", 1.0, "prior shape of the reward variance", low=0.0, low_open=True),
        Param("beta0", 1.0, "prior scale of the reward variance (the prior variance guess "
              "is beta0 / alpha0)", low=0.0, low_open=True),
    )

    def _setup(self) -> None:
        self._prior = self.prior()

    def _increment(self, row: FloatArray, reward: float, propensity: float | None,
                   t: float | None, n_arms: int | None) -> FloatArray:
        return np.array([1.0, reward, reward * reward])

    def posterior(self, stats: FloatArray, prior: FloatArray | None = None
                  ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """(mu, kappa, alpha, beta) of every arm's normal-inverse-gamma posterior."""
        mu0, kappa0, alpha0, beta0 = (self._prior if prior is None else prior.T)
        n, total, squares = stats[:, 0], stats[:, 1], stats[:, 2]
        kappa = kappa0 + n
        mu = (kappa0 * mu0 + total) / kappa
        spread = np.maximum(squares + kappa0 * mu0 * mu0 - kappa * mu * mu, 0.0)
        return mu, kappa, alpha0 + 0.5 * n, beta0 + 0.5 * spread

    def scores(self, stats: FloatArray, rng: np.random.Generator, t: float | None = None,
               prior: FloatArray | None = None) -> FloatArray:
        mu, kappa, alpha, beta = self.posterior(stats, prior)
        variance = beta / rng.standard_gamma(alpha)
        out: FloatArray = mu + np.sqrt(variance / kappa) * rng.standard_normal(mu.shape[0])
        return out

    def draws(self, stats: FloatArray, rng: np.random.Generator, n: int,
              t: float | None = None, prior: FloatArray | None = None) -> FloatArray:
        mu, kappa, alpha, beta = self.posterior(stats, prior)
        size = (n, mu.shape[0])
        variance = beta / rng.standard_gamma(np.broadcast_to(alpha, size))
        out: FloatArray = mu + np.sqrt(variance / kappa) * rng.standard_normal(size)
        return out

    def estimate(self, row: FloatArray, prior: FloatArray | None = None,
                 level: float = 0.95) -> Estimate:
        """Posterior mean of mu with its equal-tailed credible interval (Student's t with
        2 alpha degrees of freedom and scale sqrt(beta / (alpha kappa)))."""
        mu_, kappa_, alpha_, beta_ = self.posterior(
            row.reshape(1, -1), None if prior is None else prior.reshape(1, -1))
        mu, kappa, alpha, beta = float(mu_[0]), float(kappa_[0]), float(alpha_[0]), float(beta_[0])
        half = student_t_ppf(0.5 + level / 2.0, 2.0 * alpha) * math.sqrt(beta / (alpha * kappa))
        return Estimate(mu, mu - half, mu + half, "credible", level, float(row[0]),
                        {"mu": mu, "kappa": kappa, "alpha": alpha, "beta": beta})
