"""Injected time: what a learner reads as "now", so tests move time instead of sleeping.

A learner takes two clocks: ``now`` (wall seconds since the epoch: feedback and selection
times, half-life decay, decay and reset events; default ``time.time``) and ``clock``
(monotonic seconds for the feedback rate caps; default ``time.monotonic``). ``FakeClock``
serves as either in tests::

    clock = FakeClock()
    learner = await Learner.create(config, store, now=clock)
    clock.advance(3600)      # an hour later, without waiting for it
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["FakeClock", "WallClock"]

WallClock = Callable[[], float]
"""Seconds since the epoch, like ``time.time``."""


class FakeClock:
    """A clock that stands still until told to move."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01 00:00 UTC
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (never backward: a wall clock stepped back is a
        different test)."""
        if seconds < 0:
            raise ValueError("a FakeClock only moves forward")
        self.now += seconds
