"""Plain numpy reference implementations of every strategy in qortex_mcp.learning.policies.

Independent code, written from the textbook formulas (nothing imported from the package):
each class keeps its own arrays, ``select()`` returns one arm index and ``update(arm,
reward)`` learns. ``bench_policies.py`` runs each strategy against its reference on the
same problems and compares regret and select latency. ``t`` is the number of pulls so far
(at least 1 where a formula takes its log). Ties go to a random arm where the textbook
says so (greedy rules), else to the first (``np.argmax``), as a plain implementation does.
"""

from __future__ import annotations

import math

import numpy as np


class _Counts:
    """Pulls ``n`` and reward sums ``s`` per arm, and the step ``t``."""

    def __init__(self, K: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.n = np.zeros(K)
        self.s = np.zeros(K)
        self.t = 0

    def update(self, arm: int, r: float) -> None:
        self.n[arm] += 1
        self.s[arm] += r
        self.t += 1


class RefThompson(_Counts):
    """Beta(1, 1) prior; draw theta_i ~ Beta(1 + s_i, 1 + n_i - s_i), play the argmax."""

    def select(self) -> int:
        return int(np.argmax(self.rng.beta(1 + self.s, 1 + self.n - self.s)))


class RefMean(_Counts):
    """Greedy on the Beta(1, 1) posterior mean, ties at random."""

    def select(self) -> int:
        m = (1 + self.s) / (2 + self.n)
        return int(self.rng.choice(np.flatnonzero(m == m.max())))


class RefUCB1(_Counts):
    """Auer et al. (2002): each arm once, then argmax mean + sqrt(2 ln t / n)."""

    def select(self) -> int:
        if (self.n == 0).any():
            return int(np.argmin(self.n))
        return int(np.argmax(self.s / self.n + np.sqrt(2 * math.log(self.t) / self.n)))


class RefUCB1Tuned(_Counts):
    """Auer et al. (2002): bonus sqrt(ln t / n * min(1/4, var + sqrt(2 ln t / n)))."""

    def __init__(self, K: int, seed: int) -> None:
        super().__init__(K, seed)
        self.q = np.zeros(K)

    def update(self, arm: int, r: float) -> None:
        super().update(arm, r)
        self.q[arm] += r * r

    def select(self) -> int:
        if (self.n == 0).any():
            return int(np.argmin(self.n))
        m, lt = self.s / self.n, math.log(self.t)
        v = self.q / self.n - m * m + np.sqrt(2 * lt / self.n)
        return int(np.argmax(m + np.sqrt(lt / self.n * np.minimum(0.25, v))))


def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p, q = np.clip(p, 1e-15, 1 - 1e-15), np.clip(q, 1e-15, 1 - 1e-15)
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


class RefKLUCB(_Counts):
    """Garivier & Cappe (2011), c = 0: max q with n kl(mean, q) <= ln t; bisection."""

    def select(self) -> int:
        if (self.n == 0).any():
            return int(np.argmin(self.n))
        p, d = self.s / self.n, math.log(self.t) / self.n
        lo, hi = p.copy(), np.ones_like(p)
        for _ in range(30):
            mid = (lo + hi) / 2
            bad = kl(p, mid) > d
            hi, lo = np.where(bad, mid, hi), np.where(bad, lo, mid)
        return int(np.argmax(lo))


class RefMOSS(_Counts):
    """MOSS-anytime (Degenne & Perchet 2016), alpha = 1.35."""

    def select(self) -> int:
        if (self.n == 0).any():
            return int(np.argmin(self.n))
        K = len(self.n)
        bonus = np.sqrt(1.175 * np.maximum(np.log(self.t / (K * self.n)), 0) / self.n)
        return int(np.argmax(self.s / self.n + bonus))


class RefEpsGreedy(_Counts):
    """epsilon = 0.1: a uniform arm, else the best mean (untried = 1), ties at random."""

    def select(self) -> int:
        if self.rng.random() < 0.1:
            return int(self.rng.integers(len(self.n)))
        m = np.where(self.n > 0, self.s / np.maximum(self.n, 1), 1.0)
        return int(self.rng.choice(np.flatnonzero(m == m.max())))


class RefSoftmax(_Counts):
    """Boltzmann exploration, temperature 0.1, untried arms at mean 1."""

    def select(self) -> int:
        m = np.where(self.n > 0, self.s / np.maximum(self.n, 1), 1.0)
        w = np.exp((m - m.max()) / 0.1)
        return int(self.rng.choice(len(m), p=w / w.sum()))


class RefExp3IX(_Counts):
    """Neu (2015) EXP3-IX on losses 1 - r, anytime eta = sqrt(2 ln K / (K t)), gamma = eta/2."""

    def __init__(self, K: int, seed: int) -> None:
        super().__init__(K, seed)
        self.L = np.zeros(K)
        self.p = np.full(K, 1.0 / K)

    def select(self) -> int:
        K = len(self.L)
        self.eta = math.sqrt(2 * math.log(K) / (K * max(self.t, 1)))
        w = np.exp(-self.eta * (self.L - self.L.min()))
        self.p = w / w.sum()
        return int(self.rng.choice(K, p=self.p))

    def update(self, arm: int, r: float) -> None:
        self.L[arm] += (1 - r) / (self.p[arm] + self.eta / 2)
        super().update(arm, r)


class RefGaussianTS(_Counts):
    """Normal-inverse-gamma prior (mu0 0, kappa0 1, alpha0 1, beta0 1), unknown variance."""

    def __init__(self, K: int, seed: int) -> None:
        super().__init__(K, seed)
        self.q = np.zeros(K)

    def update(self, arm: int, r: float) -> None:
        super().update(arm, r)
        self.q[arm] += r * r

    def select(self) -> int:
        kappa = 1 + self.n
        mu = self.s / kappa
        a = 1 + self.n / 2
        b = 1 + 0.5 * (self.q - kappa * mu * mu)
        var = b / self.rng.gamma(a)
        return int(np.argmax(self.rng.normal(mu, np.sqrt(var / kappa))))


class RefTopTwo(_Counts):
    """Russo (2016): leader with probability 1/2, else resample (at most 64 times) until
    another arm is best; Beta(1, 1) prior."""

    def select(self) -> int:
        a, b = 1 + self.s, 1 + self.n - self.s
        theta = self.rng.beta(a, b)
        leader = int(np.argmax(theta))
        if self.rng.random() < 0.5:
            return leader
        for _ in range(64):
            j = int(np.argmax(self.rng.beta(a, b)))
            if j != leader:
                return j
        theta[leader] = -1.0
        return int(np.argmax(theta))


class RefRandom(_Counts):
    def select(self) -> int:
        return int(self.rng.integers(len(self.n)))


REFS: dict[str, type[_Counts]] = {
    "thompson": RefThompson, "mean": RefMean, "ucb1": RefUCB1, "ucb1_tuned": RefUCB1Tuned,
    "kl_ucb": RefKLUCB, "moss": RefMOSS, "eps_greedy": RefEpsGreedy, "softmax": RefSoftmax,
    "exp3": RefExp3IX, "gaussian_thompson": RefGaussianTS, "top_two_thompson": RefTopTwo,
    "random": RefRandom,
}
