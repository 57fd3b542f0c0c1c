"""Stores: where learner state lives. See ``base.LearningStore`` for the contract."""

from qortex_mcp.learning.stores.base import (
    SCHEMA_VERSION,
    LearnerSnapshot,
    LearnerSummary,
    LearningStore,
    StoreInfo,
)
from qortex_mcp.learning.stores.json import JsonLearningStore
from qortex_mcp.learning.stores.memory import MemoryLearningStore
from qortex_mcp.learning.stores.sqlite import SqliteLearningStore
from qortex_mcp.learning.stores.url import open_store

__all__ = [
    "SCHEMA_VERSION",
    "JsonLearningStore",
    "LearnerSnapshot",
    "LearnerSummary",
    "LearningStore",
    "MemoryLearningStore",
    "SqliteLearningStore",
    "StoreInfo",
    "open_store",
]
