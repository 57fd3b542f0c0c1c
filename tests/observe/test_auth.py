"""/metrics, the REST API and the dashboard sit behind the MCP endpoint's own checks: the
bearer token when one is set, and the exact Host/Origin rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.observe.support import DashboardServer, base_of, request
from tests.server.support import HttpServer, base_env

TOKEN = "observe-token-5b7e0c9d12"
PATHS = ["/metrics", "/api/learning/learners", "/api/learning/openapi.json",
         "/dashboard", "/dashboard/api/learners", "/dashboard/static/dashboard.js"]


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    srv = HttpServer(base_env(tmp_path_factory.mktemp("auth") / "state",
                              QORTEX_HTTP_TOKEN=TOKEN))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize("path", PATHS)
def test_without_the_token_every_observing_path_is_refused(
        token_server: HttpServer, path: str) -> None:
    url = base_of(token_server.url) + path
    assert request(url)[0] == 401
    assert request(url, headers={"Authorization": "Bearer wrong"})[0] == 401
    assert request(url, headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_a_rest_write_without_the_token_is_refused_and_changes_nothing(
        token_server: HttpServer) -> None:
    base = base_of(token_server.url)
    status, _, _ = request(base + "/api/learning/learners/x/select", method="POST",
                           body={"candidates": ["a"]})
    assert status == 401
    status, _, body = request(base + "/api/learning/learners",
                              headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert b'"name":"x"' not in body


@pytest.mark.parametrize("path", PATHS)
def test_foreign_hosts_and_origins_are_refused(token_server: HttpServer, path: str) -> None:
    url = base_of(token_server.url) + path
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert request(url, headers={**auth, "Host": "evil.example.com"})[0] == 421
    assert request(url, headers={**auth, "Origin": "http://evil.example.com"})[0] == 403
    port = url.split(":")[2].split("/")[0]
    assert request(url, headers={**auth, "Origin": f"http://127.0.0.1:{port}"})[0] == 200


def test_the_dashboard_command_has_the_same_checks(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db = state / "qortex.db"
    import sqlite3

    sqlite3.connect(db).close()  # an empty file: the store makes its schema
    dash = DashboardServer(base_env(state, QORTEX_HTTP_TOKEN=TOKEN), "--store", str(db))
    try:
        url = dash.url
        assert request(url)[0] == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert request(url, headers=auth)[0] == 200
        assert request(url, headers={**auth, "Host": "evil.example.com"})[0] == 421
        assert request(url, headers={**auth, "Origin": "http://evil.example.com"})[0] == 403
        assert request(base_of(url) + "/metrics", headers=auth)[0] == 404
    finally:
        dash.stop()


def test_the_dashboard_command_refuses_a_store_that_is_not_there(tmp_path: Path) -> None:
    import subprocess

    from tests.server.support import SCRIPT

    done = subprocess.run([str(SCRIPT), "dashboard", "--store",
                           f"sqlite://{tmp_path / 'missing.db'}"], capture_output=True,
                          text=True, timeout=30, env=base_env(tmp_path / "state"))
    assert done.returncode == 2
    assert "no sqlite store at" in done.stderr
    assert "Traceback" not in done.stderr
