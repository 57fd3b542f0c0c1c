"""Resource limits: a memory budget shared by a registry's learners, and feedback rate caps.

**Memory budget.** A learner keeps every arm's statistics (and every (context, arm) row
that received feedback) in memory, so ``select`` never waits on the store. ``MemoryBudget``
counts an estimate of that state across the learners that share it: about
``ARM_BYTES`` per arm plus its id, ``CONTEXT_ROW_BYTES`` per context row,
``CONTEXT_BYTES`` per distinct context plus its key, ``CANDIDATE_BYTES`` per cached
candidate id and ``LEARNER_BYTES`` per open learner (measured with ``tracemalloc`` on
CPython 3.11; the estimate is of learner state, not of the process RSS). A call that
would add state past the limit is refused with ``LIMIT_EXCEEDED``; state loaded from
the store or written by another process is always taken in (it is already there), and
a ``LearnerRegistry`` closes idle learners first when the budget runs short.

**Rate caps.** ``FeedbackRateLimiter`` is two token buckets per learner: at most
``per_minute`` feedback rows in any minute for the whole learner, and at most
``per_arm_per_minute`` for any one arm (a burst of that size after a quiet minute, then
the sustained rate). A refusal is ``RATE_LIMITED`` (retryable) with the seconds after
which the same call is accepted. Time comes from an injected clock (``time.monotonic``
by default), so tests advance it instead of sleeping.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Collection
from typing import Final

from qortex_mcp.errors import LimitExceeded, RateLimited

__all__ = [
    "ARM_BYTES",
    "CANDIDATE_BYTES",
    "CONTEXT_BYTES",
    "CONTEXT_ROW_BYTES",
    "LEARNER_BYTES",
    "Clock",
    "FeedbackRateLimiter",
    "MemoryBudget",
]

Clock = Callable[[], float]
"""Seconds on a monotonic scale (``time.monotonic`` by default)."""

# Measured per unit, rounded up: 13 numpy slots (with spare capacity) + the id's dict
# entry and list slot ~ 210 B before the id string itself.
ARM_BYTES: Final = 256
CONTEXT_ROW_BYTES: Final = 192
CONTEXT_BYTES: Final = 256
CANDIDATE_BYTES: Final = 80
LEARNER_BYTES: Final = 16 * 1024
_MIB: Final = 1024 * 1024


def _mib(n: float) -> str:
    return f"{n / _MIB:.1f} MiB"


class MemoryBudget:
    """An estimate of the learner state held in memory, against a limit in bytes.

    Args:
        limit_bytes: the most state the learners sharing this budget may hold; None
            counts without limiting.
    """

    def __init__(self, limit_bytes: int | None = None) -> None:
        if limit_bytes is not None and (isinstance(limit_bytes, bool) or limit_bytes < 1):
            raise ValueError("limit_bytes must be a positive number of bytes or None")
        self.limit_bytes = limit_bytes
        self.used_bytes = 0

    def charge(self, nbytes: int) -> None:
        """Count state that exists now (loaded, or admitted by ``require``)."""
        self.used_bytes += nbytes

    def release(self, nbytes: int) -> None:
        self.used_bytes = max(0, self.used_bytes - nbytes)

    def require(self, nbytes: int, what: str) -> None:
        """Refuse ``what`` if its ``nbytes`` would pass the limit.

        Raises:
            LimitExceeded: the budget cannot take it.
        """
        limit = self.limit_bytes
        if limit is not None and nbytes > 0 and self.used_bytes + nbytes > limit:
            raise LimitExceeded(
                f"{what} needs about {_mib(nbytes)} more learner memory; "
                f"{_mib(self.used_bytes)} of the {_mib(limit)} budget is in use "
                "(raise QORTEX_MEMORY_BUDGET_MB, or use fewer arms, contexts or learners)"
            )

    def fits(self, nbytes: int) -> bool:
        return self.limit_bytes is None or self.used_bytes + nbytes <= self.limit_bytes

    def over(self, share: float = 1.0) -> bool:
        """Whether more than ``share`` of the limit is in use."""
        return self.limit_bytes is not None and self.used_bytes > self.limit_bytes * share


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class FeedbackRateLimiter:
    """Per-learner caps on feedback rows per minute, overall and per arm.

    Args:
        learner: named in refusals.
        per_minute: the most feedback rows per minute for the learner; None: no cap.
        per_arm_per_minute: the most per minute for one arm; None: no cap.
        clock: monotonic seconds (inject a fake one in tests).
    """

    _SWEEP_AT: Final = 4096

    def __init__(
        self,
        learner: str,
        per_minute: int | None,
        per_arm_per_minute: int | None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.learner = learner
        self.per_minute = per_minute
        self.per_arm_per_minute = per_arm_per_minute
        self._clock = clock
        now = clock()
        self._all = _Bucket(float(per_minute or 0), now)
        self._arms: dict[str, _Bucket] = {}
        # Rows admitted per second over the last minute (a ring), for ``recent``.
        self._counts = [0] * 60
        self._seconds = [-1] * 60

    @property
    def enabled(self) -> bool:
        return self.per_minute is not None or self.per_arm_per_minute is not None

    @staticmethod
    def _fill(bucket: _Bucket, cap: int, now: float) -> float:
        """The bucket's tokens at ``now`` (refilled at ``cap`` per minute)."""
        elapsed = max(0.0, now - bucket.at)
        bucket.tokens = min(float(cap), bucket.tokens + elapsed * cap / 60.0)
        bucket.at = max(bucket.at, now)
        return bucket.tokens

    def take(self, arms: Collection[str]) -> None:
        """Admit one feedback row per arm in ``arms`` (repeats count), or refuse all.

        Raises:
            RateLimited: a cap is reached now; ``retry_after_s`` says when it is not.
            LimitExceeded: the call alone is larger than a cap (it can never pass; split it).
        """
        if not self.enabled:
            self._count(len(arms), self._clock())
            return
        counts = Counter(arms)
        total = sum(counts.values())
        now = self._clock()
        wait = 0.0
        reason = ""
        cap = self.per_minute
        if cap is not None:
            if total > cap:
                raise LimitExceeded(
                    f"one call of {total} feedbacks is more than learner {self.learner!r} "
                    f"takes per minute ({cap}); send fewer at a time")
            have = self._fill(self._all, cap, now)
            if have < total:
                wait = (total - have) * 60.0 / cap
                reason = f"learner {self.learner!r} takes at most {cap} feedbacks per minute"
        arm_cap = self.per_arm_per_minute
        if arm_cap is not None:
            for arm, n in counts.items():
                if n > arm_cap:
                    raise LimitExceeded(
                        f"one call of {n} feedbacks for one arm is more than learner "
                        f"{self.learner!r} takes per arm per minute ({arm_cap})")
                bucket = self._arms.get(arm)
                have = float(arm_cap) if bucket is None else self._fill(bucket, arm_cap, now)
                if have < n and (need := (n - have) * 60.0 / arm_cap) > wait:
                    wait = need
                    reason = (f"learner {self.learner!r} takes at most {arm_cap} feedbacks "
                              "per arm per minute")
        if wait > 0.0:
            retry = math.ceil(wait * 10.0) / 10.0  # never an instant too early
            raise RateLimited(f"{reason}; retry in {retry:g} s", retry_after_s=retry)
        self._count(total, now)
        if cap is not None:
            self._all.tokens -= total
        if arm_cap is not None:
            if len(self._arms) >= self._SWEEP_AT:
                self._sweep(arm_cap, now)
            for arm, n in counts.items():
                bucket = self._arms.get(arm)
                if bucket is None:
                    bucket = self._arms[arm] = _Bucket(float(arm_cap), now)
                bucket.tokens -= n

    def _sweep(self, cap: int, now: float) -> None:
        """Forget arms whose bucket is full again (they behave as never seen)."""
        for arm in [a for a, b in self._arms.items() if self._fill(b, cap, now) >= cap]:
            del self._arms[arm]

    def _count(self, n: int, now: float) -> None:
        second = int(now)
        i = second % 60
        if self._seconds[i] != second:
            self._seconds[i], self._counts[i] = second, 0
        self._counts[i] += n

    def recent(self) -> int:
        """Feedback rows admitted in the last 60 seconds (to the second)."""
        second = int(self._clock())
        return sum(c for c, at in zip(self._counts, self._seconds, strict=True)
                   if 0 <= second - at < 60)
