"""Every tool through an in-memory MCP client, against a real SQLite store."""

from __future__ import annotations

import pytest
from mcp import Client

from qortex_mcp import __version__
from qortex_mcp.config import Settings
from qortex_mcp.learning import LearnerRegistry, SelectionSigner
from qortex_mcp.server import build_server
from tests.conftest import PG_DSN, PG_UNAVAILABLE
from tests.pg import fresh_postgres_store
from tests.server.support import ok

pytestmark = pytest.mark.anyio


async def test_select_chooses_k_candidates_and_signs_the_selection(client: Client) -> None:
    out = await ok(client, "qortex_select", {
        "learner": "prompts", "candidates": ["a", "b", {"id": "c", "prior": [8, 2]}], "k": 2,
        "context": {"task": "type-check"},
    })
    assert out["learner"] == "prompts"
    assert out["selection_id"].startswith("q1.")
    assert [a["rank"] for a in out["selected"]] == [1, 2]
    assert len({a["id"] for a in out["selected"]}) == 2
    assert out["candidates"] == 3
    assert out["strategy"] == "thompson"
    assert out["context_key"].startswith("c")
    # Each chosen arm's propensity (Thompson: a Monte-Carlo estimate, never 0 once chosen).
    assert all(0.0 < a["propensity"] <= 1.0 for a in out["selected"])


async def test_select_says_when_k_exceeds_the_candidates(client: Client) -> None:
    out = await ok(client, "qortex_select", {"candidates": ["a", "b"], "k": 3})
    assert len(out["selected"]) == 2
    assert out["requested"] == 3
    assert out["note"] == "only 2 candidate(s) for k=3: all are returned"
    assert out["explored"] is False  # both still at the prior: a tie is not exploration


async def test_candidate_objects_carry_priors_costs_and_metadata(client: Client) -> None:
    out = await ok(client, "qortex_select", {"candidates": [
        {"id": "cheap", "token_cost": 10, "metadata": {"text": "be brief"}},
        {"id": "costly", "token_cost": 500, "prior": [50, 1]},
    ], "token_budget": 100})
    assert [a["id"] for a in out["selected"]] == ["cheap"]
    assert out["selected"][0]["metadata"] == {"text": "be brief"}
    assert out["selected"][0]["token_cost"] == 10


async def test_feedback_quoting_a_selection_moves_the_posterior(client: Client) -> None:
    sel = await ok(client, "qortex_select", {"candidates": ["a", "b"]})
    chosen = sel["selected"][0]["id"]
    out = await ok(client, "qortex_feedback", {"selection_id": sel["selection_id"],
                                               "outcomes": {chosen: "accepted"}})
    assert out["kind"] == "select"
    assert out["applied"] == 1
    assert out["duplicates"] == 0
    (arm,) = out["arms"]
    assert arm == {"arm_id": chosen, "status": "applied", "reward": 1.0, "mean": 2 / 3,
                   "alpha": 2.0, "beta": 1.0, "pulls": 1}


async def test_feedback_may_name_every_chosen_arm_and_numbers_are_rewards(
    client: Client,
) -> None:
    sel = await ok(client, "qortex_select", {"candidates": ["a", "b", "c"], "k": 3})
    out = await ok(client, "qortex_feedback", {"selection_id": sel["selection_id"],
                                               "outcomes": {"a": 0.25, "b": 1, "c": "rejected"}})
    assert {a["arm_id"]: a["reward"] for a in out["arms"]} == {"a": 0.25, "b": 1.0, "c": 0.0}


async def test_duplicate_feedback_answers_duplicate_and_changes_nothing(client: Client) -> None:
    sel = await ok(client, "qortex_select", {"candidates": ["a"]})
    args = {"selection_id": sel["selection_id"], "outcomes": {"a": "accepted"}}
    first = await ok(client, "qortex_feedback", args)
    again = await ok(client, "qortex_feedback", args)
    assert again["arms"][0]["status"] == "duplicate"
    assert again["applied"] == 0
    assert again["duplicates"] == 1
    assert again["arms"][0]["alpha"] == first["arms"][0]["alpha"] == 2.0


async def test_bare_feedback_with_an_idempotency_key_counts_once(client: Client) -> None:
    args = {"learner": "tools", "arm_id": "grep", "outcome": 1, "context": {"repo": "x"},
            "idempotency_key": "run-1"}
    first = await ok(client, "qortex_feedback", args)
    again = await ok(client, "qortex_feedback", args)
    assert first["kind"] == "bare"
    assert first["arms"][0]["status"] == "applied"
    assert again["arms"][0]["status"] == "duplicate"
    post = await ok(client, "qortex_posteriors", {"learner": "tools"})
    assert post["arms"][0]["pulls"] == 1


async def test_partial_counts_as_half_for_the_default_reward_model(client: Client) -> None:
    out = await ok(client, "qortex_feedback", {"arm_id": "a", "outcome": "partial"})
    assert out["arms"][0]["reward"] == 0.5
    status = await ok(client, "qortex_status")
    (learner,) = status["learners"]
    assert learner["reward_model"] == "ternary"
    assert learner["outcome_rewards"] == {"accepted": 1.0, "rejected": 0.0, "partial": 0.5}


