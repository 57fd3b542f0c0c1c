"""Selection-id forgery over MCP: every single byte flipped, truncated, extended, re-encoded,
signed with another key, dated beyond the TTL in the future or the past, replayed against another
learner: all refused, none applied; the genuine ids are then accepted exactly once.

CI tier: 4 genuine ids (every position flipped two ways, every truncation), about 2,400
forged calls. QORTEX_FAULT_SCALE=10: 100 genuine ids.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from qortex_mcp.config import Settings
from qortex_mcp.learning.tokens import SelectionSigner
from qortex_mcp.server import build_server
from tests.reliability import report
from tests.reliability.servers import SECRET

pytestmark = pytest.mark.anyio

ARMS = ["a1", "a2", "a3"]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _events(db: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def _resign(token: str, payload: dict[str, Any], key: bytes, kid: str | None = None) -> str:
    """A token with ``payload``, signed with ``key`` (under ``kid``, default the token's)."""
    prefix, token_kid, _, _ = token.split(".")
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    head = f"{prefix}.{kid or token_kid}.{body}"
    return f"{head}.{_b64(hmac.digest(key, head.encode('ascii'), 'sha256'))}"


def _payload(token: str) -> dict[str, Any]:
    body = token.split(".")[2]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


def forgeries(token: str) -> Iterator[tuple[str, str]]:
    """(kind, forged id) for one genuine id (never the id itself)."""
    return ((kind, fake) for kind, fake in _variants(token) if fake != token)


def _variants(token: str) -> Iterator[tuple[str, str]]:
    for i, ch in enumerate(token):
        for mask in (0x01, 0x20):
            flipped = chr(ord(ch) ^ mask)
            if flipped != ch:
                yield "byte flipped", token[:i] + flipped + token[i + 1:]
    for n in range(len(token)):
        yield "truncated", token[:n]
    for tail in ("A", "=", "==", ".", "\n", " ", "\x00", ".AAAA", token[-43:]):
        yield "extended", token + tail
    prefix, kid, body, tag = token.split(".")
    yield "padded", f"{prefix}.{kid}.{body}=.{tag}"
    yield "padded", f"{prefix}.{kid}.{body}.{tag}="
    yield "whitespace", f"{prefix}.{kid}.{body[:5]} {body[5:]}.{tag}"
    yield "newline", f"{prefix}.{kid}.{body[:5]}\n{body[5:]}.{tag}"
    yield "upper case", token.upper()
    yield "standard base64", f"{prefix}.{kid}.{body.replace('-', '+').replace('_', '/')}.{tag}"
    # Non-canonical trailing bits: the same bytes under a second spelling (the last
    # character of a body of length 2 or 3 mod 4 carries unused low bits).
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    if len(body) % 4 in (2, 3):
        twin = alphabet[alphabet.index(body[-1]) ^ 1]
        yield "non-canonical base64", f"{prefix}.{kid}.{body[:-1]}{twin}.{tag}"
    payload = _payload(token)
    other_key = hashlib.sha256(b"another server").digest()
    other_kid = hashlib.sha256(other_key).hexdigest()[:8]
    yield "signed with another key", _resign(token, payload, other_key, other_kid)
    yield "another key under our kid", _resign(token, payload, other_key)
    spaced = _b64(json.dumps(payload).encode())
    yield "re-encoded payload, tag kept", f"{prefix}.{kid}.{spaced}.{tag}"
    yield "SQL", "' OR 1=1--"
    yield "empty", ""
    yield "huge", "q1." + "A" * (1 << 20)


def _with_secret(token: str, change: dict[str, Any]) -> str:
    """A correctly signed id with altered claims: only the server's own checks stop it."""
    return _resign(token, {**_payload(token), **change}, SECRET.encode())


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[Client, Path]]:
    server = build_server(Settings.build(store="sqlite", state_dir=tmp_path, secret=SECRET,
                                         log_level="warning"))
    async with Client(server) as c:
        yield c, tmp_path / "qortex.db"


def _code(result: Any) -> str:
    if not result.is_error:
        return "OK"
    return str((result.meta or {}).get("qortex-mcp/error", {}).get("code"))


async def test_forged_selection_ids_are_all_refused_and_none_applied(
    client: tuple[Client, Path],
) -> None:
    c, db = client
    genuine = []
    for _ in range(report.tier(4, 100)):
        result = await c.call_tool("qortex_select", {"learner": "owner", "candidates": ARMS})
        genuine.append((result.structured_content["selection_id"],
                        result.structured_content["selected"][0]["id"]))
    other = await c.call_tool("qortex_select", {"learner": "stranger", "candidates": ARMS})
    assert not other.is_error
    before = _events(db)
    codes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    accepted: list[tuple[str, str]] = []

    async def forged(kind: str, sid: str, arm: str, learner: str = "owner") -> None:
        result = await c.call_tool("qortex_feedback", {"learner": learner, "selection_id": sid,
                                                       "outcomes": {arm: 1.0}})
        code = _code(result)
        codes[code] += 1
        kinds[kind] += 1
        if code not in ("INVALID_SELECTION", "SELECTION_EXPIRED"):
            accepted.append((kind, f"{code}: {sid[:80]!r}"))

    for sid, arm in genuine:
        for kind, fake in forgeries(sid):
            await forged(kind, fake, arm)
        await forged("replayed against another learner", sid, arm, learner="stranger")
        await forged("claims another learner", _with_secret(sid, {"l": "stranger"}), arm)
        # Signed ids dated ahead are tolerated up to the TTL (a clock stepped back); beyond it
        # no clock correction explains them.
        await forged("dated in the future", _with_secret(sid, {"t": _payload(sid)["t"]
                                                               + 31 * 86_400_000}), arm)
        await forged("expired", _with_secret(sid, {"t": _payload(sid)["t"]
                                                   - 31 * 86_400_000}), arm)
    forged_total = sum(kinds.values())
    changed = _events(db) - before
    # The genuine ids still work, exactly once each.
    statuses = []
    for sid, arm in genuine:
        for _ in range(2):
            result = await c.call_tool("qortex_feedback", {"learner": "owner",
                                                           "selection_id": sid,
                                                           "outcomes": {arm: 1.0}})
            statuses.append(result.structured_content["arms"][0]["status"])
    report.record("selection-id forgery",
                  f"{forged_total} forged ids ({len(kinds)} kinds) over {len(genuine)} genuine "
                  f"ones: {forged_total - len(accepted)} refused, {changed} applied; the genuine "
                  f"ids then applied {statuses.count('applied')}/{len(genuine)} times, "
                  f"{statuses.count('duplicate')} duplicates; codes {dict(codes)}")
    assert accepted == []
    assert changed == 0
    assert statuses == ["applied", "duplicate"] * len(genuine)
    assert codes["SELECTION_EXPIRED"] == len(genuine)


def test_the_forgery_generator_covers_every_position() -> None:
    token = SelectionSigner([SECRET.encode()]).issue("owner", None, ["a1"])[0]
    flipped = [f for kind, f in forgeries(token) if kind == "byte flipped"]
    assert len({next(i for i, (a, b) in enumerate(zip(f, token, strict=True)) if a != b)
                for f in flipped}) == len(token)
