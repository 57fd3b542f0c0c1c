"""Smoke test with the MCP Inspector's headless CLI (pinned in tests/inspector/package.json).

The first run installs it (``npm ci --prefix tests/inspector``, from the lock file), so the
README's test command works on a fresh machine. Without node and npm the test is skipped,
loudly; when the install fails (no registry) the test fails and says why.
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
    NPX is None or NODE is None or shutil.which("npm") is None,
    reason="!!! node/npm are not installed: the MCP Inspector smoke test is SKIPPED !!!",
)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/claude_desktop_config.json with real paths (so the example is tested too)."""
    if not (INSPECTOR / "node_modules" / ".bin" / "mcp-inspector").exists():
        npm = shutil.which("npm")
        assert npm is not None
        done = subprocess.run(
            [npm, "ci", "--prefix", str(INSPECTOR), "--no-audit", "--no-fund",
             "--loglevel=error"], capture_output=True, text=True, timeout=600, check=False,
        )
        if done.returncode != 0:
            pytest.fail("installing the MCP Inspector failed (npm ci --prefix tests/inspector): "
                        + done.stderr[-500:])
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
    assert len(tools) == 10
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
    assert json.loads(done.stdout)["_meta"]["qortex-mcp/error"]["code"] == "INVALID_OUTCOME"
