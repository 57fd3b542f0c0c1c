"""Helpers for the observing tests: plain HTTP requests to a running server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any


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
