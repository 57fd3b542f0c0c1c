"""The policy layer: bandit strategies over additive sufficient statistics.

A library module, not yet selectable from ``LearnerConfig`` (the learner still uses
``qortex_mcp.learning.strategies``; the next step wires this in)::

    from qortex_mcp.learning.policies import make_policy, fold
    policy = make_policy("kl_ucb", {"c": 0.0})
    stats = policy.zeros(3)                                   # (K, width)
    chosen = policy.select(stats, k=1, rng=rng)               # positions, best first
    p = policy.propensities(stats, chosen, rng)               # P(slot j holds chosen[j])
    stats[chosen[0]] = fold(stats[chosen[0]], policy.increment(stats[chosen[0]], 1.0))

One module per family: ``beta`` (thompson, mean, top_two_thompson), ``ucb`` (ucb1,
ucb1_tuned, kl_ucb, moss), ``gaussian`` (gaussian_thompson), ``exp3`` (EXP3-IX),
``simple`` (eps_greedy, softmax, random); ``base`` and ``ranking`` hold what they share,
``registry`` the names and the catalogue. Never imports ``mcp`` or ``qortex_mcp.config``.
"""

from qortex_mcp.learning.policies.base import Category, Estimate, Policy, RewardType, fold
from qortex_mcp.learning.policies.params import Param
from qortex_mcp.learning.policies.ranking import DEFAULT_DRAWS
from qortex_mcp.learning.policies.registry import (
    DEFAULT_POLICY,
    POLICIES,
    PolicyInfo,
    catalogue,
    make_policy,
)

__all__ = [
    "DEFAULT_DRAWS",
    "DEFAULT_POLICY",
    "POLICIES",
    "Category",
    "Estimate",
    "Param",
    "Policy",
    "PolicyInfo",
    "RewardType",
    "catalogue",
    "fold",
    "make_policy",
]
