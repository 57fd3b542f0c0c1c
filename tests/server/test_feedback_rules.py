"""Feedback rules as agents meet them over MCP: each learner's selection TTL from the TOML
file, and feedback only for the arms a select chose."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client

from qortex_mcp.config import Settings
from qortex_mcp.learning import LearnerRegistry, MemoryLearningStore, SelectionSigner
from qortex_mcp.server import build_server
from tests.server.support import fingerprint, ok, refused

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def toml_client(tmp_path: Path, clock: FakeClock) -> AsyncIterator[
    tuple[Client, LearnerRegistry]
]:
    config = tmp_path / "qortex.toml"
    config.write_text(
        "[defaults]\nselection_ttl_s = 1\n\n"
        "[learners.forever]\nselection_ttl_s = 0\n\n"
        "[learners.fallback]\naccept_unchosen_feedback = true\n",
        encoding="utf-8",
    )
    settings = Settings.build(store="memory", state_dir=tmp_path / "state", config_file=config)
    signer = SelectionSigner.random(clock=clock)  # its default TTL (30 days) must not win
    registry = LearnerRegistry(MemoryLearningStore(), signer, options=settings.learners)
    await registry.open()
    try:
        async with Client(build_server(settings, registry=registry)) as client:
            yield client, registry
    finally:
        await registry.close()


async def test_the_toml_defaults_ttl_expires_ids_over_mcp(
    toml_client: tuple[Client, LearnerRegistry], clock: FakeClock,
) -> None:
    client, registry = toml_client
    sel = await ok(client, "qortex_select", {"candidates": ["a"]})
    clock.now += 2.5
    before = await fingerprint(registry.store, registry)
    code, text = await refused(client, "qortex_feedback", {
        "selection_id": sel["selection_id"], "outcomes": {"a": "accepted"}})
    assert code == "SELECTION_EXPIRED", text
    assert "older than 1 s" in text
    ranked = await ok(client, "qortex_rerank", {"results": [{"id": "d", "score": 1.0}]})
    clock.now += 2.5
    code, _ = await refused(client, "qortex_feedback", {
        "selection_id": ranked["selection_id"], "outcomes": {"d": "accepted"}})
    assert code == "SELECTION_EXPIRED"
    code, _ = await refused(client, "qortex_feedback", {
        "selection_id": ranked["selection_id"], "outcomes": {"d": "accepted"},
        "clicks_only": True})
    assert code == "SELECTION_EXPIRED"
    assert await fingerprint(registry.store, registry) == before


async def test_a_learners_own_ttl_of_zero_never_expires_over_mcp(
    toml_client: tuple[Client, LearnerRegistry], clock: FakeClock,
) -> None:
    client, _ = toml_client
    sel = await ok(client, "qortex_select", {"learner": "forever", "candidates": ["a"]})
    clock.now += 90 * 86400  # beyond the signer's 30-day default too
    out = await ok(client, "qortex_feedback", {"learner": "forever",
                                               "selection_id": sel["selection_id"],
                                               "outcomes": {"a": "accepted"}})
    assert out["applied"] == 1


async def test_feedback_on_a_candidate_that_was_not_chosen_is_refused_over_mcp(
    toml_client: tuple[Client, LearnerRegistry],
) -> None:
    client, registry = toml_client
    sel = await ok(client, "qortex_select", {"learner": "forever",
                                             "candidates": ["a", "b", "c"]})
    chosen = sel["selected"][0]["id"]
    other = next(a for a in "abc" if a != chosen)
    before = await fingerprint(registry.store, registry)
    code, text = await refused(client, "qortex_feedback", {
        "learner": "forever", "selection_id": sel["selection_id"],
        "outcomes": {chosen: "accepted", other: "rejected"}})
    assert code == "ARM_NOT_CHOSEN"
    assert "only the chosen arms of a select can get feedback" in text
    code, _ = await refused(client, "qortex_feedback", {
        "learner": "forever", "selection_id": sel["selection_id"], "outcomes": {"z": 1}})
    assert code == "ARM_NOT_IN_SELECTION"
    assert await fingerprint(registry.store, registry) == before


async def test_every_result_a_rerank_showed_counts_as_chosen(
    toml_client: tuple[Client, LearnerRegistry],
) -> None:
    client, _ = toml_client
    ranked = await ok(client, "qortex_rerank", {"learner": "forever", "results": [
        {"id": "d1", "score": 3.0}, {"id": "d2", "score": 2.0}, {"id": "d3", "score": 1.0}]})
    out = await ok(client, "qortex_feedback", {
        "learner": "forever", "selection_id": ranked["selection_id"],
        "outcomes": {"d1": "rejected", "d3": "accepted"}})
    assert out["applied"] == 2


async def test_the_toml_file_can_let_a_learner_accept_unchosen_feedback(
    toml_client: tuple[Client, LearnerRegistry], clock: FakeClock,
) -> None:
    client, _ = toml_client
    sel = await ok(client, "qortex_select", {"learner": "fallback", "candidates": ["a", "b"]})
    other = "b" if sel["selected"][0]["id"] == "a" else "a"
    out = await ok(client, "qortex_feedback", {"learner": "fallback",
                                               "selection_id": sel["selection_id"],
                                               "outcomes": {other: "accepted"}})
    assert out["applied"] == 1
