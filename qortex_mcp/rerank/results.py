"""What a rerank returns, and how results are read (by key, attribute or function)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from qortex_mcp.errors import ConfigError, InvalidCandidates, preview

__all__ = ["ContextSource", "Getter", "ItemExplanation", "RerankResult", "getter"]

T = TypeVar("T")

Getter = str | Callable[[Any], Any]
ContextSource = Mapping[str, Any] | Callable[..., Mapping[str, Any] | None] | None


@dataclass(frozen=True, slots=True)
class ItemExplanation:
    """Why one result landed where it did (``rerank(..., explain=True)``)."""

    id: str
    base_rank: int
    """1-based rank in the retrieval order."""
    base_score: float
    """The retrieval score as given (the normalised position when there is no score)."""
    prior_alpha: float
    """The retrieval prior ``Beta(prior_alpha, prior_beta)``."""
    prior_beta: float
    alpha: float
    """The posterior (the mixture's) as one Beta with its mean and variance."""
    beta: float
    mean: float
    """Posterior mean: the ranking key (unless ``explore``)."""
    ci_low: float
    ci_high: float
    new_rank: int
    sample: float | None = None
    """The Thompson sample the item was ranked by, with ``explore=True``."""
    successes: float = 0.0
    """Learned (backed-off, decayed) successes in this context."""
    failures: float = 0.0
    prior_weight: float = 1.0
    """Posterior probability that the retrieval prior holds for this item: ``prior_trust``
    without evidence, falling as the evidence disagrees with the retrieval score."""


@dataclass(frozen=True, slots=True)
class RerankResult(Generic[T]):
    """The results in their new order and the selection id to quote in feedback."""

    results: list[T]
    selection_id: str
    explanations: list[ItemExplanation] | None = None


def getter(spec: Getter | None, what: str) -> Callable[[Any], Any] | None:
    if spec is None or callable(spec):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"{what} must be a key or attribute name, or a function")
    key = spec

    def get(item: Any) -> Any:
        if isinstance(item, Mapping):
            if key not in item:
                raise InvalidCandidates(f"a result has no {key!r}: {preview(item)}")
            return item[key]
        try:
            return getattr(item, key)
        except AttributeError:
            raise InvalidCandidates(f"a result has no {key!r}: {preview(item)}") from None

    return get
