"""``open_store(url)``: every scheme opens the store it names, bad URLs are refused with
``CONFIG_ERROR`` before anything is created, and the server's ``Settings`` go through it."""

from __future__ import annotations

from pathlib import Path

import pytest

from qortex_mcp.config import Settings
from qortex_mcp.errors import ConfigError
from qortex_mcp.learning import (
    ArmOutcome,
    JsonLearningStore,
    Learner,
    LearnerConfig,
    MemoryLearningStore,
    SqliteLearningStore,
    open_store,
)
from qortex_mcp.learning.stores.dsn import mask_dsn
from qortex_mcp.learning.stores.factory import configured_store
from tests.conftest import PG_DSN, PG_UNAVAILABLE
from tests.pg import drop_schema, new_schema_name

pytestmark = pytest.mark.anyio


def test_sqlite_urls_name_absolute_and_relative_files(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path}/a b.db")
    assert isinstance(store, SqliteLearningStore)
    assert store.path == tmp_path / "a b.db"
    assert store.synchronous == "FULL"
    escaped = open_store(f"sqlite://{tmp_path}/c%20d.db?synchronous=normal")
    assert isinstance(escaped, SqliteLearningStore)
    assert escaped.path == tmp_path / "c d.db"
    assert escaped.synchronous == "NORMAL"
    relative = open_store("sqlite://state/q.db")
    assert isinstance(relative, SqliteLearningStore)
    assert relative.path == Path("state/q.db")


def test_json_and_memory_urls() -> None:
    json_store = open_store("JSON:///var/tmp/q.json")
    assert isinstance(json_store, JsonLearningStore)
    assert json_store.path == Path("/var/tmp/q.json")
    assert isinstance(open_store("memory://"), MemoryLearningStore)


@pytest.mark.parametrize(("url", "words"), [
    ("redis://localhost/0", "unknown store URL"),
    ("/var/tmp/q.db", "unknown store URL"),
    ("", "unknown store URL"),
    ("sqlite://", "needs a file path"),
    ("sqlite:///tmp/dir/", "needs a file path"),
    ("json://", "needs a file path"),
    ("memory:///tmp/x", "takes no path"),
    ("sqlite:///tmp/q.db?synchronous=off", "synchronous must be full or normal"),
    ("sqlite:///tmp/q.db?journal=wal", "unknown sqlite:// option 'journal'"),
    ("json:///tmp/q.json?synchronous=full", "unknown json:// option"),
    ("postgresql://u@127.0.0.1/test?schema=Bad-Name", "schema must be a lower-case identifier"),
])
def test_bad_urls_are_refused_with_one_line(url: str, words: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(url)
    assert info.value.code == "CONFIG_ERROR"
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_a_non_string_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        open_store(Path("/tmp/q.db"))  # type: ignore[arg-type]


def test_a_refused_url_shows_no_password() -> None:
    with pytest.raises(ConfigError) as info:
        open_store("mysql://user:hunter2@db/q")
    assert "hunter2" not in str(info.value)
    assert mask_dsn("postgresql://u:pw@h/d?password=x") == "postgresql://u:***@h/d?password=***"


async def test_a_sqlite_url_keeps_evidence_across_opens(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/state.db"
    async with open_store(url) as store:
        learner = await Learner.create(LearnerConfig(name="url"), store)
        await learner.observe(ArmOutcome(arm_id="a", outcome="accepted", reward=1.0))
        await learner.close()
    async with open_store(url) as store:
        learner = await Learner.create(LearnerConfig(name="url"), store)
        (posterior,) = await learner.posteriors(["a"])
        await learner.close()
    assert (posterior.alpha, posterior.beta) == (2.0, 1.0)
    assert (tmp_path / "state.db").is_file()


@pytest.mark.skipif(bool(PG_UNAVAILABLE), reason=f"PostgreSQL unavailable: {PG_UNAVAILABLE}")
async def test_a_postgres_url_uses_its_schema_parameter() -> None:
    import asyncpg

    schema = new_schema_name(PG_DSN)
    try:
        async with open_store(f"{PG_DSN}?schema={schema}") as store:
            learner = await Learner.create(LearnerConfig(name="url"), store)
            await learner.observe(ArmOutcome(arm_id="a", outcome="accepted", reward=1.0))
            await learner.close()
        conn = await asyncpg.connect(PG_DSN)
        try:
            rows = await conn.fetchval(f'SELECT count(*) FROM "{schema}".events')
        finally:
            await conn.close()
        assert rows == 1
    finally:
        await drop_schema(PG_DSN, schema)


@pytest.mark.parametrize("kind", ["sqlite", "json", "memory"])
def test_settings_name_their_store_as_a_url(kind: str, tmp_path: Path) -> None:
    state = tmp_path / "odd dir %41"
    settings = Settings.build(store=kind, state_dir=state, sqlite_synchronous="NORMAL")
    store = configured_store(settings)
    assert store.kind == kind
    if isinstance(store, SqliteLearningStore):
        assert store.path == settings.sqlite_path
        assert store.synchronous == "NORMAL"
    if isinstance(store, JsonLearningStore):
        assert store.path == settings.json_path


def test_postgres_settings_pass_the_database_url_through() -> None:
    settings = Settings.build(store="postgres", database_url="postgresql://u:pw@h:5/db")
    assert settings.store_url == "postgresql://u:pw@h:5/db"
