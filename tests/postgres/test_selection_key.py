"""A learner given a PostgreSQL store and no signer signs with a key kept in the schema:
the first instance's key stays, and every instance on the schema reads the same one."""

from __future__ import annotations

import pytest

from qortex_mcp.learning import ArmOutcome, Learner, LearnerConfig
from tests.postgres.conftest import MakeStore

pytestmark = pytest.mark.anyio


async def test_the_first_key_stays_and_is_shared(make_pg: MakeStore) -> None:
    one, two = await make_pg(), await make_pg()
    first = await one.selection_key(b"a" * 64)
    assert await two.selection_key(b"b" * 64) == first == b"a" * 64


async def test_a_selection_id_from_one_instance_is_accepted_by_another(
    make_pg: MakeStore,
) -> None:
    one, two = await make_pg(), await make_pg()
    async with await Learner.create(LearnerConfig(name="lib"), one) as learner:
        chosen = await learner.select(["a", "b"])
    async with await Learner.create(LearnerConfig(name="lib"), two) as learner:
        result = await learner.observe(ArmOutcome(
            arm_id=chosen.selected[0].id, reward=1.0, selection_id=chosen.selection_id))
    assert result.status == "applied"
