"""The n-gram levels of the next-tool model, and how their counts are smoothed.

**Storage.** A transition "after history ``(a, b)`` the agent called ``c``" is learned as
feedback on arm ``c`` in one context per n-gram level, each a JSON object naming the level::

    {"ngram": []}            unigram: how often c is called at all
    {"ngram": ["b"]}         bigram: after b
    {"ngram": ["a", "b"]}    trigram: after a then b
    {"ngram": ["a", "b"], "context": {...}}   the caller's context, when given

A history shorter than two is padded with ``null`` (the session start), so every transition
writes the same levels and ``[null, "b"]`` means "b was the first call". The evidence of a
level row is the transition count (``s + f``, decayed with the learner's half-life) and the
success statistics (``s`` of it went well). Because the rows are ordinary evidence, every
store keeps them, exports and imports them and replays them from its event log, and
feedback is exactly-once per (selection id, level, tool).

**Smoothing: interpolated Witten-Bell.** From the most general level to the most specific::

    P_0(w)   = 1 / |candidates|
    P_L(w)   = (c_L(w) + T_L * P_{L-1}(w)) / (c_L + T_L)

with ``c_L(w)`` the (decayed) count of ``w`` after the level's history, ``c_L`` their sum
over every tool that ever followed it and ``T_L`` how many distinct tools did. A level
never seen leaves the distribution as it was. Witten-Bell needs no discount constant,
which matters here: decayed counts are fractional, and absolute discounting (``c - D``)
would erase every count that decayed below ``D``. The unseen mass goes to the tools
available now (the candidates), and the result is renormalised over them: the probability
of each candidate given that one of them is called next. The caller's context level, when
given, refines the global trigram (it is a subset of the same data), so a new context
starts from the global sequence model and moves away as its own evidence grows.

**Success.** A Beta posterior per tool after the history: the most specific level's outcomes
in full, plus each coarser level's outcomes beyond the next finer one, at most
``context_backoff + a0 + b0`` pseudo-observations of each (``ngram_counts``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Final

from qortex_mcp.errors import InvalidContext
from qortex_mcp.learning.context import MAX_CONTEXT_BYTES

__all__ = ["ORDER", "Level", "describe_history", "levels_for", "reason", "state_of"]

ORDER: Final = 3
"""Trigrams: the last two tools of a history are its state."""
_NGRAM: Final = "ngram"
_CALLER: Final = "context"


class Level:
    """One n-gram level of one history: its context key and body, the dedup tag its rows
    carry, and how a reason names it."""

    __slots__ = ("body", "history", "in_context", "key", "lead", "tag", "verb")

    def __init__(self, tag: str, history: tuple[str | None, ...], caller: str | None) -> None:
        ngram = json.dumps(list(history), separators=(",", ":"), ensure_ascii=False)
        # The body is written exactly as canonical_context writes {"context": ..., "ngram":
        # ...} (sorted keys, compact): the caller's context is canonical already.
        body = (f'{{"{_NGRAM}":{ngram}}}' if caller is None else
                f'{{"{_CALLER}":{caller},"{_NGRAM}":{ngram}}}')
        raw = body.encode("utf-8")
        if len(raw) > MAX_CONTEXT_BYTES:
            raise InvalidContext(f"context and history take more than {MAX_CONTEXT_BYTES} "
                                 "bytes as JSON; use a smaller context")
        self.key = "c" + hashlib.sha256(raw).hexdigest()[:31]
        self.body = body
        self.tag = tag
        self.history = history
        self.in_context = caller is not None
        # How a reason names the level, rendered once (a suggestion gives three reasons).
        where = "in this context, " if self.in_context else ""
        if not history:
            self.lead, self.verb = "", " was called {} times overall (this history is new)"
        elif all(h is None for h in history):  # [null] or [null, null]: the start
            self.lead, self.verb = where, " opened a session {} times"
        else:
            self.lead = f"{where}after {describe_history(history)}, "
            self.verb = " followed {} times"


def levels_for(state: tuple[str | None, str | None], caller: str | None) -> tuple[Level, ...]:
    """The levels a transition from ``state`` (the last two tools, padded) updates, most
    general first: unigram, bigram, trigram, then the caller's context's trigram."""
    out = [Level("n1", (), None), Level("n2", state[1:], None), Level("n3", state, None)]
    if caller is not None:
        out.append(Level("c3", state, caller))
    return tuple(out)


def describe_history(history: Sequence[str | None]) -> str:
    """``read_file -> run_tests``; the padding reads as ``start``."""
    return " -> ".join("start" if h is None else h for h in history)


def state_of(history: Sequence[Any]) -> tuple[str | None, str | None]:
    """The last two entries, padded with None at the front."""
    tail = list(history[-(ORDER - 1):])
    while len(tail) < ORDER - 1:
        tail.insert(0, None)
    return tail[0], tail[1]


def _fmt(count: float) -> str:
    near = round(count)
    return str(near) if abs(count - near) < 0.05 else f"{count:.1f}"


def reason(tool: str, levels: Sequence[Level], depth: int, n: float, s: float) -> str:
    """The one-line reason of a suggestion: the most specific level it followed (``depth``
    in ``levels``, -1: none), how often (``n``) and how well (``s`` of it went well)."""
    if depth < 0:
        return f"no record of {tool} after any history yet: an even share"
    level = levels[depth]
    went = f"{round(100 * s / n)}% went well" if n > 0 else "no outcome yet"
    return f"{level.lead}{tool}{level.verb.format(_fmt(n))}, {went}"
