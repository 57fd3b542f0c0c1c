"""The REST API under /api/learning/: the tools' validation, codes and results over JSON,
checked against a real server (and with schemathesis against its own OpenAPI document)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from mcp import Client
from schemathesis.specs.openapi.checks import positive_data_acceptance

from qortex_mcp.learning import SqliteLearningStore
from tests.observe.support import base_of, get_json, request
from tests.server.support import HttpServer, base_env, fingerprint, refused


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    srv = HttpServer(base_env(tmp_path_factory.mktemp("rest") / "state",
                              QORTEX_SQLITE_SYNCHRONOUS="NORMAL",
                              QORTEX_FEEDBACK_PER_MINUTE="0",
                              QORTEX_FEEDBACK_PER_ARM_PER_MINUTE="0"))
    try:
        yield srv
    finally:
        srv.stop()


def api(server: HttpServer) -> str:
    return base_of(server.url) + "/api/learning"


def post(server: HttpServer, path: str, body: object) -> tuple[int, Any]:
    status, _, raw = request(api(server) + path, method="POST", body=body)
    return status, json.loads(raw)



async def store_fingerprint(server: HttpServer) -> tuple[Any, ...]:
    get_json(api(server) + "/learners")  # flushes pending selection counts
    path = Path(get_json(api(server) + "/learners")["location"])
    async with SqliteLearningStore(path) as store:
        return await fingerprint(store)


def test_select_then_feedback_over_rest(server: HttpServer) -> None:
    status, sel = post(server, "/learners/rest-loop/select", {"candidates": ["a", "b"]})
    assert status == 200
    assert sel["learner"] == "rest-loop"
    arm = sel["selected"][0]["id"]
    body = {"selection_id": sel["selection_id"], "outcomes": {arm: "accepted"}}
    status, fb = post(server, "/learners/rest-loop/feedback", body)
    assert (status, fb["applied"], fb["arms"][0]["alpha"]) == (200, 1, 2.0)
    assert post(server, "/learners/rest-loop/feedback", body)[1]["duplicates"] == 1
    arms = get_json(api(server) + "/learners/rest-loop/arms?limit=1")
    assert (arms["total"], arms["left_out"], len(arms["arms"])) == (2, 1, 1)
    second = get_json(api(server) + "/learners/rest-loop/arms?limit=1&offset=1")
    assert [a["id"] for a in arms["arms"] + second["arms"]] == ["a", "b"]
    assert (second["total"], second["left_out"]) == (2, 1)
    past = get_json(api(server) + "/learners/rest-loop/arms?offset=5")
    assert (past["arms"], past["total"], past["left_out"]) == ([], 2, 2)
    names = [lrn["name"] for lrn in get_json(api(server) + "/learners")["learners"]]
    assert "rest-loop" in names
    metrics = get_json(api(server) + "/metrics?learner=rest-loop")
    assert metrics["learners"][0]["feedback"] == 1


BAD = [  # (method, path, body or query, status, code)
    ("POST", "/learners/bad/select", {"candidates": "a"}, 400, "INVALID_ARGUMENT"),
    ("POST", "/learners/bad/select", {"candidates": ["a"], "k": "1"}, 400, "INVALID_ARGUMENT"),
    ("POST", "/learners/bad/select", {"candidates": ["a"], "nope": 1}, 400,
     "INVALID_ARGUMENT"),
    ("POST", "/learners/bad/select", {"candidates": ["a"], "learner": "x"}, 400,
     "INVALID_ARGUMENT"),
    ("POST", "/learners/bad/select", [1, 2], 400, "INVALID_ARGUMENT"),
    ("POST", "/learners/" + "x" * 300 + "/select", {"candidates": ["a"]}, 400, "INVALID_NAME"),
    ("POST", "/learners/bad/select", {"candidates": []}, 400, "INVALID_CANDIDATES"),
    ("POST", "/learners/rest-loop/feedback", {"arm_id": "a", "outcome": 2}, 400,
     "INVALID_REWARD"),
    ("POST", "/learners/rest-loop/feedback", {"arm_id": "a", "outcome": "great"}, 400,
     "INVALID_OUTCOME"),
    ("POST", "/learners/rest-loop/feedback", {"selection_id": "q1.x.y", "outcomes": {"a": 1}},
     400, "INVALID_SELECTION"),
    ("GET", "/learners/never-made/arms", None, 404, "UNKNOWN_LEARNER"),
    ("GET", "/learners/rest-loop/arms?limit=0", None, 400, "INVALID_ARGUMENT"),
    ("GET", "/learners/rest-loop/arms?context=%7Bnot", None, 400, "INVALID_ARGUMENT"),
    ("GET", "/metrics?learner=never-made", None, 404, "UNKNOWN_LEARNER"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "body", "status", "code"), BAD)
async def test_bad_input_is_refused_with_its_code_and_changes_nothing(
        server: HttpServer, method: str, path: str, body: object, status: int,
        code: str) -> None:
    post(server, "/learners/rest-loop/select", {"candidates": ["a", "b"]})
    before = await store_fingerprint(server)
    got, _, raw = request(api(server) + path, method=method,
                          body=body if method == "POST" else None)
    error = json.loads(raw)["error"]
    assert (got, error["code"]) == (status, code), error
    assert "\n" not in error["message"]
    assert "Traceback" not in raw.decode()
    assert await store_fingerprint(server) == before


def test_a_body_that_is_not_json_is_refused(server: HttpServer) -> None:
    status, _, raw = request(api(server) + "/learners/x/select", method="POST", raw=b"{oops")
    assert (status, json.loads(raw)["error"]["code"]) == (400, "INVALID_ARGUMENT")


@pytest.mark.anyio
async def test_rest_and_mcp_refuse_the_same_input_with_the_same_code(
        server: HttpServer) -> None:
    bodies: list[dict[str, Any]] = [
        {"arm_id": "a", "outcome": 1.5}, {"arm_id": "a", "outcome": "Accepted"},
        {"outcomes": {}}, {"arm_id": "a", "outcome": True}]
    with anyio.fail_after(30):
        async with Client(server.url) as client:
            for body in bodies:
                mcp_code, _ = await refused(client, "qortex_feedback",
                                            {"learner": "rest-loop", **body})
                status, answer = post(server, "/learners/rest-loop/feedback", body)
                assert answer["error"]["code"] == mcp_code, body
                assert status == 400


def test_the_openapi_document_names_every_route(server: HttpServer) -> None:
    doc = get_json(api(server) + "/openapi.json")
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {"/api/learning/metrics", "/api/learning/learners",
                                 "/api/learning/learners/{name}/arms",
                                 "/api/learning/learners/{name}/select",
                                 "/api/learning/learners/{name}/feedback"}
    select = doc["paths"]["/api/learning/learners/{name}/select"]["post"]
    body = select["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["candidates"]
    assert body["additionalProperties"] is False


def test_the_api_keeps_to_its_openapi_document(server: HttpServer) -> None:
    """Schemathesis, from the served document: no 5xx, documented status codes and content
    types, answers matching their schemas, schema-invalid data refused (a bounded number
    of examples per operation).

    Driven through hypothesis directly: schemathesis' pytest plugin does not load under
    this pytest version."""
    schema = schemathesis.openapi.from_url(api(server) + "/openapi.json")
    operations = [cast(Any, result).ok() for result in schema.get_all_operations()]
    assert len(operations) == 5
    for operation, mode in itertools.product(operations, list(schemathesis.GenerationMode)):

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            # Schema-valid data may still be refused (400 with its code): names, contexts and
            # rewards have rules the schema states only in words (no control characters,
            # a JSON object context, outcomes in [0, 1] checked by the learner).
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        check()
