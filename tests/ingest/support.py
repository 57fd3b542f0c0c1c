"""Helpers for the ingestion tests: reaching the brokers, unique names, a registry over a
real SQLite file, the consumer as a real subprocess, and the oracle of what must be stored."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import anyio

from qortex_mcp.config import Settings
from qortex_mcp.learning import LearnerRegistry
from qortex_mcp.learning.types import GLOBAL_CONTEXT
from qortex_mcp.runtime import close_registry, open_registry
from tests.postgres.support import eventually
from tests.server.support import SCRIPT, base_env

REDIS_URL: Final = os.environ.get("QORTEX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL: Final = os.environ.get("QORTEX_TEST_NATS_URL", "nats://127.0.0.1:4222")

SCALE_FULL: Final = os.environ.get("QORTEX_INGEST_SCALE", "").lower() == "full"
"""``QORTEX_INGEST_SCALE=full``: the issue's figures (20 kill cycles, 20,000 messages)."""


def _host_port(url: str, default: int) -> tuple[str, int]:
    rest = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    return (host or rest, int(port)) if port.isdigit() else (rest, default)


def unreachable(url: str, default_port: int) -> str | None:
    """None when a TCP connection to the broker opens, else why not."""
    host, port = _host_port(url, default_port)
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return f"cannot reach {url}: {exc} (.ci/run starts it; set QORTEX_TEST_*_URL)"


REDIS_UNREACHABLE: Final = unreachable(REDIS_URL, 6379)
NATS_UNREACHABLE: Final = unreachable(NATS_URL, 4222)


def unique(prefix: str) -> str:
    return f"qtest-{prefix}-{uuid.uuid4().hex[:10]}"


def settings_for(state: Path) -> Settings:
    return Settings.build(store="sqlite", state_dir=state)


@asynccontextmanager
async def registry_at(state: Path) -> AsyncIterator[LearnerRegistry]:
    """The registry ``qortex-mcp ingest`` opens on this state directory."""
    registry = await open_registry(settings_for(state), agent_caps=False)
    try:
        yield registry
    finally:
        await close_registry(registry)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ingest_process(state: Path, *args: str) -> subprocess.Popen[bytes]:
    """``qortex-mcp ingest ARGS`` on a private state directory (stderr kept for failures)."""
    return subprocess.Popen(
        [str(SCRIPT), "ingest", *args], env=base_env(state, QORTEX_LOG_LEVEL="warning"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_ingest(state: Path, *args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        [str(SCRIPT), "ingest", *args], env=base_env(state, QORTEX_LOG_LEVEL="warning"),
        capture_output=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return proc.stdout.decode()


async def kill_moment(
    rng: random.Random, cycle: int, started: Callable[[], Awaitable[bool]],
    holding: Callable[[], Awaitable[bool]],
) -> None:
    """Wait for the moment a kill -9 harness kills the consumer.

    Every third cycle, the first among them, waits until the consumer holds delivered
    messages it has not acknowledged: a consumer that finishes a slice in a millisecond or
    two is idle most of the time, and random moments alone can miss every batch on a fast
    machine. The other cycles kill during start-up (one in five) or at a random moment after
    the consumer has read something.
    """
    if cycle % 3 == 0:
        await eventually(holding, 60, 0.0005)
    elif rng.random() < 0.2:
        await anyio.sleep(rng.uniform(0.0, 0.5))
    else:
        await eventually(started, 60, 0.01)
        await anyio.sleep(rng.uniform(0.0, 0.4))


def bare(learner: str, arm: str, reward: float, key: str) -> dict[str, Any]:
    return {"learner": learner, "arm_id": arm, "outcome": reward, "idempotency_key": key}


def expected_counts(messages: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """Outcomes per arm once each distinct (key or selection, arm) is counted once."""
    seen: set[tuple[str, str]] = set()
    out: Counter[str] = Counter()
    for m in messages:
        key = m.get("selection_id") or m["idempotency_key"]
        pairs = m["outcomes"] if "outcomes" in m else {m["arm_id"]: m["outcome"]}
        for arm in pairs:
            if (key, arm) not in seen:
                seen.add((key, arm))
                out[arm] += 1
    return out


async def stored_counts(registry: LearnerRegistry, learner: str) -> Counter[str]:
    """Outcomes per arm as the store holds them (global rows)."""
    rows = await registry.store.evidence(learner)
    return Counter({r.arm: r.n for r in rows if r.ctx == GLOBAL_CONTEXT})
