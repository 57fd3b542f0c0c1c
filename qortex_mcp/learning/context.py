"""Canonical context keys and the back-off rule.

A context is a JSON object (``{"task": "type-check", "lang": "py"}``). It is canonicalised
(sorted keys, compact separators, UTF-8) and keyed by a SHA-256 digest, so equal objects
always share one posterior however their keys were ordered.

**Back-off.** For an arm in a context the learner uses::

    alpha = a0 + s_ctx + w * s_other
    beta  = b0 + f_ctx + w * f_other
    w     = min(1, m / n_other) * m / (m + n_ctx)

where ``s``/``f`` are successes/failures, ``n = s + f`` the evidence mass, "other" is the
arm's evidence from every other context and ``m`` is ``LearnerConfig.context_backoff``
(default 4). So a new context borrows at most ``m`` pseudo-observations' worth of the arm's
global posterior; the borrowed weight halves once the context has ``m`` observations of its
own and keeps fading. ``m = 0`` keeps contexts fully separate.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, Final

from qortex_mcp.errors import InvalidContext, preview

__all__ = [
    "MAX_CONTEXT_BYTES",
    "MAX_CONTEXT_DEPTH",
    "CanonicalContext",
    "backoff_weight",
    "canonical_context",
]

MAX_CONTEXT_BYTES: Final = 16 * 1024
MAX_CONTEXT_DEPTH: Final = 32


class CanonicalContext:
    """A validated context: its canonical JSON ``body`` and stable ``key``."""

    __slots__ = ("body", "key")

    def __init__(self, key: str, body: str) -> None:
        self.key = key
        self.body = body


def _check_depth(value: object, depth: int) -> None:
    if depth > MAX_CONTEXT_DEPTH:
        raise InvalidContext(f"context is nested deeper than {MAX_CONTEXT_DEPTH} levels")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidContext(f"context keys must be strings, got {preview(k)}")
            _check_depth(v, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_depth(v, depth + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidContext("context numbers must be finite")
    elif value is not None and not isinstance(value, str | int | bool):
        raise InvalidContext(f"context values must be JSON, got {type(value).__name__}")


def canonical_context(context: Mapping[str, Any] | None) -> CanonicalContext | None:
    """Validate and canonicalise; ``None`` and ``{}`` mean "no context" (global)."""
    if context is None:
        return None
    if not isinstance(context, Mapping):
        raise InvalidContext(f"context must be a JSON object, got {type(context).__name__}")
    if not context:
        return None
    _check_depth(context, 1)
    try:
        body = json.dumps(
            context, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        raw = body.encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise InvalidContext(f"context is not valid JSON: {preview(str(exc))}") from None
    if len(raw) > MAX_CONTEXT_BYTES:
        raise InvalidContext(f"context is larger than {MAX_CONTEXT_BYTES} bytes as JSON")
    key = "c" + hashlib.sha256(raw).hexdigest()[:31]
    return CanonicalContext(key, body)


def backoff_weight(m: float, n_ctx: float, n_other: float) -> float:
    """Weight of the arm's other-context evidence in this context's posterior (see module)."""
    if m <= 0.0 or n_other <= 0.0:
        return 0.0
    return min(1.0, m / n_other) * m / (m + n_ctx)
