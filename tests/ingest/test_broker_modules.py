"""``ingest.run`` picks the broker's module from the URL, and without the ``streams`` extra
names what to install instead of failing with an import traceback."""

from __future__ import annotations

import sys

import pytest

from qortex_mcp.errors import ConfigError
from qortex_mcp.ingest import run

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("url", "client"), [("redis://127.0.0.1:1/0", "redis"),
                                             ("nats://127.0.0.1:1", "nats")])
async def test_a_missing_client_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, url: str, client: str,
) -> None:
    broker = f"qortex_mcp.ingest.{client}"
    monkeypatch.delitem(sys.modules, broker, raising=False)
    for mod in [m for m in sys.modules if m == client or m.startswith(f"{client}.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, client, None)  # import raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'qortex-mcp\[streams\]'"):
        await run.lag(url, name="s", group="g")


def test_the_url_picks_the_broker_module() -> None:
    assert run._broker("redis://127.0.0.1:6379/0").__name__ == "qortex_mcp.ingest.redis"
    assert run._broker("nats://127.0.0.1:4222").__name__ == "qortex_mcp.ingest.nats"
    with pytest.raises(ConfigError, match="must start with"):
        run._broker("kafka://127.0.0.1")
