"""Stopping background tasks so that ``close`` always returns.

A background loop (a learner's flush and refresh, the PostgreSQL listener) is stopped by
cancelling it. One cancellation is not always enough: a driver or a timeout racing the
cancel can swallow it (the task then goes round its loop again), and a close that awaited
such a task would hang for good. So ``stop_tasks`` waits in bounded rounds and cancels
again; the loops also test their owner's closed flag each time round, so the second
request always lands. A task that still runs after every round is left behind with an
error on stderr rather than hanging its owner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Final

from qortex_mcp.logging import get_logger

__all__ = ["stop_tasks"]

log = get_logger(__name__)

_ROUND_S: Final = 1.0
_ROUNDS: Final = 10


async def stop_tasks(
    tasks: Iterable[asyncio.Task[Any]], owner: str, *, round_s: float = _ROUND_S,
    rounds: int = _ROUNDS,
) -> bool:
    """Cancel ``tasks`` and wait until they end; True when all ended.

    Waits ``round_s`` at a time, cancelling the stragglers again after each round, for at
    most ``rounds`` rounds. A task that ended with an exception (not a cancellation) is
    logged with it: it has no caller left to receive it.
    """
    pending = set(tasks)
    for task in pending:
        task.cancel()
    for attempt in range(rounds):
        if not pending:
            break
        done, pending = await asyncio.wait(pending, timeout=round_s)
        _collect(done, owner)
        if pending:
            log.warning("task_cancel_ignored", owner=owner, attempt=attempt + 1,
                        tasks=sorted(t.get_name() for t in pending))
            for task in pending:
                task.cancel()
    if pending:
        log.error("task_left_running", owner=owner,
                  tasks=sorted(t.get_name() for t in pending))
        return False
    return True


def _collect(done: Iterable[asyncio.Task[Any]], owner: str) -> None:
    for task in done:
        if task.cancelled():
            continue
        exc = task.exception()
        if exc is not None:
            log.error("background_task_failed", owner=owner, task=task.get_name(),
                      exc_info=exc)