async def test_binary_learners_from_the_toml_file_score_partial_as_zero(
    tmp_path: object, settings: Settings,
) -> None:
    cfg = settings.with_overrides(learners={"strict": {"reward_model": "binary"}})
    async with Client(build_server(cfg)) as client:
        out = await ok(client, "qortex_feedback", {"learner": "strict", "arm_id": "a",
                                                   "outcome": "partial"})
        status = await ok(client, "qortex_status")
    assert out["arms"][0]["reward"] == 0.0
    (learner,) = status["learners"]
    assert learner["outcome_rewards"] == {"accepted": 1.0, "rejected": 0.0, "partial": 0.0}


async def test_rerank_returns_every_result_with_a_rerank_selection_id(client: Client) -> None:
    results = [{"id": "d1", "score": 3.0, "title": "one"}, {"id": "d2", "score": 2.0},
               {"id": "d3", "score": 1.0, "url": "https://example.org/3"}]
    out = await ok(client, "qortex_rerank", {"learner": "docs", "results": results,
                                             "explain": True})
    assert sorted(r["id"] for r in out["results"]) == ["d1", "d2", "d3"]
    by_id = {r["id"]: r for r in out["results"]}
    assert by_id["d1"]["title"] == "one"
    assert by_id["d3"]["url"] == "https://example.org/3"
    assert out["explanations"] is not None
    assert len(out["explanations"]) == 3
    fb = await ok(client, "qortex_feedback", {"learner": "docs",
                                              "selection_id": out["selection_id"],
                                              "outcomes": {"d3": "accepted", "d1": "rejected"}})
    assert fb["kind"] == "rerank"
    assert {a["arm_id"]: a["status"] for a in fb["arms"]} == {"d3": "applied", "d1": "applied"}


async def test_accepted_results_rise_on_later_reranks(client: Client) -> None:
    results = [{"id": "d1", "score": 3.0}, {"id": "d2", "score": 2.9}, {"id": "d3", "score": 2.8}]
    for _ in range(6):
        out = await ok(client, "qortex_rerank", {"learner": "docs", "results": results})
        await ok(client, "qortex_feedback", {"learner": "docs", "selection_id": out["selection_id"],
                                             "outcomes": {"d3": "accepted", "d1": "rejected"}})
    out = await ok(client, "qortex_rerank", {"learner": "docs", "results": results})
    order = [r["id"] for r in out["results"]]
    assert order.index("d3") < order.index("d1")


async def test_posteriors_are_bounded_and_say_how_many_were_left_out(client: Client) -> None:
    await ok(client, "qortex_select", {"candidates": [f"arm{i:02}" for i in range(12)]})
    out = await ok(client, "qortex_posteriors", {"limit": 5})
    assert [a["id"] for a in out["arms"]] == [f"arm{i:02}" for i in range(5)]
    assert out["total"] == 12
    assert out["left_out"] == 7
    arm = out["arms"][0]
    assert arm["alpha"] == 1.0
    assert arm["beta"] == 1.0
    assert arm["mean"] == 0.5
    assert 0.0 < arm["ci_low"] < 0.5 < arm["ci_high"] < 1.0
    some = await ok(client, "qortex_posteriors", {"arm_ids": ["arm03", "arm11"]})
    assert [a["id"] for a in some["arms"]] == ["arm03", "arm11"]
    assert some["left_out"] == 0


async def test_posteriors_in_a_context_use_that_context(client: Client) -> None:
    await ok(client, "qortex_feedback", {"arm_id": "a", "outcome": 1, "context": {"t": 1}})
    inside = await ok(client, "qortex_posteriors", {"context": {"t": 1}})
    assert inside["context_key"].startswith("c")
    assert inside["arms"][0]["pulls"] == 1
    other = await ok(client, "qortex_posteriors", {"context": {"t": 2}})
    assert other["arms"][0]["pulls"] == 0


async def test_top_arms_rank_by_posterior_mean(client: Client) -> None:
    for arm, outcome in [("a", "rejected"), ("b", "accepted"), ("c", "accepted"),
                         ("c", "accepted")]:
        await ok(client, "qortex_feedback", {"arm_id": arm, "outcome": outcome})
    out = await ok(client, "qortex_top_arms", {"k": 2})
    assert [a["id"] for a in out["arms"]] == ["c", "b"]


