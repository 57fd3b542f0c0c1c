"""Feedback requests: parsing, checking and routing, shared by the tool and the streams.

A request is what ``qortex_feedback`` takes (and what a stream message carries): a learner,
then either a ``selection_id`` with ``outcomes`` (arm id -> outcome) or a bare ``arm_id`` with
an ``outcome`` (optionally ``context`` and ``idempotency_key``). ``parse_feedback`` turns a
decoded JSON object into a typed ``FeedbackRequest`` with the tool's error codes;
``route_feedback`` checks the selection id before any learner is opened for it, then
``apply_feedback`` sends the request where it belongs (a next-tool suggestion's feedback to
the learner's ``NextToolModel``). Rerank feedback with ``clicks_only``
needs the click model, which lives above the library: callers pass it in as ``clicks``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from qortex_mcp.errors import InvalidInput, InvalidOutcome, InvalidReward, preview
from qortex_mcp.learning.learner import Learner
from qortex_mcp.learning.nexttool import NextToolModel
from qortex_mcp.learning.registry import LearnerRegistry
from qortex_mcp.learning.rewards import outcome_value
from qortex_mcp.learning.types import ArmOutcome, FeedbackResult
from qortex_mcp.learning.validation import check_name

__all__ = [
    "FEEDBACK_FIELDS",
    "ClicksHandler",
    "FeedbackKind",
    "FeedbackRequest",
    "apply_feedback",
    "outcomes_of",
    "parse_feedback",
    "route_feedback",
    "verify_request",
]

FeedbackKind = Literal["select", "rerank", "next_tool", "bare"]
OutcomeValue = str | float

FEEDBACK_FIELDS: Final = frozenset({"learner", "selection_id", "outcomes", "arm_id", "outcome",
                                    "context", "idempotency_key", "clicks_only"})

ClicksHandler = Callable[[Learner, str, Mapping[str, OutcomeValue]],
                         Awaitable[list[FeedbackResult]]]
"""Applies ``clicks_only`` rerank feedback (learner, selection id, outcomes)."""


@dataclass(frozen=True, slots=True)
class FeedbackRequest:
    """One feedback, checked for shape: ``pairs`` maps each arm id to its outcome."""

    learner: str
    pairs: Mapping[str, OutcomeValue]
    selection_id: str | None = None
    context: dict[str, Any] | None = None
    idempotency_key: str | None = None
    clicks_only: bool = False

    @classmethod
    def of(
        cls, learner: str, *, selection_id: str | None = None,
        outcomes: Mapping[str, OutcomeValue] | None = None, arm_id: str | None = None,
        outcome: OutcomeValue | None = None, context: dict[str, Any] | None = None,
        idempotency_key: str | None = None, clicks_only: bool = False,
    ) -> FeedbackRequest:
        """The request of the tool's arguments (``outcomes``, or ``arm_id`` with ``outcome``).

        Raises:
            InvalidInput: both forms, neither, or an empty ``outcomes``; context or a key
                with a selection id; ``clicks_only`` without one.
        """
        if outcomes is not None:
            if arm_id is not None or outcome is not None:
                raise InvalidInput("give outcomes, or arm_id with outcome, not both")
            if not outcomes:
                raise InvalidInput("outcomes is empty; map at least one arm id to an outcome")
            pairs = outcomes
        elif arm_id is None or outcome is None:
            raise InvalidInput("give outcomes (arm id -> outcome), or arm_id with outcome")
        else:
            pairs = {arm_id: outcome}
        if selection_id is None:
            if clicks_only:
                raise InvalidInput(
                    "clicks_only applies to rerank feedback; quote its selection_id")
        elif context is not None or idempotency_key is not None:
            raise InvalidInput("the selection_id carries the context and makes feedback "
                               "idempotent; leave context and idempotency_key out")
        return cls(learner, pairs, selection_id, context, idempotency_key, clicks_only)


def _outcome_value(where: str, value: object) -> OutcomeValue:
    """``rewards.outcome_value`` (the tools' rule), its refusal located and quoted."""
    try:
        return outcome_value(value)
    except (InvalidOutcome, InvalidReward) as exc:
        raise type(exc)(f"{where}: {exc.message}, got {preview(value)}") from None


def _optional_str(body: Mapping[str, object], name: str) -> str | None:
    value = body.get(name)
    if value is None or isinstance(value, str):
        return value
    raise InvalidInput(f"{name}: must be a string, got {type(value).__name__}")


def parse_feedback(body: object, *, default_key: str | None = None) -> FeedbackRequest:
    """A ``FeedbackRequest`` from a decoded JSON object with ``qortex_feedback``'s fields.

    Strict as the tool: unknown fields and wrong types are refused, never coerced.
    ``default_key`` is the idempotency key of bare feedback that gives none (a stream
    message's id).

    Raises:
        InvalidInput: not an object, an unknown field, a wrong type, or a bad combination.
        InvalidReward, InvalidOutcome: an outcome that is not a word or a number.
    """
    if not isinstance(body, Mapping):
        raise InvalidInput(f"feedback must be a JSON object, got {type(body).__name__}")
    if not FEEDBACK_FIELDS.issuperset(body):
        unknown = sorted(str(k) for k in body if k not in FEEDBACK_FIELDS)
        raise InvalidInput(f"unknown field {preview(unknown[0])}; fields are "
                           f"{', '.join(sorted(FEEDBACK_FIELDS))}")
    learner = body.get("learner", "default")
    if not isinstance(learner, str):
        raise InvalidInput(f"learner: must be a string, got {type(learner).__name__}")
    outcomes = body.get("outcomes")
    pairs: dict[str, OutcomeValue] | None = None
    if outcomes is not None:
        if not isinstance(outcomes, Mapping):
            raise InvalidInput("outcomes: must be an object mapping arm ids to outcomes")
        pairs = {str(k): _outcome_value(f"outcomes[{preview(k)}]", v)
                 for k, v in outcomes.items()}
    raw = body.get("outcome")
    outcome = None if raw is None else _outcome_value("outcome", raw)
    context = body.get("context")
    if context is not None and not isinstance(context, dict):
        raise InvalidInput(f"context: must be an object, got {type(context).__name__}")
    clicks_only = body.get("clicks_only", False)
    if not isinstance(clicks_only, bool):
        raise InvalidInput(f"clicks_only: must be a boolean, got {type(clicks_only).__name__}")
    selection_id = _optional_str(body, "selection_id")
    key = _optional_str(body, "idempotency_key")
    if key is None and selection_id is None:
        key = default_key
    return FeedbackRequest.of(
        learner, selection_id=selection_id, outcomes=pairs, arm_id=_optional_str(body, "arm_id"),
        outcome=outcome, context=context, idempotency_key=key, clicks_only=clicks_only)


def verify_request(registry: LearnerRegistry, request: FeedbackRequest) -> str | None:
    """Refuse a forged or expired selection id before any learner is opened for it (a
    genuine id proves its learner exists, maybe only on the instance that made it so far).
    Returns the id's kind (``select``, ``rerank``, ``next``), None for bare feedback.

    Raises:
        InvalidName: a bad learner name. InvalidSelection, SelectionExpired: a bad id.
    """
    if request.selection_id is None:
        return None
    check_name(request.learner, "learner name")
    return registry.signer.verify(request.selection_id, request.learner,
                                  ttl_s=registry.config_for(request.learner).selection_ttl_s
                                  ).kind


def _outcome(arm: str, value: OutcomeValue, **quote: Any) -> ArmOutcome:
    if isinstance(value, str):
        return ArmOutcome(arm, outcome=value, **quote)
    return ArmOutcome(arm, reward=value, **quote)


def outcomes_of(request: FeedbackRequest) -> list[ArmOutcome]:
    """The learner's view of a request that needs no click model (select, rerank without
    ``clicks_only``, bare): one ``ArmOutcome`` per arm."""
    if request.selection_id is None:
        return [_outcome(arm, v, context=request.context,
                         idempotency_key=request.idempotency_key)
                for arm, v in request.pairs.items()]
    return [_outcome(arm, v, selection_id=request.selection_id)
            for arm, v in request.pairs.items()]


async def apply_feedback(
    learner: Learner, request: FeedbackRequest, *, clicks: ClicksHandler | None = None
) -> tuple[FeedbackKind, list[FeedbackResult]]:
    """Apply ``request`` to ``learner``; durable when it returns. Every refusal happens
    before anything is written.

    Raises:
        InvalidInput: ``clicks_only`` on a select, or with no click model given.
        And what ``Learner.batch_observe`` raises.
    """
    if request.selection_id is None:
        return "bare", await learner.batch_observe(outcomes_of(request))
    claimed = learner.verify_selection(request.selection_id).kind
    if claimed == "next":
        if request.clicks_only:
            raise InvalidInput("clicks_only applies to rerank feedback, not to a next_tool")
        return "next_tool", await NextToolModel.of(learner).feedback(request.selection_id,
                                                                     request.pairs)
    kind: FeedbackKind = "rerank" if claimed == "rerank" else "select"
    if request.clicks_only:
        if kind == "select":
            raise InvalidInput("clicks_only applies to rerank feedback, not to a select")
        if clicks is None:
            raise InvalidInput("clicks_only feedback needs the reranker's click model")
        return kind, await clicks(learner, request.selection_id, request.pairs)
    return kind, await learner.batch_observe(outcomes_of(request))


async def route_feedback(
    registry: LearnerRegistry, request: FeedbackRequest, *, clicks: ClicksHandler | None = None
) -> tuple[FeedbackKind, list[FeedbackResult]]:
    """Check the selection id, open the learner, apply (see ``apply_feedback``).

    Raises:
        InvalidSelection, SelectionExpired, InvalidName, UnknownLearner, LimitExceeded: and
        what ``apply_feedback`` raises.
    """
    verify_request(registry, request)
    async with registry.use(request.learner) as learner:
        return await apply_feedback(learner, request, clicks=clicks)
