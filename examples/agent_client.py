"""An agent that learns which prompt variant works best, through qortex-mcp over stdio.

    python examples/agent_client.py [--rounds 40] [--seed 7]

It starts the ``qortex-mcp`` server as a subprocess and, for each task: asks
``qortex_select`` to pick a prompt variant for the task's context, acts on it (simulated
here: each variant has a hidden success rate), and reports the outcome with
``qortex_feedback``, quoting the selection id. Finally it prints what the learner believes.
State lives in ``QORTEX_STATE_DIR`` (a fresh temporary directory when unset).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

LEARNER = "prompt-variant"
# What the agent does not know: how often each variant's answer is accepted.
HIDDEN_SUCCESS = {"concise-v1": 0.35, "detailed-v2": 0.8, "step-by-step-v3": 0.55}
TASKS = ("type-check", "summarise")


def server_parameters(state_dir: str) -> StdioServerParameters:
    """The installed console script (next to this Python, else on PATH)."""
    beside = Path(sys.executable).with_name("qortex-mcp")
    command = str(beside) if beside.exists() else shutil.which("qortex-mcp")
    args: list[str] = []
    if command is None:
        command, args = sys.executable, ["-m", "qortex_mcp"]
    # The SDK passes the child only a minimal environment: forward qortex's settings.
    env = {k: v for k, v in os.environ.items() if k.startswith("QORTEX_") or k == "DATABASE_URL"}
    env["QORTEX_STATE_DIR"] = state_dir
    env["PYTHONUNBUFFERED"] = "1"
    return StdioServerParameters(command=command, args=args, env=env)


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        text = "".join(getattr(c, "text", "") for c in result.content)
        raise SystemExit(f"{tool} failed: {text}")
    assert result.structured_content is not None
    return result.structured_content


async def run(rounds: int, seed: int, state_dir: str) -> None:
    rng = random.Random(seed)
    accepted = 0
    async with Client(server_parameters(state_dir)) as client:
        for _ in range(rounds):
            task = rng.choice(TASKS)
            chosen = await call(client, "qortex_select", {
                "learner": LEARNER, "candidates": list(HIDDEN_SUCCESS), "context": {"task": task},
            })
            variant = chosen["selected"][0]["id"]
            ok = rng.random() < HIDDEN_SUCCESS[variant]  # act: run the prompt, judge the answer
            accepted += ok
            await call(client, "qortex_feedback", {
                "learner": LEARNER, "selection_id": chosen["selection_id"],
                "outcomes": {variant: "accepted" if ok else "rejected"},
            })
        top = await call(client, "qortex_top_arms", {"learner": LEARNER, "k": 3})
    print(f"sent {rounds} feedbacks ({accepted} accepted)")
    for arm in top["arms"]:
        print(f"  {arm['id']:<16} mean {arm['mean']:.2f}  "
              f"95% CI [{arm['ci_low']:.2f}, {arm['ci_high']:.2f}]  pulls {arm['pulls']}")
    print(f"best variant: {top['arms'][0]['id']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    state_dir = os.environ.get("QORTEX_STATE_DIR")
    if state_dir:
        anyio.run(run, args.rounds, args.seed, state_dir)
        return
    with tempfile.TemporaryDirectory(prefix="qortex-agent-") as tmp:
        anyio.run(run, args.rounds, args.seed, tmp)


if __name__ == "__main__":
    main()
