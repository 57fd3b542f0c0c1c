"""Click models: turning "only accepted items were reported" into weighted evidence.

With click-only feedback the agent reports what it accepted, never what it skipped. The
skipped items above the lowest reported one were probably seen and not taken, but how
probably depends on where they were shown: a user reads rank 1 almost always and rank 9
rarely. ``ClickModel`` turns the ranks signed into the selection (never the client's) into
a weight per skipped item; each becomes a weighted failure (``alpha += w * r``,
``beta += w * (1 - r)`` with r = 0). Items below the lowest reported one learn nothing.

**Examination curve.** ``e(r)`` is the probability that rank r is examined at all
(position-based model, PBM); the default is ``1 / r``.

**Correction** (``correction="ipw"``, the default). Two biases make the plain weight
``e(r)`` wrong, and both are fixed with quantities that are known when the feedback
arrives (the curve and the posterior means the items were ranked by, signed in the
selection id, written θ below):

1. A skipped item at rank r was not accepted. Under the PBM the probability that it was
   examined *given that it was not accepted* is ``q = e (1 - θ) / (1 - e θ)`` (Bayes; the
   E-step of the PBM's EM algorithm). That, not ``e``, is the expected failure.
2. A skip at rank r is only recorded when something below r was accepted, which happens
   with probability ``p = 1 - prod_{j > r} (1 - e(j) θ_j)``, while accepts are recorded
   always. Dividing by ``p`` (inverse propensity) makes the expected update of an item the
   same function of its relevance at every rank, so items shown low are neither favoured
   (they would never collect failures) nor buried.

So a skipped item's weight is ``min(1, q / p)``; the cap keeps each event at most one
observation (it binds only near the bottom of long lists). ``correction="none"`` uses the
plain ``e(r)``.

**Evidence weight.** Every click-only update (the reported outcomes and the inferred
failures) is multiplied by ``evidence_weight`` (default 0.5): a tempered likelihood. The
inferred failures rest on estimates (θ, the curve), so click-only evidence counts as half
an explicit judgement and the retrieval-score prior stays in charge twice as long.
Tempering both sides keeps the expected posterior mean where the correction put it.
``bench/bench_rerank.py`` shows each choice against the reference strategies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from qortex_mcp.errors import ConfigError, InvalidInput, preview

__all__ = ["ClickModel", "reciprocal_rank"]

FloatArray = npt.NDArray[np.float64]

# Relevance estimates are kept off 0 and 1 so that q = e (1 - θ) / (1 - e θ) is defined.
_THETA_EDGE: Final = 1e-4
# Weights below this teach nothing measurable and would fail the (0, 1] weight check.
MIN_WEIGHT: Final = 1e-6


def reciprocal_rank(rank: int) -> float:
    """The default examination curve: rank r is examined with probability 1 / r."""
    return 1.0 / rank


@dataclass(frozen=True, slots=True)
class ClickModel:
    """How click-only feedback becomes weighted evidence (see the module docstring).

    Args:
        examination: the examination probability by 1-based rank: a function of the rank,
            or a sequence for ranks 1, 2, ... (the last value repeats beyond its end).
            Values must lie in (0, 1].
        correction: ``"ipw"`` (examination given no accept, inverse-propensity weighted)
            or ``"none"`` (the plain examination probability).
        evidence_weight: multiplies every click-only update, in (0, 1].

    Raises:
        ConfigError: a parameter is out of range.
    """

    examination: Callable[[int], float] | Sequence[float] = reciprocal_rank
    correction: Literal["ipw", "none"] = "ipw"
    evidence_weight: float = 0.5
    _curves: dict[int, FloatArray] = field(default_factory=dict, init=False, repr=False,
                                           compare=False)

    def __post_init__(self) -> None:
        if self.correction not in ("ipw", "none"):
            raise ConfigError(f"correction must be 'ipw' or 'none', got {preview(self.correction)}")
        w = self.evidence_weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not (
            math.isfinite(w) and 0.0 < w <= 1.0
        ):
            raise ConfigError(f"evidence_weight must be a number in (0, 1], got {preview(w)}")
        if not callable(self.examination):
            if not isinstance(self.examination, Sequence) or not len(self.examination):
                raise ConfigError("examination must be a function of the rank or a non-empty "
                                  "sequence of probabilities")
            self.curve(len(self.examination))  # validate the values now

    def curve(self, n: int) -> FloatArray:
        """Examination probabilities of ranks 1..n.

        Raises:
            ConfigError: the curve gives a value outside (0, 1].
        """
        cached = self._curves.get(n)
        if cached is not None:
            return cached
        exam = self.examination
        if callable(exam):
            values = [exam(r) for r in range(1, n + 1)]
        else:
            values = [exam[min(r, len(exam)) - 1] for r in range(1, n + 1)]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 < v <= 1.0:
                raise ConfigError(f"examination probabilities must lie in (0, 1], got {preview(v)}")
        out = np.array(values, dtype=np.float64)
        if len(self._curves) < 64:  # list lengths vary little; the cache stays tiny
            self._curves[n] = out
        return out

    def skip_weights(self, means: Sequence[float] | FloatArray, lowest: int) -> FloatArray:
        """Failure weight of a skip at each display position ``0 .. lowest - 1``.

        Args:
            means: the relevance estimate of every shown item, in display order.
            lowest: 0-based position of the lowest reported item; positions at or below
                it get no weight.

        Returns:
            ``lowest`` weights, already multiplied by ``evidence_weight``; the caller
            drops reported positions and weights below ``MIN_WEIGHT``.
        """
        n = len(means)
        if not 0 <= lowest < n:
            raise InvalidInput(f"lowest must be a display position below {n}, got {lowest}")
        e = self.curve(n)
        if self.correction == "none":
            return e[:lowest] * self.evidence_weight
        theta = np.clip(np.asarray(means, dtype=np.float64), _THETA_EDGE, 1.0 - _THETA_EDGE)
        miss = 1.0 - e * theta
        # tail[i] = P(no accept at any position below i) = prod_{j > i} (1 - e_j θ_j)
        tail = np.ones(n)
        tail[:-1] = np.cumprod(miss[::-1])[::-1][1:]
        seen_given_skip = e[:lowest] * (1.0 - theta[:lowest]) / miss[:lowest]
        recorded = 1.0 - tail[:lowest]
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(recorded > 0.0, seen_given_skip / recorded, 1.0)
        return np.minimum(w, 1.0) * self.evidence_weight
