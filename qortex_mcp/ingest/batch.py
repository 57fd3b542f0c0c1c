"""One batch of stream messages through the library's feedback path.

Every consumer does the same with what it reads: decode each message into a
``FeedbackRequest`` (refusing what can never apply), then apply the valid ones per learner
through ``Learner.observe_many`` (one store transaction for the batch when the store
group-commits), and sort each message into a ``Verdict``:

* ``done``: committed (applied or a duplicate): acknowledge it;
* ``dead``: it can never apply (malformed, forged, conflicting, unknown learner...): move
  it to the dead-letter stream with its error code, then acknowledge it;
* ``retry``: a retryable failure (store busy or down, rate cap): leave it pending.

Exactly once comes from the store, not the broker: feedback on a selection id is
deduplicated by (selection, arm); a bare message is keyed by its ``idempotency_key``, or by
the broker's message id when it has none (``Message.key``), so a redelivered message is a
duplicate, never a second count.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from qortex_mcp.errors import (
    InvalidInput,
    InvalidSelection,
    LimitExceeded,
    QortexError,
    SelectionExpired,
    StoreError,
)
from qortex_mcp.learning.feedback import (
    FeedbackRequest,
    apply_feedback,
    outcomes_of,
    parse_feedback,
    verify_request,
)
from qortex_mcp.learning.learner import Learner
from qortex_mcp.learning.registry import LearnerRegistry
from qortex_mcp.learning.types import FeedbackResult
from qortex_mcp.learning.validation import MAX_NAME_CHARS
from qortex_mcp.rerank import PosteriorReranker

__all__ = ["MAX_BODY_BYTES", "Message", "Verdict", "apply_batch", "decode", "message_key"]

MAX_BODY_BYTES: Final = 64 * 1024
"""Largest message body taken; a feedback is well under 1 kB."""


@dataclass(frozen=True, slots=True)
class Message:
    """A message as read from a broker: its id, body, and how often it was delivered."""

    id: str
    body: bytes | None
    """None when the entry has no ``feedback`` field (a Redis entry written by hand)."""
    deliveries: int
    key: str
    """The idempotency key a bare feedback without one gets: the broker's message id."""


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Literal["done", "dead", "retry"]
    code: str = ""
    message: str = ""
    applied: int = 0


DONE: Final = Verdict("done")


def message_key(broker: str, stream: str, message_id: str) -> str:
    """``broker:stream:id``, as an idempotency key (a digest of the stream name when the
    whole would pass the key's 128 characters)."""
    key = f"{broker}:{stream}:{message_id}"
    if len(key) <= MAX_NAME_CHARS:
        return key
    digest = hashlib.sha256(stream.encode()).hexdigest()[:32]
    return f"{broker}:{digest}:{message_id}"


def decode(message: Message) -> FeedbackRequest:
    """The feedback request a message carries.

    Raises:
        LimitExceeded: a body past ``MAX_BODY_BYTES``.
        InvalidInput (and its codes): no body, not JSON, or not a valid feedback.
    """
    if message.body is None:
        raise InvalidInput("the stream entry has no 'feedback' field")
    if len(message.body) > MAX_BODY_BYTES:
        raise LimitExceeded(f"message body is {len(message.body)} bytes; the most is "
                            f"{MAX_BODY_BYTES}")
    try:
        body = json.loads(message.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"message body is not JSON: {exc}") from None
    return parse_feedback(body, default_key=message.key)


def _verdict(exc: QortexError) -> Verdict:
    # A store failure is never the message's fault, whatever its code: keep it pending.
    if exc.retryable or isinstance(exc, StoreError):
        return Verdict("retry", exc.code, exc.message)
    return Verdict("dead", exc.code, exc.message)


async def apply_batch(
    registry: LearnerRegistry, messages: Sequence[Message], *, create_learners: bool = False
) -> list[Verdict]:
    """Decode and apply ``messages``; one verdict each, in order. Returns after the commit
    of everything marked ``done``.

    A bare message for a learner that does not exist is dead-lettered (``UNKNOWN_LEARNER``:
    a mistyped name in a producer must not create learners); a genuine selection id proves
    its learner exists, so its feedback creates it here if needed, as the tool does.
    ``create_learners`` creates learners for bare feedback too.
    """
    verdicts: list[Verdict | None] = [None] * len(messages)
    by_learner: dict[tuple[str, bool], list[tuple[int, FeedbackRequest]]] = {}
    one_by_one: set[int] = set()  # need a model above the learner (clicks, next tool)
    for i, message in enumerate(messages):
        try:
            request = decode(message)
            kind = verify_request(registry, request)
        except (InvalidInput, InvalidSelection, SelectionExpired, LimitExceeded) as exc:
            verdicts[i] = _verdict(exc)
            continue
        if request.clicks_only or kind == "next":
            one_by_one.add(i)
        create = create_learners or request.selection_id is not None
        by_learner.setdefault((request.learner, create), []).append((i, request))
    for (name, create), items in by_learner.items():
        try:
            async with registry.use(name, create=create) as learner:
                plain = [(i, r) for i, r in items if i not in one_by_one]
                results = await learner.observe_many([outcomes_of(r) for _, r in plain])
                for (i, _), result in zip(plain, results, strict=True):
                    verdicts[i] = (_verdict(result) if isinstance(result, QortexError) else
                                   Verdict("done", applied=result.count("applied")))
                for i, r in items:
                    if i in one_by_one:  # rare: applied one by one
                        try:
                            _, answers = await apply_feedback(learner, r, clicks=_clicks)
                        except QortexError as exc:
                            if isinstance(exc, StoreError):
                                raise
                            verdicts[i] = _verdict(exc)
                            continue
                        verdicts[i] = Verdict("done", applied=sum(
                            a.status == "applied" for a in answers))
        except QortexError as exc:  # the learner could not be opened, or the store failed
            for i, _ in items:
                if verdicts[i] is None or isinstance(exc, StoreError):
                    verdicts[i] = _verdict(exc)
    return [v if v is not None else DONE for v in verdicts]


async def _clicks(
    learner: Learner, selection_id: str, pairs: Mapping[str, str | float]
) -> list[FeedbackResult]:
    return await PosteriorReranker(learner).feedback(selection_id, pairs, clicks_only=True)
