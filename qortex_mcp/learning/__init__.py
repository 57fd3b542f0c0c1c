"""The learning library: async bandit learners over the policy layer's strategies
(``policies``), on the evidence every store keeps. Never imports ``mcp`` or
``qortex_mcp.config`` at import time.

``PostgresLearningStore`` lives in ``qortex_mcp.learning.postgres`` (the ``postgres``
extra).
"""

from qortex_mcp.learning.config import LearnerConfig
from qortex_mcp.learning.learner import Learner
from qortex_mcp.learning.nexttool import NextToolModel, NextToolResult, ToolSuggestion
from qortex_mcp.learning.registry import LearnerRegistry
from qortex_mcp.learning.rewards import (
    BinaryReward,
    RewardModel,
    TernaryReward,
    ToolOutcomeReward,
)
from qortex_mcp.learning.stores import (
    JsonLearningStore,
    LearningStore,
    MemoryLearningStore,
    SqliteLearningStore,
    open_store,
)
from qortex_mcp.learning.strategies import LearningStrategy, PosteriorMean, ThompsonSampling
from qortex_mcp.learning.tokens import SelectionClaims, SelectionSigner
from qortex_mcp.learning.types import (
    Arm,
    ArmMetrics,
    ArmOutcome,
    Decision,
    FeedbackResult,
    LearnerMetrics,
    Posterior,
    ReplayReport,
    ResetReport,
    ScoredArm,
    SelectionResult,
    ToolExecution,
)

__all__ = [
    "Arm",
    "ArmMetrics",
    "ArmOutcome",
    "BinaryReward",
    "Decision",
    "FeedbackResult",
    "JsonLearningStore",
    "Learner",
    "LearnerConfig",
    "LearnerMetrics",
    "LearnerRegistry",
    "LearningStore",
    "LearningStrategy",
    "MemoryLearningStore",
    "NextToolModel",
    "NextToolResult",
    "Posterior",
    "PosteriorMean",
    "ReplayReport",
    "ResetReport",
    "RewardModel",
    "ScoredArm",
    "SelectionClaims",
    "SelectionResult",
    "SelectionSigner",
    "SqliteLearningStore",
    "TernaryReward",
    "ThompsonSampling",
    "ToolExecution",
    "ToolOutcomeReward",
    "ToolSuggestion",
    "open_store",
]
