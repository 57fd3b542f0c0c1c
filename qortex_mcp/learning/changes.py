"""Change detection: notice when an arm's reward level moves, and forget what it was.

Tools and models change under agents: a prompt that worked last month may stop working
after a model upgrade, and a stationary posterior with thousands of old observations takes
thousands of new ones to follow. ``LearnerConfig(change_detection=...)`` runs a two-sided
Page-Hinkley test on each arm's stream of rewards (the feedback this learner applies, in
any context). For an arm's ``n``-th reward ``x`` with running mean ``m``:

    up   += x - m - delta;   down += m - x - delta      (each kept >= its running minimum)
    alarm when  up - min(up) > threshold  or  down - min(down) > threshold,  n >= min_samples

``delta`` is the size of drift it tolerates, ``threshold`` (lambda) trades detection delay
for false alarms. On an alarm the arm's evidence, in every context, is multiplied by
``shrink`` (toward its prior, as ``decay_arm`` does; with ``all_arms = 1`` every arm's, a
global restart: the runner-up may have changed too, unseen because it is rarely played),
a ``decay`` event with reason
``change_detected`` goes into the event log (so ``replay`` and export see it), the
``change_detected`` log event is written on stderr, and the arm's test starts over.

The test's state is kept in memory per arm, O(1) per reward; it starts fresh when the
learner opens (a restart forgets how far the statistics had drifted, not the evidence).
Feedback applied by another process on a shared store is seen by that process's test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from qortex_mcp.errors import ConfigError, preview
from qortex_mcp.learning.policies.params import Param, ParamValue, check_params

__all__ = ["CHANGE_DETECTED", "METHODS", "PageHinkley", "change_detector"]

CHANGE_DETECTED: Final = "change_detected"
"""The reason recorded on the decay event an alarm writes."""

METHODS: Final = ("page_hinkley",)

_PARAMETERS: Final = (
    Param("delta", 0.05, "drift of the mean reward tolerated without an alarm", low=0.0),
    Param("threshold", 20.0, "alarm level of the cumulative deviation (Page-Hinkley's lambda)",
          low=0.0, low_open=True),
    Param("shrink", 0.01, "factor the arm's evidence is multiplied by on an alarm",
          low=0.0, high=1.0, high_open=True),
    Param("min_samples", 20, "rewards of an arm before its test may alarm", kind="int",
          low=1),
    Param("all_arms", 0, "1: an alarm shrinks every arm of the learner (a global restart), "
          "0: only the arm that alarmed", kind="int", low=0, high=1),
)


@dataclass(frozen=True, slots=True)
class PageHinkley:
    """Two-sided Page-Hinkley test per arm (the module docstring has the rule)."""

    delta: float = 0.05
    threshold: float = 20.0
    shrink: float = 0.01
    min_samples: int = 20
    all_arms: bool = False

    @property
    def params(self) -> dict[str, ParamValue]:
        return {"delta": self.delta, "threshold": self.threshold, "shrink": self.shrink,
                "min_samples": self.min_samples, "all_arms": int(self.all_arms)}


def change_detector(spec: object) -> PageHinkley | None:
    """The detector ``LearnerConfig.change_detection`` names: None or False (off), True or
    ``"page_hinkley"`` (defaults), or a table of parameters (``method`` optional).

    Raises:
        ConfigError: an unknown method or parameter, or a value out of range.
    """
    if spec is None or spec is False:
        return None
    if spec is True:
        return PageHinkley()
    if isinstance(spec, str):
        spec = {"method": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError("change_detection must be true, a method name or a table of "
                          f"parameters, got {preview(spec)}")
    params = dict(spec)
    method = params.pop("method", "page_hinkley")
    if method not in METHODS:
        raise ConfigError(f"unknown change_detection method {preview(method)}; use one of "
                          f"{', '.join(METHODS)}")
    checked = check_params(str(method), _PARAMETERS, params, owner="change detector")
    # No parameter here is nullable: every value is a number.
    number = {name: float(value) for name, value in checked.items() if value is not None}
    return PageHinkley(number["delta"], number["threshold"], number["shrink"],
                       int(number["min_samples"]), bool(number["all_arms"]))


class ArmTests:
    """The running Page-Hinkley statistics of every arm that got feedback."""

    def __init__(self, test: PageHinkley) -> None:
        self.test = test
        # arm -> [n, mean, up, min_up, down, min_down]
        self._state: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self._state)

    def clear(self) -> None:
        """Start every arm's test over (after a global restart)."""
        self._state.clear()

    def observe(self, arm: str, reward: float) -> bool:
        """Take one reward of ``arm``; True when its test alarms (it then starts over)."""
        st = self._state.get(arm)
        if st is None:
            st = self._state[arm] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        n = st[0] + 1.0
        mean = st[1] + (reward - st[1]) / n
        delta = self.test.delta
        up = st[2] + reward - mean - delta
        down = st[4] + mean - reward - delta
        min_up, min_down = min(st[3], up), min(st[5], down)
        st[:] = [n, mean, up, min_up, down, min_down]
        threshold = self.test.threshold
        if n >= self.test.min_samples and (up - min_up > threshold
                                           or down - min_down > threshold):
            del self._state[arm]
            return True
        return False
