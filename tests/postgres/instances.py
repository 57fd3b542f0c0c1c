"""Drive ``tests/postgres/worker.py`` processes (one qortex-mcp instance each) from a test."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[2]


class Instance:
    """One worker process; ``await call(op=..., ...)`` sends a request, returns the reply."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, dsn: str, schema: str, secret: str) -> Instance:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.postgres.worker", dsn, schema, secret,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, limit=1 << 24,
        )
        inst = cls(proc)
        assert proc.stdout is not None
        with anyio.fail_after(30):
            ready = json.loads(await proc.stdout.readline())
        assert ready == {"id": None, "ready": True}
        inst._reader = asyncio.create_task(inst._read())
        return inst

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            reply = json.loads(line)
            self._pending.pop(reply.pop("id")).set_result(reply)

    async def call(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        req_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        self.proc.stdin.write((json.dumps({"id": req_id, **request}) + "\n").encode())
        await self.proc.stdin.drain()
        with anyio.fail_after(30):
            return await fut

    async def stop(self) -> int | None:
        """Close stdin (the worker finishes what it has, closes its store, exits); kill it
        if it does not exit within 30 s. Returns the exit code (None when killed)."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        code: int | None = None
        with anyio.move_on_after(30):
            code = await self.proc.wait()
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        return code