async def test_metrics_report_selections_feedback_and_rates(client: Client) -> None:
    sel = await ok(client, "qortex_select", {"learner": "m", "candidates": ["a", "b"]})
    chosen = sel["selected"][0]["id"]
    await ok(client, "qortex_feedback", {"learner": "m", "selection_id": sel["selection_id"],
                                         "outcomes": {chosen: "accepted"}})
    out = await ok(client, "qortex_metrics", {"learner": "m"})
    (m,) = out["learners"]
    assert m["selections"] == 1
    assert m["feedback"] == 1
    assert m["feedback_rate"] == 1.0
    assert m["exploration_rate"] in (0.0, 1.0)
    assert {a["id"]: a["selections"] for a in m["arms"]} == {chosen: 1, ("b" if chosen == "a"
                                                                        else "a"): 0}
    everything = await ok(client, "qortex_metrics")
    assert [x["learner"] for x in everything["learners"]] == ["m"]


async def test_metrics_and_status_say_no_data_plainly(client: Client) -> None:
    metrics = await ok(client, "qortex_metrics")
    assert metrics["learners"] == []
    assert metrics["summary"].startswith("no data")
    status = await ok(client, "qortex_status")
    assert status["learners"] == []
    assert status["summary"].startswith("no data")


async def test_status_names_the_store_its_location_and_each_learner(
    client: Client, settings: Settings,
) -> None:
    await ok(client, "qortex_feedback", {"learner": "x", "arm_id": "a", "outcome": 1})
    await ok(client, "qortex_select", {"learner": "y", "candidates": ["a", "b"]})
    out = await ok(client, "qortex_status")
    assert out["version"] == __version__
    assert out["store"] == "sqlite"
    assert out["location"] == str(settings.sqlite_path)
    assert out["schema_version"] == 2
    assert {s["name"]: (s["arms"], s["selections"], s["feedback"]) for s in out["learners"]} \
        == {"x": (1, 0, 1), "y": (1, 1, 0)}  # a select stores the arm it chose
    assert out["summary"] == "2 learner(s), 1 feedback(s) in total"


async def test_decay_shrinks_one_arms_evidence_toward_the_prior(client: Client) -> None:
    for _ in range(4):
        await ok(client, "qortex_feedback", {"arm_id": "a", "outcome": 1})
    await ok(client, "qortex_feedback", {"arm_id": "b", "outcome": 1})
    out = await ok(client, "qortex_decay", {"factor": 0.5, "arm_id": "a"})
    assert out["posterior"]["alpha"] == 3.0
    assert out["posterior"]["beta"] == 1.0
    everything = await ok(client, "qortex_decay", {"factor": 0.5})
    assert everything["arm_id"] is None
    assert everything["posterior"] is None
    post = await ok(client, "qortex_posteriors")
    assert {a["id"]: a["alpha"] for a in post["arms"]} == {"a": 2.0, "b": 1.5}


async def test_reset_previews_until_confirmed(client: Client, registry: LearnerRegistry) -> None:
    await ok(client, "qortex_feedback", {"arm_id": "a", "outcome": 1, "context": {"t": 1}})
    await ok(client, "qortex_feedback", {"arm_id": "b", "outcome": 0})
    preview = await ok(client, "qortex_reset", {})
    assert preview["applied"] is False
    assert preview["arms"] == ["a", "b"]
    assert preview["rows"] == 3
    assert preview["evidence_removed"] == 2.0
    assert "confirm=true" in preview["summary"]
    assert (await ok(client, "qortex_posteriors"))["arms"][0]["alpha"] == 2.0  # unchanged
    done = await ok(client, "qortex_reset", {"arm_ids": ["a"], "confirm": True})
    assert done["applied"] is True
    assert done["arms"] == ["a"]
    post = {a["id"]: (a["alpha"], a["beta"]) for a in
            (await ok(client, "qortex_posteriors"))["arms"]}
    assert post == {"a": (1.0, 1.0), "b": (1.0, 2.0)}
    nothing = await ok(client, "qortex_reset", {"arm_ids": ["a"], "confirm": True})
    assert nothing["rows"] == 0
    assert nothing["summary"].startswith("nothing to reset")


async def test_a_server_opens_its_own_registry_and_state_survives_a_restart(
    settings: Settings,
) -> None:
    async with Client(build_server(settings)) as client:
        await ok(client, "qortex_feedback", {"arm_id": "a", "outcome": 1})
    async with Client(build_server(settings)) as client:
        post = await ok(client, "qortex_posteriors")
    assert post["arms"][0]["alpha"] == 2.0


@pytest.mark.skipif(PG_UNAVAILABLE is not None, reason=f"PostgreSQL: {PG_UNAVAILABLE}")
async def test_status_over_postgres_masks_the_password(settings: Settings) -> None:
    dsn = PG_DSN.replace("postgres@", "postgres:hunter2@", 1)  # trust auth ignores it
    store = await fresh_postgres_store(dsn)
    registry = await LearnerRegistry(store, SelectionSigner.random()).open()
    try:
        async with Client(build_server(settings, registry=registry)) as client:
            await ok(client, "qortex_feedback", {"arm_id": "a", "outcome": 1})
            out = await ok(client, "qortex_status")
    finally:
        await registry.close()
    assert out["store"] == "postgres"
    assert "hunter2" not in out["location"]
    assert "postgres:***@" in out["location"]
    assert out["learners"][0]["feedback"] == 1
