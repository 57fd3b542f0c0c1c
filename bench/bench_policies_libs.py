"""Optional: the policies next to MABWiser and River where those libraries have the algorithm.

    pip install mabwiser==2.7.4 river==0.26.1      # in a separate environment: they are
    python bench/bench_policies_libs.py [--quick | --smoke]   # not dependencies of anything

Neither library is a dependency of the package or of the tests; without them this script
says so and exits 0 (so the bench smoke test still passes). Parts:

* ``regret``: K10 (bench_policies.py's problem and reward random numbers), T = 20,000,
  5 seeds: thompson / MABWiser ThompsonSampling / River ThompsonSampling(Beta);
  ucb1 / MABWiser UCB1(alpha=1, after one round-robin pass: it scores an untried arm 0) /
  River UCB(delta=1); eps_greedy / both EpsilonGreedy(0.1); softmax / MABWiser Softmax(tau=0.1);
  exp3 (EXP3-IX) / River Exp3(gamma=0.1) (plain EXP3: a neighbour, not the same algorithm).
* ``select``: one choice, p50 µs, at K = 10, 100 and 1,000 (warmed alike).
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import common
import numpy as np
from bench_policies import make_problem
from common import table

from qortex_mcp.learning.policies import make_policy

PARTS = ("all", "regret", "select")
PAIRS = {  # our strategy and its parameters -> the library policies
    "thompson": ({}, ["MABWiser TS", "River TS"]),
    "ucb1": ({}, ["MABWiser UCB1", "River UCB"]),
    "eps_greedy": ({"epsilon": 0.1}, ["MABWiser eps 0.1", "River eps 0.1"]),
    "softmax": ({"temperature": 0.1}, ["MABWiser softmax 0.1"]),
    "exp3": ({}, ["River Exp3 0.1"]),
}


class Lib:
    """select() -> arm, update(arm, reward), over K arms, through each library's public API."""

    def __init__(self, label: str, K: int, seed: int) -> None:
        self.arms = list(range(K))
        self.round_robin = 0
        if label.startswith("MABWiser"):
            from mabwiser.mab import MAB, LearningPolicy
            lp = {"MABWiser TS": LearningPolicy.ThompsonSampling(),
                  "MABWiser UCB1": LearningPolicy.UCB1(alpha=1.0),
                  "MABWiser eps 0.1": LearningPolicy.EpsilonGreedy(epsilon=0.1),
                  "MABWiser softmax 0.1": LearningPolicy.Softmax(tau=0.1)}[label]
            self.m = MAB(self.arms, lp, seed=seed)
            self.m.fit([], [])
            self.round_robin = K if label == "MABWiser UCB1" else 0
            self.select_fn: Callable[[], int] = self.m.predict
            self.update = lambda a, r: self.m.partial_fit([a], [r])
        else:
            from river import bandit, proba
            p = {"River TS": lambda: bandit.ThompsonSampling(reward_obj=proba.Beta(), seed=seed),
                 "River UCB": lambda: bandit.UCB(delta=1.0, seed=seed),
                 "River eps 0.1": lambda: bandit.EpsilonGreedy(epsilon=0.1, seed=seed),
                 "River Exp3 0.1": lambda: bandit.Exp3(gamma=0.1, seed=seed)}[label]()
            self.select_fn = lambda: p.pull(self.arms)
            self.update = p.update
        self.t = 0

    def select(self) -> int:
        self.t += 1
        return self.t - 1 if self.t <= self.round_robin else int(self.select_fn())


def run_lib(label: str, mu: np.ndarray, U: np.ndarray, seed: int) -> float:
    lib, gaps = Lib(label, mu.size, seed), mu.max() - mu
    reg = 0.0
    for t in range(U.shape[0]):
        a = lib.select()
        lib.update(a, 1.0 if U[t, a] < mu[a] else 0.0)
        reg += gaps[a]
    return reg


