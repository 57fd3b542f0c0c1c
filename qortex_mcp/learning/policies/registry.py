"""Every strategy by its name, and the catalogue that describes them.

Names are fixed by DESIGN.md ("Strategies (the policy zoo)"); the order here is the
catalogue's. ``make_policy`` is what a ``LearnerConfig(strategy=..., strategy_params=...)``
resolves through; ``catalogue()`` is what a ``list_policies``-style tool renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from qortex_mcp.errors import ConfigError, preview
from qortex_mcp.learning.policies.base import Category, Policy, RewardType
from qortex_mcp.learning.policies.beta import PosteriorMean, Thompson, TopTwoThompson
from qortex_mcp.learning.policies.exp3 import Exp3IX
from qortex_mcp.learning.policies.gaussian import GaussianThompson
from qortex_mcp.learning.policies.params import Param
from qortex_mcp.learning.policies.simple import EpsilonGreedy, RandomChoice, Softmax
from qortex_mcp.learning.policies.ucb import KLUCB, MOSS, UCB1, UCB1Tuned

__all__ = ["DEFAULT_POLICY", "LEARNER_LAYOUTS", "POLICIES", "PolicyInfo", "catalogue",
           "make_policy"]

DEFAULT_POLICY: Final = "thompson"

LEARNER_LAYOUTS: Final = (("successes", "failures"), ("pulls", "reward_sum"))
"""The statistics layouts a learner computes from the Beta evidence every store keeps
(``learning.selection``): a strategy with another layout runs only on its own for now."""

POLICIES: Final[Mapping[str, type[Policy]]] = {
    cls.name: cls
    for cls in (Thompson, PosteriorMean, UCB1, UCB1Tuned, KLUCB, MOSS, EpsilonGreedy, Softmax,
                Exp3IX, GaussianThompson, TopTwoThompson, RandomChoice)
}


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """One catalogue entry: what a strategy is, what rewards it takes, what it is tuned by."""

    name: str
    category: Category
    summary: str
    reward_types: tuple[RewardType, ...]
    parameters: tuple[Param, ...]
    statistics: tuple[str, ...]
    prior: tuple[str, ...]
    deterministic: bool
    in_learner: bool = False
    """A ``Learner`` can run it today (its statistics are the evidence stores keep)."""

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "category": self.category, "summary": self.summary,
                "reward_types": list(self.reward_types),
                "parameters": [p.as_dict() for p in self.parameters],
                "statistics": list(self.statistics), "prior": list(self.prior),
                "deterministic": self.deterministic, "in_learner": self.in_learner}


def make_policy(name: str = DEFAULT_POLICY, params: Mapping[str, object] | None = None) -> Policy:
    """The strategy called ``name`` with its parameters checked.

    Raises:
        ConfigError: unknown name (the message lists every valid one), unknown parameter
            or a value out of range (the message names the valid ones and ranges).
    """
    cls = POLICIES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(f"unknown strategy {preview(name)}; use one of {', '.join(POLICIES)}")
    return cls(params)


def catalogue(reward_type: RewardType | None = None) -> tuple[PolicyInfo, ...]:
    """Every strategy (those taking ``reward_type``, when given), in the registry order."""
    return tuple(
        PolicyInfo(cls.name, cls.category, cls.summary, cls.reward_types, cls.parameters,
                   cls.stats, cls.prior_names, cls.deterministic, cls.stats in LEARNER_LAYOUTS)
        for cls in POLICIES.values()
        if reward_type is None or reward_type in cls.reward_types
    )
