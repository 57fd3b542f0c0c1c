"""``GET /metrics`` after a scripted session over a real MCP client over HTTP: parsed with
prometheus_client's own parser, its counters equal the store's totals exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from prometheus_client.parser import text_string_to_metric_families

from qortex_mcp.learning import SqliteLearningStore
from tests.observe.support import base_of, request
from tests.server.support import HttpServer, base_env, ok, refused


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HttpServer]:
    srv = HttpServer(base_env(tmp_path / "state", QORTEX_SQLITE_SYNCHRONOUS="NORMAL",
                              QORTEX_METRICS_PER_ARM="2"))
    try:
        yield srv
    finally:
        srv.stop()


def scrape(server: HttpServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, headers, body = request(base_of(server.url) + "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


async def _session(url: str) -> dict[str, Any]:
    """Selections, feedback of every kind, duplicates and refusals, on two learners."""
    sent = {"applied_selects": 0}
    async with Client(url) as client:
        for i in range(7):
            sel = await ok(client, "qortex_select", {
                "learner": "prompts", "candidates": ["a", "b", "c"],
                "context": {"task": "t1"} if i % 2 else None})
            if i < 5:
                arm = sel["selected"][0]["id"]
                args = {"learner": "prompts", "selection_id": sel["selection_id"],
                        "outcomes": {arm: ["accepted", "rejected", "partial", 0.25, 1][i]}}
                await ok(client, "qortex_feedback", args)
                sent["applied_selects"] += 1
                if i == 0:
                    assert (await ok(client, "qortex_feedback", args))["duplicates"] == 1
        for _ in range(3):
            await ok(client, "qortex_select", {"learner": "tools", "candidates": ["x", "y"],
                                               "k": 2})
        await ok(client, "qortex_feedback", {"learner": "tools", "arm_id": "z",
                                             "outcome": "accepted"})
        code, _ = await refused(client, "qortex_feedback", {
            "learner": "tools", "selection_id": "forged", "outcomes": {"x": 1}})
        assert code == "INVALID_SELECTION"
        code, _ = await refused(client, "qortex_feedback", {
            "learner": "tools", "arm_id": "x", "outcome": 7})
        assert code == "INVALID_REWARD"
        await refused(client, "qortex_select", {"learner": "x" * 300, "candidates": ["a"]})
    return sent


@pytest.mark.anyio
async def test_counters_equal_the_store_totals_after_a_session(
        server: HttpServer, tmp_path: Path) -> None:
    with anyio.fail_after(60):
        sent = await _session(server.url)
    samples = scrape(server)  # the scrape flushes pending selection counts first
    async with SqliteLearningStore(tmp_path / "state" / "qortex.db") as store:
        summaries = {s.name: s for s in await store.learners()}
    assert set(summaries) == {"prompts", "tools"}
    for name, summary in summaries.items():
        assert total(samples, "qortex_selections_total", learner=name) == summary.selections
        assert total(samples, "qortex_feedback_total", learner=name,
                     result="applied") == summary.feedback
        assert total(samples, "qortex_learner_arms", learner=name) == summary.arms
    assert summaries["prompts"].selections == 7
    assert summaries["tools"].feedback == 1
    assert total(samples, "qortex_learners") == 2
    assert total(samples, "qortex_feedback_total", result="duplicate") == 1
    for outcome, count in (("accepted", 3), ("rejected", 1), ("partial", 1), ("graded", 2)):
        # accepted: a select, its duplicate and the bare z; graded: 0.25 and 1
        assert total(samples, "qortex_feedback_total", outcome=outcome) == count, outcome
    assert total(samples, "qortex_feedback_refused_total", code="INVALID_SELECTION") == 1
    assert total(samples, "qortex_feedback_refused_total", code="INVALID_REWARD") == 1
    assert total(samples, "qortex_tool_calls_total", tool="select", code="OK") == 10
    assert total(samples, "qortex_tool_calls_total", tool="select", code="INVALID_NAME") == 1
    assert total(samples, "qortex_tool_calls_total", tool="feedback") == 9
    assert total(samples, "qortex_tool_duration_seconds_count", tool="feedback") == 9
    # Each applied select feedback has a lag; the duplicate and the bare one have none.
    assert total(samples, "qortex_feedback_lag_seconds_count") == sent["applied_selects"]
    assert total(samples, "qortex_store_commit_duration_seconds_count", store="sqlite",
                 op="feedback") == 7  # every apply commits, duplicates included
    assert total(samples, "qortex_store_commit_duration_seconds_count", op="selections") >= 1
    # Labels stay bounded: no context, no selection id; per-arm series capped at 2.
    labels = {k for _, ls in samples for k, _ in ls}
    assert labels <= {"learner", "policy", "outcome", "result", "code", "tool", "store",
                      "op", "le", "arm", "version", "stream", "group"}
    arms = {dict(ls)["arm"] for (n, ls) in samples if n == "qortex_arm_pulls"}
    assert len(arms - {"_other"}) == 2
    assert total(samples, "qortex_arm_pulls") == sum(s.feedback for s in summaries.values())


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    srv = HttpServer(base_env(tmp_path / "state", QORTEX_METRICS="0"))
    try:
        status, _, _ = request(base_of(srv.url) + "/metrics")
        assert status == 404
    finally:
        srv.stop()


@pytest.mark.anyio
async def test_stream_lag_sources_and_learner_label_cap(registry: Any) -> None:
    from qortex_mcp.observe.metrics import QortexMetrics
    from qortex_mcp.observe.streams import StreamLag

    metrics = QortexMetrics(learner_labels=2)

    async def lag() -> list[StreamLag]:
        return [StreamLag("redis", "feedback", "qortex", pending=2, lag=7,
                          oldest_pending_age_s=1.5)]

    metrics.add_stream_lag(lag)
    for name in ("l1", "l2", "l3", "l4"):
        async with registry.use(name) as lrn:
            await lrn.select(["a"])
        metrics.tool_call("select", {}, {"learner": name, "strategy": "thompson"}, "OK", 1e-4)
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families((await metrics.render(registry)).decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert total(samples, "qortex_stream_lag_messages", stream="feedback", group="qortex") == 7
    assert total(samples, "qortex_stream_pending_messages") == 2
    assert total(samples, "qortex_stream_oldest_pending_age_seconds") == 1.5
    learners = {dict(ls)["learner"] for (n, ls) in samples if n == "qortex_selections_total"}
    assert learners == {"l1", "l2", "_other"}
    assert total(samples, "qortex_selections_total", learner="_other") == 2


def test_bad_observing_settings_are_refused() -> None:
    from qortex_mcp.config import Settings
    from qortex_mcp.errors import ConfigError

    for env in ({"QORTEX_METRICS": "maybe"}, {"QORTEX_METRICS_PER_ARM": "-1"},
                {"QORTEX_DASHBOARD_POLL_S": "0"}, {"QORTEX_OTEL": "2"}):
        with pytest.raises(ConfigError):
            Settings.from_env(env)
    assert Settings.from_env({"QORTEX_METRICS": "0"}).metrics is False
    assert Settings.from_env({"QORTEX_DASHBOARD_POLL_S": "2.5"}).dashboard_poll_s == 2.5
