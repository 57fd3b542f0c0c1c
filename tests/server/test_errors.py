"""Every mistake comes back as ``CODE: one line`` with nothing changed in the store."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer

from qortex_mcp.config import Settings
from qortex_mcp.errors import QortexError, StoreBusy
from qortex_mcp.learning import Learner, LearnerRegistry
from qortex_mcp.server import build_server, register_tools
from qortex_mcp.tools import ERROR_META_KEY
from tests.server.support import fingerprint, ok, refused

pytestmark = pytest.mark.anyio

SEL, FORGED, PICKED = "$SEL", "$FORGED", "$PICKED"
NESTED: dict[str, Any] = {}
_inner = NESTED
for _ in range(40):
    _inner["n"] = {}
    _inner = _inner["n"]

CASES: list[tuple[str, dict[str, Any], str]] = [
    # arguments the schema refuses: strict types, no unknown names, bounds
    ("qortex_select", {}, "INVALID_ARGUMENT"),
    ("qortex_select", {"candidates": ["a"], "kk": 1}, "INVALID_ARGUMENT"),
    ("qortex_select", {"candidates": ["a"], "k": "2"}, "INVALID_ARGUMENT"),
    ("qortex_select", {"candidates": ["a"], "k": True}, "INVALID_ARGUMENT"),
    ("qortex_select", {"candidates": ["a"], "k": 2.0}, "INVALID_ARGUMENT"),
    ("qortex_select", {"candidates": ["a"], "k": 0}, "INVALID_ARGUMENT"),
    ("qortex_select", {"candidates": "a"}, "INVALID_ARGUMENT"),
    ("qortex_select", {"candidates": [1]}, "INVALID_ARGUMENT"),
    ("qortex_select", {"candidates": [{"id": "a", "colour": "red"}]}, "INVALID_ARGUMENT"),
    ("qortex_select", {"candidates": [{"id": "a", "prior": [1, 2, 3]}]}, "INVALID_ARGUMENT"),
    ("qortex_select", {"candidates": ["a"], "context": "task=x"}, "INVALID_ARGUMENT"),
    ("qortex_posteriors", {"limit": 0}, "INVALID_ARGUMENT"),
    ("qortex_posteriors", {"limit": 1001}, "INVALID_ARGUMENT"),
    ("qortex_status", {"verbose": True}, "INVALID_ARGUMENT"),
    ("qortex_decay", {"factor": "0.5"}, "INVALID_ARGUMENT"),
    ("qortex_decay", {"factor": 1.5}, "INVALID_ARGUMENT"),
    ("qortex_reset", {"confirm": "yes"}, "INVALID_ARGUMENT"),
    ("qortex_rerank", {"results": [{"id": "d"}]}, "INVALID_ARGUMENT"),
    ("qortex_rerank", {"results": [{"id": "d", "score": "1"}]}, "INVALID_ARGUMENT"),
    ("qortex_feedback", {"arm_id": "a"}, "INVALID_ARGUMENT"),
    ("qortex_feedback", {"outcomes": {}}, "INVALID_ARGUMENT"),
    ("qortex_feedback", {"outcomes": {"a": 1}, "arm_id": "a", "outcome": 1},
     "INVALID_ARGUMENT"),
    ("qortex_feedback", {"selection_id": SEL, "outcomes": {"a": 1}, "context": {"t": 1}},
     "INVALID_ARGUMENT"),
    ("qortex_feedback", {"selection_id": SEL, "outcomes": {"a": 1}, "idempotency_key": "k"},
     "INVALID_ARGUMENT"),
    ("qortex_feedback", {"selection_id": SEL, "outcomes": {"a": 1}, "clicks_only": True},
     "INVALID_ARGUMENT"),
    ("qortex_feedback", {"arm_id": "a", "outcome": 1, "clicks_only": True}, "INVALID_ARGUMENT"),
    # rewards: never coerced
    ("qortex_feedback", {"selection_id": SEL, "outcomes": {"b": "0.5"}}, "INVALID_REWARD"),
    ("qortex_feedback", {"selection_id": SEL, "outcomes": {"b": True}}, "INVALID_REWARD"),
    ("qortex_feedback", {"selection_id": SEL, "outcomes": {"b": None}}, "INVALID_REWARD"),
    ("qortex_feedback", {"selection_id": SEL, "outcomes": {"b": "great"}}, "INVALID_OUTCOME"),
    ("qortex_feedback", {"selection_id": SEL, "outcomes": {"b": "Accepted"}}, "INVALID_OUTCOME"),
    ("qortex_feedback", {"arm_id": "a", "outcome": "ACCEPTED"}, "INVALID_OUTCOME"),
    ("qortex_feedback", {"selection_id": SEL, "outcomes": {"b": 1.5}}, "INVALID_REWARD"),
    ("qortex_feedback", {"selection_id": SEL, "outcomes": {"b": -0.1}}, "INVALID_REWARD"),
    ("qortex_feedback", {"arm_id": "a", "outcome": 2}, "INVALID_REWARD"),
    # names, contexts, candidates, priors, budgets
    ("qortex_select", {"learner": "", "candidates": ["a"]}, "INVALID_NAME"),
    ("qortex_select", {"learner": " padded", "candidates": ["a"]}, "INVALID_NAME"),
    ("qortex_select", {"candidates": ["x" * 129]}, "INVALID_NAME"),
    ("qortex_select", {"candidates": ["bad\x00id"]}, "INVALID_NAME"),
    ("qortex_feedback", {"arm_id": "a\u202e", "outcome": 1}, "INVALID_NAME"),
    ("qortex_select", {"candidates": ["a"], "context": NESTED}, "INVALID_CONTEXT"),
    ("qortex_select", {"candidates": ["a"], "context": {"big": "x" * 17_000}},
     "INVALID_CONTEXT"),
    ("qortex_select", {"candidates": ["a", "a"]}, "INVALID_CANDIDATES"),
    ("qortex_select", {"candidates": []}, "INVALID_CANDIDATES"),
    ("qortex_rerank", {"results": [{"id": "d", "score": 1}, {"id": "d", "score": 2}]},
     "INVALID_CANDIDATES"),
    ("qortex_select", {"candidates": [{"id": "a", "prior": [0, 1]}]}, "INVALID_PRIOR"),
    ("qortex_select", {"candidates": [{"id": "a", "token_cost": 10}], "token_budget": 5},
     "BUDGET_TOO_SMALL"),
    # selection ids: forged, foreign, not covering the arm, answered differently
    ("qortex_feedback", {"selection_id": FORGED, "outcomes": {"b": 1}}, "INVALID_SELECTION"),
    ("qortex_feedback", {"selection_id": "not-a-token", "outcomes": {"b": 1}},
     "INVALID_SELECTION"),
    ("qortex_feedback", {"learner": "other", "selection_id": SEL, "outcomes": {"b": 1}},
     "INVALID_SELECTION"),
    ("qortex_feedback", {"selection_id": SEL, "outcomes": {"zzz": 1}}, "ARM_NOT_IN_SELECTION"),
    ("qortex_feedback", {"selection_id": PICKED, "outcomes": {"worse": 0}}, "ARM_NOT_CHOSEN"),
    ("qortex_feedback", {"selection_id": PICKED, "outcomes": {"best": 1, "worse": 0}},
     "ARM_NOT_CHOSEN"),
    ("qortex_feedback", {"selection_id": SEL, "outcomes": {"a": "rejected"}},
     "SELECTION_CONFLICT"),
    ("qortex_feedback", {"selection_id": SEL, "outcomes": {"b": 1, "a": 0}},
     "SELECTION_CONFLICT"),
    # unknown learners and arms: read-only and destructive tools never create them
    ("qortex_posteriors", {"learner": "nobody"}, "UNKNOWN_LEARNER"),
    ("qortex_top_arms", {"learner": "nobody"}, "UNKNOWN_LEARNER"),
    ("qortex_metrics", {"learner": "nobody"}, "UNKNOWN_LEARNER"),
    ("qortex_decay", {"learner": "nobody", "factor": 0.5}, "UNKNOWN_LEARNER"),
    ("qortex_reset", {"learner": "nobody", "confirm": True}, "UNKNOWN_LEARNER"),
    # a selection quoted to a learner that did not make it, existing or not
    ("qortex_feedback", {"learner": "nobody", "selection_id": SEL, "outcomes": {"b": 1}},
     "INVALID_SELECTION"),
    ("qortex_posteriors", {"arm_ids": ["zzz"]}, "UNKNOWN_ARM"),
    ("qortex_decay", {"factor": 0.5, "arm_id": "zzz"}, "UNKNOWN_ARM"),
    ("qortex_reset", {"arm_ids": ["zzz"], "confirm": True}, "UNKNOWN_ARM"),
]


@pytest.fixture
async def seeded(client: Client) -> dict[str, str]:
    """A learner with a selection of a, b, c (all chosen) whose arm a was accepted, a
    selection that chose 'best' over 'worse', and a learner 'other'."""
    sel = await ok(client, "qortex_select", {"candidates": ["a", "b", "c"], "k": 3})
    picked = await ok(client, "qortex_select", {"candidates": [
        {"id": "best", "prior": [10_000, 1]}, {"id": "worse", "prior": [1, 10_000]}]})
    assert picked["selected"][0]["id"] == "best"
    await ok(client, "qortex_feedback", {"selection_id": sel["selection_id"],
                                         "outcomes": {"a": "accepted"}})
    await ok(client, "qortex_feedback", {"learner": "other", "arm_id": "x", "outcome": 1})
    token = sel["selection_id"]
    head, tag = token[:-43], token[-43:]
    forged = head + ("A" if tag[0] != "A" else "B") + tag[1:]
    return {SEL: token, FORGED: forged, PICKED: picked["selection_id"]}


def _fill(args: dict[str, Any], tokens: dict[str, str]) -> dict[str, Any]:
    return {k: tokens.get(v, v) if isinstance(v, str) else v for k, v in args.items()}


@pytest.mark.parametrize(("tool", "args", "code"), CASES,
                         ids=[f"{c}-{i}" for i, (_, _, c) in enumerate(CASES)])
async def test_a_mistake_is_refused_with_its_code_and_changes_nothing(
    client: Client, registry: LearnerRegistry, seeded: dict[str, str],
    tool: str, args: dict[str, Any], code: str,
) -> None:
    before = await fingerprint(registry.store, registry)
    got, text = await refused(client, tool, _fill(args, seeded))
    assert got == code, text
    assert len(text) < 300
    assert await fingerprint(registry.store, registry) == before


async def test_refusals_say_what_was_wrong(client: Client, seeded: dict[str, str]) -> None:
    _, text = await refused(client, "qortex_select", {"candidates": ["a"], "kk": 1})
    assert text.startswith("INVALID_ARGUMENT: unknown argument 'kk'; this tool takes learner, ")
    _, text = await refused(client, "qortex_select", {})
    assert text == "INVALID_ARGUMENT: missing required argument 'candidates'"
    _, text = await refused(client, "qortex_select", {"candidates": ["a"], "k": "2"})
    assert text == "INVALID_ARGUMENT: k: input should be a valid integer, got '2'"
    _, text = await refused(client, "qortex_feedback", {"selection_id": seeded[SEL],
                                                        "outcomes": {"b": "0.5"}})
    assert text == ("INVALID_REWARD: outcomes['b']: must be 'accepted', 'rejected', 'partial' "
                    "or a number in [0, 1], got '0.5'")
    _, text = await refused(client, "qortex_feedback", {"selection_id": seeded[SEL],
                                                        "outcomes": {"b": "Accepted"}})
    assert text == ("INVALID_OUTCOME: outcomes['b']: unknown outcome word; use one of "
                    "accepted, rejected, partial (lowercase) or a number in [0, 1], "
                    "got 'Accepted'")
    _, text = await refused(client, "qortex_feedback", {"arm_id": "a", "outcome": 2})
    assert text == "INVALID_REWARD: reward must be a finite number in [0, 1], got '2.0'"
    _, text = await refused(client, "qortex_select", {"candidates": [1, 2]})
    assert text.startswith("INVALID_ARGUMENT: candidates[0]: must be an arm id or an object")
    assert text.endswith("(and 1 more problem)")


async def test_lists_sent_as_json_text_are_read_as_lists(client: Client) -> None:
    # Some MCP hosts encode list arguments as strings; the SDK decodes them, and so do we.
    out = await ok(client, "qortex_select", {"candidates": '["a", "b"]'})
    assert out["candidates"] == 2


async def test_an_expired_selection_is_refused(
    client: Client, registry: LearnerRegistry, monkeypatch: pytest.MonkeyPatch,
) -> None:
    issued = time.time() - 60 * 86400
    monkeypatch.setattr(registry.signer, "clock", lambda: issued)  # issued 60 days ago
    sel = await ok(client, "qortex_select", {"candidates": ["a"]})
    monkeypatch.setattr(registry.signer, "clock", time.time)
    before = await fingerprint(registry.store, registry)
    code, text = await refused(client, "qortex_feedback", {"selection_id": sel["selection_id"],
                                                           "outcomes": {"a": 1}})
    assert code == "SELECTION_EXPIRED"
    assert "select again" in text
    assert await fingerprint(registry.store, registry) == before


async def test_too_many_arms_is_a_limit(settings: Settings) -> None:
    cfg = settings.with_overrides(learners={"*": {"max_arms": 3}})
    async with Client(build_server(cfg)) as client:
        code, _ = await refused(client, "qortex_select", {"candidates": ["a", "b", "c", "d"]})
    assert code == "LIMIT_EXCEEDED"


async def test_a_busy_store_is_a_retryable_error(
    client: Client, registry: LearnerRegistry, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def busy(*_: object, **__: object) -> None:
        raise StoreBusy("the database is locked by another writer; retry")

    monkeypatch.setattr(registry.store, "apply", busy)
    result = await client.call_tool("qortex_feedback", {"arm_id": "a", "outcome": 1})
    assert result.is_error
    assert result.meta is not None
    assert result.meta[ERROR_META_KEY] == {
        "code": "STORE_BUSY", "message": "the database is locked by another writer; retry",
        "retryable": True}


async def test_an_unexpected_failure_is_internal_logged_and_not_leaked(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    async def crash(*_: object, **__: object) -> None:
        raise RuntimeError("secret detail /etc/passwd")

    monkeypatch.setattr(Learner, "select", crash)
    code, text = await refused(client, "qortex_select", {"candidates": ["a"]})
    assert code == "INTERNAL_ERROR"
    assert "secret" not in text
    assert "RuntimeError" not in text
    logged = caplog.text
    assert "tool_crashed" in logged
    assert "secret detail" in logged
    assert (await ok(client, "qortex_status"))["store"] == "sqlite"  # and the server lives on


async def test_an_sdk_error_is_internal_whatever_its_text_says(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """The boundary decides by what ``guarded`` saw, not by parsing the SDK's message: a
    ToolError that is not a qortex refusal (here raised past ``guarded``, whose text reads
    like an argument error) is INTERNAL_ERROR, and its text goes to the log only."""
    from mcp.server.mcpserver.exceptions import ToolError

    async def sdk_refusal(*_: object, **__: object) -> None:
        raise ToolError("INVALID_ARGUMENT: k looks wrong")

    monkeypatch.setattr(Learner, "select", sdk_refusal)
    code, text = await refused(client, "qortex_select", {"candidates": ["a"]})
    assert code == "INTERNAL_ERROR"
    assert "k looks wrong" not in text
    assert "k looks wrong" in caplog.text


CRASHING_SERVER = """
import sys
import anyio
from mcp import Client
from qortex_mcp.config import Settings
from qortex_mcp.learning import Learner
from qortex_mcp.logging import configure_logging
from qortex_mcp.server import build_server

