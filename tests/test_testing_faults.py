"""The fault-injecting store refuses fault names it does not know (a typo would otherwise
make a mutation test pass for the wrong reason), and the production store has no faults."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from qortex_mcp.learning.stores.sqlite import SqliteLearningStore
from qortex_mcp.testing.faults import FAULTS, FaultySqliteStore


@pytest.mark.parametrize("faults", [frozenset(), frozenset({"ack_before_comit"}),
                                    frozenset({"read_modify_write", "nope"})])
def test_unknown_or_no_faults_are_refused(tmp_path: Path, faults: frozenset[str]) -> None:
    with pytest.raises(ValueError, match="test faults must be some of"):
        FaultySqliteStore(tmp_path / "state.db", faults)
    assert not (tmp_path / "state.db").exists()


def test_the_production_store_takes_no_fault_switch() -> None:
    params = inspect.signature(SqliteLearningStore.__init__).parameters
    assert not any("fault" in name for name in params)
    assert {"ack_before_commit", "read_modify_write"} == FAULTS
