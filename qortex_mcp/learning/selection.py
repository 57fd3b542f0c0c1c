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

from collections.abc import Callable, Mapping
from typing import Final

import numpy as np

from qortex_mcp.errors import ConfigError, preview
from qortex_mcp.learning.policies import POLICIES, Estimate, Policy, make_policy
from qortex_mcp.learning.policies.base import Policy as _Policy
from qortex_mcp.learning.policies.beta import beta_draws
from qortex_mcp.learning.policies.ranking import (
    FloatArray,
    IntArray,
    mc_slot_propensities,
    tie_slot_propensities,
    top_k,
)
from qortex_mcp.learning.policies.registry import LEARNER_LAYOUTS
from qortex_mcp.learning.policies.simple import LogitPolicy

__all__ = ["LEARNER_STRATEGIES", "PolicyChooser", "runnable", "thompson_propensities",
           "thompson_settler"]

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
        # The first slot whose propensity is a Monte-Carlo estimate: 0 for the strategies
        # that keep the base class's (Thompson-type), 1 for softmax (exact in the first
        # slot), None where every slot is exact (deterministic, eps_greedy, random).
        self.mc_from: int | None = None
        if not self.policy.deterministic:
            if type(self.policy).propensities is _Policy.propensities:
                self.mc_from = 0
            elif isinstance(self.policy, LogitPolicy):
                self.mc_from = 1

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

    def settler(self, rng: np.random.Generator, draws: int
                ) -> Callable[..., tuple[float | None, ...]]:
        """``settle(chosen, s, f, a0, b0, scores)``: ``propensities`` with this generator
        and number of draws (what the learner's decision log calls)."""
        if self.name == "thompson":
            def beta_settle(chosen: list[int], s: FloatArray, f: FloatArray, a0: FloatArray,
                            b0: FloatArray, scores: FloatArray) -> tuple[float | None, ...]:
                return thompson_propensities(a0 + s, b0 + f, chosen, rng, draws)

            return beta_settle

        def settle(chosen: list[int], s: FloatArray, f: FloatArray, a0: FloatArray,
                   b0: FloatArray, scores: FloatArray) -> tuple[float | None, ...]:
            return self.propensities(s, f, a0, b0, scores, np.asarray(chosen), rng, draws)

        return settle

    def propensities(self, s: FloatArray, f: FloatArray, a0: FloatArray, b0: FloatArray,
                     scores: FloatArray, chosen: IntArray, rng: np.random.Generator,
                     draws: int) -> tuple[float | None, ...]:
        """``P(slot j holds chosen[j])`` per slot, for the state ``select`` scored from
        (``scores`` are its scores). Exact for deterministic strategies, epsilon-greedy,
        softmax's first slot and random; elsewhere (Thompson-type strategies, softmax's
        later slots) a Monte-Carlo estimate from ``draws`` draws plus the select's own,
        ``(wins + 1) / (draws + 1)``: never 0 for an arm that was chosen (None when
        ``draws`` is 0)."""
        policy = self.policy
        if policy.deterministic:
            exact: list[float] = tie_slot_propensities(scores, chosen).tolist()
            return tuple(exact)
        k, mc_from = int(chosen.shape[0]), self.mc_from
        if mc_from is not None and draws <= 0:
            if mc_from == 0:
                return (None,) * k
            # softmax: its exact first slot (one slot needs no draw), None after
            return self.propensities(s, f, a0, b0, scores, chosen[:1], rng, 1) + (
                (None,) * (k - 1))
        if self._beta:
            p = policy.propensities(np.column_stack((s, f)), chosen, rng,
                                    prior=np.column_stack((a0, b0)), draws=draws)
        else:
            p = policy.propensities(np.column_stack((s + f, s)), chosen, rng, draws=draws)
        if mc_from is not None:
            p[mc_from:] = _counting_own_draw(p[mc_from:], draws)
        out: list[float] = p.tolist()
        return tuple(out)

    def top(self, scores: FloatArray, k: int, rng: np.random.Generator) -> IntArray:
        """The ``k`` best positions, best first; ties split at random when the policy's
        propensities assume so (its deterministic strategies), else the earlier first."""
        return top_k(scores, k, rng, self.policy.split_ties)


def thompson_propensities(alpha: FloatArray, beta: FloatArray, chosen: list[int],
                          rng: np.random.Generator, draws: int) -> tuple[float | None, ...]:
    """Thompson sampling's ``propensities`` from the posterior ``alpha``, ``beta`` (the
    learner's own fast path scores from these): ``draws`` Beta draws per candidate, then
    per slot j the share of draws in which ``chosen[j]`` ranks j-th, counted with the
    select's own draw as in ``PolicyChooser.propensities``."""
    if draws <= 0:
        return (None,) * len(chosen)
    k = alpha.shape[0]
    theta = beta_draws(np.broadcast_to(alpha, (draws, k)), np.broadcast_to(beta, (draws, k)),
                       rng)
    out: list[float] = _counting_own_draw(mc_slot_propensities(theta, np.asarray(chosen)),
                                         draws).tolist()
    return tuple(out)


def _counting_own_draw(p: FloatArray, draws: int) -> FloatArray:
    """Monte-Carlo shares from ``draws`` fresh draws, counted together with the select's
    own draw (which put each chosen arm in its slot): ``(wins + 1) / (draws + 1)``."""
    out: FloatArray = (p * draws + 1.0) / (draws + 1.0)
    return out


def thompson_settler(rng: np.random.Generator, draws: int
                     ) -> Callable[..., tuple[float | None, ...]]:
    """``settle(chosen, alpha, beta)`` for the learner's own Thompson sampling."""
    def settle(chosen: list[int], alpha: FloatArray, beta: FloatArray
               ) -> tuple[float | None, ...]:
        return thompson_propensities(alpha, beta, chosen, rng, draws)

    return settle
