"""End to end over streamable HTTP on 127.0.0.1: the same loop, and who gets refused."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from qortex_mcp.http_server import is_loopback, transport_security
from tests.server.support import (
    INITIALIZE,
    SCRIPT,
    HttpServer,
    base_env,
    ok,
    stored_evidence,
)

TOKEN = "test-token-4f1c9a8e2b7d6035"


# One server per module for the read-mostly checks: each start costs a second or two.
@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    server = HttpServer(base_env(tmp_path_factory.mktemp("open") / "state"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    server = HttpServer(base_env(tmp_path_factory.mktemp("token") / "state",
                                 QORTEX_HTTP_TOKEN=TOKEN))
    try:
        yield server
    finally:
        server.stop()


async def _loop(client: Client) -> None:
    sel = await ok(client, "qortex_select", {"learner": "web", "candidates": ["a", "b"]})
    chosen = sel["selected"][0]["id"]
    args = {"learner": "web", "selection_id": sel["selection_id"],
            "outcomes": {chosen: "accepted"}}
    assert (await ok(client, "qortex_feedback", args))["applied"] == 1
    assert (await ok(client, "qortex_feedback", args))["duplicates"] == 1
    post = await ok(client, "qortex_posteriors", {"learner": "web", "arm_ids": [chosen]})
    assert post["arms"][0]["alpha"] == 2.0


@pytest.mark.anyio
async def test_the_loop_over_http(open_server: HttpServer) -> None:
    assert open_server.url.startswith("http://127.0.0.1:")
    with anyio.fail_after(30):
        async with Client(open_server.url) as client:
            await _loop(client)


@pytest.mark.anyio
async def test_the_loop_over_http_with_a_bearer_token(token_server: HttpServer) -> None:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"})
    with anyio.fail_after(30):
        async with http, Client(streamable_http_client(token_server.url, http_client=http)) \
                as client:
            await _loop(client)


def test_a_foreign_origin_is_refused(open_server: HttpServer) -> None:
    assert open_server.post(INITIALIZE)[0] == 200
    assert open_server.post(INITIALIZE, {"Origin": "http://localhost:3000"})[0] == 200
    assert open_server.post(INITIALIZE, {"Origin": "http://evil.example"})[0] == 403


def test_a_foreign_host_is_refused(open_server: HttpServer) -> None:
    assert open_server.post(INITIALIZE, {"Host": "evil.example:80"})[0] == 421


def test_hosts_match_case_insensitively_and_ports_only_as_digits(
    open_server: HttpServer,
) -> None:
    port = open_server.url.split(":")[2].split("/")[0]
    accepted = ["127.0.0.1", f"127.0.0.1:{port}", "LOCALHOST", f"LocalHost:{port}", "[::1]",
                "[::1]:8", "localhost:65535"]
    refused = [f"127.0.0.1:{port}@evil.com", f"localhost:{port}.evil.com", "localhost:",
               "localhost:80x", "localhost:-1", "localhost:123456", "127.0.0.1.evil.com",
               f"evil.com:{port}", "localhost.:80", "[::1]x", "[::1", "", "user@localhost:80"]
    assert {h: open_server.post(INITIALIZE, {"Host": h})[0] for h in accepted} \
        == dict.fromkeys(accepted, 200)
    assert {h: open_server.post(INITIALIZE, {"Host": h})[0] for h in refused} \
        == dict.fromkeys(refused, 421)


def test_origins_match_case_insensitively_and_ports_only_as_digits(
    open_server: HttpServer,
) -> None:
    port = open_server.url.split(":")[2].split("/")[0]
    accepted = [f"http://LOCALHOST:{port}", "HTTP://127.0.0.1", f"http://[::1]:{port}",
                "http://localhost"]
    refused = [f"http://localhost:{port}@evil.com", f"http://127.0.0.1:{port}.evil.com",
               "http://localhost:8o", "https://evil.com", "null", "localhost:80",
               f"http://evil.com:{port}", "file://localhost"]
    assert {o: open_server.post(INITIALIZE, {"Origin": o})[0] for o in accepted} \
        == dict.fromkeys(accepted, 200)
    assert {o: open_server.post(INITIALIZE, {"Origin": o})[0] for o in refused} \
        == dict.fromkeys(refused, 403)


def test_an_oversized_request_is_refused_before_its_body_is_read(
    open_server: HttpServer,
) -> None:
    host, port = open_server.url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Accept: application/json, text/event-stream\r\n"
                     b"Content-Length: 5000000\r\n\r\n")
        status_line = conn.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.split()[1] == b"413"


def test_a_missing_or_wrong_token_is_refused_with_401(token_server: HttpServer) -> None:
    status, headers = token_server.post(INITIALIZE)
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="qortex-mcp"'
    status, headers = token_server.post(INITIALIZE, {"Authorization": "Bearer wrong"})
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert token_server.post(INITIALIZE, {"Authorization": f"Basic {TOKEN}"})[0] == 401
    assert token_server.post(INITIALIZE, {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert token_server.post(INITIALIZE, {"Authorization": f"bearer {TOKEN}"})[0] == 200


def test_binding_beyond_loopback_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(SCRIPT), "serve", "--transport", "http", "--host", "0.0.0.0", "--port", "0"],
        env=base_env(tmp_path / "state"), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert "refusing to serve HTTP on 0.0.0.0" in line
    assert "QORTEX_HTTP_TOKEN" in line
    assert not (tmp_path / "state").exists()  # refused before anything was opened


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_http_server_within_5_s_with_feedback_durable(
    tmp_path: Path, sig: signal.Signals,
) -> None:
    server = HttpServer(base_env(tmp_path / "state"))
    try:
        async def feed() -> None:
            with anyio.fail_after(30):
                async with Client(server.url) as client:
                    out = await ok(client, "qortex_feedback", {"arm_id": "a", "outcome": 1})
                    assert out["applied"] == 1

        anyio.run(feed)
        server.proc.send_signal(sig)
        assert server.wait(5) == 0
    finally:
        server.stop()
    logged = "".join(server.stderr.all)
    assert "registry_closed" in logged
    assert f"reason='{sig.name}'" in logged

    assert [(r.arm, r.s) for r in stored_evidence(tmp_path / "state" / "qortex.db")] \
        == [("a", 1.0)]


def test_host_checks_follow_the_bound_address() -> None:
    loopback = transport_security("127.0.0.1")
    assert loopback.enable_dns_rebinding_protection
    assert loopback.allowed_hosts == ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    assert loopback.allowed_origins == ["http://127.0.0.1:*", "http://localhost:*",
                                        "http://[::1]:*"]
    assert transport_security("10.1.2.3").allowed_hosts[-1] == "10.1.2.3:*"
    assert transport_security("fd00::7").allowed_hosts[-1] == "[fd00::7]:*"
    # a wildcard bind cannot know its names: the required bearer token protects it
    assert not transport_security("0.0.0.0").enable_dns_rebinding_protection
    assert [h for h in ("127.0.0.1", "::1", "[::1]", "localhost", "127.9.9.9")
            if not is_loopback(h)] == []
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("example.org")
