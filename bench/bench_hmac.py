"""Selection-id MAC: the hand-built pre-keyed HMAC-SHA256 against the standard library's.

Parts (``python bench/bench_hmac.py [hmac] [--quick | --smoke] [--json FILE]``):

* ``hmac``: ns per MAC of a selection-id-sized message (100, 200 and 1,000 bytes) with
  ``qortex_mcp.learning.tokens.HmacSha256`` (keyed inner and outer SHA-256 states, copied
  per call), the standard library's ``hmac.new`` keyed once and ``.copy()``'d per call
  (what issue 11 proposes), and ``hmac.digest`` (keyed again on every call). The three
  are timed in alternating blocks (the order flips every round) in one process; the
  figure is the median of the rounds' per-call times, and the ratios are to the
  hand-built one.

The issue's rule: use the library's pre-keyed ``copy()`` unless this shows it slower. No
target; ``MISS`` marks a library variant faster than the hand-built one (the project
should then switch).
"""

from __future__ import annotations

import hashlib
import hmac
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common
from qortex_mcp.learning.tokens import HmacSha256

PARTS = ("all", "hmac")
KEY = bytes(range(32))
SIZES = (100, 200, 1000)


def variants(key: bytes) -> dict[str, Callable[[bytes], bytes]]:
    mine = HmacSha256(key)
    keyed = hmac.new(key, digestmod=hashlib.sha256)

    def library_copy(message: bytes) -> bytes:
        mac = keyed.copy()
        mac.update(message)
        return mac.digest()

    return {
        "hand-built (HmacSha256)": mine.digest,
        "hmac.new once + copy()": library_copy,
        "hmac.digest": lambda message: hmac.digest(key, message, "sha256"),
    }


def per_call_ns(fn: Callable[[bytes], bytes], message: bytes, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        fn(message)
    return (time.perf_counter_ns() - start) / n


def part_hmac(rounds: int, n: int) -> dict[str, Any]:
    fns = variants(KEY)
    out: dict[str, Any] = {}
    for size in SIZES:
        message = bytes(i % 251 for i in range(size))
        first = next(iter(fns.values()))(message)
        assert all(fn(message) == first for fn in fns.values())  # the same MAC, or no figure
        times: dict[str, list[float]] = {name: [] for name in fns}
        order = list(fns)
        for r in range(rounds):
            for name in order if r % 2 == 0 else reversed(order):
                times[name].append(per_call_ns(fns[name], message, n))
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        base = medians["hand-built (HmacSha256)"]
        out[str(size)] = {name: {"ns": round(m, 1), "ratio": round(m / base, 3)}
                          for name, m in medians.items()}
    return out


def main() -> int:
    ap = common.base_parser(__doc__.splitlines()[0], PARTS)
    args = ap.parse_args()
    rounds, n = (3, 200) if args.smoke else (11, 5_000) if args.quick else (31, 20_000)
    notes = common.machine_notes()
    results: dict[str, Any] = {"notes": notes, "argv": sys.argv}
    failed = []
    if "hmac" in common.chosen_parts(args, PARTS):
        res = results["hmac"] = part_hmac(rounds, n)
        common.print_notes(notes, sys.argv)
        rows = []
        for size, by_name in res.items():
            for name, fig in by_name.items():
                faster = fig["ratio"] < 1.0
                rows.append([size, name, f"{fig['ns']:,.0f}", f"{fig['ratio']:.2f}x",
                             "MISS" if faster else ""])
                if faster:
                    failed.append(f"{name} at {size} bytes")
        print(common.table(["message bytes", "MAC", "ns per call (median)",
                            "vs hand-built", "library faster"], rows))
    common.write_json(args.json, results)
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
