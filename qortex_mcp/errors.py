"""One exception tree for qortex-mcp.

Every error carries a stable ``code`` (what agents and tests match on), a one-line message
and a ``retryable`` flag (retry the same call, with the same selection id, and it is safe)::

    QortexError
    ├── InvalidInput                INVALID_ARGUMENT     the caller can fix the call
    │   ├── InvalidName             INVALID_NAME
    │   ├── InvalidReward           INVALID_REWARD
    │   ├── InvalidOutcome          INVALID_OUTCOME
    │   ├── InvalidContext          INVALID_CONTEXT
    │   ├── InvalidCandidates       INVALID_CANDIDATES
    │   ├── InvalidPrior            INVALID_PRIOR
    │   └── BudgetTooSmall          BUDGET_TOO_SMALL
    ├── InvalidSelection            INVALID_SELECTION    forged, altered, malformed or foreign id
    ├── SelectionExpired            SELECTION_EXPIRED
    ├── ArmNotInSelection           ARM_NOT_IN_SELECTION an arm the selection never offered
    │   └── ArmNotChosen            ARM_NOT_CHOSEN       offered to a select, but not chosen
    ├── SelectionConflict           SELECTION_CONFLICT   a different answer for an answered arm
    ├── UnknownLearner              UNKNOWN_LEARNER
    ├── UnknownArm                  UNKNOWN_ARM
    ├── UnknownTool                 UNKNOWN_TOOL         a tool name the server does not have
    ├── LimitExceeded               LIMIT_EXCEEDED
    ├── RateLimited                 RATE_LIMITED         retryable, after ``retry_after_s``
    ├── ConfigError                 CONFIG_ERROR
    ├── ClosedError                 CLOSED               used after close()
    └── StoreError                  STORE_ERROR
        ├── StoreUnavailable        STORE_UNAVAILABLE    retryable
        ├── StoreBusy               STORE_BUSY           retryable
        ├── StoreFull               STORE_FULL           retryable
        ├── StoreInaccessible       STORE_INACCESSIBLE   the location cannot hold a store
        ├── CorruptState            CORRUPT_STATE
        └── SchemaTooNew            SCHEMA_TOO_NEW

Stores wrap driver exceptions as ``StoreError(...) from exc``; nothing below the CLI catches
bare ``Exception``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ArmNotChosen",
    "ArmNotInSelection",
    "BudgetTooSmall",
    "ClosedError",
    "ConfigError",
    "CorruptState",
    "InvalidCandidates",
    "InvalidContext",
    "InvalidInput",
    "InvalidName",
    "InvalidOutcome",
    "InvalidPrior",
    "InvalidReward",
    "InvalidSelection",
    "LimitExceeded",
    "QortexError",
    "RateLimited",
    "SchemaTooNew",
    "SelectionConflict",
    "SelectionExpired",
    "StoreBusy",
    "StoreError",
    "StoreFull",
    "StoreInaccessible",
    "StoreUnavailable",
    "UnknownArm",
    "UnknownLearner",
    "UnknownTool",
    "preview",
]

_PREVIEW_CHARS = 64


def preview(value: object) -> str:
    """Quote user input for an error message: escaped, at most 64 characters.

    Error messages echo input so an agent can see what it sent, but never unbounded or with
    raw control characters (a message is one line, and may be read back by another agent).
    """
    text = value if isinstance(value, str) else repr(value)
    shown = text[:_PREVIEW_CHARS].encode("unicode_escape", "backslashreplace").decode("ascii")
    return repr(shown) + ("..." if len(text) > _PREVIEW_CHARS else "")


class QortexError(Exception):
    """Root of every error qortex-mcp raises on purpose."""

    code: ClassVar[str] = "QORTEX_ERROR"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        # One line, always: messages travel to agents as tool errors.
        self.message = " ".join(message.split())
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidInput(QortexError):
    code = "INVALID_ARGUMENT"


class InvalidName(InvalidInput):
    code = "INVALID_NAME"


class InvalidReward(InvalidInput):
    code = "INVALID_REWARD"


class InvalidOutcome(InvalidInput):
    code = "INVALID_OUTCOME"


class InvalidContext(InvalidInput):
    code = "INVALID_CONTEXT"


class InvalidCandidates(InvalidInput):
    code = "INVALID_CANDIDATES"


class InvalidPrior(InvalidInput):
    code = "INVALID_PRIOR"


class BudgetTooSmall(InvalidInput):
    code = "BUDGET_TOO_SMALL"


class InvalidSelection(QortexError):
    code = "INVALID_SELECTION"


class SelectionExpired(QortexError):
    code = "SELECTION_EXPIRED"


class ArmNotInSelection(QortexError):
    code = "ARM_NOT_IN_SELECTION"


class ArmNotChosen(ArmNotInSelection):
    """Feedback on an arm a select offered but did not choose: the agent never tried it,
    so its outcome would be a pull that never happened."""

    code = "ARM_NOT_CHOSEN"


class SelectionConflict(QortexError):
    code = "SELECTION_CONFLICT"


class UnknownLearner(QortexError):
    code = "UNKNOWN_LEARNER"


class UnknownArm(QortexError):
    code = "UNKNOWN_ARM"


class UnknownTool(QortexError):
    code = "UNKNOWN_TOOL"


class LimitExceeded(QortexError):
    code = "LIMIT_EXCEEDED"


class RateLimited(QortexError):
    """Too many calls of one kind lately; the same call succeeds after ``retry_after_s``."""

    code = "RATE_LIMITED"
    retryable = True

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ConfigError(QortexError):
    code = "CONFIG_ERROR"


class ClosedError(QortexError):
    code = "CLOSED"


class StoreError(QortexError):
    code = "STORE_ERROR"


class StoreUnavailable(StoreError):
    code = "STORE_UNAVAILABLE"
    retryable = True


class StoreBusy(StoreError):
    code = "STORE_BUSY"
    retryable = True


class StoreFull(StoreError):
    code = "STORE_FULL"
    retryable = True


class StoreInaccessible(StoreError):
    """The configured location cannot hold a store as it is (a directory where the file
    goes, a read-only directory, another program's database): not retryable, someone has
    to fix the location (the message says what)."""

    code = "STORE_INACCESSIBLE"


class CorruptState(StoreError):
    code = "CORRUPT_STATE"


class SchemaTooNew(StoreError):
    code = "SCHEMA_TOO_NEW"
