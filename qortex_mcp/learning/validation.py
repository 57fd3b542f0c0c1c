"""Strict checks for everything that crosses the API boundary.

Identifiers are data, never code or paths, but they are also shown back to other agents and
people, so they are held to one published rule (see ``check_name``). Rewards are finite
numbers in [0, 1]; strings and booleans are refused, never coerced.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from typing import Final

from qortex_mcp.errors import InvalidName, InvalidPrior, InvalidReward, preview

__all__ = ["MAX_NAME_CHARS", "check_name", "check_names", "check_prior", "check_reward",
           "check_weight"]

MAX_NAME_CHARS: Final = 128

# Unicode categories refused in names: controls, format characters (zero-width, bidi
# overrides), surrogates, private use, unassigned, and line/paragraph separators.
_BAD_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

NUMBER_TYPES: Final = (int, float)
"""For ``isinstance`` on hot paths: ``int | float`` would build a union on every call."""


def check_names(values: Sequence[str], what: str = "name") -> None:
    """``check_name`` for many strings at once (a select registering many new ids).

    The usual ids (printable ASCII, 1-128 characters, no space at either end) pass with a
    few C-level passes over all of them instead of one Python call each; anything else goes
    through ``check_name`` one by one, which raises for the first bad one as it would.
    """
    if values and min(map(len, values)) > 0 and max(map(len, values)) <= MAX_NAME_CHARS:
        flat = "".join(values)
        # Printable ASCII has one whitespace character, the space: none may touch a
        # boundary between two ids or the ends.
        edges = "\n".join(values)
        if flat.isascii() and flat.isprintable() and " \n" not in edges and (
            "\n " not in edges and edges[0] != " " and edges[-1] != " "
        ):
            return
    for value in values:
        check_name(value, what)


def check_name(value: object, what: str = "name") -> str:
    """Return ``value`` if it is a valid learner name or arm id, else raise ``InvalidName``.

    The rule: a string of 1-128 characters, already in Unicode NFC (so two visually equal
    ids are never two arms), without control, format, surrogate, private-use or unassigned
    characters, and without leading or trailing whitespace. Case matters.
    """
    if not isinstance(value, str):
        raise InvalidName(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidName(f"{what} must not be empty")
    if len(value) > MAX_NAME_CHARS:
        raise InvalidName(f"{what} is longer than {MAX_NAME_CHARS} characters: {preview(value)}")
    if value.isascii():
        # Fast path: printable ASCII is always allowed except at the edges.
        if not value.isprintable():
            raise InvalidName(f"{what} contains a control character: {preview(value)}")
    else:
        for ch in value:
            if unicodedata.category(ch) in _BAD_CATEGORIES:
                raise InvalidName(
                    f"{what} contains a control, format or unassigned character "
                    f"U+{ord(ch):04X}: {preview(value)}"
                )
        if not unicodedata.is_normalized("NFC", value):
            raise InvalidName(f"{what} must be NFC-normalized: {preview(value)}")
    if value != value.strip():
        raise InvalidName(f"{what} has leading or trailing whitespace: {preview(value)}")
    return value


def check_reward(value: object) -> float:
    """A finite number in [0, 1]; ``bool`` and strings are refused (never coerced)."""
    if isinstance(value, bool) or not isinstance(value, NUMBER_TYPES):
        raise InvalidReward(
            f"reward must be a number in [0, 1], got {type(value).__name__} {preview(value)}"
        )
    try:
        reward = float(value)
    except OverflowError:
        raise InvalidReward("reward must be a finite number in [0, 1]") from None
    if not math.isfinite(reward) or not 0.0 <= reward <= 1.0:
        raise InvalidReward(f"reward must be a finite number in [0, 1], got {preview(value)}")
    return reward + 0.0  # -0.0 becomes 0.0


def check_weight(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, NUMBER_TYPES):
        raise InvalidReward(f"weight must be a number in (0, 1], got {preview(value)}")
    weight = float(value)
    if not math.isfinite(weight) or not 0.0 < weight <= 1.0:
        raise InvalidReward(f"weight must be a number in (0, 1], got {preview(value)}")
    return weight


def check_prior(value: object) -> tuple[float, float]:
    """An ``(alpha, beta)`` pair of finite numbers in [1e-6, 1e6]."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise InvalidPrior(f"prior must be an (alpha, beta) pair, got {preview(value)}")
    out: list[float] = []
    for part in value:
        if isinstance(part, bool) or not isinstance(part, int | float):
            raise InvalidPrior(f"prior alpha and beta must be numbers, got {preview(value)}")
        x = float(part)
        if not math.isfinite(x) or not 1e-6 <= x <= 1e6:
            raise InvalidPrior(f"prior alpha and beta must be in [1e-6, 1e6], got {preview(value)}")
        out.append(x)
    return out[0], out[1]
