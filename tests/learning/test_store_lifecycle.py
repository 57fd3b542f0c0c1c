"""A learner given a store behaves like a library: it reads no environment and writes
nothing outside that store, and a program that forgets to close its store still exits
(with a ResourceWarning, like an unclosed file or httpx client)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qortex_mcp.config import Settings
from qortex_mcp.learning import (
    ArmOutcome,
    Learner,
    LearnerConfig,
    SqliteLearningStore,
)
from tests.conftest import make_store

pytestmark = pytest.mark.anyio

FORGETFUL = """
import asyncio, sys
from qortex_mcp.learning import Learner, LearnerConfig, SqliteLearningStore

{where}

async def main():
    {make}
    learner = await Learner.create(LearnerConfig(name="forgetful"), store)
    await learner.select(["a", "b"])
    await learner.close()  # ... and the store is never closed


asyncio.run(main())
print("finished main")
"""
LOCAL = {"where": "", "make": "store = SqliteLearningStore(sys.argv[1])"}
GLOBAL = {"where": "STORE = SqliteLearningStore(sys.argv[1])", "make": "store = STORE"}


def _run(tmp_path: Path, shape: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "forgetful.py"
    script.write_text(FORGETFUL.format(**shape), encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("QORTEX_") and k not in ("DATABASE_URL", "PYTHONWARNINGS")}
    env["HOME"] = str(home)
    # A hang is the bug: the timeout turns it into a failure.
    return subprocess.run([sys.executable, *flags, str(script), str(tmp_path / "db" / "s.db")],
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("shape", [LOCAL, GLOBAL], ids=["local", "module-global"])
def test_a_program_that_never_closes_its_store_still_exits(
    tmp_path: Path, shape: dict[str, str]
) -> None:
    done = _run(tmp_path, shape)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "finished main"
    assert "ResourceWarning" not in done.stderr  # off by default, as for files
    assert list((tmp_path / "home").iterdir()) == []  # nothing written in HOME


def test_an_unclosed_store_gives_a_resource_warning(tmp_path: Path) -> None:
    done = _run(tmp_path, LOCAL, "-W", "always::ResourceWarning")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (f"ResourceWarning: SqliteLearningStore('{tmp_path / 'db' / 's.db'}') was never "
            "closed") in done.stderr


async def test_a_closed_store_gives_no_warning(tmp_path: Path) -> None:
    store = SqliteLearningStore(tmp_path / "s.db")
    async with store, await Learner.create(LearnerConfig(name="tidy"), store) as learner:
        await learner.select(["a"])
    del store  # filterwarnings = error: a warning here would fail the test


@pytest.fixture
def hostile_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An environment that would break (or write into HOME) anything reading it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("QORTEX_STORE", "postgres")  # without DATABASE_URL: a CONFIG_ERROR
    monkeypatch.setenv("QORTEX_SECRET", "changeme")
    monkeypatch.setenv("QORTEX_CONFIG", str(tmp_path / "missing.toml"))
    for name in ("DATABASE_URL", "QORTEX_STATE_DIR", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.mark.parametrize("kind", ["memory", "sqlite", "json"])
async def test_a_learner_given_a_store_reads_no_environment_and_writes_nothing_outside_it(
    hostile_env: Path, tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_env(*_: object, **__: object) -> Settings:
        raise AssertionError("a learner given a store read the environment")

    monkeypatch.setattr(Settings, "from_env", no_env)
    store = await make_store(kind, tmp_path / "store")
    try:
        async with await Learner.create(LearnerConfig(name="lib"), store) as learner:
            chosen = await learner.select(["a", "b"])
            result = await learner.observe(ArmOutcome(
                arm_id=chosen.selected[0].id, reward=1.0, selection_id=chosen.selection_id))
            assert result.status == "applied"
    finally:
        await store.close()
    assert os.listdir(hostile_env) == []


async def test_the_key_kept_in_an_sqlite_store_outlives_the_process(
    hostile_env: Path, tmp_path: Path
) -> None:
    """A selection id from one learner on a file is accepted by the next one on that file
    (another process, or after a restart): the key is kept in the file, not in HOME."""
    path = tmp_path / "store" / "s.db"
    async with (SqliteLearningStore(path) as first,
                await Learner.create(LearnerConfig(name="lib"), first) as learner):
        chosen = await learner.select(["a", "b"])
    async with (SqliteLearningStore(path) as second,
                await Learner.create(LearnerConfig(name="lib"), second) as learner):
        result = await learner.observe(ArmOutcome(
            arm_id=chosen.selected[0].id, reward=1.0, selection_id=chosen.selection_id))
    assert result.status == "applied"
    assert os.listdir(hostile_env) == []
    assert [name for name in os.listdir(path.parent) if name.endswith(".key")] == []


async def test_without_a_store_the_environment_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed's promise stands: ``Learner.create(config)`` alone uses QORTEX_STORE and
    QORTEX_STATE_DIR (SQLite there by default, with the key file beside it)."""
    for name in ("QORTEX_STORE", "QORTEX_SECRET", "QORTEX_CONFIG", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QORTEX_STATE_DIR", str(tmp_path / "state"))
    async with await Learner.create(LearnerConfig(name="env")) as learner:
        assert learner.store.kind == "sqlite"
    assert (tmp_path / "state" / "qortex.db").is_file()
    assert (tmp_path / "state" / "selection.key").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("QORTEX_STORE", "memory")
    async with await Learner.create(LearnerConfig(name="env")) as learner:
        assert learner.store.kind == "memory"
    monkeypatch.setenv("QORTEX_STORE", "postgres")
    with pytest.raises(Exception, match="DATABASE_URL"):
        await Learner.create(LearnerConfig(name="env"))
