"""Resource limits through the tools: open learners, rate caps, status, large reranks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from mcp import Client

from qortex_mcp.config import Settings
from qortex_mcp.errors import ConfigError
from qortex_mcp.learning import LearnerRegistry
from qortex_mcp.learning.tokens import MAX_TOKEN_CHARS
from qortex_mcp.runtime import open_registry
from qortex_mcp.server import build_server
from qortex_mcp.tools import ERROR_META_KEY
from tests.server.support import fingerprint, ok, refused

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.build(store="sqlite", state_dir=tmp_path / "state",
                          sqlite_synchronous="NORMAL", max_open_learners=2,
                          feedback_per_arm_per_minute=2)

# ``registry`` and ``client`` come from conftest.py and use the ``settings`` above.


async def test_more_learners_than_the_open_cap_are_all_served(
        client: Client, registry: LearnerRegistry) -> None:
    for i in range(5):
        await ok(client, "qortex_feedback", {"learner": f"l{i}", "arm_id": "a", "outcome": 1})
    assert len(registry.open_learners()) == 2
    for i in range(5):  # the closed ones reopen from the store, evidence intact
        top = await ok(client, "qortex_top_arms", {"learner": f"l{i}"})
        assert top["arms"][0]["pulls"] == 1
    status = await ok(client, "qortex_status")
    assert len(status["learners"]) == 5
    assert status["limits"]["max_open_learners"] == 2
    assert status["limits"]["open_learners"] == 2


async def test_feedback_past_the_arm_rate_is_retryable_and_changes_nothing(
        client: Client, registry: LearnerRegistry) -> None:
    sel = await ok(client, "qortex_select", {"candidates": ["a", "b"], "k": 2})
    for _ in range(2):
        await ok(client, "qortex_feedback", {"arm_id": "a", "outcome": 0})
    before = await fingerprint(registry.store, registry)
    result = await client.call_tool("qortex_feedback", {"arm_id": "a", "outcome": 0})
    error = (result.meta or {})[ERROR_META_KEY]
    assert error["code"] == "RATE_LIMITED"
    assert error["retryable"] is True
    assert error["retry_after_s"] == 30.0
    assert "at most 2 feedbacks per arm per minute; retry in 30 s" in error["message"]
    code, _ = await refused(client, "qortex_feedback", {
        "selection_id": sel["selection_id"], "outcomes": {"a": 0, "b": 1}})
    assert code == "RATE_LIMITED"  # nothing of a refused batch applies, b included
    assert await fingerprint(registry.store, registry) == before
    await ok(client, "qortex_feedback", {"selection_id": sel["selection_id"],
                                         "outcomes": {"b": 1}})
    status = await ok(client, "qortex_status")
    assert status["limits"]["feedback_per_arm_per_minute"] == 2
    assert status["limits"]["feedback_per_minute"] == 1200
    assert status["learners"][0]["feedback_last_minute"] == 3


async def test_learner_options_override_the_server_rate_caps(tmp_path: Path) -> None:
    config = tmp_path / "qortex.toml"
    config.write_text("[defaults]\nfeedback_per_arm_per_minute = 0\n", encoding="utf-8")
    settings = Settings.build(store="memory", state_dir=tmp_path, config_file=config,
                              feedback_per_arm_per_minute=1)
    registry = await open_registry(settings)
    try:
        async with Client(build_server(settings, registry=registry)) as client:
            for _ in range(5):
                await ok(client, "qortex_feedback", {"arm_id": "a", "outcome": 1})
            limits = (await ok(client, "qortex_status"))["limits"]
            assert limits["feedback_per_arm_per_minute"] is None
    finally:
        await registry.close()


def test_limits_come_from_the_environment() -> None:
    env = {"QORTEX_MAX_OPEN_LEARNERS": "10", "QORTEX_MEMORY_BUDGET_MB": "64",
           "QORTEX_FEEDBACK_PER_MINUTE": "0", "QORTEX_FEEDBACK_PER_ARM_PER_MINUTE": " 30 ",
           "HOME": "/home/x"}
    s = Settings.from_env(env)
    assert (s.max_open_learners, s.memory_budget_mb, s.feedback_per_minute,
            s.feedback_per_arm_per_minute) == (10, 64, 0, 30)
    defaults = Settings.from_env({"HOME": "/home/x"})
    assert (defaults.max_open_learners, defaults.memory_budget_mb, defaults.feedback_per_minute,
            defaults.feedback_per_arm_per_minute) == (1000, 1024, 1200, 120)
    for var, bad in (("QORTEX_MAX_OPEN_LEARNERS", "0"), ("QORTEX_MEMORY_BUDGET_MB", "lots"),
                     ("QORTEX_FEEDBACK_PER_MINUTE", "-1"),
                     ("QORTEX_FEEDBACK_PER_ARM_PER_MINUTE", "1.5")):
        with pytest.raises(ConfigError, match=var):
            Settings.from_env({"HOME": "/home/x", var: bad})


async def test_a_rerank_of_ten_thousand_short_ids_fits_its_selection_id(
        client: Client, registry: LearnerRegistry) -> None:
    # Before: LIMIT_EXCEEDED above 5,747 such results, though max_candidates is 10,000.
    results = [{"id": f"r{i}", "score": (i * 7919 % 10007) / 10007} for i in range(10_000)]
    out = await ok(client, "qortex_rerank", {"learner": "docs", "results": results})
    assert len(out["results"]) == 10_000
    assert len(out["selection_id"]) <= MAX_TOKEN_CHARS
    last = out["results"][-1]["id"]
    fb = await ok(client, "qortex_feedback", {"learner": "docs",
                                              "selection_id": out["selection_id"],
                                              "outcomes": {last: "accepted"}})
    assert fb["applied"] == 1
    # the id still proves what was shown: a result left out of a limited rerank is refused
    top = await ok(client, "qortex_rerank", {"learner": "docs", "results": results,
                                             "limit": 10})
    assert len(top["results"]) == 10
    shown = {r["id"] for r in top["results"]}
    hidden = next(r["id"] for r in results if r["id"] not in shown)
    before = await fingerprint(registry.store, registry)
    code, _ = await refused(client, "qortex_feedback", {
        "learner": "docs", "selection_id": top["selection_id"], "outcomes": {hidden: 1}})
    assert code == "ARM_NOT_IN_SELECTION"
    assert await fingerprint(registry.store, registry) == before


async def test_a_rerank_too_large_to_sign_says_how_many_would_fit(client: Client) -> None:
    # 64 random hex digits each: about 32 bytes of entropy per id, 320 KB for the list
    results = [{"id": hashlib.sha256(str(i).encode()).hexdigest(), "score": 0.5}
               for i in range(10_000)]
    code, text = await refused(client, "qortex_rerank", {"results": results})
    assert code == "LIMIT_EXCEEDED"
    assert "would fit" in text
    assert "limit" in text
