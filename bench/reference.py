"""The project's own numpy yardstick: plain Beta-Bernoulli Thompson Sampling, the regret
problems and the reranking simulation the bench scripts compare against.

``bench/common.py`` loads ``../shared/bench/anchors.py`` instead when that file exists (the
shared yardstick for side-by-side runs across projects); this module is the fallback that
lets a plain clone run its benchmarks and its tests. It offers the part of anchors.py's
interface the bench scripts use, with the same definitions and seeds, so either gives the
same figures:

* ``RefTS(k, seed)``: Beta(1, 1) Thompson Sampling over ``k`` arms in two numpy arrays
  (``a``, ``b``, ``rng``; ``select``, ``topk``, ``update``, ``warm``);
* ``make_problem(name, seed)``, ``lai_robbins_constant(mu)``, ``run_regret_once(...)``:
  the K10 / K100 Bernoulli problems and one regret run;
* ``part_rank(args)``: the reranking simulation (``args.quick``, ``args.queries``);
* ``SCHEMA`` / ``UPSERT``: one durable posterior update as a plain SQLite upsert.

Only numpy and the standard library: nothing here may depend on the project under test.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np

__all__ = [
    "RANK_STRATEGIES",
    "SCHEMA",
    "UPSERT",
    "RefTS",
    "lai_robbins_constant",
    "make_problem",
    "part_rank",
    "run_regret_once",
]

SOURCE = "bench/reference.py (the project's own numpy reference)"


class RefTS:
    """Thompson Sampling with independent Beta(a0, b0) priors, one draw per arm per call."""

    name = "ref numpy TS"

    def __init__(self, k: int, seed: int, a0: float = 1.0, b0: float = 1.0) -> None:
        self.rng = np.random.default_rng(seed)
        self.a = np.full(k, float(a0))
        self.b = np.full(k, float(b0))

    def _sample(self) -> np.ndarray:
        return self.rng.beta(self.a, self.b)

    def select(self) -> int:
        return int(self._sample().argmax())

    def topk(self, k: int) -> list[int]:
        theta = self._sample()
        best = np.argpartition(theta, -k)[-k:]  # the k largest, unordered: O(K)
        ordered: list[int] = best[np.argsort(-theta[best])].tolist()
        return ordered

    def update(self, arm: int, reward: float) -> None:
        self.a[arm] += reward
        self.b[arm] += 1.0 - reward

    def warm(self, arms: Iterable[int] | np.ndarray, rewards: Iterable[float] | np.ndarray) -> None:
        idx = np.asarray(arms, dtype=np.intp)
        r = np.asarray(rewards, dtype=float)
        np.add.at(self.a, idx, r)  # add.at, not a[idx] += r: repeated arms all count
        np.add.at(self.b, idx, 1.0 - r)


# --- regret ---------------------------------------------------------------------------------


def _bernoulli_kl(p: float, q: float) -> float:
    tiny = 1e-12
    p = min(max(p, tiny), 1.0 - tiny)
    q = min(max(q, tiny), 1.0 - tiny)
    return p * math.log(p / q) + (1.0 - p) * math.log((1.0 - p) / (1.0 - q))


def lai_robbins_constant(mu: np.ndarray) -> float:
    """C in the Lai-Robbins lower bound C ln T on the regret of any consistent policy."""
    top = float(np.max(mu))
    return sum((top - float(m)) / _bernoulli_kl(float(m), top) for m in mu if m < top)


def make_problem(name: str, seed: int) -> np.ndarray:
    """Arm means of problem ``name`` (K10: evenly spaced 0.1..0.9; K100: one 0.5 among 99
    in [0.3, 0.48)), shuffled so the best arm's index carries no tie-break advantage."""
    rng = np.random.default_rng(10_000 + seed)
    if name == "K10":
        means = np.linspace(0.1, 0.9, 10)
    elif name == "K100":
        means = np.concatenate([[0.5], rng.uniform(0.3, 0.48, 99)])
    else:
        raise ValueError(f"unknown problem {name!r} (K10 or K100)")
    return rng.permutation(means)


class Policy(Protocol):
    def select(self) -> int: ...

    def update(self, arm: int, reward: float) -> None: ...


def run_regret_once(
    factory: Callable[[int, int], Policy],
    mu: np.ndarray,
    horizon: int,
    uniforms: np.ndarray,
    seed: int,
    checkpoints: Sequence[int] = (1000, 5000),
) -> dict[str, Any]:
    """Cumulative pseudo-regret of ``factory(K, seed)`` over ``horizon`` rounds; the reward
    of arm a at round t is ``uniforms[t, a] < mu[a]`` (common random numbers: every policy
    sees the same world). Returns ``{"regret": {checkpoint: R_t, horizon: R_T}, "secs"}``."""
    gaps = float(np.max(mu)) - mu
    policy = factory(len(mu), seed)
    round_robin = bool(getattr(policy, "round_robin", False))
    total = 0.0
    marks: dict[int, float] = {}
    wanted = set(checkpoints)
    started = time.perf_counter()
    for t in range(horizon):
        arm = t if round_robin and t < len(mu) else policy.select()
        policy.update(arm, 1.0 if uniforms[t, arm] < mu[arm] else 0.0)
        total += gaps[arm]
        if t + 1 in wanted:
            marks[t + 1] = total
    marks[horizon] = total
    return {"regret": marks, "secs": time.perf_counter() - started}


# --- reranking ------------------------------------------------------------------------------

