"""Signed selection ids.

A selection id carries everything feedback needs, so it is accepted hours later, after a
restart, or on another instance sharing the store, without the selection ever being written
on the ``select`` hot path::

    q1.<kid>.<base64url(payload)>.<base64url(HMAC-SHA256(key, "q1.<kid>.<payload>"))>

The payload is compact JSON: learner, a 128-bit random selection nonce (the dedup key),
the canonical context, the arms shown (in display order, so ranks come from here and never
from the client), the other candidates that were offered (for a select of at most
``MAX_OFFERED`` candidates), the issue time, the kind (select, rerank or next: a next-tool
suggestion), for a rerank the posterior means the arms were ranked by (click-only feedback
weighs skips with them) and, for a next-tool suggestion, the history it was made after (the
transition feedback teaches starts there).

A rerank's payload (``issue``) longer than ``_COMPRESS_AT`` is deflated (zlib) before
base64: a list of 10,000 short result ids and their means takes about 48 KB instead of
212 KB, so ``max_candidates`` results fit in ``MAX_TOKEN_CHARS``. The id stays
self-contained (any instance verifies it, nothing is stored); ``select``'s hot path
(``sign``) is never compressed. A JSON payload starts with ``{``, a deflated one never does.

Verification order matters: length and charset first, then structure, then a constant-time
tag check, and only then is the payload inflated (bounded) and parsed. Base64 is checked to
be canonical (decoded and re-encoded) so no variant of a token can ever count twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import json.encoder
import os
import re
import secrets
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from qortex_mcp.errors import (
    ConfigError,
    InvalidInput,
    InvalidSelection,
    LimitExceeded,
    SelectionExpired,
)
from qortex_mcp.logging import get_logger

__all__ = [
    "MAX_TOKEN_CHARS",
    "HmacSha256",
    "SelectionClaims",
    "SelectionSigner",
    "load_secret",
]

log = get_logger(__name__)

MAX_TOKEN_CHARS: Final = 96 * 1024
MAX_OFFERED: Final = 256
"""A select of at most this many candidates signs them all, so feedback may name any."""
_MEAN_SCALE: Final = 10_000
_REMEMBERED: Final = 1024
_REMEMBER_CHARS: Final = 4096
# Longer authentic ids (large reranks) are remembered by their SHA-256, fewer of them (their
# claims hold up to max_candidates ids): feedback checks its id once per outcome.
_REMEMBERED_LARGE: Final = 8
_COMPRESS_AT: Final = 4096
_MAX_PAYLOAD_BYTES: Final = 32 * 1024 * 1024  # inflating our own ids: a sanity bound
_PREFIX: Final = "q1"
_SHA256_BLOCK: Final = 64
_TAG_CHARS: Final = 43  # base64url of 32 bytes, unpadded
_SHAPE: Final = re.compile(r"q1\.([0-9a-f]{8})\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})")
_FUTURE_SKEW_MS: Final = 5 * 60 * 1000
"""How far in the future an id may be dated when its TTL is shorter than this."""
_MIN_SECRET_BYTES: Final = 32
# Compared with the secret lowercased and stripped of everything but letters and digits.
_PLACEHOLDERS: Final = frozenset({
    "changeme", "changemeinproduction", "secret", "password", "passwd", "mysecret",
    "supersecret", "topsecret", "secretkey", "yoursecret", "yoursecrethere", "qortexsecret",
    "default", "example", "insecure", "test", "testing", "dev", "development", "todo",
    "replaceme", "placeholder", "letmein", "admin", "qwerty", "hunter2",
})
_PLACEHOLDER_MARKERS: Final = ("changeme", "replaceme", "yoursecret", "placeholder",
                               "putyour", "insertyour", "notsecret")
"""Words no random key contains and every template secret does ("your-secret-here-...")."""
_SEQUENCES: Final = ("0123456789" * 8, "abcdefghijklmnopqrstuvwxyz" * 4,
                     "0123456789abcdefghijklmnopqrstuvwxyz" * 3,
                     "0123456789abcdef" * 6, "qwertyuiopasdfghjklzxcvbnm" * 3)
_PLACEHOLDER: Final = "is a placeholder"
_MAX_REPEAT_UNIT: Final = 8
_MIN_DISTINCT_BYTES: Final = 8
SECRET_FILE: Final = "selection.key"
# A JSON string literal, as json.dumps(..., ensure_ascii=False) writes one (C accelerated).
_str: Final = json.encoder.encode_basestring
_KIND_CODES: Final = {"select": "s", "rerank": "r", "next": "n"}
_KINDS: Final[dict[str, Literal["select", "rerank", "next"]]] = {
    "s": "select", "r": "rerank", "n": "next"}


def _seconds(ms: int) -> str:
    return str(ms // 1000) if ms % 1000 == 0 else str(ms / 1000)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(raw) != text:  # non-canonical trailing bits would be a second spelling
        raise ValueError("non-canonical base64")
    return raw


@dataclass(frozen=True, slots=True)
class SelectionClaims:
    learner: str
    nonce: str
    context: str | None
    """Canonical context JSON, or None for the global context."""
    arms: tuple[str, ...]
    """The arms shown, in display order (for select: the chosen arms, best first)."""
    issued_ms: int
    kind: Literal["select", "rerank", "next"]
    offered: tuple[str, ...] = ()
    """Other candidates offered to the select (empty beyond ``MAX_OFFERED``)."""
    means: tuple[float, ...] = ()
    """Rerank only: the posterior mean each shown arm was ranked by (display order, to
    1e-4). Click-only feedback reads its relevance estimates from here, not the client."""
    history: tuple[str | None, ...] = ()
    """Next-tool only: the (cut, padded) history the suggestion followed; None pads a
    history shorter than the model's order (the session start)."""
    policy: str | None = None
    """The strategy version that chose (``LearnerConfig.policy_version``); None in ids
    issued before 0.2 and in reranks and suggestions."""

    def covers(self, arm: str) -> bool:
        """Whether ``arm`` was part of this selection (shown, or offered to the select)."""
        return arm in self.arms or arm in self.offered

    def chose(self, arm: str) -> bool:
        """Whether ``arm`` was chosen: a select's chosen arms, or any result a rerank
        showed (the whole shown list counts as chosen)."""
        return arm in self.arms


