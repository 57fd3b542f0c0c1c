"""A piecewise-stationary problem through the real learner: does change detection pay?

K = 10 Bernoulli arms, one best at 0.8 and the others at 0.6, 0.55, ..., 0.2 (a gap of 0.2
to the runner-up); at two change points (1/3 and 2/3 of T = 20,000 steps) the means are
permuted so that another arm is best each time (the old best drops to the bottom half).
Each seed runs the same problem three times through ``Learner.select`` /
``Learner.observe`` (memory store, one seeded generator per learner): stationary
``thompson``, ``thompson`` with ``change_detection=True`` (Page-Hinkley, the defaults:
the alarming arm shrinks) and with ``all_arms = 1`` (every arm shrinks on an alarm).
Reported per configuration, median over seeds:

- regret after the first change (sum of best mean minus chosen mean over those steps);
- recovery: steps after each change until the new best arm holds more than half of a
  200-step window (issue 12's target: within 500 steps of each change, and at most half
  the stationary regret).

The ``detector`` part measures the test alone, with its defaults: false alarms on 150,000
stationary Bernoulli rewards (p = 0.1, 0.5, 0.8; 10 seeds of 5,000 each) and the delay, in
rewards, until a moved level alarms (0.8 -> 0.2, 0.2 -> 0.8, 0.9 -> 0.5, 0.8 -> 0.5 after
1,000 rewards; 10 seeds each).

Usage: ``python bench/bench_nonstationary.py [learner | detector] [--seeds 20] [--steps 20000]
[--quick | --smoke]`` (``--quick``: 5 seeds). A missed target is printed as ``MISS``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import numpy as np

from qortex_mcp.learning import ArmOutcome, Learner, LearnerConfig, MemoryLearningStore
from qortex_mcp.learning.changes import ArmTests, PageHinkley

K = 10
WINDOW = 200


def phases(seed: int) -> list[np.ndarray]:
    """Three vectors of means; the best arm differs from one phase to the next and the
    previous best falls into the bottom half."""
    rng = np.random.default_rng(seed)
    base = np.array([0.8, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2])
    out = [rng.permutation(base)]
    while len(out) < 3:
        nxt = rng.permutation(base)
        prev_best = int(out[-1].argmax())
        if int(nxt.argmax()) != prev_best and nxt[prev_best] < np.median(base):
            out.append(nxt)
    return out


CONFIGS: dict[str, dict[str, int] | None] = {
    "thompson (stationary)": None,
    "thompson + change_detection": {},
    "... with all_arms = 1": {"all_arms": 1},
}


async def run(seed: int, steps: int, detect: dict[str, int] | None) -> tuple[float, list[int]]:
    means = phases(seed)
    cuts = [steps // 3, 2 * steps // 3]
    arms = [f"arm{i}" for i in range(K)]
    config = LearnerConfig(name="ns", seed=seed, change_detection=detect)
    rng = np.random.default_rng(seed + 10_000)
    regret = 0.0
    picks: list[int] = []
    async with MemoryLearningStore() as store:
        learner = await Learner.create(config, store)
        for t in range(steps):
            phase = means[(t >= cuts[0]) + (t >= cuts[1])]
            sel = await learner.select(arms)
            i = int(sel.selected[0].id[3:])
            await learner.observe(ArmOutcome(arms[i], reward=float(rng.random() < phase[i]),
                                             selection_id=sel.selection_id))
            picks.append(i)
            if t >= cuts[0]:
                regret += float(phase.max() - phase[i])
        await learner.close()
    recoveries = []
    for n, cut in enumerate(cuts):
        best = int(means[n + 1].argmax())
        end = cuts[n + 1] if n + 1 < len(cuts) else steps
        hits = np.array(picks[cut:end]) == best
        window = np.convolve(hits, np.ones(WINDOW, dtype=int), mode="valid")
        over = np.flatnonzero(window > WINDOW // 2)
        recoveries.append(int(over[0]) + WINDOW if over.size else -1)
    return regret, recoveries


def bernoulli(p: float, n: int, seed: int) -> list[float]:
    return [float(x) for x in np.random.default_rng(seed).random(n) < p]


def detector(seeds: int, n: int) -> None:
    false_alarms = 0
    for p in (0.1, 0.5, 0.8):
        for seed in range(seeds):
            tests = ArmTests(PageHinkley())
            false_alarms += sum(tests.observe("a", r) for r in bernoulli(p, n, seed))
    delays = []
    for before, after in ((0.8, 0.2), (0.2, 0.8), (0.9, 0.5), (0.8, 0.5)):
        for seed in range(seeds):
            tests = ArmTests(PageHinkley())
            false_alarms += sum(tests.observe("a", r) for r in bernoulli(before, 1000, seed))
            moved = bernoulli(after, 1000, seed + 100)
            delays.append(next((i + 1 for i, r in enumerate(moved) if tests.observe("a", r)),
                               -1))
    print(f"detector (defaults {PageHinkley()}): false alarms {false_alarms} in "
          f"{3 * seeds * n + 4 * seeds * 1000:,} stationary rewards; delay after a moved level "
          f"p50 {statistics.median(delays):.0f}, max {max(delays)} rewards, missed "
          f"{delays.count(-1)}/{len(delays)}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("parts", nargs="*", default=["learner", "detector"])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    seeds, steps = (2, 1500) if args.smoke else (5 if args.quick else args.seeds, args.steps)
    if "detector" in args.parts:
        detector(2 if args.smoke else 10, 500 if args.smoke else 5000)
    if "learner" not in args.parts:
        return
    started = time.perf_counter()
    print(f"piecewise-stationary, K={K}, T={steps}, two changes, {seeds} seeds")
    stationary = None
    for label, detect in CONFIGS.items():
        runs = [await run(seed, steps, detect) for seed in range(seeds)]
        regret = statistics.median(r for r, _ in runs)
        rec = [x for _, rs in runs for x in rs]
        never = sum(x < 0 for x in rec)
        found = [x for x in rec if x >= 0] or [-1]
        line = (f"{label:30s} regret after change p50 {regret:8.1f}   recovery p50 "
                f"{statistics.median(found):6.0f}  max {max(found):6d}  never {never}/{len(rec)}")
        if stationary is None:
            stationary = regret
            print(line)
            continue
        ratio = regret / stationary
        met = ratio <= 0.5 and not never and max(found) <= 500
        print(f"{line}   ratio {ratio:.2f}: {'met' if met else 'MISS'}")
    print(f"(targets: ratio <= 0.5 and every recovery <= 500 steps; "
          f"{time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    asyncio.run(main())