RANK_STRATEGIES = [
    "retrieval order only",
    "oracle (true relevance)",
    "posterior mean, Beta(1,1) prior",
    "blend 0.5*score + 0.5*posterior mean",
    "posterior mean, retrieval-score prior (m=4)",
    "Thompson order, Beta(1,1) prior",
    "Thompson order, retrieval-score prior (m=4)",
]
_VARIANTS = ("explicit", "click-only naive", "click-only PBM-weighted")
_DOCS = 20
_TOP = 5
_PRIOR_STRENGTH = 4.0


def _rank_one(strategy: str, variant: str, seed: int, world: dict[str, np.ndarray],
              queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query NDCG@5 and accept counts of one strategy on one seed's world."""
    rel, score, s_norm = world["rel"], world["score"], world["s_norm"]
    exam, disc, ideal = world["exam"], world["disc"], world["ideal"]
    ideal_dcg = (ideal[:_TOP] * disc[:_TOP]).sum()
    if "retrieval-score prior" in strategy:
        a0 = 1.0 + _PRIOR_STRENGTH * s_norm
        b0 = 1.0 + _PRIOR_STRENGTH * (1.0 - s_norm)
    else:
        a0, b0 = np.ones(_DOCS), np.ones(_DOCS)
    wins, losses = np.zeros(_DOCS), np.zeros(_DOCS)
    sampler = np.random.default_rng(40_000 + seed)
    ndcg, accepts = np.empty(queries), np.empty(queries)
    for q in range(queries):
        alpha, beta = a0 + wins, b0 + losses
        if strategy == "retrieval order only":
            key = score
        elif strategy.startswith("oracle"):
            key = rel
        elif strategy.startswith("posterior mean"):
            key = alpha / (alpha + beta) + 1e-9 * s_norm  # ties go to the retrieval score
        elif strategy.startswith("blend"):
            key = 0.5 * s_norm + 0.5 * alpha / (alpha + beta)
        else:
            key = sampler.beta(alpha, beta)
        order = np.argsort(-key, kind="stable")
        seen = world["u_exam"][q] < exam  # examination depends on the position only
        took = seen & (world["u_acc"][q] < rel[order])
        wins[order[took]] += 1.0
        if variant == "explicit":
            losses[order[seen & ~took]] += 1.0
        else:  # only accepts are observed: the top positions not accepted count as skips
            skipped = np.zeros(_DOCS, bool)
            skipped[:_TOP] = True
            skipped &= ~took
            losses[order[skipped]] += 1.0 if variant == "click-only naive" else exam[skipped]
        ndcg[q] = (rel[order][:_TOP] * disc[:_TOP]).sum() / ideal_dcg
        accepts[q] = took.sum()
    return ndcg, accepts


def _world(seed: int, queries: int) -> dict[str, np.ndarray]:
    g = np.random.default_rng(30_000 + seed)
    rel = g.beta(1.5, 4.0, _DOCS)  # the true accept probability of each document
    score = rel + g.normal(0.0, 0.2, _DOCS)  # what the retriever sees
    return {
        "rel": rel, "score": score,
        "s_norm": (score - score.min()) / (score.max() - score.min()),
        "ideal": np.sort(rel)[::-1],
        "u_exam": g.random((queries, _DOCS)), "u_acc": g.random((queries, _DOCS)),
        "disc": 1.0 / np.log2(np.arange(2, _DOCS + 2)),
        "exam": 1.0 / np.arange(1, _DOCS + 1),  # position-based model: examined w.p. 1/rank
    }


def part_rank(args: Any) -> dict[str, Any]:
    """The reranking simulation: 20 documents per query, ``args.queries`` queries, 5 seeds
    when ``args.quick`` else 20; every strategy under every feedback variant."""
    queries = int(args.queries)
    seeds = range(5 if args.quick else 20)
    worlds = {s: _world(s, queries) for s in seeds}
    out: dict[str, Any] = {"n_docs": _DOCS, "queries": queries, "seeds": len(seeds),
                           "variants": {}}
    out["score_relevance_corr"] = float(np.mean(
        [np.corrcoef(w["rel"], w["score"])[0, 1] for w in worlds.values()]))
    for variant in _VARIANTS:
        runs = {strategy: [_rank_one(strategy, variant, s, worlds[s], queries) for s in seeds]
                for strategy in RANK_STRATEGIES}
        oracle = np.array([acc.mean() for _, acc in runs["oracle (true relevance)"]])
        rows: dict[str, dict[str, float]] = {}
        for strategy, per_seed in runs.items():
            alls = [nd.mean() for nd, _ in per_seed]
            acc = np.array([a.mean() for _, a in per_seed])
            rows[strategy] = {
                "ndcg5_all": float(np.mean(alls)), "ndcg5_all_sd": float(np.std(alls)),
                "ndcg5_first200": float(np.mean([nd[:200].mean() for nd, _ in per_seed])),
                "ndcg5_last500": float(np.mean([nd[-500:].mean() for nd, _ in per_seed])),
                "accepts_per_query": float(acc.mean()),
                "accepts_vs_oracle": float(np.mean(acc / oracle)),
            }
        out["variants"][variant] = rows
    return out


# --- persistence ----------------------------------------------------------------------------

SCHEMA = ("CREATE TABLE IF NOT EXISTS arm (learner TEXT, arm TEXT, alpha REAL, beta REAL, "
          "pulls INTEGER, PRIMARY KEY (learner, arm))")
UPSERT = ("INSERT INTO arm VALUES (?, ?, 1.0 + ?, 2.0 - ?, 1) ON CONFLICT (learner, arm) "
          "DO UPDATE SET alpha = alpha + excluded.alpha - 1.0, "
          "beta = beta + excluded.beta - 1.0, pulls = pulls + 1")
"""Parameters ``(learner, arm, reward, reward)``: one posterior update as one statement."""
