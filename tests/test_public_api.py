"""The public API is pinned: a name added to or dropped from ``__all__`` is a decision made
here, in review, not an accident of an import (httpx's ``test_exported_members`` does the
same). And the library stays a library: importing every module of ``qortex_mcp.learning``
loads neither the MCP SDK nor the configuration module that reads the environment."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import pytest

import qortex_mcp
import qortex_mcp.learning

PACKAGE = ["QortexError", "__version__"]
LEARNING = [
    "Arm", "ArmMetrics", "ArmOutcome", "BinaryReward", "Decision", "FeedbackResult",
    "JsonLearningStore",
    "Learner", "LearnerConfig", "LearnerMetrics", "LearnerRegistry", "LearningStore",
    "LearningStrategy", "MemoryLearningStore", "NextToolModel", "NextToolResult", "Posterior",
    "PosteriorMean", "ReplayReport", "ResetReport", "RewardModel", "ScoredArm",
    "SelectionClaims", "SelectionResult", "SelectionSigner", "SqliteLearningStore",
    "TernaryReward", "ThompsonSampling", "ToolExecution", "ToolOutcomeReward", "ToolSuggestion",
    "open_store",
]


@pytest.mark.parametrize(("module", "names"), [(qortex_mcp, PACKAGE),
                                               (qortex_mcp.learning, LEARNING)])
def test_all_is_pinned_and_every_name_resolves(module: ModuleType, names: list[str]) -> None:
    assert sorted(module.__all__) == sorted(names)
    for name in names:
        value = getattr(module, name)
        owner = getattr(value, "__module__", None)
        if owner is not None:  # classes and functions come from this package, not a dependency
            assert owner.startswith("qortex_mcp"), (name, owner)


def test_the_library_loads_neither_mcp_nor_the_configuration() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import qortex_mcp.learning, qortex_mcp.rerank\n"
        "for info in pkgutil.walk_packages(qortex_mcp.learning.__path__, 'qortex_mcp.learning.'):\n"
        "    importlib.import_module(info.name)\n"
        "bad = sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.')\n"
        "             or m == 'qortex_mcp.config')\n"
        "assert len([m for m in sys.modules if m.startswith('qortex_mcp.learning.')]) > 40\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_old_clicks_module_still_imports_with_a_warning() -> None:
    import importlib

    from qortex_mcp.rerank import ClickModel

    sys.modules.pop("qortex_mcp.clicks", None)
    with pytest.warns(DeprecationWarning, match="moved to qortex_mcp.rerank.clicks"):
        old = importlib.import_module("qortex_mcp.clicks")
    assert old.ClickModel is ClickModel


def test_the_fake_clock_moves_forward_only() -> None:
    from qortex_mcp.testing import FakeClock

    clock = FakeClock(100.0)
    assert clock() == 100.0
    clock.advance(2.5)
    assert clock() == 102.5
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1.0)
