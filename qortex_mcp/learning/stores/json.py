"""JSON file store, for debugging and small deployments: one readable file.

Every write rewrites the whole file the crash-safe way: write a temp file in the same
directory, fsync it, ``os.replace`` it over the old one, fsync the directory. A sidecar
``<file>.lock`` (``fcntl.flock``) is held across read-modify-write, so two processes never
lose each other's updates; a process reloads the file whenever another one changed it.
A file that does not parse stops the store from opening: silently starting empty would lose
every posterior.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

from qortex_mcp.errors import (
    ClosedError,
    CorruptState,
    SchemaTooNew,
    StoreFull,
    StoreUnavailable,
)
from qortex_mcp.learning.stores.base import (
    SCHEMA_VERSION,
    LearnerSnapshot,
    LearnerSummary,
    StoreInfo,
    claim_backup,
)
from qortex_mcp.learning.stores.tables import Tables
from qortex_mcp.learning.types import (
    ApplyResult,
    ArmRow,
    Decision,
    Event,
    EvidenceRow,
    FeedbackRow,
)
from qortex_mcp.logging import get_logger

__all__ = ["JsonLearningStore"]

log = get_logger(__name__)

T = TypeVar("T")
_Stamp = tuple[int, int, int]


class _Block:
    """An ``atomically()`` block in progress: the task that runs it, and whether it wrote."""

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.dirty = False


class JsonLearningStore:
    """Learner state in one JSON file (``path``), safe for several processes."""

    kind = "json"
    shared = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._tables = Tables()
        self._stamp: _Stamp | None = None
        self._mutex = threading.Lock()
        self._open = False
        self._closed = False
        # Held for a whole atomically() block: other tasks wait here, not in worker threads
        # blocked on the mutex (enough of those would starve the block of threads).
        self._gate = asyncio.Lock()
        self._block: _Block | None = None

    async def __aenter__(self) -> Self:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- file plumbing (runs in a worker thread) -------------------------------------------

    @contextlib.contextmanager
    def _flock(self) -> Iterator[None]:
        with self._mutex:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock

    def _current_stamp(self) -> _Stamp | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _reload_if_changed(self) -> None:
        stamp = self._current_stamp()
        if stamp is None:
            self._tables, self._stamp = Tables(), None
            return
        if stamp == self._stamp:
            return
        raw = self.path.read_bytes()
        try:
            tables = Tables.parse(json.loads(raw))
        except OverflowError as exc:
            raise SchemaTooNew(f"{self.path.name}: {exc}; upgrade qortex-mcp") from None
        except json.JSONDecodeError as exc:
            raise CorruptState(
                f"{self.path.name} is not valid JSON (line {exc.lineno}, column {exc.colno}); "
                "restore it from a backup or move it away"
            ) from None
        except RecursionError:
            raise CorruptState(f"{self.path.name} is nested too deeply to be a qortex-mcp "
                               "state file; restore it from a backup or move it away") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptState(f"{self.path.name} is not a valid qortex-mcp state file ({exc}); "
                               "restore it from a backup or move it away") from None
        self._tables, self._stamp = tables, stamp

    def _write(self) -> None:
        data = json.dumps(self._tables.dump(), allow_nan=False, separators=(",", ":"))
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data.encode("utf-8"))
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            self._stamp = None  # our in-memory tables hold an unsaved change: reload next time
            with contextlib.suppress(OSError):
                tmp.unlink()
            if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise StoreFull(f"no space left to write {self.path.name}; free space, retry") \
                    from None
            raise StoreUnavailable(f"cannot write {self.path.name}: {exc.strerror}") from None
        self._stamp = self._current_stamp()

    def _locked(self, fn: Callable[[Tables], T], write: Callable[[T], bool],
                block: _Block | None = None) -> T:
        if self._closed:
            raise ClosedError("the JSON store is closed")
        if block is not None:
            # Inside atomically(): the lock is held and the file is written once, at the end.
            result = fn(self._tables)
            block.dirty = block.dirty or write(result)
            return result
        try:
            with self._flock():
                self._reload_if_changed()
                try:
                    result = fn(self._tables)
                except BaseException:
                    self._stamp = None  # discard a half-applied change
                    raise
                if write(result):
                    self._write()
                return result
        except OSError as exc:
            raise StoreUnavailable(f"cannot use {self.path.name}: {exc.strerror}") from None

    async def _run(
        self, fn: Callable[[Tables], T], write: bool | Callable[[T], bool] = False
    ) -> T:
        # The thread finishes even if the caller is cancelled: a write is all or nothing.
        when = write if callable(write) else (lambda _: write)
        block = self._block
        if block is not None and block.task is asyncio.current_task():
            return await asyncio.to_thread(self._locked, fn, when, block)
        if self._gate.locked():
            async with self._gate:
                pass
        return await asyncio.to_thread(self._locked, fn, when)

    def _hold(self) -> int:
        """Take the lock for a block and load the current file; the lock's descriptor."""
        self._mutex.acquire()
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            self._mutex.release()
            raise StoreUnavailable(f"cannot use {self.path.name}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._reload_if_changed()
        except BaseException as exc:
            self._release(fd)
            if isinstance(exc, OSError):
                raise StoreUnavailable(f"cannot use {self.path.name}: {exc.strerror}") \
                    from None
            raise
        return fd

    def _release(self, fd: int) -> None:
        os.close(fd)  # closing releases the flock
        self._mutex.release()

    def _commit(self, fd: int, block: _Block) -> None:
        try:
            if block.dirty:
                self._write()
        except BaseException:
            self._stamp = None  # the tables hold what was not saved: reload next time
            raise
        finally:
            self._release(fd)  # only after the write: no other writer reads a stale file

    @contextlib.asynccontextmanager
    async def atomically(self) -> AsyncIterator[None]:
        """All of the block's calls, or none (see ``AtomicStore``): the lock is held
        throughout and the file is rewritten once, at the end."""
        if self._closed:
            raise ClosedError("the JSON store is closed")
        if self._block is not None and self._block.task is asyncio.current_task():
            raise RuntimeError("JsonLearningStore.atomically() is not reentrant")
        async with self._gate, self._holding():
            yield

    @contextlib.asynccontextmanager
    async def _holding(self) -> AsyncIterator[None]:
        holding = asyncio.ensure_future(asyncio.to_thread(self._hold))
        try:
            fd = await asyncio.shield(holding)
        except asyncio.CancelledError:
            # The thread may still get the lock: give it back when it does.
            holding.add_done_callback(
                lambda f: None if f.cancelled() or f.exception() else self._release(f.result()))
            raise
        block = self._block = _Block(asyncio.current_task())
        try:
            yield
        except BaseException:
            self._stamp = None  # forget the block's changes: the next call reloads the file
            self._release(fd)
            raise
        finally:
            self._block = None
        # The thread finishes (and releases) even if this task is cancelled meanwhile.
        await asyncio.to_thread(self._commit, fd, block)

    # --- protocol --------------------------------------------------------------------------

    async def initialize(self) -> None:
        if self._open:
            return
        if self._closed:
            raise ClosedError("the JSON store is closed")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create {self.path.parent}: {exc.strerror}") from None

        def clean(_: Tables) -> None:
            # Temp files left by a crash are never authoritative.
            for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                with contextlib.suppress(OSError):
                    stale.unlink()

        await self._run(clean)
        backup = await self._run(self._backup_before_migration, write=lambda b: b is not None)
        if backup is not None:
            log.warning("store_migrated", store="json", path=str(self.path),
                        to_version=SCHEMA_VERSION, backup=str(backup))
        self._open = True

    def _backup_before_migration(self, tables: Tables) -> Path | None:
        """A file of an older schema is copied beside itself (``<name>.schema<N>.bak``)
        and then rewritten in the current one (under the lock: all or nothing, as every
        write of this store). None when the file is current (or there is none)."""
        if self._stamp is None or tables.version >= SCHEMA_VERSION:
            return None
        target = claim_backup(self.path, tables.version)
        shutil.copy2(self.path, target)
        return target

    async def close(self) -> None:
        self._closed = True

    async def info(self) -> StoreInfo:
        return StoreInfo("json", str(self.path), SCHEMA_VERSION)

    async def ensure_learner(self, learner: str, config_json: str) -> None:
        await self._run(lambda t: t.ensure_learner(learner, config_json), write=bool)

    async def load(self, learner: str) -> LearnerSnapshot:
        return await self._run(lambda t: t.snapshot(learner))

    async def changes(
        self, learner: str, cursor: int
    ) -> tuple[int, Sequence[EvidenceRow], Sequence[ArmRow]]:
        return await self._run(lambda t: t.changes(learner, cursor))

    async def apply(
        self, learner: str, rows: Sequence[FeedbackRow], half_life_s: float | None
    ) -> ApplyResult:
        # Only write when something was applied: duplicates and conflicts change nothing.
        return await self._run(
            lambda t: t.apply(learner, rows, half_life_s),
            write=lambda result: "applied" in result.statuses,
        )

    async def record_selections(
        self,
        learner: str,
        counts: Mapping[str, tuple[int, float]],
        priors: Mapping[str, tuple[float, float]],
        selections: int,
        explored: int,
        answered: int = 0,
        decisions: Sequence[Decision] = (),
    ) -> None:
        await self._run(
            lambda t: t.record_selections(learner, counts, priors, selections, explored,
                                          answered, decisions),
            write=True,
        )

    async def decay(
        self, learner: str, arm: str, factor: float, at: float, reason: str | None = None
    ) -> Sequence[EvidenceRow]:
        return await self._run(lambda t: t.decay(learner, arm, factor, at, reason), write=True)

    async def reset(
        self, learner: str, arms: Sequence[str] | None, ctx: str | None, at: float,
        dry_run: bool,
    ) -> tuple[tuple[str, ...], int, float]:
        return await self._run(lambda t: t.reset(learner, arms, ctx, at, dry_run),
                               write=not dry_run)

    async def events(self, learner: str, after_seq: int = 0, limit: int = 10_000) -> list[Event]:
        return await self._run(lambda t: t.event_page(learner, after_seq, limit))

    async def decisions(
        self, learner: str, after_seq: int = 0, limit: int = 10_000, *,
        keys: Sequence[str] | None = None,
    ) -> list[Decision]:
        return await self._run(lambda t: t.decision_page(learner, after_seq, limit, keys))

    async def evidence(self, learner: str) -> list[EvidenceRow]:
        return await self._run(lambda t: t.evidence(learner))

    async def learners(self) -> list[LearnerSummary]:
        return await self._run(lambda t: t.summaries())

    async def contexts(self, learner: str, keys: Sequence[str]) -> dict[str, str]:
        return await self._run(lambda t: t.contexts(learner, keys))

    async def wait_for_change(self, learner: str, within_s: float) -> None:
        await asyncio.sleep(within_s)
