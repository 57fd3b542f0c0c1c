"""``LearnerConfig``: how one named learner behaves."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from qortex_mcp.errors import ConfigError, QortexError, preview
from qortex_mcp.learning.changes import PageHinkley, change_detector
from qortex_mcp.learning.rewards import RewardModel, reward_model_by_name
from qortex_mcp.learning.selection import PolicyChooser
from qortex_mcp.learning.strategies import LearningStrategy, ThompsonSampling
from qortex_mcp.learning.validation import check_name, check_prior

__all__ = ["LearnerConfig"]

_OPTION_NAMES: Final = frozenset({
    "strategy", "strategy_params", "reward_model", "prior", "arm_priors", "half_life_s",
    "context_backoff", "change_detection", "propensity_draws", "decision_log",
    "selection_ttl_s", "seed", "max_arms", "max_candidates", "max_contexts",
    "feedback_per_minute", "feedback_per_arm_per_minute", "accept_unchosen_feedback",
})
# Caps where 0 means none, as None does (TOML has no null).
_UNCAPPED_AT_ZERO: Final = ("feedback_per_minute", "feedback_per_arm_per_minute")


@dataclass(frozen=True)
class LearnerConfig:
    """Settings of one learner.

    Args:
        name: the learner's name (same rule as arm ids).
        strategy: a strategy's name (``qortex_mcp.learning.selection.LEARNER_STRATEGIES``:
            ``"thompson"``, the default, ``"mean"``, ``"ucb1"``, ``"kl_ucb"``, ...) or a
            ``LearningStrategy``.
        strategy_params: the named strategy's parameters (``catalogue()`` lists each
            strategy's, with defaults and ranges), e.g. ``{"epsilon": 0.05}``.
        reward_model: ``"ternary"`` (default: accepted = 1, partial = 0.5, rejected = 0),
            ``"binary"`` (partial = 0), ``"tool"`` or a ``RewardModel``.
        prior: the default Beta prior ``(alpha, beta)`` of every arm.
        arm_priors: seeded priors for named arms, e.g. ``{"concise-v1": (8, 2)}``.
        half_life_s: evidence older than this counts half (applied lazily per arm); None
            keeps evidence forever.
        change_detection: None (default: off), True or ``"page_hinkley"`` (the defaults),
            or a table of Page-Hinkley parameters (``delta``, ``threshold``, ``shrink``,
            ``min_samples``, ``all_arms``): when an arm's reward level moves, its evidence
            (every arm's with ``all_arms = 1``) shrinks toward its prior
            (``qortex_mcp.learning.changes``).
        context_backoff: ``m`` of the back-off rule (``qortex_mcp.learning.context``).
        selection_ttl_s: selection ids older than this are refused; 0 means never. Every
            feedback path (``observe``, the tools, the reranker) enforces it.
        seed: seeds the learner's random generator (reproducible selections).
        max_arms: the most distinct arms the learner keeps (``LIMIT_EXCEEDED`` beyond).
        max_candidates: the most candidates one ``select`` may offer.
        max_contexts: the most distinct contexts with learned evidence the learner keeps
            (``LIMIT_EXCEEDED`` for feedback in a new one beyond).
        feedback_per_minute: the most feedback rows the learner takes per minute
            (``RATE_LIMITED`` beyond, retryable); None or 0: no cap (the library's default; a
            server sets one, see ``QORTEX_FEEDBACK_PER_MINUTE``).
        feedback_per_arm_per_minute: the same for any one arm.
        decision_log: record every select and rerank, with propensities, in the store's
            decision log (default True; off: feedback events still carry the strategy
            version, and their propensity is None).
        propensity_draws: Monte-Carlo draws behind each propensity of a Thompson-type
            strategy (``thompson``, ``top_two_thompson``), computed off the select path for
            the decision log; 0 logs None for them. Other strategies' propensities are exact.
        accept_unchosen_feedback: let feedback quoting a select name candidates it
            offered but did not choose (for agents that really tried them, e.g. as a
            fallback); by default that is refused with ``ARM_NOT_CHOSEN``.
    """

    name: str = "default"
    strategy: str | LearningStrategy = "thompson"
    strategy_params: Mapping[str, Any] = field(default_factory=dict)
    # Ternary by default: every tool description offers "partial", so it must count.
    reward_model: str | RewardModel = "ternary"
    prior: tuple[float, float] = (1.0, 1.0)
    arm_priors: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    half_life_s: float | None = None
    change_detection: bool | str | Mapping[str, Any] | None = None
    context_backoff: float = 4.0
    selection_ttl_s: float = 30 * 86400
    seed: int | None = None
    max_arms: int = 100_000
    max_candidates: int = 10_000
    max_contexts: int = 10_000
    feedback_per_minute: int | None = None
    feedback_per_arm_per_minute: int | None = None
    accept_unchosen_feedback: bool = False
    propensity_draws: int = 32
    decision_log: bool = True

    def __post_init__(self) -> None:
        try:
            check_name(self.name, "learner name")
            check_prior(self.prior)
            for arm, prior in self.arm_priors.items():
                check_name(arm, "arm id")
                check_prior(prior)
        except QortexError as exc:
            raise ConfigError(exc.message) from None
        if self.half_life_s is not None and not (
            math.isfinite(self.half_life_s) and self.half_life_s > 0
        ):
            raise ConfigError("half_life_s must be a positive number of seconds or None")
        if not (math.isfinite(self.context_backoff) and self.context_backoff >= 0):
            raise ConfigError("context_backoff must be a number >= 0")
        if not (math.isfinite(self.selection_ttl_s) and self.selection_ttl_s >= 0):
            raise ConfigError("selection_ttl_s must be a number of seconds >= 0")
        if self.max_arms < 1 or self.max_candidates < 1:
            raise ConfigError("max_arms and max_candidates must be at least 1")
        if isinstance(self.max_contexts, bool) or not isinstance(self.max_contexts, int) or (
            self.max_contexts < 1
        ):
            raise ConfigError("max_contexts must be an integer of at least 1")
        for what in _UNCAPPED_AT_ZERO:
            cap = getattr(self, what)
            if cap == 0 and not isinstance(cap, bool):
                object.__setattr__(self, what, None)  # frozen; 0 is how TOML says "no cap"
            elif cap is not None and (isinstance(cap, bool) or not isinstance(cap, int)
                                    or cap < 1):
                raise ConfigError(f"{what} must be an integer of at least 1 (0 or None: no cap)")
        if isinstance(self.propensity_draws, bool) or not isinstance(
                self.propensity_draws, int) or not 0 <= self.propensity_draws <= 4096:
            raise ConfigError("propensity_draws must be an integer from 0 to 4096")
        if not isinstance(self.decision_log, bool):
            raise ConfigError("decision_log must be true or false")
        if not isinstance(self.accept_unchosen_feedback, bool):
            raise ConfigError("accept_unchosen_feedback must be true or false")
        if not isinstance(self.strategy_params, Mapping):
            raise ConfigError("strategy_params must be a table of parameter values")
        if self.strategy_params and not isinstance(self.strategy, str):
            raise ConfigError("strategy_params go with a strategy name, not an instance")
        self.build_strategy()  # a bad name or parameter fails here, not at the first select
        change_detector(self.change_detection)

    def build_strategy(self) -> LearningStrategy | PolicyChooser:
        """The strategy object: ``ThompsonSampling`` for ``"thompson"`` without parameters
        (the same draws as every earlier release for a seed), else the policy layer's
        strategy over the learner's evidence, or the ``LearningStrategy`` given.

        Raises:
            ConfigError: an unknown strategy or parameter (the message lists the valid
                ones), or a strategy a learner cannot run yet.
        """
        s = self.strategy
        if not isinstance(s, str):
            return s
        if s == "thompson" and not self.strategy_params:
            return ThompsonSampling()
        return PolicyChooser(s, self.strategy_params)

    def build_change_detector(self) -> PageHinkley | None:
        """The change detector ``change_detection`` names (None: off)."""
        return change_detector(self.change_detection)

    def strategy_name(self) -> str:
        s = self.strategy
        return s if isinstance(s, str) else str(getattr(s, "name", type(s).__name__))

    def strategy_parameters(self) -> dict[str, Any]:
        """The strategy's parameters with their defaults filled in (empty for an instance
        given as ``strategy``)."""
        built = self.build_strategy()
        return dict(built.params) if isinstance(built, PolicyChooser) else {}

    def build_reward_model(self) -> RewardModel:
        r = self.reward_model
        return reward_model_by_name(r) if isinstance(r, str) else r

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> LearnerConfig:
        """Build from TOML-style options (``prior = [8, 2]``, ``arm_priors = {a = [8, 2]}``)."""
        unknown = set(options) - _OPTION_NAMES
        if unknown:
            raise ConfigError(
                f"unknown learner option(s) for {preview(name)}: {', '.join(sorted(unknown))}"
            )
        values = dict(options)
        if "prior" in values:
            values["prior"] = tuple(values["prior"])
        for table in ("strategy_params", "change_detection"):
            if table in values and isinstance(values[table], Mapping):
                values[table] = dict(values[table])
        if "arm_priors" in values:
            if not isinstance(values["arm_priors"], Mapping):
                raise ConfigError("arm_priors must be a table of [alpha, beta] pairs")
            values["arm_priors"] = {str(k): tuple(v) for k, v in values["arm_priors"].items()}
        try:
            return cls(name=name, **values)
        except TypeError as exc:
            raise ConfigError(f"bad learner option for {preview(name)}: {exc}") from None

    def policy_version(self) -> str:
        """The strategy version: ``<strategy>.<8 hex digits>``, the digits a hash of
        everything that shapes a decision (strategy, parameters, priors, half-life, context
        back-off, change detection). Decisions and feedback events carry it, so an
        evaluation can tell apart what different configurations chose."""
        shaping = json.dumps([self.describe(), sorted(
            (arm, list(prior)) for arm, prior in self.arm_priors.items())])
        digest = hashlib.sha256(shaping.encode("utf-8")).hexdigest()[:8]
        return f"{self.strategy_name()}.{digest}"

    def describe(self) -> str:
        """The config as stored with the learner (JSON)."""
        return json.dumps({
            "strategy": self.strategy_name(),
            **({"strategy_params": self.strategy_parameters()} if self.strategy_params else {}),
            **({"change_detection": detector.params}
               if (detector := self.build_change_detector()) else {}),
            "reward_model": self.build_reward_model().name,
            "prior": list(self.prior),
            "half_life_s": self.half_life_s,
            "context_backoff": self.context_backoff,
        }, sort_keys=True)
