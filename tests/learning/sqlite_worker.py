"""Worker process for the two-process SQLite test: applies feedback with given keys.

Usage: python -m tests.learning.sqlite_worker DB START STOP DUP_PREFIX
Prints one JSON line: {"applied": n, "duplicate": n, "errors": [...]}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path

from qortex_mcp.errors import QortexError
from qortex_mcp.learning import ArmOutcome, Learner, LearnerConfig, SqliteLearningStore
from qortex_mcp.learning.tokens import SelectionSigner


async def main(db: str, start: int, stop: int, shared: int) -> None:
    store = SqliteLearningStore(Path(db))
    learner = await Learner.create(LearnerConfig(name="two"), store,
                                   signer=SelectionSigner([b"t" * 32]))
    counts: Counter[str] = Counter(applied=0, duplicate=0)
    errors: list[str] = []

    async def one(key: str, arm: str, reward: float) -> None:
        try:
            fb = await learner.observe(ArmOutcome(arm, reward=reward, idempotency_key=key))
            counts[fb.status] += 1
        except QortexError as exc:
            errors.append(str(exc))

    jobs = [one(f"own{i}", f"arm{i % 7}", float(i % 2)) for i in range(start, stop)]
    # Both processes send the same shared keys: each must count exactly once overall.
    jobs += [one(f"shared{i}", f"arm{i % 7}", 1.0) for i in range(shared)]
    for i in range(0, len(jobs), 16):
        await asyncio.gather(*jobs[i:i + 16])
    await learner.close()
    await store.close()
    print(json.dumps({**counts, "errors": errors}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