configure_logging("info")  # what the qortex-mcp command does first


async def crash(*_, **__):
    raise RuntimeError("secret detail /etc/passwd")


Learner.select = crash


async def main():
    settings = Settings.build(store="memory", state_dir=sys.argv[1])
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("qortex_select", {"candidates": ["a"]})
    print(result.content[0].text)


anyio.run(main)
"""


def test_an_internal_error_logs_the_exception_type_and_traceback_on_stderr(
    tmp_path: Path,
) -> None:
    """The client is told the server log has the details: it must have them (type and
    traceback), on stderr, with nothing of them on stdout or in the answer."""
    script = tmp_path / "crashing_server.py"
    script.write_text(CRASHING_SERVER, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == (
        "INTERNAL_ERROR: unexpected server error; the server log has the details")
    (crashed,) = [line for line in done.stderr.splitlines() if "event='tool_crashed'" in line]
    assert "error_type='RuntimeError'" in crashed
    assert "Traceback (most recent call last)" in crashed
    assert "RuntimeError: secret detail /etc/passwd" in crashed
    # The SDK's own logger.exception() line keeps its traceback too (it used to be dropped).
    sdk = done.stderr.split("raised an unexpected exception", 1)[1]
    assert sdk.startswith("\nTraceback (most recent call last)")


async def test_a_closed_registry_answers_closed(client: Client, registry: LearnerRegistry) -> None:
    await registry.close()
    code, _ = await refused(client, "qortex_status")
    assert code == "CLOSED"


async def test_a_registry_that_cannot_open_is_a_config_error_on_the_call(
    settings: Settings,
) -> None:
    server: MCPServer[Any] = MCPServer("host")
    runtime = register_tools(server, settings.with_overrides(secret="too-short"))
    async with Client(server) as client:
        code, text = await refused(client, "qortex_status")
    assert code == "CONFIG_ERROR"
    assert "QORTEX_SECRET" in text
    await runtime.aclose()


@pytest.mark.parametrize("value", ["0.5", "1", "Accepted", "yes", True, [1.0], {"r": 1}])
async def test_a_bad_outcome_gets_one_answer_on_the_tool_and_the_stream_paths(
    client: Client, value: object,
) -> None:
    """The tools' schema and the stream / REST decoder read outcomes by one rule
    (``rewards.outcome_value``): the same value is refused with the same code."""
    from qortex_mcp.learning.feedback import parse_feedback

    code, _ = await refused(client, "qortex_feedback", {"arm_id": "a", "outcome": value})
    with pytest.raises(QortexError) as info:
        parse_feedback({"arm_id": "a", "outcome": value})
    assert info.value.code == code, (value, code, info.value)
    assert code in ("INVALID_REWARD", "INVALID_OUTCOME")
