"""Shared by the PostgreSQL tests: the size knob, a bounded wait for outside state, and
the audit of a store after a load test."""

from __future__ import annotations

import inspect
import math
import os
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping

import anyio

from qortex_mcp.learning import LearningStore
from qortex_mcp.learning.replay import replay_events


def fault_scale() -> float:
    """``QORTEX_FAULT_SCALE`` multiplies each load test's CI size (default 1, about 20 s
    each here); e.g. 0.2 for a quick local run, 5 for the full HTTP fleet test."""
    return float(os.environ.get("QORTEX_FAULT_SCALE", "1"))


async def eventually(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]], within_s: float = 10.0,
    every_s: float = 0.005,
) -> None:
    """Return once ``check()`` is true; fail after ``within_s``. For state that lives in
    another process or the database, where there is no event to wait on."""
    with anyio.fail_after(within_s):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await anyio.sleep(every_s)


async def audit(store: LearningStore, learner: str,
                sent: Mapping[tuple[str, str], float]) -> dict[str, tuple[float, float, int]]:
    """The store holds exactly the feedbacks ``sent`` ((dedup key, arm) -> reward): none
    lost, none counted twice, none with another reward; its evidence is the replay of its
    events and each arm's global evidence sums ``sent``. Returns each arm's posterior
    (alpha, beta, pulls) under the default Beta(1, 1) prior, to compare with instances."""
    events = [e for e in await store.events(learner, 0, 10 * len(sent) + 10)
              if e.kind == "feedback"]
    evidence = await store.evidence(learner)
    assert len(events) == len(sent)
    assert {(e.key, e.arm): e.reward for e in events} == dict(sent)
    report = replay_events(learner, events, evidence, None)
    assert report.ok, report.mismatches
    want_s: dict[str, float] = defaultdict(float)
    want_n: Counter[str] = Counter()
    for (_, arm), reward in sent.items():
        want_s[arm] += reward
        want_n[arm] += 1
    glob = {r.arm: r for r in evidence if r.ctx == ""}
    assert {a: r.n for a, r in glob.items()} == dict(want_n)
    for arm, s in want_s.items():
        assert math.isclose(glob[arm].s, s, abs_tol=1e-9), (arm, glob[arm].s, s)
    return {a: (1.0 + r.s, 1.0 + r.f, r.n) for a, r in glob.items()}
