"""Disk full: the failing write is answered with a retryable ``STORE_FULL``, the server stays
up and keeps answering reads, nothing acknowledged is lost, and once space is freed the
retried write and the next ones succeed, without a restart. SQLite and JSON stores.

How the disk fills, in order of preference (the summary line says which ran):
``tmpfs``: the state directory is an 8 MiB tmpfs (``mount -t tmpfs``, needs root) filled
with a ballast file; freeing space deletes the ballast.
``rlimit``: no mount possible: the server's RLIMIT_FSIZE (soft) is lowered just above the
store's size with ``prlimit``; freeing space raises it again. CPython ignores SIGXFSZ, so
writes fail with EFBIG; SQLite reports that as an I/O error (``STORE_UNAVAILABLE``, also
retryable), the JSON store as ``STORE_FULL``. ``QORTEX_TEST_DISKFULL_MODE=rlimit`` forces it.

CI tier: 20 feedbacks after space is freed; QORTEX_FAULT_SCALE=10: 100.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability import report
from tests.reliability.loop import LEARNER, Feedback, FeedbackClient, seed_for
from tests.reliability.oracle import Ledger, audit, read_store, temp_files
from tests.reliability.servers import ServerProcess, StdioRpc, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DISK_BYTES = 8 << 20
"""Room for a full SQLite WAL (it checkpoints at 1,000 pages, about 4 MiB) once freed."""


@contextlib.contextmanager
def small_disk(where: Path) -> Iterator[str]:
    """Mount an 8 MiB tmpfs at ``where``; yields the mode ("tmpfs" or "rlimit")."""
    where.mkdir(parents=True)
    if os.environ.get("QORTEX_TEST_DISKFULL_MODE") != "rlimit":
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700", "tmpfs", str(where)],
            capture_output=True, check=False)
        if mounted.returncode == 0:
            try:
                yield "tmpfs"
            finally:
                subprocess.run(["umount", "-l", str(where)], check=False)
            return
    yield "rlimit"


def fill(path: Path) -> None:
    """Write zeros until the filesystem is full."""
    block = b"\0" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)


def _store_bytes(state_dir: Path) -> int:
    return max((p.stat().st_size for p in state_dir.iterdir() if p.is_file()), default=0)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("store", ["sqlite", "json"])
async def test_a_full_disk_refuses_writes_retryably_and_recovers_without_a_restart(
    tmp_path: Path, store: str,
) -> None:
    after_free = report.tier(20, 100)
    rng = random.Random(seed_for(f"disk full {store}"))
    ledger = Ledger()
    with small_disk(tmp_path / "disk") as mode:
        state_dir = tmp_path / "disk" / "state"
        server = ServerProcess(server_env(state_dir, store=store), tmp_path / "server.log")
        refusals: list[str] = []
        reads_ok = 0
        try:
            await server.start()
            async with StdioRpc.connect(server) as rpc:
                agent = FeedbackClient(rpc, ledger, rng)
                for _ in range(5):
                    fb = await agent.select()
                    assert (await agent.send(fb)).ok
                ballast = tmp_path / "disk" / "ballast"
                if mode == "tmpfs":
                    fill(ballast)
                else:
                    limit = _store_bytes(state_dir) + 8192
                    resource.prlimit(server.pid, resource.RLIMIT_FSIZE,
                                     (limit, resource.RLIM_INFINITY))
                main_file = state_dir / ("qortex.json" if store == "json" else "qortex.db")
                # Write until the store refuses (bounded), then a few more refusals.
                pending: list[Feedback] = []
                for _ in range(2000):
                    fb = await agent.select()
                    digest_before = _digest(main_file) if store == "json" else ""
                    reply = await agent.send(fb)
                    if not reply.ok:
                        refusals.append(reply.code)
                        assert reply.retryable, reply.text
                        pending.append(fb)
                        if store == "json":
                            # The refused write left the file as it was, and no temp file.
                            assert _digest(main_file) == digest_before
                            assert temp_files(state_dir) == 0
                        if len(refusals) >= 3:
                            break
                assert refusals, "the store never filled up"
                digest_full = _digest(main_file) if store == "json" else ""
                # Reads still work while full.
                for tool, args in (("qortex_posteriors", {"learner": LEARNER}),
                                   ("qortex_metrics", {"learner": LEARNER}),
                                   ("qortex_status", {})):
                    read = await rpc.call_tool(tool, args)
                    assert read.ok, f"{tool}: {read.text}"
                    reads_ok += 1
                if store == "json":
                    assert _digest(main_file) == digest_full
                assert read_store(store, state_dir, LEARNER).integrity == "ok"
                # Free space; the same process takes the retries and new writes.
                freed = time.monotonic()
                if mode == "tmpfs":
                    ballast.unlink()
                else:
                    resource.prlimit(server.pid, resource.RLIMIT_FSIZE,
                                     (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
                retried = 0
                for fb in pending:
                    reply = await agent.send(fb)
                    assert reply.ok, reply.text
                    retried += 1
                succeeded = 0
                late: list[str] = []
                for _ in range(after_free):
                    fb = await agent.select()
                    reply = await agent.send(fb)
                    succeeded += reply.ok
                    if not reply.ok:
                        late.append(reply.text)
                recovered_s = time.monotonic() - freed
                assert server.alive()
                await rpc.close_stdin()
                code, _ = await server.wait_exit(time.monotonic())
        finally:
            await server.aclose()
        a = audit(read_store(store, state_dir, LEARNER), ledger)
    report.record(
        f"disk full {store}", f"mode {mode}: {len(refusals)} writes refused "
        f"({', '.join(sorted(set(refusals)))}, retryable), server up, {reads_ok}/3 reads "
        f"answered while full; after freeing space {retried}/{len(pending)} retries and "
        f"{succeeded}/{after_free} new feedbacks succeeded without a restart "
        f"({recovered_s:.2f} s); {a.acknowledged} acknowledged, {a.lost} lost, "
        f"{a.double_counted} double-counted, integrity {a.integrity}")
    expected = {"STORE_FULL"} if mode == "tmpfs" or store == "json" else \
        {"STORE_FULL", "STORE_UNAVAILABLE"}
    assert set(refusals) <= expected
    assert succeeded == after_free, late
    assert a.ok
    assert a.unacknowledged == 0
    assert code == 0
