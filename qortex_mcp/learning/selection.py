"""A policy-layer strategy choosing for a learner, over the evidence the stores keep today.

Stores keep Beta evidence per (context, arm): ``s`` (weighted reward sum) and ``f``
(weighted sum of ``1 - reward``), decayed together. For rewards in [0, 1] that is exactly
what two statistics layouts of ``qortex_mcp.learning.policies`` need, so those strategies
run in a learner with no new column:

* ``(successes, failures)`` (``thompson``, ``mean``, ``top_two_thompson``) is ``(s, f)``
  with the arm's prior ``(a0, b0)``;
* ``(pulls, reward_sum)`` (``ucb1``, ``kl_ucb``, ``moss``, ``eps_greedy``, ``softmax``,
  ``random``) is ``(s + f, s)``: weighted pulls and the weighted reward sum.

The other strategies need statistics the stores do not keep yet (a sum of squared rewards,
importance-weighted sums): ``runnable`` says which, and ``LearnerConfig`` refuses them with
that reason. They stay usable on their own from ``qortex_mcp.learning.policies``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import numpy as np

from qortex_mcp.errors import ConfigError, preview
from qortex_mcp.learning.policies import POLICIES, Estimate, Policy, make_policy
from qortex_mcp.learning.policies.ranking import FloatArray, IntArray, top_k
from qortex_mcp.learning.policies.registry import LEARNER_LAYOUTS

__all__ = ["LEARNER_STRATEGIES", "PolicyChooser", "runnable"]

_BETA: Final = LEARNER_LAYOUTS[0]  # (successes, failures); the other is (pulls, reward_sum)
# The learner's prior comes from LearnerConfig.prior / arm_priors, never the policy's own.
_PRIOR_PARAMS: Final = frozenset({"alpha0", "beta0"})

LEARNER_STRATEGIES: Final = tuple(name for name, cls in POLICIES.items()
                                  if cls.stats in LEARNER_LAYOUTS)
"""The strategies a learner runs today (the catalogue's order)."""


def runnable(name: str) -> bool:
    """True when a learner can run the strategy ``name`` on the evidence stores keep."""
    return name in LEARNER_STRATEGIES


class PolicyChooser:
    """Scores a learner's candidates with one policy, from their Beta evidence."""

    def __init__(self, name: str, params: Mapping[str, object] | None = None) -> None:
        """Raises ``ConfigError``: an unknown strategy or parameter, a prior parameter
        (the learner's prior is ``LearnerConfig.prior``), or a strategy a learner cannot
        run yet."""
        params = dict(params or {})
        if name in POLICIES and not runnable(name):
            needs = ", ".join(POLICIES[name].stats)
            raise ConfigError(
                f"strategy {preview(name)} cannot run in a learner yet: it needs statistics "
                f"({needs}) the stores do not keep; a learner runs "
                f"{', '.join(LEARNER_STRATEGIES)}")
        given = sorted(_PRIOR_PARAMS & set(params))
        if given:
            raise ConfigError(f"strategy parameter {given[0]!r} is not used by a learner: set "
                              "LearnerConfig.prior (or arm_priors) instead")
        self.policy: Policy = make_policy(name, params)
        self.name = name
        self.params = dict(self.policy.params)
        self._beta = self.policy.stats == _BETA

    def __repr__(self) -> str:
        return f"PolicyChooser({self.name!r}, {self.params!r})"

    def scores(self, s: FloatArray, f: FloatArray, a0: FloatArray, b0: FloatArray,
               rng: np.random.Generator) -> FloatArray:
        """One score per candidate from its (effective) evidence and prior."""
        if self._beta:
            return self.policy.scores(np.column_stack((s, f)), rng,
                                      prior=np.column_stack((a0, b0)))
        return self.policy.scores(np.column_stack((s + f, s)), rng)

    def estimate(self, s: float, f: float, a0: float, b0: float) -> Estimate:
        """The strategy's estimate of one arm from its (effective) evidence and prior."""
        if self._beta:
            return self.policy.estimate(np.array([s, f]), np.array([a0, b0]))
        return self.policy.estimate(np.array([s + f, s]))

    def top(self, scores: FloatArray, k: int, rng: np.random.Generator) -> IntArray:
        """The ``k`` best positions, best first; ties split at random when the policy's
        propensities assume so (its deterministic strategies), else the earlier first."""
        return top_k(scores, k, rng, self.policy.split_ties)