def run_ours(name: str, params: dict[str, Any], mu: np.ndarray, U: np.ndarray,
             seed: int) -> float:
    policy, rng, gaps = make_policy(name, params), np.random.default_rng(seed), mu.max() - mu
    stats, reg = policy.zeros(mu.size), 0.0
    for t in range(U.shape[0]):
        a = int(policy.select(stats, 1, rng, t=t)[0])
        r = 1.0 if U[t, a] < mu[a] else 0.0
        kw: dict[str, Any] = {}
        if name == "exp3":
            kw = {"propensity": float(policy.choice_probabilities(stats, rng, t=t)[a]),
                  "t": t, "n_arms": mu.size}
        stats[a] += policy.increment(stats[a], r, **kw)
        reg += gaps[a]
    return reg


def part_regret(T: int, seeds: int) -> list[list[str]]:
    rows = []
    for name, (params, labels) in PAIRS.items():
        for label in [name, *labels]:
            regs, t0 = [], time.perf_counter()
            for s in range(seeds):
                mu = make_problem("K10", s)
                U = np.random.default_rng(20_000 + s).random((T, mu.size))
                regs.append(run_ours(name, params, mu, U, s) if label == name
                            else run_lib(label, mu, U, s))
            rows.append([label, f"{statistics.median(regs):.1f}", f"{np.mean(regs):.1f}",
                         f"{(time.perf_counter() - t0) / seeds:.2f}"])
            print(f"[libs regret] {label}: {rows[-1][1]}", flush=True)
    return rows


def p50_us(fn: Callable[[], object], budget_s: float) -> float:
    samples, end = [], time.perf_counter() + budget_s
    while time.perf_counter() < end or len(samples) < 20:
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1000.0


def part_select(ks: tuple[int, ...], budget_s: float) -> list[list[str]]:
    rows = []
    for name, (params, labels) in PAIRS.items():
        for K in ks:
            g = np.random.default_rng(5)
            arms = np.concatenate([np.arange(K), g.integers(0, K, min(2000, 5 * K))])
            rewards = (g.random(arms.size) < 0.4).astype(float)
            policy, stats = make_policy(name, params), make_policy(name).zeros(K)
            kw: dict[str, Any] = {}
            if name == "exp3":
                kw = {"propensity": 1.0 / K, "t": 1, "n_arms": K}
            for a, r in zip(arms, rewards, strict=True):
                stats[a] += policy.increment(stats[a], float(r), **kw)
            t = int(arms.size)
            ours = p50_us(lambda p=policy, s=stats, t=t, g=g: p.select(s, 1, g, t=t), budget_s)
            row = [f"{name} K={K}", f"{ours:.1f}"]
            for label in labels:
                lib = Lib(label, K, 1)
                lib.round_robin = 0
                if label.startswith("MABWiser"):
                    lib.m.partial_fit(arms.tolist(), rewards.tolist())
                else:
                    for a, r in zip(arms, rewards, strict=True):
                        if "Exp3" in label:  # its update divides by the last pull's probability
                            lib.select_fn()
                        lib.update(int(a), float(r))
                row.append(f"{label}: {p50_us(lib.select, budget_s):.1f}")
            rows.append(row)
            print(f"[libs select] {row}", flush=True)
    return rows


async def main() -> int:
    ap = common.base_parser(__doc__ or "", PARTS)
    args = ap.parse_args()
    missing = [m for m in ("mabwiser", "river") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"bench_policies_libs: skipped, not installed: {', '.join(missing)} "
              "(pip install mabwiser==2.7.4 river==0.26.1 in a separate environment)")
        return 0
    parts = common.chosen_parts(args, PARTS)
    T, seeds = (300, 1) if args.smoke else (5000, 2) if args.quick else (20_000, 5)
    ks = (10, 100) if args.smoke else (10, 100, 1000)
    budget = 0.02 if args.smoke else 0.3 if args.quick else 2.0
    notes = common.machine_notes()
    if "regret" in parts:
        rows = part_regret(T, seeds)
        print(f"\n### K10 regret, T = {T:,}, {seeds} seeds: ours next to the libraries\n")
        print(table(["policy", "median", "mean", "s/run"], rows))
    if "select" in parts:
        rows = part_select(ks, budget)
        print("\n### select p50 µs (one choice), ours first\n")
        print("\n".join("| " + " | ".join(r) + " |" for r in rows))
    common.print_notes(notes, sys.argv)
    return 0


if __name__ == "__main__":
    common.run(main)
