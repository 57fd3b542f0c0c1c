"""Feedback requests in the library: parsing with the tool's codes, and the batch path
(``Learner.observe_many``) that stream consumers use, on every store."""

from __future__ import annotations

from typing import Any

import pytest

from qortex_mcp.errors import QortexError
from qortex_mcp.learning import ArmOutcome, Learner, LearnerConfig, LearningStore, SelectionSigner
from qortex_mcp.learning.feedback import FeedbackRequest, outcomes_of, parse_feedback

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("body", "code"), [
    ([], "INVALID_ARGUMENT"),
    ({"arm_id": "a"}, "INVALID_ARGUMENT"),
    ({"arm_id": "a", "outcome": 1, "outcomes": {"a": 1}}, "INVALID_ARGUMENT"),
    ({"outcomes": {}}, "INVALID_ARGUMENT"),
    ({"arm_id": "a", "outcome": 1, "extra": 1}, "INVALID_ARGUMENT"),
    ({"arm_id": "a", "outcome": 1, "learner": 3}, "INVALID_ARGUMENT"),
    ({"arm_id": "a", "outcome": 1, "context": "task"}, "INVALID_ARGUMENT"),
    ({"arm_id": "a", "outcome": 1, "clicks_only": 1}, "INVALID_ARGUMENT"),
    ({"arm_id": "a", "outcome": 1, "clicks_only": True}, "INVALID_ARGUMENT"),
    ({"selection_id": "s", "outcomes": {"a": 1}, "idempotency_key": "k"}, "INVALID_ARGUMENT"),
    ({"arm_id": "a", "outcome": None}, "INVALID_ARGUMENT"),
    ({"arm_id": "a", "outcome": [1]}, "INVALID_REWARD"),
    ({"arm_id": "a", "outcome": False}, "INVALID_REWARD"),
    ({"outcomes": {"a": "Accepted"}}, "INVALID_OUTCOME"),
])
def test_a_malformed_request_is_refused_with_the_tools_code(body: Any, code: str) -> None:
    with pytest.raises(QortexError) as caught:
        parse_feedback(body)
    assert caught.value.code == code


def test_a_valid_request_keeps_every_field() -> None:
    request = parse_feedback({"learner": "l", "arm_id": "a", "outcome": "accepted",
                              "context": {"task": "x"}, "idempotency_key": "k"})
    assert request == FeedbackRequest("l", {"a": "accepted"}, None, {"task": "x"}, "k")
    (outcome,) = outcomes_of(request)
    assert (outcome.arm_id, outcome.outcome, outcome.idempotency_key) == ("a", "accepted", "k")


def test_the_default_key_goes_only_to_bare_feedback_without_one() -> None:
    bare = {"learner": "l", "arm_id": "a", "outcome": 1.0}
    assert parse_feedback(bare, default_key="m-1").idempotency_key == "m-1"
    own = parse_feedback({**bare, "idempotency_key": "k"}, default_key="m-1")
    assert own.idempotency_key == "k"
    quoted = parse_feedback({"selection_id": "s", "outcomes": {"a": 1.0}}, default_key="m-1")
    assert (quoted.selection_id, quoted.idempotency_key) == ("s", None)


async def test_observe_many_applies_each_request_on_its_own(store: LearningStore) -> None:
    config = LearnerConfig(name="m", seed=3)
    async with await Learner.create(config, store, signer=SelectionSigner.random()) as lrn:
        sel = await lrn.select(["a", "b"], k=1)
        chosen = sel.selected[0].id
        requests = [
            [ArmOutcome(chosen, reward=1.0, selection_id=sel.selection_id)],
            [ArmOutcome(chosen, reward=0.0, selection_id=sel.selection_id)],  # conflicts
            [ArmOutcome("x", reward=1.0, idempotency_key="k1")],
            [ArmOutcome("x", reward=1.0, idempotency_key="k1")],  # a duplicate
            [ArmOutcome("x", reward=2.0, idempotency_key="k2")],  # invalid
            [],  # empty
        ]
        out = await lrn.observe_many(requests)
        assert out[0] == ("applied",)
        assert isinstance(out[1], QortexError)
        assert out[1].code == "SELECTION_CONFLICT"
        assert out[2] == ("applied",)
        assert out[3] == ("duplicate",)
        assert isinstance(out[4], QortexError)
        assert out[4].code == "INVALID_REWARD"
        assert isinstance(out[5], QortexError)
        # Applied again, everything valid is a duplicate: nothing counted twice.
        again = await lrn.observe_many([requests[0], requests[2]])
        assert again == [("duplicate",), ("duplicate",)]
        rows = {(r.arm, r.ctx): r for r in await store.evidence("m")}
        assert sorted((arm, r.n) for (arm, ctx), r in rows.items() if ctx == "") == \
            sorted([(chosen, 1), ("x", 1)])
        assert (await lrn.replay()).ok
