"""Helpers for the observing tests: plain HTTP requests to a running server."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from tests.server.support import SCRIPT, _Child, _Lines


def base_of(mcp_url: str) -> str:
    """``http://127.0.0.1:PORT/mcp`` -> ``http://127.0.0.1:PORT``."""
    return mcp_url.rsplit("/", 1)[0]


def request(url: str, *, method: str = "GET", body: object = None,
            headers: Mapping[str, str] | None = None, raw: bytes | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; HTTP errors are answers, not exceptions."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, _lower(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, _lower(exc.headers), exc.read()


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def get_json(url: str, headers: Mapping[str, str] | None = None) -> Any:
    status, _, body = request(url, headers=headers)
    assert status == 200, body
    return json.loads(body)


class DashboardServer(_Child):
    """``qortex-mcp dashboard --store URL --port 0``: waits for its listening line."""

    def __init__(self, env: Mapping[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(SCRIPT), "dashboard", "--port", "0", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(env), text=True, encoding="utf-8",
        )
        self.stdout = _Lines(self.proc.stdout)
        self.stderr = _Lines(self.proc.stderr)
        self.url = ""
        deadline = time.monotonic() + 30
        while not self.url:
            line = self.stderr.next(timeout=max(deadline - time.monotonic(), 0.01))
            assert line is not None, "the dashboard exited: " + "".join(self.stderr.all)
            if "http_listening" in line:
                self.url = line.split("url='", 1)[1].split("'", 1)[0]
