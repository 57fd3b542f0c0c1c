"""Shared helpers of the policy tests: a seeded Bernoulli run and some learned states."""

from __future__ import annotations

from typing import TypedDict

import numpy as np

from qortex_mcp.learning.policies import Policy, fold

FloatArray = np.ndarray


class Decision(TypedDict, total=False):
    """What EXP3's ``increment`` reads of the decision (other strategies take none of it)."""

    propensity: float
    t: float
    n_arms: int


def learn(policy: Policy, mu: list[float], steps: int, seed: int = 0) -> np.ndarray:
    """Run ``policy`` on Bernoulli arms ``mu`` for ``steps``; the arm chosen at each step."""
    k = len(mu)
    rng = np.random.default_rng(seed)
    rewards = np.random.default_rng(seed + 1).random((steps, k)) < np.asarray(mu)
    stats = policy.zeros(k)
    chosen = np.empty(steps, dtype=np.intp)
    for t in range(steps):
        a = int(policy.select(stats, 1, rng, t=t)[0])
        extra: Decision = {}
        if policy.name == "exp3":
            p = float(policy.propensities(stats, [a], rng, t=t)[0])
            extra = {"propensity": p, "t": t, "n_arms": k}
        stats[a] = fold(stats[a], policy.increment(stats[a], float(rewards[t, a]), **extra))
        chosen[t] = a
    return chosen


def learned_stats(policy: Policy, mu: list[float], steps: int, seed: int = 0) -> np.ndarray:
    """The statistics after ``steps`` of uniformly random pulls of Bernoulli arms ``mu``."""
    rng = np.random.default_rng(seed)
    stats = policy.zeros(len(mu))
    for _ in range(steps):
        a = int(rng.integers(len(mu)))
        extra: Decision = {"propensity": 1.0 / len(mu), "t": 1, "n_arms": len(mu)}
        none: Decision = {}
        inc = policy.increment(stats[a], float(rng.random() < mu[a]),
                               **(extra if policy.name == "exp3" else none))
        stats[a] = fold(stats[a], inc)
    return stats
