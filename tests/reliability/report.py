"""Scale and summary lines for the reliability suite.

``QORTEX_FAULT_SCALE`` (default 1) scales the counts of every fault test: at 1 each test
runs its CI tier, at 10 the full figures of the reliability plan (10,000 acknowledged
feedbacks over 20 kill cycles, 50 race rounds, ...), in between linearly, and beyond 10 the
full figures grow in proportion (counts the plan fixes, such as 20 cycles, stay capped).

Every fault test records one summary line with its numbers. The lines are printed in the
pytest terminal summary (so they show in CI output), on stderr as they happen, and appended
as JSON to ``QORTEX_RELIABILITY_REPORT`` (default: ``reliability-report.jsonl`` in pytest's
base temporary directory).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Final

__all__ = ["FULL_SCALE", "LINES", "SCALE", "record", "set_report_file", "tier"]


def _scale() -> float:
    raw = os.environ.get("QORTEX_FAULT_SCALE", "1")
    try:
        value = float(raw)
    except ValueError:
        raise RuntimeError(f"QORTEX_FAULT_SCALE must be a number, got {raw!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise RuntimeError(f"QORTEX_FAULT_SCALE must be > 0, got {raw!r}")
    return value


SCALE: Final = _scale()
FULL_SCALE: Final = 10.0
LINES: list[str] = []
_report_file: Path | None = None


def tier(ci: int, full: int, cap: int | None = None) -> int:
    """``ci`` at scale 1, ``full`` at scale 10 (linear between, proportional beyond)."""
    if SCALE <= 1:
        value = ci * SCALE
    elif SCALE <= FULL_SCALE:
        value = ci + (full - ci) * (SCALE - 1) / (FULL_SCALE - 1)
    else:
        value = full * SCALE / FULL_SCALE
    out = max(1, round(value))
    return out if cap is None else min(cap, out)


def set_report_file(path: Path) -> None:
    global _report_file
    _report_file = path


def record(test: str, line: str, **numbers: Any) -> str:
    """Record one summary line (``test: line``) and its numbers."""
    text = f"{test}: {line}"
    LINES.append(text)
    print(f"[reliability] {text}", file=sys.stderr)
    path = _report_file
    if path is not None:
        entry = {"test": test, "line": text, "scale": SCALE, "at": time.time(), **numbers}
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry, default=str) + "\n")
    return text
