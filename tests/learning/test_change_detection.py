"""Change detection: a two-sided Page-Hinkley test per arm notices a moved reward level,
shrinks that arm's evidence toward its prior and logs a decay event saying why; it stays
quiet on a stationary arm, and the learner recovers from a change sooner with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qortex_mcp.errors import ConfigError
from qortex_mcp.learning import (
    ArmOutcome,
    Learner,
    LearnerConfig,
    LearningStore,
    MemoryLearningStore,
    SqliteLearningStore,
)
from qortex_mcp.learning.changes import CHANGE_DETECTED, ArmTests, PageHinkley, change_detector
from qortex_mcp.learning.transfer import export_jsonl, import_jsonl

pytestmark = pytest.mark.anyio


def bernoulli(p: float, n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(x) for x in rng.random(n) < p]


def alarms(tests: ArmTests, rewards: list[float], arm: str = "a") -> list[int]:
    return [i for i, r in enumerate(rewards) if tests.observe(arm, r)]


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_a_stationary_arm_rarely_alarms(p: float) -> None:
    total = sum(len(alarms(ArmTests(PageHinkley()), bernoulli(p, 5000, seed)))
                for seed in range(10))
    assert total <= 2, total  # 50,000 rewards


@pytest.mark.parametrize(("before", "after"), [(0.8, 0.2), (0.2, 0.8), (0.9, 0.5)])
def test_a_moved_level_alarms_soon_after_the_change(before: float, after: float) -> None:
    for seed in range(10):
        tests = ArmTests(PageHinkley())
        assert not alarms(tests, bernoulli(before, 1000, seed))
        fired = alarms(tests, bernoulli(after, 300, seed + 100))
        assert fired, seed
        assert fired[0] < 150, (seed, fired[0])


def test_min_samples_holds_an_alarm_back() -> None:
    rewards = [1.0] * 5 + [0.0] * 40
    early = alarms(ArmTests(PageHinkley(min_samples=1, threshold=2.0)), rewards)
    late = alarms(ArmTests(PageHinkley(min_samples=30, threshold=2.0)), rewards)
    assert early[0] < late[0]
    assert late[0] >= 29


@pytest.mark.parametrize(("spec", "expected"), [
    (None, None), (False, None), (True, PageHinkley()), ("page_hinkley", PageHinkley()),
    ({"threshold": 8, "shrink": 0.2}, PageHinkley(threshold=8.0, shrink=0.2)),
    ({"method": "page_hinkley", "min_samples": 5}, PageHinkley(min_samples=5)),
])
def test_the_detector_spec(spec: object, expected: PageHinkley | None) -> None:
    assert change_detector(spec) == expected


@pytest.mark.parametrize(("spec", "words"), [
    ("cusum", "unknown change_detection method 'cusum'; use one of page_hinkley"),
    ({"threshold": 0}, "change detector 'page_hinkley' parameter 'threshold' must be"),
    ({"shrink": 1.0}, "parameter 'shrink' must be"),
    ({"min_samples": 0.5}, "parameter 'min_samples' must be"),
    ({"lambda": 3}, "unknown parameter 'lambda' for change detector 'page_hinkley'; valid: "
                    "delta, threshold, shrink, min_samples, all_arms"),
    ({"all_arms": 2}, "parameter 'all_arms' must be"),
    (3, "change_detection must be true, a method name or a table"),
])
def test_bad_specs_are_refused(spec: object, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        LearnerConfig(change_detection=spec)  # type: ignore[arg-type]
    assert words in str(info.value)


def test_toml_options_and_the_stored_config() -> None:
    config = LearnerConfig.from_options("x", {"change_detection": {"threshold": 4.0}})
    assert config.build_change_detector() == PageHinkley(threshold=4.0)
    assert '"change_detection": {"all_arms": 0, "delta": 0.05, "min_samples": 20, ' \
           '"shrink": 0.01, "threshold": 4.0}' in config.describe()
    assert "change_detection" not in LearnerConfig().describe()


async def feed(learner: Learner, arm: str, rewards: list[float], tag: str) -> None:
    for i, r in enumerate(rewards):
        await learner.observe(ArmOutcome(arm, reward=r, idempotency_key=f"{tag}{i}"))


async def test_an_alarm_shrinks_the_arm_and_logs_why(tmp_path: Path) -> None:
    config = LearnerConfig(name="cd", change_detection={"threshold": 3.0, "shrink": 0.1})
    async with SqliteLearningStore(tmp_path / "state.db") as store:
        learner = await Learner.create(config, store)
        await feed(learner, "a", [1.0] * 60, "up")
        await feed(learner, "b", [1.0] * 10, "b")
        (before,) = await learner.posteriors(["a"])
        await feed(learner, "a", [0.0] * 15, "down")
        a, b = await learner.posteriors(["a", "b"])
        events = await store.events("cd")
        report = await learner.replay()
        await learner.close()
    assert before.alpha == 61.0
    # Shrunk to a tenth (at the alarm) and then a few failures more: far from 61.
    assert a.alpha < 8.0, a
    assert b.alpha == 11.0  # the other arm keeps its evidence
    decays = [e for e in events if e.kind == "decay"]
    assert len(decays) == 1
    assert (decays[0].arm, decays[0].factor, decays[0].outcome) == ("a", 0.1, CHANGE_DETECTED)
    assert report.ok, report.mismatches


async def test_all_arms_restarts_every_arm(tmp_path: Path) -> None:
    config = LearnerConfig(name="cd", change_detection={"threshold": 3.0, "shrink": 0.1,
                                                         "all_arms": 1})
    async with SqliteLearningStore(tmp_path / "state.db") as store:
        learner = await Learner.create(config, store)
        await feed(learner, "b", [1.0] * 30, "b")
        await feed(learner, "a", [1.0] * 60 + [0.0] * 15, "a")
        a, b = await learner.posteriors(["a", "b"])
        events = await store.events("cd")
        report = await learner.replay()
        await learner.close()
    assert a.alpha < 8.0, a
    assert b.alpha == pytest.approx(1.0 + 3.0), b  # its 30 successes shrunk to a tenth
    (decay,) = [e for e in events if e.kind == "decay"]
    assert (decay.arm, decay.outcome) == ("", CHANGE_DETECTED)
    assert report.ok, report.mismatches


async def test_the_reason_survives_export_and_import(tmp_path: Path) -> None:
    config = LearnerConfig(name="cd", change_detection={"threshold": 3.0})
    async with SqliteLearningStore(tmp_path / "a.db") as source:
        learner = await Learner.create(config, source)
        await feed(learner, "a", [1.0] * 40 + [0.0] * 20, "r")
        await learner.close()
        lines = [line async for line in export_jsonl(source)]
    async with SqliteLearningStore(tmp_path / "b.db") as target:
        await import_jsonl(target, lines)
        (decay,) = [e for e in await target.events("cd") if e.kind == "decay"]
    assert decay.outcome == CHANGE_DETECTED


async def test_stream_batches_are_tested_too() -> None:
    config = LearnerConfig(name="cd", change_detection={"threshold": 3.0})
    async with MemoryLearningStore() as store:
        learner = await Learner.create(config, store)
        requests = [[ArmOutcome("a", reward=1.0, idempotency_key=f"u{i}")] for i in range(40)]
        requests += [[ArmOutcome("a", reward=0.0, idempotency_key=f"d{i}")] for i in range(20)]
        await learner.observe_many(requests[:40])
        await learner.observe_many(requests[40:])
        events = await store.events("cd")
        await learner.close()
    assert [e.outcome for e in events if e.kind == "decay"] == [CHANGE_DETECTED]


async def test_every_store_records_a_decay_reason(store: LearningStore) -> None:
    learner = await Learner.create(LearnerConfig(name="why"), store)
    await learner.observe(ArmOutcome("a", reward=1.0))
    await learner.close()
    await store.decay("why", "a", 0.5, 1.0, CHANGE_DETECTED)
    await store.decay("why", "a", 0.5, 2.0)
    decays = [e for e in await store.events("why") if e.kind == "decay"]
    assert [e.outcome for e in decays] == [CHANGE_DETECTED, None]


async def regret_after_changes(detect: bool, seed: int) -> tuple[float, int]:
    """Three arms whose best changes at t = 600: regret over the 600 steps after it, and the
    steps until the new best arm holds a 50-step window's majority."""
    rates = [[0.8, 0.5, 0.2], [0.2, 0.5, 0.8]]
    arms = ["x", "y", "z"]
    config = LearnerConfig(name="ns", seed=seed, change_detection=detect or None)
    rng = np.random.default_rng(seed)
    regret = 0.0
    recent: list[bool] = []
    recovered = -1
    async with MemoryLearningStore() as store:
        learner = await Learner.create(config, store)
        for t in range(1200):
            phase = rates[t >= 600]
            sel = await learner.select(arms)
            i = arms.index(sel.selected[0].id)
            await learner.observe(ArmOutcome(arms[i], reward=float(rng.random() < phase[i]),
                                             selection_id=sel.selection_id))
            if t >= 600:
                regret += max(phase) - phase[i]
                recent = [*recent[-49:], i == 2]
                if recovered < 0 and len(recent) == 50 and sum(recent) > 25:
                    recovered = t - 600
        await learner.close()
    return regret, recovered


async def test_thompson_recovers_from_a_change_sooner_with_detection() -> None:
    plain = [await regret_after_changes(False, s) for s in range(4)]
    detecting = [await regret_after_changes(True, s) for s in range(4)]
    assert np.median([r for r, _ in detecting]) < 0.5 * np.median([r for r, _ in plain]), (
        plain, detecting)
    assert all(0 <= steps < 250 for _, steps in detecting), detecting