def _payload(
    learner: str,
    nonce: str,
    context: str | None,
    arms: Sequence[str],
    issued: int,
    kind: Literal["select", "rerank", "next"],
    offered: Sequence[str],
    scaled_means: Sequence[int],
    history: Sequence[str | None] = (),
    policy: str | None = None,
) -> str:
    """The compact JSON payload, exactly as ``json.dumps(body, separators=(",", ":"),
    ensure_ascii=False)`` writes it, built by hand: a quarter of the encoder's cost on
    the select hot path (tests compare the two)."""
    parts = [f'{{"l":{_str(learner)},"n":"{nonce}","c":',
             "null" if context is None else _str(context),
             f',"a":[{",".join(map(_str, arms))}],"t":{issued},"k":"',
             _KIND_CODES[kind], '"']
    if offered:
        parts.append(f',"o":[{",".join(map(_str, offered))}]')
    if scaled_means:
        parts.append(f',"m":[{",".join(map(str, scaled_means))}]')
    if history:
        parts.append(f',"h":[{",".join("null" if h is None else _str(h) for h in history)}]')
    if policy is not None:
        parts.append(f',"v":{_str(policy)}')
    parts.append("}")
    return "".join(parts)


class HmacSha256:
    """HMAC-SHA256 (RFC 2104) under one key, with the keyed inner and outer hash states
    computed once: a 200-byte message costs about 0.5 us instead of ``hmac.digest``'s 1.3
    (which sets the key up again on every call). Tests check it against ``hmac.digest``.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _SHA256_BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class SelectionSigner:
    """Issues and verifies selection ids with HMAC-SHA256.

    Args:
        keys: signing keys, newest first. The first signs; all verify (key rotation).
        ttl_s: selection ids older than this are refused as expired; 0 disables expiry.
            A learner passes its own ``selection_ttl_s`` to ``verify``; this is the
            default for other callers.
        clock: the time in seconds since the epoch (issue times, expiry); tests inject one.
    """

    def __init__(
        self,
        keys: Sequence[bytes],
        ttl_s: float = 30 * 86400,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise ConfigError("a selection signer needs at least one key")
        for key in keys:
            if len(key) < _MIN_SECRET_BYTES:
                raise ConfigError(f"selection keys must be at least {_MIN_SECRET_BYTES} bytes")
        self._keys = {hashlib.sha256(k).hexdigest()[:8]: HmacSha256(k) for k in keys}
        self._kid = hashlib.sha256(keys[0]).hexdigest()[:8]
        self._mac = self._keys[self._kid]
        self.ttl_ms = int(ttl_s * 1000)
        self.clock = clock
        # Authentic ids seen lately: one feedback call checks its id more than once (the
        # server routes by kind, the learner checks arms). Learner and expiry are checked on
        # every call; only the signature and parsing are remembered.
        self._authentic: OrderedDict[str, SelectionClaims] = OrderedDict()
        self._authentic_large: OrderedDict[bytes, SelectionClaims] = OrderedDict()

    @classmethod
    def random(
        cls, ttl_s: float = 30 * 86400, *, clock: Callable[[], float] = time.time
    ) -> SelectionSigner:
        """A signer with a fresh random key (tests, in-memory learners)."""
        return cls([secrets.token_bytes(32)], ttl_s, clock=clock)

    def issue(
        self,
        learner: str,
        context: str | None,
        arms: Sequence[str],
        kind: Literal["select", "rerank", "next"] = "select",
        offered: Sequence[str] = (),
        means: Sequence[float] = (),
        history: Sequence[str | None] = (),
    ) -> tuple[str, SelectionClaims]:
        """A new selection id and its claims (what ``verify`` will return for it)."""
        nonce = _b64(secrets.token_bytes(16))
        issued = int(self.clock() * 1000)
        quantized: tuple[float, ...] = ()
        scaled: list[int] = []
        if len(means):
            if len(means) != len(arms):
                raise InvalidInput("means must give one value per arm")
            # Integers in 1e-4 units: compact, and what verify() reads back exactly.
            scaled = [round(float(m) * _MEAN_SCALE) for m in means]
            quantized = tuple(q / _MEAN_SCALE for q in scaled)
        token = self._seal(_payload(learner, nonce, context, arms, issued, kind, offered, scaled,
                                    history), compress=True, shown=len(arms))
        claims = SelectionClaims(learner, nonce, context, tuple(arms), issued, kind,
                                 tuple(offered), quantized, tuple(history))
        return token, claims

    def sign(
        self,
        learner: str,
        context: str | None,
        arms: Sequence[str],
        kind: Literal["select", "rerank", "next"] = "select",
        offered: Sequence[str] = (),
        *,
        history: Sequence[str | None] = (),
        policy: str | None = None,
    ) -> tuple[str, str]:
        """``issue`` without building the claims (``select``'s hot path never reads them):
        the id and its nonce (the decision's key)."""
        nonce = _b64(secrets.token_bytes(16))
        issued = int(self.clock() * 1000)
        return self._seal(_payload(learner, nonce, context, arms, issued, kind, offered, (),
                                   history, policy)), nonce

    def _seal(self, payload: str, compress: bool = False, shown: int = 0) -> str:
        raw = payload.encode("utf-8")
        if compress and len(raw) > _COMPRESS_AT:
            raw = zlib.compress(raw, 6)
        head = f"{_PREFIX}.{self._kid}.{_b64(raw)}"
        token = f"{head}.{_b64(self._mac.digest(head.encode('ascii')))}"
        if len(token) > MAX_TOKEN_CHARS:
            fit = f" (about {shown * MAX_TOKEN_CHARS * 9 // (len(token) * 10)} of these {shown} " \
                  "would fit)" if shown > 1 else ""
            raise LimitExceeded(
                f"the selection is too large to sign: its id would take {len(token) // 1024} "
                f"KiB, at most {MAX_TOKEN_CHARS // 1024} KiB{fit}; show fewer results "
                "(limit), or use shorter ids or a smaller context"
            )
        return token

    def verify(
        self,
        token: object,
        learner: str,
        now_ms: int | None = None,
        *,
        ttl_s: float | None = None,
    ) -> SelectionClaims:
        """Return the claims of a genuine, unexpired id issued for ``learner``.

        Args:
            ttl_s: the learner's TTL (0: never expires); None uses the signer's.

        An id dated in the future is accepted up to the TTL ahead (at least 5 minutes):
        the signature proves this server issued it, so a clock stepped back (an NTP
        correction) must not lose a genuine feedback.

        Raises:
            InvalidSelection: malformed, altered, forged, foreign-key or other-learner ids.
            SelectionExpired: an authentic id older than the TTL.
        """
        if not isinstance(token, str):
            raise InvalidSelection("selection_id must be a string")
        if len(token) <= _REMEMBER_CHARS:
            claims = self._authentic.get(token)
            if claims is None:
                claims = self._authenticate(token)
                self._authentic[token] = claims
                if len(self._authentic) > _REMEMBERED:
                    self._authentic.popitem(last=False)
        elif len(token) > MAX_TOKEN_CHARS:
            claims = self._authenticate(token)  # refuses it before hashing a huge string
        else:
            digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
            claims = self._authentic_large.get(digest)
            if claims is None:
                claims = self._authenticate(token)
                self._authentic_large[digest] = claims
                if len(self._authentic_large) > _REMEMBERED_LARGE:
                    self._authentic_large.popitem(last=False)
        if claims.learner != learner:
            raise InvalidSelection(
                "selection_id belongs to another learner; send feedback to the learner "
                "that made the selection"
            )
        now = int(self.clock() * 1000) if now_ms is None else now_ms
        ttl_ms = self.ttl_ms if ttl_s is None else int(ttl_s * 1000)
        if ttl_ms and claims.issued_ms - now > max(ttl_ms, _FUTURE_SKEW_MS):
            raise InvalidSelection("selection_id is dated in the future beyond its lifetime")
        if ttl_ms and now - claims.issued_ms > ttl_ms:
            raise SelectionExpired(
                f"selection_id is older than {_seconds(ttl_ms)} s; select again"
            )
        return claims

    def _authenticate(self, token: str) -> SelectionClaims:
        """Shape, key, canonical base64 and a constant-time tag check, then parse."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidSelection("selection_id is too long to be one this server issued")
        match = _SHAPE.fullmatch(token)
        if match is None:
            raise InvalidSelection("selection_id is malformed; quote it exactly as returned")
        kid, body, tag = match.groups()
        mac = self._keys.get(kid)
        if mac is None:
            raise InvalidSelection("selection_id was not issued by this server (unknown key)")
        head = token[: -(_TAG_CHARS + 1)]
        try:
            given = _unb64(tag)
            raw = _unb64(body)
        except ValueError:
            raise InvalidSelection("selection_id is malformed; quote it exactly as returned") \
                from None
        if not hmac.compare_digest(given, mac.digest(head.encode("ascii"))):
            raise InvalidSelection("selection_id signature does not match; it was altered")
        try:
            if raw[:1] != b"{":  # deflated (see the module docstring)
                inflate = zlib.decompressobj()
                raw = inflate.decompress(raw, _MAX_PAYLOAD_BYTES)
                if not inflate.eof or inflate.unconsumed_tail or inflate.unused_data:
                    raise ValueError("not one complete deflated payload")
            data = json.loads(raw)
            claims = SelectionClaims(
                learner=str(data["l"]), nonce=str(data["n"]), context=data["c"],
                arms=tuple(str(a) for a in data["a"]), issued_ms=int(data["t"]),
                kind=_KINDS[data["k"]],
                offered=tuple(str(a) for a in data.get("o", ())),
                means=tuple(int(q) / _MEAN_SCALE for q in data.get("m", ())),
                history=tuple(None if h is None else str(h) for h in data.get("h", ())),
                policy=None if (v := data.get("v")) is None else str(v),
            )
        except (ValueError, KeyError, TypeError, zlib.error):  # signed by us: a format change
            raise InvalidSelection("selection_id payload is not understood") from None
        return claims


def _weakness(secret: bytes) -> str | None:
    """Why ``secret`` is obviously not random, or None. Catches what people paste by hand
    (one character repeated, a placeholder word, "changeme" four times, 0123...), never a
    key made by a random generator; it is no strength meter."""
    text = secret.decode("utf-8", "replace").lower()
    word = "".join(c for c in text if c.isalnum())
    # Word checks only for text that is mostly letters and digits (random bytes decode to
    # a few stray letters, which may spell anything).
    wordy = bool(word) and len(word) * 2 >= len(text)
    if wordy and (word in _PLACEHOLDERS or any(m in word for m in _PLACEHOLDER_MARKERS)):
        return _PLACEHOLDER
    # "aaaa...", "abab...", "Password1234Password1234": a whole number of copies of one
    # part (a string is such a repetition exactly when it occurs inside itself doubled,
    # first and last characters removed), or a short part cut off anywhere.
    if len(secret) > 1 and secret in (secret + secret)[1:-1]:
        return "is one pattern repeated"
    for unit in range(1, _MAX_REPEAT_UNIT + 1):
        if len(secret) >= 2 * unit and secret == (secret[:unit] * (len(secret) // unit + 1))[
            : len(secret)
        ]:
            return "is one pattern repeated"
    if wordy and any(word in seq for seq in _SEQUENCES):
        return "is a run of consecutive characters"
    if len(set(secret)) < _MIN_DISTINCT_BYTES:
        return f"uses fewer than {_MIN_DISTINCT_BYTES} different characters"
    if wordy and any(len(word) >= 2 * len(p) and word == (p * (len(word) // len(p) + 1))[
        : len(word)
    ] for p in _PLACEHOLDERS):
        return "is a placeholder repeated"
    return None


def _check_secret(secret: bytes, source: str) -> bytes:
    """``secret`` if it may sign selection ids; never echoes it in the refusal.

    Raises:
        ConfigError: too short or obviously weak (one line, the fix included).
    """
    fix = "set a random secret of 32+ bytes, e.g. the output of `openssl rand -hex 32`"
    weakness = _weakness(secret.strip())
    if len(secret) < _MIN_SECRET_BYTES and weakness != _PLACEHOLDER:
        raise ConfigError(f"{source} must be at least {_MIN_SECRET_BYTES} bytes long; {fix}")
    if weakness is not None:
        raise ConfigError(f"{source} {weakness}; {fix}")
    return secret


def _warn_if_exposed(path: Path) -> None:
    """Warn (the key is still used) when the key file could be read or swapped by others:
    anyone who reads it can forge selection ids."""
    try:
        if path.is_symlink():
            log.warning("selection_key_is_a_symlink", path=str(path),
                        fix="replace the link with the file itself (mode 0600)")
        mode = path.stat().st_mode
    except OSError:
        return  # reading it fails just after with its own error
    if mode & 0o077:
        log.warning("selection_key_readable_by_others", path=str(path),
                    mode=f"{mode & 0o777:04o}", fix=f"chmod 600 {path}")


def load_secret(state_dir: Path, env_secret: str | None) -> bytes:
    """The selection key: ``QORTEX_SECRET`` if set, else ``<state_dir>/selection.key``,
    generated once (32 random bytes, hex, mode 0600) and shared by every process that uses
    the same state directory."""
    if env_secret:
        return _check_secret(env_secret.encode("utf-8"), "QORTEX_SECRET")
    path = state_dir / SECRET_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = state_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link() fails if another process won the race; theirs is the key then.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    _warn_if_exposed(path)
    return _check_secret(path.read_bytes().strip(), str(path.name))
