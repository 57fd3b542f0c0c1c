"""The policy layer's strategies run in a learner: chosen by name in ``LearnerConfig`` or the
TOML file, validated with messages that list what is valid, learning seeded problems
through ``select`` and ``observe``, and shown by ``qortex_status``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mcp import Client

from qortex_mcp.config import Settings
from qortex_mcp.errors import ConfigError
from qortex_mcp.learning import (
    ArmOutcome,
    Learner,
    LearnerConfig,
    LearnerRegistry,
    MemoryLearningStore,
    SelectionSigner,
    SqliteLearningStore,
    ThompsonSampling,
)
from qortex_mcp.learning.policies import POLICIES
from qortex_mcp.learning.policies.beta import beta_draws
from qortex_mcp.learning.selection import LEARNER_STRATEGIES, PolicyChooser
from qortex_mcp.server import build_server
from tests.server.support import ok

pytestmark = pytest.mark.anyio

RATES = {"low": 0.2, "mid": 0.5, "high": 0.8}
ARMS = list(RATES)
NOT_YET = ("ucb1_tuned", "exp3", "gaussian_thompson")


async def play(learner: Learner, rounds: int, seed: int,
               context: dict[str, str] | None = None,
               rates: dict[str, float] = RATES) -> list[str]:
    """Bernoulli rewards for what the learner picks; returns the picks in order."""
    rng = np.random.default_rng(seed)
    picks = []
    for _ in range(rounds):
        result = await learner.select(ARMS, context=context)
        arm = result.selected[0].id
        reward = float(rng.random() < rates[arm])
        await learner.observe(ArmOutcome(arm, reward=reward, selection_id=result.selection_id))
        picks.append(arm)
    return picks


def test_the_learner_runs_every_strategy_but_three() -> None:
    assert set(LEARNER_STRATEGIES) == set(POLICIES) - set(NOT_YET)
    assert len(LEARNER_STRATEGIES) == 9
    from qortex_mcp.learning.strategies import catalogue

    assert {e.name for e in catalogue() if e.in_learner} == set(LEARNER_STRATEGIES)
    assert catalogue()[0].as_dict()["in_learner"] is True


@pytest.mark.parametrize("name", [n for n in LEARNER_STRATEGIES if n != "random"])
async def test_each_strategy_finds_the_best_arm(name: str) -> None:
    config = LearnerConfig(name="s", strategy=name, seed=11)
    async with MemoryLearningStore() as store:
        learner = await Learner.create(config, store)
        picks = await play(learner, 800, seed=5)
        (best,) = await learner.top_arms(1)
        await learner.close()
    late = picks[-300:]
    counts = {a: late.count(a) for a in ARMS}
    assert best.id == "high", (name, counts)
    if name == "top_two_thompson":
        # It identifies the best arm rather than exploiting it: the leader half the time
        # (beta = 0.5), a challenger (here the runner-up) otherwise; the worst one starves.
        assert counts["high"] > 100, counts
        assert counts["low"] < 30, counts
    else:  # uniform choice would give 1/3; every other learning strategy ends far above it
        assert counts["high"] / len(late) > 0.6, (name, counts)


async def test_random_does_not_learn() -> None:
    async with MemoryLearningStore() as store:
        learner = await Learner.create(LearnerConfig(name="s", strategy="random", seed=3), store)
        picks = await play(learner, 600, seed=5)
        await learner.close()
    for arm in ARMS:
        assert 0.2 < picks.count(arm) / len(picks) < 0.47, arm


async def test_a_policy_strategy_learns_per_context() -> None:
    """kl_ucb on evidence backed off per context: each context finds its own best arm."""
    flipped = {"low": 0.8, "mid": 0.5, "high": 0.2}
    async with MemoryLearningStore() as store:
        learner = await Learner.create(LearnerConfig(name="c", strategy="kl_ucb", seed=1), store)
        for _ in range(3):
            await play(learner, 150, seed=7, context={"task": "a"})
            await play(learner, 150, seed=8, context={"task": "b"}, rates=flipped)
        a = await play(learner, 200, seed=9, context={"task": "a"})
        b = await play(learner, 200, seed=10, context={"task": "b"}, rates=flipped)
        await learner.close()
    assert a.count("high") > 120, a.count("high")
    assert b.count("low") > 120, b.count("low")


async def test_thompson_draws_are_the_policy_layers_for_a_seed() -> None:
    """The default keeps its fast path; its choices are what policies.beta's Thompson draws
    from the same generator, so a seed gives the decisions every release gave."""
    async with MemoryLearningStore() as store:
        learner = await Learner.create(LearnerConfig(name="t", seed=21), store)
        assert isinstance(LearnerConfig().build_strategy(), ThompsonSampling)
        for i in range(8):  # some evidence, so the draws are not the all-uniform fast path
            await learner.observe(ArmOutcome(ARMS[i % 3], reward=float(i % 2),
                                             idempotency_key=f"k{i}"))
        posts = {p.id: p for p in await learner.posteriors(ARMS)}
        alpha = np.array([posts[a].alpha for a in ARMS])
        beta = np.array([posts[a].beta for a in ARMS])
        twin = np.random.Generator(np.random.SFC64(21))
        for _ in range(30):
            expected = ARMS[int(beta_draws(alpha, beta, twin).argmax())]
            assert (await learner.select(ARMS)).selected[0].id == expected
        await learner.close()


async def test_a_token_budget_follows_the_strategys_order() -> None:
    async with MemoryLearningStore() as store:
        learner = await Learner.create(LearnerConfig(name="b", strategy="mean"), store)
        for arm, reward in [("big", 1.0), ("mid", 0.8), ("small", 0.5)]:
            for i in range(20):
                await learner.observe(ArmOutcome(arm, reward=reward, idempotency_key=f"{arm}{i}"))
        from qortex_mcp.learning import Arm

        arms = [Arm("big", token_cost=100), Arm("mid", token_cost=30), Arm("small", token_cost=10)]
        result = await learner.select(arms, k=3, token_budget=45)
        await learner.close()
    assert [a.id for a in result.selected] == ["mid", "small"]
    assert result.strategy == "mean"


@pytest.mark.parametrize(("strategy", "params", "words"), [
    ("nope", {}, "unknown strategy 'nope'; use one of thompson, mean, ucb1"),
    ("eps_greedy", {"epsilon": 2.0}, "epsilon"),
    ("ucb1", {"exploration": 1.0}, "exploration"),
    ("mean", {"alpha0": 2.0}, "set LearnerConfig.prior"),
    ("exp3", {}, "cannot run in a learner yet"),
    ("gaussian_thompson", {}, "reward_sq_sum"),
    ("ucb1_tuned", {}, "a learner runs thompson, mean"),
])
def test_bad_strategies_are_refused_with_what_is_valid(
    strategy: str, params: dict[str, object], words: str,
) -> None:
    with pytest.raises(ConfigError) as info:
        LearnerConfig(strategy=strategy, strategy_params=params)
    assert info.value.code == "CONFIG_ERROR"
    assert words in str(info.value)


def test_parameters_go_with_a_name_only() -> None:
    with pytest.raises(ConfigError, match="not an instance"):
        LearnerConfig(strategy=ThompsonSampling(), strategy_params={"epsilon": 0.1})
    with pytest.raises(ConfigError, match="table"):
        LearnerConfig(strategy="eps_greedy", strategy_params=[0.1])  # type: ignore[arg-type]


def test_toml_options_carry_strategy_parameters() -> None:
    config = LearnerConfig.from_options("x", {"strategy": "eps_greedy",
                                              "strategy_params": {"epsilon": 0.05}})
    built = config.build_strategy()
    assert isinstance(built, PolicyChooser)
    assert built.params == {"epsilon": 0.05, "decay": 0.0, "floor": 0.0}
    described = json.loads(config.describe())
    assert described["strategy"] == "eps_greedy"
    assert described["strategy_params"] == {"epsilon": 0.05, "decay": 0.0, "floor": 0.0}
    assert "strategy_params" not in json.loads(LearnerConfig().describe())


async def test_a_strategy_from_the_toml_file_runs_and_status_shows_it(tmp_path: Path) -> None:
    toml = tmp_path / "qortex.toml"
    toml.write_text('[learners.tools]\nstrategy = "ucb1"\nstrategy_params = { c = 1.0 }\n'
                    'change_detection = { threshold = 10 }\n\n'
                    '[learners.bad]\nstrategy = "softmax"\n'
                    'strategy_params = { temperature = -1 }\n', encoding="utf-8")
    settings = Settings.build(store="sqlite", state_dir=tmp_path / "state", config_file=toml)
    store = SqliteLearningStore(settings.sqlite_path)
    registry = LearnerRegistry(store, SelectionSigner.random(), options=settings.learners)
    await registry.open()
    try:
        async with Client(build_server(settings, registry=registry)) as client:
            sel = await ok(client, "qortex_select", {"learner": "tools",
                                                     "candidates": ["a", "b"]})
            assert sel["strategy"] == "ucb1"
            await ok(client, "qortex_feedback", {"learner": "tools",
                                                 "selection_id": sel["selection_id"],
                                                 "outcomes": {sel["selected"][0]["id"]:
                                                              "accepted"}})
            status = await ok(client, "qortex_status")
    finally:
        await registry.close()
        await store.close()
    (learner,) = status["learners"]
    assert (learner["strategy"], learner["strategy_params"]) == ("ucb1", {"c": 1.0})
    assert learner["change_detection"] == {"delta": 0.05, "threshold": 10.0, "shrink": 0.01,
                                           "min_samples": 20, "all_arms": 0}
    with pytest.raises(ConfigError, match="temperature"):
        LearnerConfig.from_options("bad", settings.learner_options("bad"))


async def test_posteriors_show_the_strategys_estimate() -> None:
    async with MemoryLearningStore() as store:
        ucb = await Learner.create(LearnerConfig(name="u", strategy="ucb1"), store)
        for i, r in enumerate([1.0, 1.0, 0.0, 1.0]):
            await ucb.observe(ArmOutcome("a", reward=r, idempotency_key=f"u{i}"))
        await ucb.select(["a", "fresh"])  # offered, never answered
        tried, untried = await ucb.posteriors(["a", "fresh"])
        ts = await Learner.create(LearnerConfig(name="t"), store)
        await ts.observe(ArmOutcome("a", reward=1.0))
        (beta,) = await ts.posteriors(["a"])
        await ucb.close()
        await ts.close()
    assert tried.estimate is not None and untried.estimate is not None  # noqa: PT018
    assert tried.estimate.interval == "confidence"
    assert tried.estimate.mean == pytest.approx(0.75)
    assert tried.estimate.low < 0.75 < tried.estimate.high
    assert dict(tried.estimate.params) == {"pulls": 4.0, "reward_sum": 3.0}
    assert (untried.estimate.mean, untried.estimate.low, untried.estimate.high) == (None, 0, 1)
    assert tried.alpha == 4.0  # the Beta view of the same evidence stays
    assert beta.estimate is not None
    assert beta.estimate.interval == "credible"
    assert (beta.estimate.low, beta.estimate.high) == (beta.ci_low, beta.ci_high)
    assert dict(beta.estimate.params) == {"alpha": 2.0, "beta": 1.0}


async def test_the_posteriors_tool_shows_the_estimate(tmp_path: Path) -> None:
    settings = Settings.build(store="memory", state_dir=tmp_path / "state",
                              learners={"k": {"strategy": "kl_ucb"}})
    registry = LearnerRegistry(MemoryLearningStore(), SelectionSigner.random(),
                               options=settings.learners)
    await registry.open()
    try:
        async with Client(build_server(settings, registry=registry)) as client:
            await ok(client, "qortex_feedback", {"learner": "k", "arm_id": "a",
                                                 "outcome": "accepted"})
            out = await ok(client, "qortex_posteriors", {"learner": "k"})
    finally:
        await registry.close()
    (arm,) = out["arms"]
    assert arm["estimate"]["interval"] == "confidence"
    assert arm["estimate"]["mean"] == 1.0
    assert arm["estimate"]["params"] == {"pulls": 1.0, "reward_sum": 1.0}
