"""Group commit of feedback: the ``apply`` calls waiting in one store instance are decided
and written in one transaction, so throughput grows with concurrency while every caller
still returns only after its COMMIT.

Each batch: lock its learners (``Runner.write``), read the answers already standing for its
keys (a statement of its own, so under READ COMMITTED it sees everything committed by the
writers it waited for), decide every row (``stores.dedup``), then one ``sql._APPLY``
statement per (learner, half-life) inserts the events and folds the inserted ones into the
evidence. A batch with nothing new rolls back (no version, no NOTIFY).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from qortex_mcp.errors import StoreBusy, StoreError
from qortex_mcp.learning.postgres.errors import translate
from qortex_mcp.learning.postgres.runner import Runner
from qortex_mcp.learning.stores.base import settled
from qortex_mcp.learning.stores.dedup import ApplyRequest, decide, request_results
from qortex_mcp.learning.tasks import stop_tasks
from qortex_mcp.learning.types import ApplyResult, EvidenceRow, FeedbackRow
from qortex_mcp.logging import get_logger

__all__ = ["FeedbackWriter"]

log = get_logger(__name__)


class FeedbackWriter:
    """One task that commits queued ``apply`` requests in batches of up to ``max_batch``."""

    def __init__(self, runner: Runner, max_batch: int) -> None:
        self._runner = runner
        self._sql = runner.sql
        self.max_batch = max_batch
        self._queue: asyncio.Queue[ApplyRequest | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="qortex-pg-writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop. Every commit is bounded by the runner's
        timeout, so this is too; a writer that still runs after that much longer (a
        driver that never answered) is cancelled rather than waited on for good."""
        if self._task is not None:
            task, self._task = self._task, None
            self._queue.put_nowait(None)
            done, _ = await asyncio.wait([task], timeout=2 * self._runner.timeout_s + 1.0)
            if done:
                await task  # its error, if it failed, is the caller's
                return
            log.error("postgres_writer_stuck", queued=self._queue.qsize())
            await stop_tasks([task], "postgres writer")

    async def submit(
        self, learner: str, rows: Sequence[FeedbackRow], half_life_s: float | None
    ) -> ApplyResult:
        fut: asyncio.Future[ApplyResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(ApplyRequest(learner, rows, half_life_s, fut))
        timeout_s = self._runner.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return await fut  # on timeout the future is cancelled: if still queued, dropped
        except TimeoutError as exc:
            raise translate(exc, "saving feedback", timeout_s) from exc

    async def submit_many(
        self, learner: str, requests: Sequence[Sequence[FeedbackRow]], half_life_s: float | None
    ) -> list[ApplyResult]:
        """``submit`` for many requests queued at once (committed together, up to
        ``max_batch`` per transaction), without a task per request."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[ApplyResult]] = []
        for rows in requests:
            fut: asyncio.Future[ApplyResult] = loop.create_future()
            self._queue.put_nowait(ApplyRequest(learner, rows, half_life_s, fut))
            futures.append(fut)
        timeout_s = self._runner.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return settled(await asyncio.gather(*futures, return_exceptions=True))
        except TimeoutError as exc:
            for fut in futures:
                fut.cancel()
            raise translate(exc, "saving feedback", timeout_s) from exc

    async def _loop(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            batch, stop = [item], False
            while len(batch) < self.max_batch and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            live = [req for req in batch if not req.future.done()]
            if live:
                await self._commit(live)
            if stop:
                return

    async def _commit(self, batch: list[ApplyRequest]) -> None:
        try:
            results, _ = await self._runner.write(
                [req.learner for req in batch], "saving feedback",
                lambda conn, versions: self._apply(conn, batch, versions),
                keep=lambda res: res[1],
            )
        except StoreError as err:
            if len(batch) > 1 and not err.retryable:
                # One request's bad data must not fail the others: commit them one by one.
                for req in batch:
                    await self._commit([req])
                return
            log.warning("postgres_write_failed", code=err.code, requests=len(batch),
                        cause=type(err.__cause__).__name__)
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(err)
            return
        except BaseException as exc:  # not swallowed: every caller receives it
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for req, result in zip(batch, results, strict=True):
            if not req.future.done():
                req.future.set_result(result)

    async def _apply(
        self, conn: Any, batch: list[ApplyRequest], versions: dict[str, int]
    ) -> tuple[list[ApplyResult], bool]:
        # 1. Every answer already given for these keys (committed: we hold the locks now).
        pairs = sorted({(req.learner, r.key) for req in batch for r in req.rows})
        answered = await conn.fetch(self._sql.answered, [p[0] for p in pairs],
                                    [p[1] for p in pairs])
        standing = {(r[0], r[1], r[2]): float(r[3]) for r in answered}
        verdicts = decide([(req.learner, req.rows) for req in batch], standing)
        # 2. One statement per (learner, half-life) group of fresh rows.
        groups: dict[tuple[str, float | None], list[FeedbackRow]] = {}
        for req, d in zip(batch, verdicts, strict=True):
            groups.setdefault((req.learner, req.half_life_s), []).extend(d.fresh)
        committed: dict[str, dict[tuple[str, str], EvidenceRow]] = {}
        for (learner, half_life), fresh in groups.items():
            if not fresh:
                continue
            rec = await conn.fetchrow(
                self._sql.apply, learner, [r.key for r in fresh], [r.arm for r in fresh],
                [r.ctx for r in fresh], [r.ctx_body for r in fresh], [r.reward for r in fresh],
                [r.weight for r in fresh], [r.outcome for r in fresh], [r.at for r in fresh],
                [r.a0 for r in fresh], [r.b0 for r in fresh], versions[learner], half_life,
                [r.propensity for r in fresh], [r.policy for r in fresh],
            )
            if int(rec["inserted"]) != len(fresh):
                # Only a writer that skipped the learner lock can get here; nothing is kept.
                raise StoreBusy("another writer answered the same selection at the same "
                                "moment; retry")
            table = committed.setdefault(learner, {})
            for r in rec["rows"] or ():
                table[(r[0], r[1])] = EvidenceRow(*r)
        # 3. What each request left, as committed.
        return request_results(batch, verdicts, committed), bool(committed)
