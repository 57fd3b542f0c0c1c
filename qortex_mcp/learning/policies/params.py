"""Strategy parameters: what a strategy takes, its defaults and ranges, and their checks.

A strategy declares its parameters as ``Param`` objects (the shape qbrix's ``PolicyParam``
and the catalogue share: name, type, default, constraints, description). ``check_params``
turns what a user wrote (``strategy_params`` in a ``LearnerConfig`` or a TOML table) into
checked values, refusing unknown names and out-of-range values with a ``ConfigError`` that
names what is valid, so the fix is in the message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from qortex_mcp.errors import ConfigError, preview

__all__ = ["Param", "ParamValue", "check_params"]

ParamValue = float | int | None


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a strategy.

    ``low`` / ``high`` bound the value (open bounds with ``low_open`` / ``high_open``);
    ``nullable`` allows ``None``, which means the strategy's default rule (for example
    EXP3's anytime learning rate), written ``default=None``.
    """

    name: str
    default: ParamValue
    description: str
    kind: Literal["float", "int"] = "float"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False

    @property
    def type_name(self) -> str:
        return f"{self.kind} | None" if self.nullable else self.kind

    @property
    def constraints(self) -> str:
        """The accepted values in words, e.g. ``0 < beta <= 1`` or ``any finite number``."""
        parts = []
        if self.low is not None:
            parts.append(f"{_num(self.low)} {'<' if self.low_open else '<='} ")
        parts.append(self.name)
        if self.high is not None:
            parts.append(f" {'<' if self.high_open else '<='} {_num(self.high)}")
        text = "".join(parts) if len(parts) > 1 else "any finite number"
        if self.kind == "int":
            text += " (an integer)"
        return f"None or {text}" if self.nullable else text

    def check(self, value: object, strategy: str, owner: str = "strategy") -> ParamValue:
        """The checked value. Raises ``ConfigError`` naming the accepted range."""
        if value is None and self.nullable:
            return None
        wrong = ConfigError(
            f"{owner} {strategy!r} parameter {self.name!r} must be {self.constraints}, "
            f"got {preview(value)}"
        )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong
        if self.kind == "int" and not (isinstance(value, int) or float(value).is_integer()):
            raise wrong
        try:
            x = float(value)
        except OverflowError:
            raise wrong from None
        if not math.isfinite(x):
            raise wrong
        if self.low is not None and (x < self.low or (self.low_open and x == self.low)):
            raise wrong
        if self.high is not None and (x > self.high or (self.high_open and x == self.high)):
            raise wrong
        return int(x) if self.kind == "int" else x

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "type": self.type_name, "default": self.default,
                "constraints": self.constraints, "description": self.description}


def _num(x: float) -> str:
    return repr(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def check_params(
    strategy: str, declared: tuple[Param, ...], given: Mapping[str, object] | None,
    owner: str = "strategy",
) -> dict[str, ParamValue]:
    """Every declared parameter with its checked value (the default when not given).

    Raises:
        ConfigError: ``given`` is not a mapping, names a parameter the strategy does not
            take (the message lists the ones it does), or holds a value out of range.
    """
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise ConfigError(
            f"{owner} {strategy!r} parameters must be a table of names to values, "
            f"got {preview(given)}"
        )
    known = {p.name: p for p in declared}
    for name in given:
        if name not in known:
            valid = ", ".join(known) if known else "none (it takes no parameters)"
            raise ConfigError(
                f"unknown parameter {preview(name)} for {owner} {strategy!r}; valid: {valid}"
            )
    return {
        p.name: p.check(given[p.name], strategy, owner) if p.name in given else p.default
        for p in declared
    }
