"""Tool parameter types: what the input schemas say, and how strictly arguments are checked.

The tool boundary validates arguments in pydantic's strict mode before a tool runs: a
number sent as a string, a boolean sent as a number or an unknown argument is refused,
never coerced. Rules the library already enforces with a more specific code (names,
rewards, contexts, priors) are left to it; the schema still documents them.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from qortex_mcp.errors import InvalidOutcome, InvalidReward
from qortex_mcp.learning import Arm
from qortex_mcp.learning.learner import MAX_K
from qortex_mcp.learning.rewards import (
    NOT_AN_OUTCOME,
    OUTCOME_WORDS,
    UNKNOWN_WORD,
    outcome_value,
)
from qortex_mcp.learning.validation import MAX_NAME_CHARS

__all__ = [
    "MAX_LIMIT",
    "ArmIdArg",
    "ArmIdsArg",
    "CandidateIn",
    "CandidatesArg",
    "ContextArg",
    "ExistingLearnerArg",
    "LearnerArg",
    "LimitArg",
    "OptionalLearnerArg",
    "OutcomeValue",
    "ResultIn",
    "ResultsArg",
]

MAX_LIMIT: Final = 1000

_NAME_SCHEMA: Final[JsonDict] = {"minLength": 1, "maxLength": MAX_NAME_CHARS}

LearnerArg = Annotated[str, Field(
    description="Learner name: one learner per kind of decision (e.g. 'prompt-variant'). "
    "Created on first use.", json_schema_extra=_NAME_SCHEMA,
)]
ExistingLearnerArg = Annotated[str, Field(
    description="Learner name (one learner per kind of decision). It must exist already: "
    "select, rerank or feedback creates it; otherwise the answer is UNKNOWN_LEARNER.",
    json_schema_extra=_NAME_SCHEMA,
)]
OptionalLearnerArg = Annotated[str | None, Field(
    description="Learner name (it must exist, else UNKNOWN_LEARNER); omit for every learner.",
    json_schema_extra=_NAME_SCHEMA,
)]
ArmIdArg = Annotated[str, Field(description="An arm id.", json_schema_extra=_NAME_SCHEMA)]
ArmIdsArg = Annotated[list[str] | None, Field(
    description="Only these arm ids; omit for all.", max_length=MAX_LIMIT,
)]
ContextArg = Annotated[dict[str, Any] | None, Field(
    description="JSON object describing the situation, e.g. {\"task\": \"type-check\"}. "
    "Keep it coarse and stable: the kind of task, never the query text or anything that "
    "changes every call (each distinct context learns on its own). Learning is kept per "
    "context, backing off to the arm's overall record.",
)]
LimitArg = Annotated[int, Field(ge=1, le=MAX_LIMIT, description="Most items to return.")]
KArg = Annotated[int, Field(ge=1, le=MAX_K, description="How many arms to choose.")]


class CandidateIn(BaseModel):
    """A candidate given as an object rather than a bare id."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(description="arm id", json_schema_extra=_NAME_SCHEMA)
    token_cost: float | None = Field(
        None, ge=0, description="what choosing it costs against token_budget"
    )
    prior: list[float] | None = Field(
        None, min_length=2, max_length=2,
        description="Beta prior [alpha, beta], e.g. [8, 2] for an arm known to succeed ~80%",
    )
    metadata: dict[str, Any] | None = Field(None, description="returned with the arm as is")

    def to_arm(self) -> Arm:
        prior = None if self.prior is None else (self.prior[0], self.prior[1])
        return Arm(id=self.id, token_cost=self.token_cost, prior=prior, metadata=self.metadata)


def _candidate(value: object) -> str | CandidateIn:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return CandidateIn.model_validate(value)
    raise PydanticCustomError("candidate", "must be an arm id or an object {id, token_cost, prior}")


Candidate = Annotated[
    str | CandidateIn,
    PlainValidator(_candidate),
    WithJsonSchema({"anyOf": [{"type": "string", **_NAME_SCHEMA},
                              CandidateIn.model_json_schema()]}),
]
CandidatesArg = Annotated[list[Candidate], Field(
    description="The options to choose among: arm ids, or objects {id, token_cost?, prior?, "
    "metadata?}. Ids are stable names (1-128 characters).",
)]


def _outcome_value(value: object) -> str | float:
    """``rewards.outcome_value`` as a schema error (its type picks the code)."""
    try:
        return outcome_value(value)
    except InvalidOutcome:
        raise PydanticCustomError("outcome_word", UNKNOWN_WORD) from None
    except InvalidReward:
        raise PydanticCustomError("outcome_value", NOT_AN_OUTCOME) from None


OutcomeValue = Annotated[
    str | float,
    PlainValidator(_outcome_value),
    WithJsonSchema({"anyOf": [{"type": "string", "enum": list(OUTCOME_WORDS)},
                              {"type": "number", "minimum": 0, "maximum": 1}]}),
]


class ResultIn(BaseModel):
    """A retrieval result; any other fields (text, title, url) come back as they were."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: str = Field(description="stable document id", json_schema_extra=_NAME_SCHEMA)
    score: float = Field(description="the retriever's score (higher is better)")


ResultsArg = Annotated[list[ResultIn], Field(
    description="Retrieval results in retrieval order: objects {id, score, ...}.",
)]
