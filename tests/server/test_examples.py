"""The examples run as shipped (against temporary state)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from tests.server.support import ROOT, base_env, ok

EXAMPLES = ROOT / "examples"


def test_the_agent_client_learns_which_prompt_variant_works(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "agent_client.py"), "--rounds", "25"],
        env=base_env(tmp_path / "state"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("sent 25 feedbacks (")
    assert len(lines) == 5
    assert lines[-1].startswith("best variant: ")
    assert (tmp_path / "state" / "qortex.db").exists()


@pytest.mark.anyio
async def test_the_host_server_adds_the_tools_to_its_own(tmp_path: Path) -> None:
    params = StdioServerParameters(command=sys.executable,
                                   args=[str(EXAMPLES / "host_server.py")],
                                   env=base_env(tmp_path / "state"), cwd=str(ROOT))
    with anyio.fail_after(60):
        async with Client(params) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"search_notes", "qortex_feedback", "qortex_rerank"} <= names
            found = await ok(client, "search_notes", {"query": "sqlite write-ahead log"})
            assert found["results"][0]["id"] == "wal"
            fb = await ok(client, "qortex_feedback", {
                "learner": "notes", "selection_id": found["selection_id"],
                "outcomes": {"wal": "accepted"}})
            assert fb["kind"] == "rerank"
            assert fb["applied"] == 1
            post = await ok(client, "qortex_posteriors", {"learner": "notes"})
            assert [a["id"] for a in post["arms"] if a["pulls"]] == ["wal"]


def test_the_claude_desktop_config_starts_the_console_script() -> None:
    config = json.loads((EXAMPLES / "claude_desktop_config.json").read_text())
    server = config["mcpServers"]["qortex"]
    assert server["command"].endswith("/bin/qortex-mcp")
    assert server["args"] == []
    assert "QORTEX_STATE_DIR" in server["env"]


def test_the_claude_code_line_puts_the_name_before_env_and_dashes_before_the_command() -> None:
    text = (EXAMPLES / "claude_code.md").read_text()
    lines = re.findall(r"^claude mcp add .*$", text, flags=re.MULTILINE)
    stdio = [line for line in lines if " -- " in line]
    assert stdio, "no stdio 'claude mcp add' line"
    for line in stdio:
        words = line.split()
        assert words.index("qortex") < words.index("-e") < words.index("--")
        assert words[-1].endswith("/bin/qortex-mcp")
