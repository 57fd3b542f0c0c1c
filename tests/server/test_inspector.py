"""Smoke test with the MCP Inspector's headless CLI (pinned in tests/inspector/package.json).

CI installs it with ``npm ci --prefix tests/inspector``. Without node and npm the test is
skipped, loudly; with them but without the install it fails and says how to install.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.server.support import ROOT, SCRIPT

INSPECTOR = ROOT / "tests" / "inspector"
NPX = shutil.which("npx")
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NPX is None or NODE is None,
    reason="!!! node/npm are not installed: the MCP Inspector smoke test is SKIPPED !!!",
)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/claude_desktop_config.json with real paths (so the example is tested too)."""
    if not (INSPECTOR / "node_modules" / ".bin" / "mcp-inspector").exists():
        pytest.fail("the MCP Inspector is not installed: run npm ci --prefix tests/inspector")
    example = json.loads((ROOT / "examples" / "claude_desktop_config.json").read_text())
    server = example["mcpServers"]["qortex"]
    server["command"] = str(SCRIPT)
    server["env"]["QORTEX_STATE_DIR"] = str(tmp_path_factory.mktemp("inspector") / "state")
    path = tmp_path_factory.mktemp("config") / "claude_desktop_config.json"
    path.write_text(json.dumps(example))
    return path


def inspector(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert NPX is not None
    return subprocess.run(
        [NPX, "--prefix", str(INSPECTOR), "inspector", "--cli", "--config", str(config),
         "--server", "qortex", *args],
        capture_output=True, text=True, timeout=120, cwd=str(INSPECTOR),
    )


def test_the_inspector_lists_the_tools_and_finds_the_schemas_portable(config: Path) -> None:
    done = inspector(config, "--method", "tools/list", "--strict")
    assert done.returncode == 0, done.stderr
    tools = json.loads(done.stdout)["tools"]
    assert len(tools) == 9
    assert {t["name"] for t in tools} >= {"qortex_select", "qortex_status"}


def test_the_inspector_calls_select_and_status(config: Path) -> None:
    done = inspector(config, "--method", "tools/call", "--tool-name", "qortex_select",
                     "--tool-arg", 'candidates=["concise", "detailed"]', "--tool-arg",
                     "learner=inspector")
    assert done.returncode == 0, done.stderr
    selected = json.loads(done.stdout)["structuredContent"]["selected"]
    assert selected[0]["id"] in ("concise", "detailed")
    done = inspector(config, "--method", "tools/call", "--tool-name", "qortex_status")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)["structuredContent"]
    assert [s["name"] for s in status["learners"]] == ["inspector"]


def test_the_inspector_exits_5_on_a_refused_call(config: Path) -> None:
    done = inspector(config, "--method", "tools/call", "--tool-name", "qortex_feedback",
                     "--tool-arg", "arm_id=a", "--tool-arg", "outcome=great")
    assert done.returncode == 5
    assert json.loads(done.stdout)["_meta"]["qortex-mcp/error"]["code"] == "INVALID_REWARD"
