"""Benchmarks of the policy layer (qortex_mcp.learning.policies), each strategy against its
own plain numpy reference in bench/policy_refs.py.

    python bench/bench_policies.py [all | regret adversarial select propensity] [--quick | --smoke]

Parts (``all`` runs every part; the figures in bench/RESULTS.md section 5 come from it):

* ``regret``: cumulative pseudo-regret at T = 20,000 on two Bernoulli problems (the ones of
  bench_core.py / the anchors, rebuilt here): K10, means 0.1 .. 0.9; K100, one arm at 0.5
  and 99 drawn from U(0.3, 0.48); the arms shuffled per seed. The strategy (its default
  parameters, driven through select / increment / fold as a learner would) and its
  reference see the same reward random numbers (``U[t, a] < mu[a]``). Targets: each
  strategy's median within 10% of its reference's; kl_ucb K10 median <= 90.
* ``adversarial``: an oblivious "lure and switch" sequence on 2 arms (fixed in advance):
  arm A pays Bernoulli(0.8) throughout; arm B pays 0.8 until 0.2 T, nothing until
  0.225 T, then always. B is the best fixed arm; a learner that trusts its early counts
  (Thompson) can stay locked on A. Regret against the best fixed arm; exp3 must beat
  thompson (median).
* ``select``: ``policy.select(stats, k=1)`` p50 vs the reference's ``select()`` at K = 10,
  100 and 1,000 (both fed the same rewards: one per arm, then min(2000, 5K) on random
  arms), interleaved blocks; target ratio <= 1.3.
* ``propensity``: what a first-slot propensity costs against one select, at K = 100.
* ``learner_regret``: regret of each strategy a learner runs, driven through the real
  ``Learner.select`` / ``Learner.observe`` (memory store) on the K10 problem with the same
  reward random numbers, against the strategy's own numpy reference (``policy_refs``):
  the wiring (Beta evidence mapped onto the strategy's statistics) must learn as the
  algorithm does. Target: median within 10% of the reference.
* ``learner``: ``Learner.select`` p50 (memory store, K arms each given feedback, then 5K
  random feedbacks) with each strategy a learner runs, against the same learner with
  ``thompson`` (its fast path), interleaved blocks: what the policy layer costs in a learner.
* ``decisions``: what the decision log costs. ``Learner.select`` p50 with the log (the
  default) against the same learner with ``decision_log=False``, interleaved blocks (the
  learner's flush runs between blocks, as in a server): the select path only keeps its
  arrays. And the work moved off that path: ``flush()`` after 200 selects with the log
  against without it (memory store), per decision: settling the propensities (32
  Monte-Carlo draws for Thompson) and handing the decisions to the store.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import common
import numpy as np
from common import Case, fmt_ratio, interleave, round_ratio, table, verdict
from policy_refs import REFS

from qortex_mcp.learning import ArmOutcome, Learner, LearnerConfig, MemoryLearningStore
from qortex_mcp.learning.policies import POLICIES, Policy, make_policy
from qortex_mcp.learning.selection import LEARNER_STRATEGIES

PARTS = ("all", "regret", "adversarial", "select", "propensity", "learner", "learner_regret",
         "decisions")
REGRET_RATIO_MAX = 1.10
KL_UCB_K10_MAX = 90.0
SELECT_RATIO_MAX = 1.3


class Sizes:
    def __init__(self, mode: str) -> None:
        smoke, quick = mode == "smoke", mode == "quick"
        self.mode = mode
        self.horizon = 300 if smoke else 2000 if quick else 20_000
        self.seeds = {"K10": 2 if smoke else 4 if quick else 30,
                      "K100": 1 if smoke else 2 if quick else 20}
        self.adv_seeds = 2 if smoke else 4 if quick else 20
        self.select_ks = (10, 100) if smoke else (10, 100, 1000)
        self.budget_s = 0.01 if smoke else 0.05 if quick else 1.5
        self.rounds = 2 if smoke else 4 if quick else 30
        self.block = 20 if smoke else 50 if quick else 100


# --- problems ---------------------------------------------------------------------------


def make_problem(name: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(10_000 + seed)
    if name == "K10":
        mu = np.linspace(0.1, 0.9, 10)
    else:
        mu = np.concatenate([[0.5], rng.uniform(0.3, 0.48, 99)])
    return rng.permutation(mu)


def lure_and_switch(T: int, seed: int) -> np.ndarray:
    """(T, 2) reward means of the oblivious adversary, arm order shuffled by seed."""
    means = np.empty((T, 2))
    means[:, 0] = 0.8
    t1, t2 = int(0.2 * T), int(0.225 * T)
    means[:t1, 1], means[t1:t2, 1], means[t2:, 1] = 0.8, 0.0, 1.0
    return means[:, ::-1].copy() if seed % 2 else means


# --- runners: each returns the chosen arms -----------------------------------------------


def run_policy(policy: Policy, means: np.ndarray, U: np.ndarray, seed: int) -> np.ndarray:
    T, K = U.shape
    rng = np.random.default_rng(seed)
    stats = policy.zeros(K)
    chosen = np.empty(T, dtype=np.intp)
    exp3 = policy.name == "exp3"
    for t in range(T):
        a = int(policy.select(stats, 1, rng, t=t)[0])
        r = 1.0 if U[t, a] < means[t, a] else 0.0
        if exp3:
            p = float(policy.choice_probabilities(stats, rng, t=t)[a])
            stats[a] += policy.increment(stats[a], r, propensity=p, t=t, n_arms=K)
        else:
            stats[a] += policy.increment(stats[a], r)
        chosen[t] = a
    return chosen


def run_ref(name: str, means: np.ndarray, U: np.ndarray, seed: int) -> np.ndarray:
    T, K = U.shape
    ref = REFS[name](K, seed)
    chosen = np.empty(T, dtype=np.intp)
    for t in range(T):
        a = ref.select()
        ref.update(a, 1.0 if U[t, a] < means[t, a] else 0.0)
        chosen[t] = a
    return chosen


def regret(means: np.ndarray, chosen: np.ndarray) -> float:
    """Against the best fixed arm: sum_t max_a mu_a - mu_{a_t} when stationary."""
    got = float(means[np.arange(chosen.size), chosen].sum())
    return float(means.sum(axis=0).max()) - got


def med(xs: list[float]) -> float:
    return float(statistics.median(xs))


def part_regret(sz: Sizes, names: list[str], problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    T = sz.horizon
    for prob in problems:
        rows: dict[str, Any] = {}
        for name in names:
            mine, ref, secs = [], [], 0.0
            for s in range(sz.seeds[prob]):
                mu = make_problem(prob, s)
                means = np.broadcast_to(mu, (T, mu.size))
                U = np.random.default_rng(20_000 + s).random((T, mu.size))
                t0 = time.perf_counter()
                mine.append(regret(means, run_policy(make_policy(name), means, U, s)))
                secs += time.perf_counter() - t0
                ref.append(regret(means, run_ref(name, means, U, s)))
            ratio = med(mine) / med(ref) if med(ref) > 0 else math.nan
            rows[name] = {"median": med(mine), "ref_median": med(ref), "ratio": ratio,
                          "mean": float(np.mean(mine)), "sd": float(np.std(mine)),
                          "ref_mean": float(np.mean(ref)), "s_per_run": secs / len(mine)}
            print(f"[regret] {prob} {name}: {med(mine):.1f} vs ref {med(ref):.1f}", flush=True)
        out[prob] = rows
    return out


def print_regret(res: dict[str, Any], sz: Sizes) -> list[str]:
    misses = []
    for prob, rows in res.items():
        print(f"\n### Regret {prob}, T = {sz.horizon:,}, {sz.seeds[prob]} seeds "
              f"(median within {REGRET_RATIO_MAX:.2f}x of the reference)\n")
        body = []
        for name, r in rows.items():
            ok = verdict(r["ratio"], REGRET_RATIO_MAX)
            if name == "kl_ucb" and prob == "K10":
                ok += "; <= 90: " + verdict(r["median"], KL_UCB_K10_MAX)
            misses += [f"regret {prob} {name}"] if "MISS" in ok else []
            body.append([name, f"{r['median']:.1f}", f"{r['ref_median']:.1f}",
                         fmt_ratio(r["ratio"]), f"{r['mean']:.1f} ± {r['sd']:.1f}",
                         f"{r['ref_mean']:.1f}", f"{r['s_per_run']:.2f}", ok])
        print(table(["strategy", "median", "ref median", "ratio", "mean ± sd", "ref mean",
                     "s/run", "target"], body))
    return misses


def part_adversarial(sz: Sizes, names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    T = sz.horizon
    for name in names:
        regs = []
        for s in range(sz.adv_seeds):
            means = lure_and_switch(T, s)
            U = np.random.default_rng(30_000 + s).random(means.shape)
            regs.append(regret(means, run_policy(make_policy(name), means, U, s)))
        out[name] = {"median": med(regs), "mean": float(np.mean(regs)),
                     "p90": float(np.quantile(regs, 0.9)), "max": max(regs),
                     "locked": sum(r > 0.05 * T for r in regs), "seeds": len(regs)}
        print(f"[adversarial] {name}: median {med(regs):.0f}", flush=True)
    return out


def print_adversarial(res: dict[str, Any], sz: Sizes) -> list[str]:
    print(f"\n### Lure-and-switch adversary, K = 2, T = {sz.horizon:,}, {sz.adv_seeds} seeds "
          "(regret against the best fixed arm)\n")
    body = [[n, f"{r['median']:.0f}", f"{r['mean']:.0f}", f"{r['p90']:.0f}", f"{r['max']:.0f}",
             f"{r['locked']} / {r['seeds']}"] for n, r in res.items()]
    print(table(["strategy", "median", "mean", "p90", "worst", "seeds with regret > 5% T"],
                body))
    if "exp3" in res and "thompson" in res:
        ok = verdict(res["thompson"]["median"] - res["exp3"]["median"], 0.0, True)
        print(f"\nexp3 median below thompson's: {ok}")
        return [] if ok == "ok" else ["adversarial exp3 vs thompson"]
    return []


def warmed(name: str, K: int, seed: int = 1) -> tuple[Policy, np.ndarray, Any, int]:
    """A policy's stats and its reference, fed the same rewards: one per arm, then
    min(2000, 5K) on random arms (so index policies compute their index, not "try the
    untried arm first")."""
    policy, ref = make_policy(name), REFS[name](K, seed)
    stats = policy.zeros(K)
    g = np.random.default_rng(5)
    arms = np.concatenate([np.arange(K), g.integers(0, K, min(2000, 5 * K))])
    n = arms.size
    exp3 = name == "exp3"
    if exp3:
        ref.eta = 0.0  # its loss estimates are overwritten with the policy's below
    for a, r in zip(arms, (g.random(n) < 0.4).astype(float), strict=True):
        kw: dict[str, Any] = {"propensity": 1.0 / K, "t": 1, "n_arms": K} if exp3 else {}
        stats[a] += policy.increment(stats[a], float(r), **kw)
        ref.update(int(a), float(r))
    if exp3:
        ref.L[:] = stats[:, 1] - stats[:, 0]
    return policy, stats, ref, n


async def part_select(sz: Sizes, names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for K in sz.select_ks:
        for name in names:
            policy, stats, ref, t = warmed(name, K)
            rng = np.random.default_rng(3)
            cases = {"mine": Case(lambda p=policy, s=stats, g=rng, t=t: p.select(s, 1, g, t=t)),
                     "ref": Case(ref.select)}
            await interleave(cases, block=sz.block, rounds=sz.rounds, budget_s=sz.budget_s)
            out[f"{name}@{K}"] = {"name": name, "K": K, "p50_us": cases["mine"].p50_us,
                                  "ref_p50_us": cases["ref"].p50_us,
                                  "ratio": round_ratio(cases["mine"], cases["ref"])}
        print(f"[select] K={K} done", flush=True)
    return out


def print_select(res: dict[str, Any], sz: Sizes) -> list[str]:
    print(f"\n### select(k=1) p50 µs, policy vs its numpy reference (ratio <= "
          f"{SELECT_RATIO_MAX}x)\n")
    names = list(dict.fromkeys(r["name"] for r in res.values()))
    body, misses = [], []
    for name in names:
        row = [name]
        for K in sz.select_ks:
            r = res[f"{name}@{K}"]
            ok = verdict(r["ratio"], SELECT_RATIO_MAX)
            misses += [f"select {name} K={K}"] if ok == "MISS" else []
            row.append(f"{r['p50_us']:.1f} / {r['ref_p50_us']:.1f} ({fmt_ratio(r['ratio'])})"
                       + ("" if ok == "ok" else " MISS"))
        body.append(row)
    print(table(["strategy", *(f"K={K}: mine / ref (ratio)" for K in sz.select_ks)], body))
    return misses


async def part_propensity(sz: Sizes, names: list[str]) -> dict[str, Any]:
    K, out = 100, {}
    for name in names:
        policy, stats, _, t = warmed(name, K)
        rng = np.random.default_rng(4)
        chosen = policy.select(stats, 1, rng, t=t)
        cases = {"select": Case(lambda p=policy, s=stats, g=rng, t=t: p.select(s, 1, g, t=t)),
                 "propensity": Case(lambda p=policy, s=stats, c=chosen, g=rng, t=t:
                                    p.propensities(s, c, g, t=t))}
        await interleave(cases, block=max(sz.block // 10, 5), rounds=sz.rounds,
                         budget_s=sz.budget_s)
        out[name] = {"select_us": cases["select"].p50_us, "prop_us": cases["propensity"].p50_us,
                     "ratio": round_ratio(cases["propensity"], cases["select"]),
                     "how": "exact" if policy.deterministic or name in (
                         "eps_greedy", "softmax", "exp3", "random") else "Monte Carlo, 256 draws"}
    return out


def print_propensity(res: dict[str, Any], sz: Sizes) -> list[str]:
    print("\n### First-slot propensity vs one select, K = 100 (p50 µs)\n")
    print(table(["strategy", "how", "select", "propensity", "propensity / select"],
                [[n, r["how"], f"{r['select_us']:.1f}", f"{r['prop_us']:.1f}",
                  fmt_ratio(r["ratio"])] for n, r in res.items()]))
    return []


async def _learner(name: str, K: int, **options: Any) -> tuple[Learner, list[str]]:
    learner = await Learner.create(LearnerConfig(name="b", strategy=name, seed=2, **options),
                                   MemoryLearningStore())
    arms = [f"a{i}" for i in range(K)]
    g = np.random.default_rng(5)
    picks = [*range(K), *g.integers(0, K, 5 * K).tolist()]
    await learner.observe_many([[ArmOutcome(arms[a], reward=float(g.random() < 0.4),
                                            idempotency_key=f"k{i}")]
                                for i, a in enumerate(picks)])
    return learner, arms


async def run_learner(name: str, means: np.ndarray, U: np.ndarray, seed: int) -> np.ndarray:
    T, K = U.shape
    arms = [f"a{i}" for i in range(K)]
    pos = {a: i for i, a in enumerate(arms)}
    learner = await Learner.create(LearnerConfig(name="r", strategy=name, seed=seed),
                                   MemoryLearningStore())
    chosen = np.empty(T, dtype=np.intp)
    for t in range(T):
        sel = await learner.select(arms)
        a = pos[sel.selected[0].id]
        await learner.observe(ArmOutcome(arms[a], reward=1.0 if U[t, a] < means[t, a] else 0.0,
                                         selection_id=sel.selection_id))
        chosen[t] = a
    await learner.close()
    return chosen


async def part_learner_regret(sz: Sizes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    T, seeds = sz.horizon, min(sz.seeds["K10"], 20)
    for name in LEARNER_STRATEGIES:
        mine, ref = [], []
        for s in range(seeds):
            mu = make_problem("K10", s)
            means = np.broadcast_to(mu, (T, mu.size))
            U = np.random.default_rng(20_000 + s).random((T, mu.size))
            mine.append(regret(means, await run_learner(name, means, U, s)))
            ref.append(regret(means, run_ref(name, means, U, s)))
        out[name] = {"median": med(mine), "ref_median": med(ref),
                     "ratio": med(mine) / med(ref) if med(ref) > 0 else math.nan}
        print(f"[learner_regret] {name}: {med(mine):.1f} vs ref {med(ref):.1f}", flush=True)
    return out


def print_learner_regret(res: dict[str, Any], sz: Sizes) -> list[str]:
    seeds = min(sz.seeds["K10"], 20)
    print(f"\n### Regret through the learner, K10, T = {sz.horizon:,}, {seeds} seeds "
          f"(median within {REGRET_RATIO_MAX:.2f}x of the strategy's numpy reference)\n")
    misses, body = [], []
    for name, r in res.items():
        ok = verdict(r["ratio"], REGRET_RATIO_MAX)
        misses += [f"learner regret {name}"] if "MISS" in ok else []
        body.append([name, f"{r['median']:.1f}", f"{r['ref_median']:.1f}",
                     fmt_ratio(r["ratio"]), ok])
    print(table(["strategy", "learner median", "ref median", "ratio", "target"], body))
    return misses


async def part_learner(sz: Sizes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for K in sz.select_ks[:2]:
        base, base_arms = await _learner("thompson", K)
        for name in LEARNER_STRATEGIES:
            learner, arms = await _learner(name, K)
            cases = {"mine": Case(lambda lrn=learner, a=arms: lrn.select(a)),
                     "thompson": Case(lambda lrn=base, a=base_arms: lrn.select(a))}
            await interleave(cases, block=sz.block, rounds=sz.rounds, budget_s=sz.budget_s)
            out[f"{name}@{K}"] = {"name": name, "K": K, "p50_us": cases["mine"].p50_us,
                                  "ref_p50_us": cases["thompson"].p50_us,
                                  "ratio": round_ratio(cases["mine"], cases["thompson"])}
            await learner.close()
        await base.close()
    return out


def print_learner(res: dict[str, Any], sz: Sizes) -> list[str]:
    print("\n### Learner.select p50 µs per strategy vs the thompson learner (ratio)\n")
    ks = sz.select_ks[:2]
    body = [[name, *(f"{res[f'{name}@{K}']['p50_us']:.1f} / {res[f'{name}@{K}']['ref_p50_us']:.1f}"
                     f" ({fmt_ratio(res[f'{name}@{K}']['ratio'])})" for K in ks)]
            for name in LEARNER_STRATEGIES]
    print(table(["strategy", *(f"K={K}: strategy / thompson (ratio)" for K in ks)], body))
    return []


DECISION_STRATEGIES = ("thompson", "top_two_thompson", "ucb1", "eps_greedy", "softmax")
LOGGED_SELECTS = 200


async def _logged(name: str, K: int, log: bool) -> tuple[Learner, list[str]]:
    learner, arms = await _learner(name, K, decision_log=log)
    await learner.flush()
    return learner, arms


async def _flush_after_selects(learner: Learner, arms: list[str]) -> float:
    """Seconds ``flush()`` takes after ``LOGGED_SELECTS`` selects."""
    for _ in range(LOGGED_SELECTS):
        await learner.select(arms)
    started = time.perf_counter()
    await learner.flush()
    return time.perf_counter() - started


async def part_decisions(sz: Sizes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for K in sz.select_ks[:2]:
        for name in DECISION_STRATEGIES:
            on, arms = await _logged(name, K, True)
            off, _ = await _logged(name, K, False)
            cases = {"on": Case(lambda lrn=on, a=arms: lrn.select(a)),
                     "off": Case(lambda lrn=off, a=arms: lrn.select(a))}
            await interleave(cases, block=sz.block, rounds=sz.rounds, budget_s=sz.budget_s)
            flushes: dict[str, list[float]] = {"on": [], "off": []}
            for r in range(max(3, sz.rounds // 3)):
                for which in ("on", "off") if r % 2 == 0 else ("off", "on"):
                    lrn = on if which == "on" else off
                    flushes[which].append(await _flush_after_selects(lrn, arms))
            extra = (statistics.median(flushes["on"]) - statistics.median(flushes["off"]))
            out[f"{name}@{K}"] = {"name": name, "K": K, "on_us": cases["on"].p50_us,
                                  "off_us": cases["off"].p50_us,
                                  "ratio": round_ratio(cases["on"], cases["off"]),
                                  "settle_us": extra / LOGGED_SELECTS * 1e6}
            await on.close()
            await off.close()
        print(f"[decisions] K={K} done", flush=True)
    return out


def print_decisions(res: dict[str, Any], sz: Sizes) -> list[str]:
    print("\n### The decision log: Learner.select p50 µs with / without it (ratio), and the "
          "work per decision moved off the select path (µs, flush after 200 selects)\n")
    body = []
    for name in DECISION_STRATEGIES:
        row = [name]
        for K in sz.select_ks[:2]:
            r = res[f"{name}@{K}"]
            row += [f"{r['on_us']:.1f} / {r['off_us']:.1f} ({fmt_ratio(r['ratio'])})",
                    f"{r['settle_us']:.1f}"]
        body.append(row)
    heads = [h for K in sz.select_ks[:2] for h in (f"K={K}: select on / off", f"K={K}: off-path")]
    print(table(["strategy", *heads], body))
    return []


async def main() -> int:
    ap = common.base_parser(__doc__ or "", PARTS)
    ap.add_argument("--strategies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    ap.add_argument("--problems", nargs="+", choices=["K10", "K100"], default=["K10", "K100"],
                    help="regret problems to run (default both)")
    args = ap.parse_args()
    sz = Sizes("smoke" if args.smoke else "quick" if args.quick else "full")
    parts = common.chosen_parts(args, PARTS)
    names = args.strategies
    notes = common.machine_notes()
    results: dict[str, Any] = {"notes": notes, "mode": sz.mode}
    printers: list[Callable[[], list[str]]] = []
    t0 = time.perf_counter()
    if "regret" in parts:
        results["regret"] = reg = part_regret(sz, names, args.problems)
        printers.append(lambda: print_regret(reg, sz))
    if "adversarial" in parts:
        adv_names = [n for n in ("thompson", "exp3", "kl_ucb", "ucb1", "eps_greedy") if n in names]
        results["adversarial"] = adv = part_adversarial(sz, adv_names)
        printers.append(lambda: print_adversarial(adv, sz))
    if "select" in parts:
        results["select"] = sel = await part_select(sz, names)
        printers.append(lambda: print_select(sel, sz))
    if "propensity" in parts:
        results["propensity"] = prop = await part_propensity(sz, names)
        printers.append(lambda: print_propensity(prop, sz))
    if "learner" in parts:
        results["learner"] = lrn = await part_learner(sz)
        printers.append(lambda: print_learner(lrn, sz))
    if "learner_regret" in parts:
        results["learner_regret"] = lreg = await part_learner_regret(sz)
        printers.append(lambda: print_learner_regret(lreg, sz))
    if "decisions" in parts:
        results["decisions"] = dec = await part_decisions(sz)
        printers.append(lambda: print_decisions(dec, sz))
    misses = [m for show in printers for m in show()]
    print(f"\nwall time {time.perf_counter() - t0:.0f} s; targets missed: "
          f"{', '.join(misses) if misses else 'none'}")
    common.print_notes(notes, sys.argv)
    results["misses"] = misses
    common.write_json(args.json, results)
    return 1 if misses and args.strict else 0


if __name__ == "__main__":
    common.run(main)
