"""Benchmarks of the next-tool model: accuracy on synthetic agent sessions, and latency.

    python bench/bench_next_tool.py [all | accuracy | speed] [--quick | --smoke] [--seed N]
                                    [--json FILE] [--strict]

Parts (``all`` runs both; the figures in bench/RESULTS.md come from it):

* ``accuracy``: a seeded corpus of agent sessions (``corpus`` below: four task types, each
  a noisy second-order tool workflow over 20 tools, with branches, loops and failures),
  sessions dated in order and split by time: the first 80% train, the last 20% are held
  out. Training drives ``NextToolModel`` through its public API, one ``suggest`` and one
  ``feedback`` (the tool actually called and whether it worked) per call of a training
  session. The held-out calls are then predicted from the history so far, the model frozen.
  Reported: hit@1, hit@3, hit@5 and MRR of the tool actually called next, over every held-out
  call ("all calls") and over the held-out calls that went well ("calls that worked": what
  success weighting aims at). Rows: the project's model with success weighting
  (``sequence_weight=0.5``, posterior means) and without (``sequence_weight=1.0``), the same
  with the task type as context, and three baselines trained on the same calls:
  most-frequent tool, repeat the last tool (then most frequent), and an unsmoothed bigram
  (counts after the last tool; unseen ones tie, broken by name). "top-1 works" is the
  generator's probability that the top suggestion works in that session's task: what
  following the suggestion would have given (success weighting aims at it).
* ``speed``: ``NextToolModel.suggest`` p50 (in process, one call at a time, ``explore`` on:
  Thompson draws and id signing included) with 50 candidate tools after 10,000 learned
  n-gram rows (trigram, bigram and unigram rows of a random sparse workflow over 50 tools),
  over 64 states in turn, interleaved with ``Learner.select`` over the same 50 arms
  (Thompson, the project's own hot path) as the yardstick in the same run; ratio = suggest /
  select. Three cases: the state was asked before and no count changed (the model's memo
  answers the estimate), the memo cleared before each call (untimed; the estimate is
  computed from the cached level arrays: the headline figure), and right after a feedback
  (untimed; the levels it touched are rebuilt from the learner's rows in the timed call, as
  in an agent loop that learns between calls).

The corpus generator (``corpus``): each session picks a task type (bugfix 35%, feature 30%,
research 20%, release 15%) and walks its table: the next tool is drawn from the entry for
the last two tools, else the last tool (``"*"``), and the walk ends at ``END`` or 30 calls.
With probability ``NOISE`` (0.2) a call is instead a uniformly random tool of the 20 (a
detour; it works 30% of the time). Each tool works with its task's success probability;
a failed ``run_tests`` is followed by ``edit_file`` with probability 0.7 (outcome-driven
branching the model cannot see, only learn as a mixture). Some branches are frequent but
failing (bugfix: ``run_linter`` after ``read_file -> run_tests`` works 15% of the time).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import common
import numpy as np
from common import Case, interleave, table

from qortex_mcp.learning import ArmOutcome, Learner, LearnerConfig, MemoryLearningStore
from qortex_mcp.learning.nexttool import NextToolModel

PARTS = ("all", "accuracy", "speed")

# Targets from issue 17.
HIT3_MIN = 0.6
HIT3_OVER_FREQUENT_MIN = 0.15
SUGGEST_P50_MAX_US = 100.0

TOOLS = ["read_file", "list_dir", "grep", "search_code", "web_search", "open_url",
         "edit_file", "write_file", "format_code", "run_tests", "run_linter", "type_check",
         "run_script", "install_deps", "git_status", "git_diff", "git_commit", "create_pr",
         "ask_user", "summarize"]
END = "END"
NOISE = 0.2
MAX_CALLS = 30
S = "<s>"

Table = dict[tuple[str, str], dict[str, float]]

TASKS: dict[str, tuple[float, Table, dict[str, float]]] = {
    # name: (share, transitions, success probability per tool; others 0.9)
    "bugfix": (0.35, {
        (S, S): {"read_file": 0.6, "grep": 0.4},
        ("*", "read_file"): {"grep": 0.25, "run_tests": 0.55, "read_file": 0.2},
        ("*", "grep"): {"read_file": 0.8, "search_code": 0.2},
        ("*", "search_code"): {"read_file": 1.0},
        ("read_file", "run_tests"): {"edit_file": 0.5, "run_linter": 0.35, "read_file": 0.15},
        ("edit_file", "run_tests"): {"git_diff": 0.7, "edit_file": 0.3},
        ("format_code", "run_tests"): {"git_diff": 0.8, "edit_file": 0.2},
        ("*", "run_tests"): {"edit_file": 0.6, "read_file": 0.4},
        ("*", "run_linter"): {"edit_file": 0.7, "run_tests": 0.3},
        ("*", "edit_file"): {"run_tests": 0.75, "format_code": 0.25},
        ("*", "format_code"): {"run_tests": 1.0},
        ("*", "git_diff"): {"git_commit": 0.9, "edit_file": 0.1},
        ("*", "git_commit"): {END: 0.7, "create_pr": 0.3},
        ("*", "create_pr"): {END: 1.0},
    }, {"run_tests": 0.5, "run_linter": 0.15}),
    "feature": (0.30, {
        (S, S): {"list_dir": 0.7, "read_file": 0.3},
        ("*", "list_dir"): {"read_file": 0.9, "list_dir": 0.1},
        ("list_dir", "read_file"): {"write_file": 0.6, "read_file": 0.4},
        ("*", "read_file"): {"write_file": 0.5, "edit_file": 0.5},
        ("*", "write_file"): {"edit_file": 0.3, "type_check": 0.7},
        ("*", "edit_file"): {"type_check": 0.6, "run_tests": 0.4},
        ("*", "type_check"): {"run_tests": 0.7, "edit_file": 0.3},
        ("type_check", "run_tests"): {"git_commit": 0.6, "edit_file": 0.4},
        ("*", "run_tests"): {"edit_file": 0.5, "git_commit": 0.5},
        ("*", "git_commit"): {"create_pr": 0.8, END: 0.2},
        ("*", "create_pr"): {END: 1.0},
    }, {"run_tests": 0.6, "type_check": 0.7}),
    "research": (0.20, {
        (S, S): {"web_search": 0.8, "ask_user": 0.2},
        ("*", "ask_user"): {"web_search": 1.0},
        ("*", "web_search"): {"open_url": 0.8, "web_search": 0.2},
        ("web_search", "open_url"): {"open_url": 0.4, "summarize": 0.4, "web_search": 0.2},
        ("open_url", "open_url"): {"summarize": 0.7, "web_search": 0.3},
        ("*", "open_url"): {"summarize": 1.0},
        ("*", "summarize"): {END: 0.6, "web_search": 0.2, "ask_user": 0.2},
    }, {"open_url": 0.7}),
    "release": (0.15, {
        (S, S): {"git_status": 1.0},
        ("*", "git_status"): {"install_deps": 0.6, "run_tests": 0.4},
        ("*", "install_deps"): {"run_tests": 0.8, "run_script": 0.2},
        ("*", "run_script"): {"run_tests": 1.0},
        ("install_deps", "run_tests"): {"run_script": 0.5, "git_diff": 0.5},
        ("*", "run_tests"): {"git_diff": 0.7, "install_deps": 0.3},
        ("*", "git_diff"): {"git_commit": 1.0},
        ("*", "git_commit"): {"create_pr": 0.6, END: 0.4},
        ("*", "create_pr"): {END: 1.0},
    }, {"install_deps": 0.8, "run_tests": 0.7}),
}


@dataclass
class Session:
    task: str
    start: float
    calls: list[tuple[str, bool]]


def works(task: str, tool: str) -> float:
    """How often ``tool`` works in a session of ``task`` (the generator's own probability)."""
    _, trans, success = TASKS[task]
    own = {k[1] for k in trans} | {t for c in trans.values() for t in c}
    return success.get(tool, 0.9) if tool in own else 0.3


def corpus(n: int, seed: int) -> list[Session]:
    """``n`` sessions, dated in order (one a minute), from the tables above (module doc)."""
    rng = np.random.default_rng(seed)
    names = list(TASKS)
    shares = np.array([TASKS[t][0] for t in names])
    out = []
    for i in range(n):
        task = str(rng.choice(names, p=shares / shares.sum()))
        _, trans, _ = TASKS[task]
        prev2, prev1 = S, S
        calls: list[tuple[str, bool]] = []
        while len(calls) < MAX_CALLS:
            if calls and not calls[-1][1] and calls[-1][0] == "run_tests" and \
                    rng.random() < 0.7:
                tool = "edit_file"
            elif calls and rng.random() < NOISE:
                tool = str(rng.choice(TOOLS))
            else:
                choices = trans.get((prev2, prev1)) or trans.get(("*", prev1))
                if choices is None:  # after a detour the workflow picks up where it can
                    choices = trans.get(("*", calls[-2][0])) if len(calls) > 1 else None
                if choices is None:
                    break
                tools, probs = list(choices), np.array(list(choices.values()))
                tool = str(rng.choice(tools, p=probs / probs.sum()))
                if tool == END:
                    break
            p_ok = works(task, tool)
            calls.append((tool, bool(rng.random() < p_ok)))
            prev2, prev1 = prev1, tool
        if calls:
            out.append(Session(task, 60.0 * i, calls))
    return out


# --- predictors ---------------------------------------------------------------------------

Ranker = Callable[[list[str], str], list[str]]
"""history, task -> every tool, best first."""


def baselines(train: Sequence[Session]) -> dict[str, Ranker]:
    freq: Counter[str] = Counter()
    bigram: dict[str | None, Counter[str]] = {}
    for s in train:
        prev: str | None = None
        for tool, _ in s.calls:
            freq[tool] += 1
            bigram.setdefault(prev, Counter())[tool] += 1
            prev = tool
    by_freq = sorted(TOOLS, key=lambda t: (-freq[t], t))

    def most_frequent(history: list[str], task: str) -> list[str]:
        return by_freq

    def repeat_last(history: list[str], task: str) -> list[str]:
        if not history:
            return by_freq
        return [history[-1], *(t for t in by_freq if t != history[-1])]

    def unsmoothed_bigram(history: list[str], task: str) -> list[str]:
        counts = bigram.get(history[-1] if history else None, Counter())
        return sorted(TOOLS, key=lambda t: (-counts[t], t))

    return {"most-frequent tool": most_frequent, "repeat last tool": repeat_last,
            "unsmoothed bigram": unsmoothed_bigram}


async def train_model(train: Sequence[Session], with_context: bool) -> tuple[Learner, Any]:
    store = MemoryLearningStore()
    lrn = await Learner.create(LearnerConfig(name="tools", seed=1), store)
    model = NextToolModel.of(lrn)
    for s in train:
        history: list[str] = []
        ctx = {"task": s.task} if with_context else None
        for tool, ok in s.calls:
            got = model.suggest(history, TOOLS, context=ctx)
            await model.feedback(got.selection_id, {tool: "accepted" if ok else "rejected"})
            history.append(tool)
    return lrn, store


def project_ranker(lrn: Learner, weight: float, with_context: bool) -> Ranker:
    model = NextToolModel(lrn, sequence_weight=weight)

    def rank(history: list[str], task: str) -> list[str]:
        got = model.suggest(history, TOOLS, k=len(TOOLS),
                            context={"task": task} if with_context else None, explore=False)
        return [s.tool for s in got.suggestions]

    return rank


def evaluate(rank: Ranker, test: Sequence[Session]) -> dict[str, dict[str, float]]:
    ranks: dict[str, list[int]] = {"all calls": [], "calls that worked": []}
    top_works: list[float] = []
    for s in test:
        history: list[str] = []
        for tool, ok in s.calls:
            order = rank(history, s.task)
            top_works.append(works(s.task, order[0]))
            r = order.index(tool) + 1
            ranks["all calls"].append(r)
            if ok:
                ranks["calls that worked"].append(r)
            history.append(tool)
    out = {}
    for name, rs in ranks.items():
        arr = np.array(rs)
        out[name] = {"hit@1": float(np.mean(arr <= 1)), "hit@3": float(np.mean(arr <= 3)),
                     "hit@5": float(np.mean(arr <= 5)), "mrr": float(np.mean(1.0 / arr)),
                     "calls": len(rs)}
    out["top-1 works"] = {"p": float(np.mean(top_works))}
    return out


async def part_accuracy(sz: Sizes) -> dict[str, Any]:
    sessions = corpus(sz.sessions, sz.seed)
    cut = int(len(sessions) * 0.8)  # dated in order: the last 20% by time are held out
    train, test = sessions[:cut], sessions[cut:]
    rows: dict[str, Any] = {}
    t0 = time.perf_counter()
    lrn, store = await train_model(train, with_context=False)
    train_s = time.perf_counter() - t0
    clrn, cstore = await train_model(train, with_context=True)
    try:
        rows["project, success-weighted (w=0.5)"] = evaluate(project_ranker(lrn, 0.5, False),
                                                             test)
        rows["project, sequence only (w=1)"] = evaluate(project_ranker(lrn, 1.0, False), test)
        rows["project + task context, success-weighted"] = evaluate(
            project_ranker(clrn, 0.5, True), test)
        rows["project + task context, sequence only"] = evaluate(
            project_ranker(clrn, 1.0, True), test)
        for name, rank in baselines(train).items():
            rows[name] = evaluate(rank, test)
        rows_learned = len(await store.evidence("tools"))
    finally:
        for x in (lrn, clrn):
            await x.close()
        for st in (store, cstore):
            await st.close()
    calls = sum(len(s.calls) for s in train)
    return {"sessions": len(sessions), "train_sessions": len(train), "test_sessions": len(test),
            "train_calls": calls, "test_calls": sum(len(s.calls) for s in test),
            "train_s": round(train_s, 2), "rows_learned": rows_learned, "seed": sz.seed,
            "rows": rows}


# --- speed --------------------------------------------------------------------------------


async def part_speed(sz: Sizes) -> dict[str, Any]:
    rng = np.random.default_rng(sz.seed)
    tools = [f"tool_{i:02d}" for i in range(50)]
    # A sparse random workflow: each tool has 6 likely successors.
    succ = {t: list(rng.choice(tools, 6, replace=False)) for t in tools}
    store = MemoryLearningStore()
    lrn = await Learner.create(LearnerConfig(name="speed", seed=2), store)
    sel = await Learner.create(LearnerConfig(name="select", seed=3), store)
    model = NextToolModel.of(lrn)
    history = [str(rng.choice(tools))]
    while len(lrn._ctx) < 4 or sum(len(t) for t in lrn._ctx.values()) < sz.ngrams:
        nxt = str(rng.choice(succ[history[-1]])) if rng.random() > 0.2 else str(
            rng.choice(tools))
        got = model.suggest(history[-2:], tools)
        await model.feedback(got.selection_id, {nxt: float(rng.random() < 0.7)})
        history.append(nxt)
        if len(history) > 20:
            history = [str(rng.choice(tools))]
    learned = sum(len(t) for t in lrn._ctx.values())
    await sel.batch_observe([ArmOutcome(str(rng.choice(tools)), reward=float(rng.random() < .5))
                             for _ in range(2000)])
    states = [[str(a), str(b)] for a, b in zip(rng.choice(tools, 64), rng.choice(tools, 64),
                                                strict=True)]
    it = iter(range(1 << 62))

    def suggest() -> Any:
        return model.suggest(states[next(it) % 64], tools)

    def forget() -> None:  # untimed: the next suggestion computes its estimate afresh
        model._memo.clear()
        model._memo_by_level.clear()

    pending: list[Any] = [model.suggest(history[-2:], tools)]

    async def learn() -> None:  # untimed: one feedback, as an agent loop does between calls
        await model.feedback(pending[-1].selection_id,
                             {str(rng.choice(tools)): float(rng.random() < 0.7)})

    def suggest_in_loop(_: None) -> None:
        pending.append(model.suggest(states[next(it) % 64], tools))
        del pending[:-1]

    cases = {"select (50 arms, Thompson)": Case(lambda: sel.select(tools)),
             "suggest, state asked before (memo hit)": Case(suggest),
             "suggest, memo cleared": Case(lambda _: suggest(), prep=forget),
             "suggest right after a feedback": Case(suggest_in_loop, prep=learn),
             "suggest, memo hit, explore=False": Case(
                 lambda: model.suggest(states[next(it) % 64], tools, explore=False))}
    await interleave(cases, block=sz.speed_block, rounds=sz.speed_rounds,
                     budget_s=sz.speed_budget_s)
    ref = cases["select (50 arms, Thompson)"]
    out = {"ngram_rows": learned, "histories": len(lrn._ctx)}
    for name, case in cases.items():
        out[name] = {"p50_us": round(case.p50_us, 1), "p90_us": round(case.p90_us, 1),
                     "ratio_to_select": round(common.round_ratio(case, ref), 2),
                     "calls": len(case.samples)}
    await lrn.close()
    await sel.close()
    await store.close()
    return out


# --- main ---------------------------------------------------------------------------------


class Sizes:
    def __init__(self, mode: str, seed: int) -> None:
        self.mode, self.seed = mode, seed
        smoke, quick = mode == "smoke", mode == "quick"
        self.sessions = 60 if smoke else 600 if quick else 2500
        self.ngrams = 300 if smoke else 10_000
        self.speed_budget_s = 0.05 if smoke else 1.0 if quick else 4.0
        self.speed_block = 5 if smoke else 200
        self.speed_rounds = 2 if smoke else 40


def print_accuracy(r: dict[str, Any]) -> None:
    print(f"\nAccuracy: {r['sessions']} sessions (seed {r['seed']}), train {r['train_sessions']}"
          f" ({r['train_calls']} calls, {r['train_s']} s, {r['rows_learned']} evidence rows), "
          f"held out (last 20% by time) {r['test_sessions']} ({r['test_calls']} calls)")
    for subset in ("all calls", "calls that worked"):
        print(f"\n{subset}:")
        print(table(["predictor", "hit@1", "hit@3", "hit@5", "MRR", "top-1 works"], [
            (name, *(f"{row[subset][m]:.3f}" for m in ("hit@1", "hit@3", "hit@5", "mrr")),
             f"{row['top-1 works']['p']:.3f}")
            for name, row in r["rows"].items()]))


def print_speed(r: dict[str, Any]) -> None:
    print(f"\nSpeed: {r['ngram_rows']} learned n-gram rows over {r['histories']} histories, "
          "50 candidate tools, p50 / p90 us, ratio to select (median of per-round ratios)")
    print(table(["case", "p50 us", "p90 us", "ratio to select"], [
        (name, v["p50_us"], v["p90_us"], f"{v['ratio_to_select']:.2f}x")
        for name, v in r.items() if isinstance(v, dict)]))


async def main() -> int:
    ap = common.base_parser(__doc__.splitlines()[0], PARTS)
    ap.add_argument("--seed", type=int, default=17, help="corpus seed (default 17)")
    args = ap.parse_args()
    sz = Sizes("smoke" if args.smoke else "quick" if args.quick else "full", args.seed)
    parts = common.chosen_parts(args, PARTS)
    notes = common.machine_notes()
    results: dict[str, Any] = {"notes": notes, "mode": sz.mode, "argv": sys.argv}
    for p in parts:
        t0 = time.perf_counter()
        results[p] = await globals()[f"part_{p}"](sz)
        results[p + "_wall_s"] = round(time.perf_counter() - t0, 1)
    notes["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    common.print_notes(notes, sys.argv)
    failed: list[str] = []
    if "accuracy" in results:
        r = results["accuracy"]
        print_accuracy(r)
        ours = r["rows"]["project, success-weighted (w=0.5)"]["all calls"]["hit@3"]
        freq = r["rows"]["most-frequent tool"]["all calls"]["hit@3"]
        checks = [(f"hit@3 >= {HIT3_MIN}", ours >= HIT3_MIN),
                  (f"hit@3 >= most-frequent + {HIT3_OVER_FREQUENT_MIN}",
                   ours >= freq + HIT3_OVER_FREQUENT_MIN)]
        print("\nTargets (project, success-weighted, all calls): hit@3 "
              f"{ours:.3f}, most-frequent {freq:.3f}: " + "; ".join(
                  f"{name} {'ok' if ok else 'MISS'}" for name, ok in checks))
        failed += [name for name, ok in checks if not ok]
    if "speed" in results:
        s = results["speed"]
        print_speed(s)
        p50 = s["suggest, memo cleared"]["p50_us"]
        print(f"\nTarget: suggest p50 (memo cleared) {p50} us <= {SUGGEST_P50_MAX_US} us: "
              f"{'ok' if p50 <= SUGGEST_P50_MAX_US else 'MISS'}")
        if p50 > SUGGEST_P50_MAX_US:
            failed.append("suggest p50")
    print("\nTargets missed: " + (", ".join(failed) if failed else "none")
          + (" (smoke mode: sizes too small to mean anything)" if sz.mode == "smoke" else ""))
    common.write_json(args.json, results)
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    common.run(main)
