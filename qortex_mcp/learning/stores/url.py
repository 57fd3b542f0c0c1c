"""Open a store from a URL: the library's one way to say where state lives.

``open_store("sqlite:///var/lib/qortex.db")`` and its siblings build an uninitialized store
(``async with open_store(url) as store:`` or ``await store.initialize()`` next). The URL is
all it reads: no environment variable, no file outside the store (the server turns its
``Settings`` into one of these URLs, ``Settings.store_url``).

=========================================  ===============================================
``sqlite:///abs/path.db``                  SQLite file at ``/abs/path.db``
``sqlite://rel/path.db``                   relative to the working directory
``sqlite:///path.db?synchronous=normal``   ``PRAGMA synchronous`` (``full`` by default)
``json:///abs/path.json``                  the debugging JSON file (same path rules)
``memory://``                              process memory, gone at exit
``postgresql://user@host/db?schema=name``  PostgreSQL (the ``postgres`` extra); ``schema``
                                           defaults to ``qortex``, every other parameter
                                           goes to the driver as given
=========================================  ===============================================

Percent-escapes in paths are decoded (``%20`` is a space). Anything else (an unknown
scheme, an empty path, an unknown option) raises ``ConfigError`` naming what is accepted.
"""

from __future__ import annotations

from typing import Final, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from qortex_mcp.errors import ConfigError, preview
from qortex_mcp.learning.stores.base import LearningStore
from qortex_mcp.learning.stores.dsn import mask_dsn
from qortex_mcp.learning.stores.json import JsonLearningStore
from qortex_mcp.learning.stores.memory import MemoryLearningStore
from qortex_mcp.learning.stores.sqlite import SqliteLearningStore

__all__ = ["SCHEMES", "open_store"]

SCHEMES: Final = ("sqlite", "json", "memory", "postgresql", "postgres")
_SYNCHRONOUS: Final[dict[str, Literal["FULL", "NORMAL"]]] = {"full": "FULL", "normal": "NORMAL"}


def open_store(url: str) -> LearningStore:
    """An uninitialized store for ``url`` (the table in this module's docstring).

    Raises:
        ConfigError: not a URL of one of ``SCHEMES``, or a path or option it cannot use.
    """
    if not isinstance(url, str):
        raise ConfigError(f"a store URL must be a string, got {type(url).__name__}")
    scheme, sep, _ = url.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise ConfigError(f"unknown store URL {preview(mask_dsn(url))}; it must start with "
                          "sqlite://, json://, memory:// or postgresql://")
    if scheme in ("postgresql", "postgres"):
        return _postgres(url)
    parts = urlsplit(url)
    options = _options(parts.query, scheme)
    if scheme == "memory":
        if parts.netloc or parts.path:
            raise ConfigError(f"memory:// takes no path, got {preview(url)}")
        return MemoryLearningStore()
    path = unquote(parts.netloc + parts.path)
    if not path or path.endswith("/"):
        raise ConfigError(f"{scheme}:// needs a file path, got {preview(url)}")
    if scheme == "json":
        return JsonLearningStore(path)
    sync = options.get("synchronous", "full")
    if sync.lower() not in _SYNCHRONOUS:
        raise ConfigError(f"synchronous must be full or normal, got {preview(sync)}")
    return SqliteLearningStore(path, synchronous=_SYNCHRONOUS[sync.lower()])


def _options(query: str, scheme: str) -> dict[str, str]:
    allowed = ("synchronous",) if scheme == "sqlite" else ()
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) or "none"
        raise ConfigError(f"unknown {scheme}:// option {preview(unknown[0])}; "
                          f"accepted: {accepted}")
    return options


def _postgres(url: str) -> LearningStore:
    try:
        from qortex_mcp.learning.postgres import PostgresLearningStore
        from qortex_mcp.learning.postgres.sql import check_schema
    except ImportError as exc:
        raise ConfigError("a postgresql:// store needs the postgres extra "
                          "(pip install 'qortex-mcp[postgres]')") from exc

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = "qortex"
    rest: list[tuple[str, str]] = []
    for key, value in query:
        if key == "schema":
            schema = value
        else:
            rest.append((key, value))
    try:
        check_schema(schema)
    except ValueError as exc:
        raise ConfigError(f"{exc}, got {preview(schema)}") from None
    dsn = urlunsplit(parts._replace(query=urlencode(rest)))
    return PostgresLearningStore(dsn, schema=schema)
