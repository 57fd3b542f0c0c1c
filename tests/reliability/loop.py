"""The client side of the fault tests: select, act, feedback, record what was acknowledged.

A ``Feedback`` is one (selection id, arm, reward) answer. ``FeedbackClient`` runs the agent
loop against one connection and puts every answer that got no reply (the server died under
it) on the retry list; retries send the very same selection id, arm and reward, which the
server must count once whatever happened before.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tests.reliability.oracle import Ledger
from tests.reliability.servers import ServerGone, ToolReply, nonce_of

__all__ = ["ARMS", "LEARNER", "Feedback", "FeedbackClient", "Rpc", "seed_for"]

LEARNER = "crash"
ARMS = ["alpha", "bravo", "charlie", "delta", "echo"]


def seed_for(test: str) -> int:
    """A fixed seed per test (override with QORTEX_FAULT_SEED to replay another run)."""
    base = int(os.environ.get("QORTEX_FAULT_SEED", "20261122"))
    return base + sum(map(ord, test))


class Rpc(Protocol):
    async def call_tool(self, name: str, arguments: dict[str, Any],
                        wait_s: float = ...) -> ToolReply: ...


@dataclass(frozen=True)
class Feedback:
    selection_id: str
    arm: str
    reward: float
    learner: str = LEARNER

    @property
    def key(self) -> tuple[str, str]:
        return (nonce_of(self.selection_id), self.arm)

    def arguments(self) -> dict[str, Any]:
        return {"learner": self.learner, "selection_id": self.selection_id,
                "outcomes": {self.arm: self.reward}}


def reward_for(rng: random.Random) -> float:
    """Half binary, half fractional rewards (the invariants cover both)."""
    return float(rng.randint(0, 1)) if rng.random() < 0.5 else rng.random()


@dataclass
class FeedbackClient:
    """One agent: ``select`` then ``feedback``, until the server goes away or ``stop``."""

    rpc: Rpc
    ledger: Ledger
    rng: random.Random
    learner: str = LEARNER
    phase: str = "idle"
    inflight: Feedback | None = None
    orphans: list[Feedback] = field(default_factory=list)
    acked: int = 0
    errors: list[str] = field(default_factory=list)
    first_ok_at: float | None = None
    on_event: Callable[[FeedbackClient], None] | None = None
    """Called after every acknowledgement and phase change (the kill switch watches)."""

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        if self.on_event is not None:
            self.on_event(self)

    def _ok(self) -> None:
        if self.first_ok_at is None:
            self.first_ok_at = time.monotonic()

    async def send(self, fb: Feedback) -> ToolReply:
        """Send one feedback; on no reply it becomes an orphan (retried later)."""
        self.inflight = fb
        self._set_phase("feedback")
        try:
            reply = await self.rpc.call_tool("qortex_feedback", fb.arguments())
        except (ServerGone, TimeoutError):
            self.orphans.append(fb)
            raise
        finally:
            self.inflight = None
        if reply.ok:
            self._ok()
            self.ledger.ack(fb.key, fb.reward, reply.data["arms"][0]["status"])
            self.acked += 1
        self._set_phase("idle")
        return reply

    async def select(self) -> Feedback:
        self._set_phase("select")
        reply = await self.rpc.call_tool(
            "qortex_select", {"learner": self.learner, "candidates": ARMS})
        self._set_phase("idle")
        if not reply.ok:
            raise AssertionError(f"select refused: {reply.text}")
        self._ok()
        data = reply.data
        return Feedback(data["selection_id"], data["selected"][0]["id"],
                        reward_for(self.rng), self.learner)

    async def retry(self, pending: list[Feedback]) -> None:
        """Send every orphan again (same selection id, arm, reward) until acknowledged."""
        while pending:
            fb = pending.pop()
            reply = await self.send(fb)
            if not reply.ok:
                self.errors.append(f"retry refused: {reply.code} {reply.text}")

    async def run(self, stop: Any = None) -> None:
        """The agent loop; returns when the server is gone or ``stop()`` is true."""
        try:
            while stop is None or not stop():
                fb = await self.select()
                reply = await self.send(fb)
                if not reply.ok:
                    self.errors.append(f"feedback refused: {reply.code} {reply.text}")
                    return
        except (ServerGone, TimeoutError):
            return
