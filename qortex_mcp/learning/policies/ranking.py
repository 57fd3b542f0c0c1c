"""From scores to chosen slots, and the probability of each slot: pure numpy functions.

Every strategy chooses the same way: score the K candidates, take the k best, best first.
A strategy whose scores are a function of the statistics (UCB, posterior mean, the greedy
step of epsilon-greedy) splits ties uniformly at random, so that the probability of an arm
in a slot is what ``tie_slot_propensities`` says it is. A strategy with random scores
(Thompson, softmax through Gumbel noise, EXP3) never ties in practice and takes the k
largest directly.

Slot propensity (DESIGN: "the probability that this strategy would have chosen that arm in
that slot"): the marginal probability ``P(slot j holds arm a | state)``. For one slot it is
the choice probability; over the K candidates it sums to 1, for every slot.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from qortex_mcp.errors import InvalidCandidates

__all__ = [
    "DEFAULT_DRAWS",
    "FloatArray",
    "IntArray",
    "check_chosen",
    "mc_choice_probabilities",
    "mc_slot_propensities",
    "tie_slot_propensities",
    "top_k",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

# Monte-Carlo draws behind a Thompson-type propensity (next-wave.md: N = 256). The
# standard error of an estimate p is sqrt(p (1 - p) / 256) <= 0.031; the figures in
# bench/RESULTS.md give its cost against one select.
DEFAULT_DRAWS: Final = 256


def top_k(scores: FloatArray, k: int, rng: np.random.Generator, split_ties: bool) -> IntArray:
    """Positions of the ``k`` highest scores, best first (all of them if ``k >= K``).

    With ``split_ties``, arms with equal scores come in a uniformly random order (one
    random key per candidate; for ``k == 1`` a draw only when the best score is tied).
    """
    n = int(scores.shape[0])
    if k == 1:
        if not split_ties:
            first: IntArray = np.argmax(scores, keepdims=True)
            return first
        best: IntArray = np.flatnonzero(scores == scores.max())
        if best.size == 1:
            return best
        if not best.size:  # NaN scores: no arm equals the max
            best = np.argmax(scores, keepdims=True)
            return best
        one: IntArray = best[rng.integers(best.size)][None]
        return one
    k = min(k, n)
    if split_ties:
        order: IntArray = np.lexsort((rng.random(n), -scores))
        return order[:k]
    top: IntArray = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


def check_chosen(chosen: object, n: int) -> IntArray:
    """``chosen`` as distinct candidate positions in ``[0, n)``, slot order kept.

    Raises:
        InvalidCandidates: a position is out of range or repeated.
    """
    out = np.asarray(chosen, dtype=np.intp).reshape(-1)
    if out.size and (out.min() < 0 or out.max() >= n):
        raise InvalidCandidates(f"chosen positions must be in [0, {n}), got {out.tolist()}")
    if out.size > 1 and np.unique(out).size != out.size:
        raise InvalidCandidates(f"chosen positions must be distinct, got {out.tolist()}")
    return out


def tie_slot_propensities(scores: FloatArray, chosen: IntArray) -> FloatArray:
    """Exact slot propensities of ``top_k(scores, ..., split_ties=True)``.

    An arm with ``g`` strictly better arms and ``m`` arms tied with it (itself included)
    lands uniformly in one of the slots ``g .. g + m - 1``.
    """
    mine = scores[chosen][:, None]
    greater = np.count_nonzero(scores[None, :] > mine, axis=1)
    equal = np.count_nonzero(scores[None, :] == mine, axis=1)
    slot = np.arange(chosen.shape[0])
    inside = (greater <= slot) & (slot < greater + equal)
    out: FloatArray = np.where(inside, 1.0 / np.maximum(equal, 1), 0.0)
    return out


def mc_slot_propensities(draws: FloatArray, chosen: IntArray) -> FloatArray:
    """Monte-Carlo slot propensities from ``N`` independent score vectors ``(N, K)``: the
    share of draws in which ``chosen[j]`` ranks exactly ``j``-th."""
    if chosen.shape[0] == 1:  # the common case: no draw beats it (a max, not a K x K count)
        first: FloatArray = np.mean(draws.max(axis=1) <= draws[:, chosen[0]], keepdims=True)
        return first
    mine = draws[:, chosen]
    ranks = np.count_nonzero(draws[:, :, None] > mine[:, None, :], axis=1)
    out: FloatArray = np.mean(ranks == np.arange(chosen.shape[0]), axis=0)
    return out


def mc_choice_probabilities(draws: FloatArray) -> FloatArray:
    """Monte-Carlo probability of each arm in the first slot (sums to exactly 1)."""
    counts = np.bincount(np.argmax(draws, axis=1), minlength=draws.shape[1])
    out: FloatArray = counts / draws.shape[0]
    return out
