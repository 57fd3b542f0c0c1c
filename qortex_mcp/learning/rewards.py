"""Reward models: how an outcome becomes a reward in [0, 1].

``BinaryReward`` (accepted = 1, else 0) and ``TernaryReward`` (partial = 0.5) map the outcome
words; ``ToolOutcomeReward`` scores a ``ToolExecution`` (success, latency against a target,
optional 1-5 rating). Any object with ``name`` and ``__call__(outcome) -> float`` is a
``RewardModel``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Final, Protocol, runtime_checkable

from qortex_mcp.errors import ConfigError, InvalidOutcome, InvalidReward, preview
from qortex_mcp.learning.types import Outcome, ToolExecution
from qortex_mcp.learning.validation import NUMBER_TYPES

__all__ = [
    "NOT_AN_OUTCOME",
    "OUTCOME_WORDS",
    "UNKNOWN_WORD",
    "BinaryReward",
    "RewardModel",
    "TernaryReward",
    "ToolOutcomeReward",
    "outcome_rewards",
    "outcome_value",
    "reward_model_by_name",
]

OUTCOME_WORDS: Final = ("accepted", "rejected", "partial")

UNKNOWN_WORD: Final = (f"unknown outcome word; use one of {', '.join(OUTCOME_WORDS)} "
                       "(lowercase) or a number in [0, 1]")
NOT_AN_OUTCOME: Final = "must be 'accepted', 'rejected', 'partial' or a number in [0, 1]"


def outcome_value(value: object) -> str | float:
    """An outcome as every feedback path reads it (the tools' schema, the REST API, the
    streams): a word of ``OUTCOME_WORDS`` exactly, or a number (not a boolean) as a float;
    the reward model then checks the range. Words are matched exactly ("Accepted" is
    refused with the valid words), and a number written as text ("0.5") is refused like
    any other non-number: one rule, so one input gets one answer on every path.

    Raises:
        InvalidOutcome: a string that is not an outcome word (``UNKNOWN_WORD``).
        InvalidReward: anything else that is not a number (``NOT_AN_OUTCOME``).
    """
    if isinstance(value, str):
        if value in OUTCOME_WORDS:
            return value
        if not _numeric(value):
            raise InvalidOutcome(UNKNOWN_WORD)
    elif isinstance(value, NUMBER_TYPES) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # a 400-digit integer is refused below
            return float(value)
    raise InvalidReward(NOT_AN_OUTCOME)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@runtime_checkable
class RewardModel(Protocol):
    """Maps an outcome to a reward in [0, 1]; raises ``InvalidOutcome`` for what it cannot."""

    name: str

    def __call__(self, outcome: Outcome) -> float: ...


def _word(outcome: Outcome, table: dict[str, float], model: str) -> float:
    if isinstance(outcome, str):
        try:
            return table[outcome]
        except KeyError:
            pass
    raise InvalidOutcome(
        f"{model} does not know outcome {preview(outcome)}; use one of {', '.join(table)}"
    )


class BinaryReward:
    """accepted = 1; rejected and partial = 0."""

    name = "binary"
    _table: Final = {"accepted": 1.0, "rejected": 0.0, "partial": 0.0}

    def __call__(self, outcome: Outcome) -> float:
        return _word(outcome, self._table, self.name)


class TernaryReward:
    """accepted = 1, partial = 0.5, rejected = 0."""

    name = "ternary"
    _table: Final = {"accepted": 1.0, "rejected": 0.0, "partial": 0.5}

    def __call__(self, outcome: Outcome) -> float:
        return _word(outcome, self._table, self.name)


class ToolOutcomeReward:
    """Scores a tool execution.

    A failed execution is 0. A successful one is
    ``(w_ok + w_latency * L + w_rating * R) / (w_ok + w_latency + w_rating)`` where
    ``L = min(1, target_ms / latency_ms)`` and ``R = (rating - 1) / 4``; a missing latency or
    rating drops its term (and its weight). Outcome words are scored as ``TernaryReward``.
    """

    name = "tool"

    def __init__(
        self,
        latency_target_ms: float = 1000.0,
        success_weight: float = 0.5,
        latency_weight: float = 0.25,
        rating_weight: float = 0.25,
    ) -> None:
        for label, w in (("latency_target_ms", latency_target_ms), ("success_weight",
                         success_weight), ("latency_weight", latency_weight),
                         ("rating_weight", rating_weight)):
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"{label} must be a finite number >= 0")
        if latency_target_ms <= 0 or success_weight <= 0:
            raise ValueError("latency_target_ms and success_weight must be > 0")
        self.latency_target_ms = latency_target_ms
        self.weights = (success_weight, latency_weight, rating_weight)

    def __call__(self, outcome: Outcome) -> float:
        if isinstance(outcome, str):
            return _word(outcome, TernaryReward._table, self.name)
        if not isinstance(outcome, ToolExecution) or not isinstance(outcome.success, bool):
            raise InvalidOutcome(f"tool reward needs a ToolExecution, got {preview(outcome)}")
        if not outcome.success:
            return 0.0
        w_ok, w_lat, w_rat = self.weights
        total, score = w_ok, w_ok
        latency = outcome.latency_ms
        if latency is not None:
            if isinstance(latency, bool) or not math.isfinite(latency) or latency < 0:
                raise InvalidOutcome(f"latency_ms must be a finite number >= 0: {preview(latency)}")
            total += w_lat
            score += w_lat * (1.0 if latency <= 0 else min(1.0, self.latency_target_ms / latency))
        rating = outcome.rating
        if rating is not None:
            if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
                raise InvalidOutcome(f"rating must be an integer from 1 to 5: {preview(rating)}")
            total += w_rat
            score += w_rat * (rating - 1) / 4.0
        return min(1.0, score / total)


_BY_NAME: Final[dict[str, type[BinaryReward] | type[TernaryReward] | type[ToolOutcomeReward]]] = {
    "binary": BinaryReward,
    "ternary": TernaryReward,
    "tool": ToolOutcomeReward,
}


def reward_model_by_name(name: str) -> RewardModel:
    """``binary``, ``ternary`` or ``tool`` (with default parameters)."""
    try:
        return _BY_NAME[name]()
    except KeyError:
        raise ConfigError(
            f"unknown reward model {preview(name)}; use one of {', '.join(_BY_NAME)}"
        ) from None


def outcome_rewards(model: RewardModel) -> dict[str, float]:
    """The reward each outcome word gets from ``model`` (words it refuses are left out):
    what agents are told each word counts for."""
    out = {}
    for word in OUTCOME_WORDS:
        try:
            out[word] = float(model(word))
        except InvalidOutcome:
            continue
    return out
