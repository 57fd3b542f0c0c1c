"""Settings from the environment (mirrored by CLI flags) and the optional TOML file.

``Settings.from_env`` is the one function of the package that reads the environment: the
server (``qortex-mcp``) and ``Learner.create(config)`` without a store both resolve their
store and selection key through it. A learner given a store reads no variable at all.

Environment: ``QORTEX_STORE`` (sqlite | json | memory | postgres), ``QORTEX_STATE_DIR``
(absolute; default a per-user data directory, never the working directory),
``DATABASE_URL``, ``QORTEX_SECRET``, ``QORTEX_LOG_LEVEL``, ``QORTEX_TOOLS``,
``QORTEX_CONFIG``, ``QORTEX_TOOL_PREFIX``, ``QORTEX_HTTP_TOKEN``, ``QORTEX_SQLITE_SYNCHRONOUS``,
and the resource limits ``QORTEX_MAX_OPEN_LEARNERS``, ``QORTEX_MEMORY_BUDGET_MB``,
``QORTEX_FEEDBACK_PER_MINUTE``, ``QORTEX_FEEDBACK_PER_ARM_PER_MINUTE`` (0: no cap).
Observing (HTTP only): ``QORTEX_METRICS`` (1 default, 0 turns ``/metrics`` and its counting
off), ``QORTEX_METRICS_PER_ARM`` (0 default: no per-arm series; N: at most N in total),
``QORTEX_DASHBOARD_POLL_S`` (how often the dashboard page polls, default 5),
``QORTEX_OTEL`` (0 default; 1 exports OpenTelemetry traces, needs the ``otel`` extra).
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from qortex_mcp.errors import ConfigError, preview
from qortex_mcp.learning.stores.dsn import mask_dsn

__all__ = ["STORE_KINDS", "Settings", "default_state_dir", "mask_dsn"]

STORE_KINDS: Final = ("sqlite", "json", "memory", "postgres")
StoreKind = Literal["sqlite", "json", "memory", "postgres"]
_LOG_LEVELS: Final = ("debug", "info", "warning", "error")
# Resource limits: environment variable, field, default, smallest value (0 = no cap).
_LIMITS: Final = (
    ("QORTEX_MAX_OPEN_LEARNERS", "max_open_learners", 1000, 1),
    ("QORTEX_MEMORY_BUDGET_MB", "memory_budget_mb", 1024, 1),
    ("QORTEX_FEEDBACK_PER_MINUTE", "feedback_per_minute", 1200, 0),
    ("QORTEX_FEEDBACK_PER_ARM_PER_MINUTE", "feedback_per_arm_per_minute", 120, 0),
)


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """The per-user data directory: XDG on Linux, Application Support on macOS."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "qortex-mcp"
    if sys.platform == "win32":
        return Path(env.get("APPDATA") or home / "AppData" / "Roaming") / "qortex-mcp"
    xdg = env.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share"
    return base / "qortex-mcp"


@dataclass(frozen=True)
class Settings:
    """Everything configurable about a server or a default learner."""

    store: StoreKind = "sqlite"
    state_dir: Path = field(default_factory=default_state_dir)
    database_url: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    log_level: str = "info"
    tools: tuple[str, ...] | None = None
    config_file: Path | None = None
    tool_prefix: str = "qortex_"
    http_token: str | None = field(default=None, repr=False)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    learners: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per-learner settings from the TOML file (``[learners.NAME]``), ``"*"`` for defaults."""
    max_open_learners: int = 1000
    """Learners kept open at once; idle ones beyond are closed, least recently used first."""
    memory_budget_mb: int = 1024
    """In-memory learner state of all open learners together (an estimate), in MiB."""
    feedback_per_minute: int = 1200
    """Per learner: the most feedback rows per minute (0: no cap); TOML options win."""
    feedback_per_arm_per_minute: int = 120
    """Per learner and arm: the most feedback rows per minute (0: no cap)."""
    metrics: bool = True
    """Serve ``GET /metrics`` over HTTP and count every tool call for it."""
    metrics_per_arm: int = 0
    """Per-arm metric series in total (0: none; see ``qortex_mcp.observe.metrics``)."""
    dashboard_poll_s: float = 5.0
    """How often an open dashboard page asks for fresh data, in seconds."""
    stream_lag: tuple[tuple[str, str, str], ...] = ()
    """``QORTEX_STREAM_LAG``: stream consumers whose backlog ``/metrics`` and the dashboard
    report, as (broker URL, stream or subject, group or durable)."""
    otel: bool = False
    """Export OpenTelemetry traces of tool calls (``qortex_mcp.observe.tracing``)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read the environment; keyword overrides (from CLI flags) win when not None.

        Raises:
            ConfigError: a value is invalid (named in the message).
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if store := env.get("QORTEX_STORE"):
            values["store"] = store.strip().lower()
        if state_dir := env.get("QORTEX_STATE_DIR"):
            values["state_dir"] = state_dir
        else:
            values["state_dir"] = default_state_dir(env)
        values["database_url"] = env.get("DATABASE_URL") or None
        values["secret"] = env.get("QORTEX_SECRET") or None
        if level := env.get("QORTEX_LOG_LEVEL"):
            values["log_level"] = level
        if tools := env.get("QORTEX_TOOLS"):
            values["tools"] = tools
        if config := env.get("QORTEX_CONFIG"):
            values["config_file"] = config
        if prefix := env.get("QORTEX_TOOL_PREFIX"):
            values["tool_prefix"] = prefix
        values["http_token"] = env.get("QORTEX_HTTP_TOKEN") or None
        if sync := env.get("QORTEX_SQLITE_SYNCHRONOUS"):
            values["sqlite_synchronous"] = sync.strip().upper()
        for var, name, _, _ in _LIMITS:
            if raw := env.get(var):
                values[name] = raw
        if (metrics := env.get("QORTEX_METRICS")) is not None:
            values["metrics"] = metrics
        if per_arm := env.get("QORTEX_METRICS_PER_ARM"):
            values["metrics_per_arm"] = per_arm
        if (otel := env.get("QORTEX_OTEL")) is not None:
            values["otel"] = otel
        if poll := env.get("QORTEX_DASHBOARD_POLL_S"):
            values["dashboard_poll_s"] = poll
        if lag := env.get("QORTEX_STREAM_LAG"):
            values["stream_lag"] = lag
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.build(**values)

    @classmethod
    def build(cls, **values: Any) -> Settings:
        """Validate and normalise raw values (strings from env or flags are fine)."""
        store = str(values.pop("store", "sqlite")).lower()
        if store not in STORE_KINDS:
            raise ConfigError(f"QORTEX_STORE must be one of {', '.join(STORE_KINDS)}, "
                              f"got {preview(store)}")
        state_dir = Path(values.pop("state_dir", default_state_dir())).expanduser()
        if not state_dir.is_absolute():
            raise ConfigError("QORTEX_STATE_DIR must be an absolute path")
        level = str(values.pop("log_level", "info")).lower()
        if level not in _LOG_LEVELS:
            raise ConfigError(f"QORTEX_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}")
        tools = values.pop("tools", None)
        if isinstance(tools, str):
            tools = tuple(t.strip() for t in tools.split(",") if t.strip())
        sync = str(values.pop("sqlite_synchronous", "FULL")).upper()
        if sync not in ("FULL", "NORMAL"):
            raise ConfigError("QORTEX_SQLITE_SYNCHRONOUS must be FULL or NORMAL")
        prefix = str(values.pop("tool_prefix", "qortex_"))
        if not re.fullmatch(r"[A-Za-z0-9_]{0,32}", prefix):
            raise ConfigError("QORTEX_TOOL_PREFIX may use letters, digits and _ (32 at most)")
        for var, name, default, low in _LIMITS:
            values[name] = _limit(var, values.pop(name, default), low)
        values["metrics"] = _flag("QORTEX_METRICS", values.pop("metrics", True))
        values["otel"] = _flag("QORTEX_OTEL", values.pop("otel", False))
        values["metrics_per_arm"] = _limit("QORTEX_METRICS_PER_ARM",
                                           values.pop("metrics_per_arm", 0), 0)
        values["dashboard_poll_s"] = _seconds("QORTEX_DASHBOARD_POLL_S",
                                              values.pop("dashboard_poll_s", 5.0))
        values["stream_lag"] = _stream_lag(values.pop("stream_lag", ()))
        config_file = values.pop("config_file", None)
        learners: Mapping[str, Mapping[str, Any]] = values.pop("learners", {})
        if config_file is not None:
            config_file = Path(config_file).expanduser()
            learners = _read_toml(config_file)
        if store == "postgres" and not values.get("database_url"):
            raise ConfigError("QORTEX_STORE=postgres needs DATABASE_URL")
        return cls(store=store, state_dir=state_dir, log_level=level, tools=tools,  # type: ignore[arg-type]
                   sqlite_synchronous=sync, tool_prefix=prefix,  # type: ignore[arg-type]
                   config_file=config_file, learners=learners, **values)

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def learner_options(self, name: str) -> dict[str, Any]:
        """TOML options for one learner: the ``"*"`` defaults overlaid by its own table."""
        merged = dict(self.learners.get("*", {}))
        merged.update(self.learners.get(name, {}))
        return merged

    @property
    def sqlite_path(self) -> Path:
        return self.state_dir / "qortex.db"

    @property
    def json_path(self) -> Path:
        return self.state_dir / "qortex.json"

    @property
    def store_url(self) -> str:
        """The store these settings name, as ``qortex_mcp.learning.open_store`` takes it."""
        if self.store == "sqlite":
            sync = self.sqlite_synchronous.lower()
            return f"sqlite://{quote(str(self.sqlite_path))}?synchronous={sync}"
        if self.store == "json":
            return f"json://{quote(str(self.json_path))}"
        if self.store == "postgres":
            assert self.database_url is not None  # build checks this
            return self.database_url
        return "memory://"

    def location(self) -> str:
        """Where state lives, safe to show (passwords masked)."""
        if self.store == "sqlite":
            return str(self.sqlite_path)
        if self.store == "json":
            return str(self.json_path)
        if self.store == "postgres":
            return mask_dsn(self.database_url or "")
        return "process memory (not persisted)"


def _limit(var: str, raw: object, low: int) -> int:
    """A whole number >= ``low`` from an environment string, a flag or a keyword."""
    try:
        if isinstance(raw, str):
            value = int(raw.strip())
        elif isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        else:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{var} must be a whole number, got {preview(raw)}") from None
    if value < low:
        raise ConfigError(f"{var} must be at least {low}" + (" (0: no cap)" if low == 0 else ""))
    return value


def _flag(var: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{var} must be 1 or 0, got {preview(raw)}")


def _seconds(var: str, raw: object) -> float:
    try:
        value = float(raw) if isinstance(raw, str | int | float) and \
            not isinstance(raw, bool) else -1.0
    except ValueError:
        value = -1.0
    if not 0.2 <= value <= 3600:
        raise ConfigError(f"{var} must be a number of seconds from 0.2 to 3600, "
                          f"got {preview(raw)}")
    return value


def _read_toml(path: Path) -> dict[str, dict[str, Any]]:
    """``[defaults]`` and ``[learners.NAME]`` tables; anything else is refused."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read QORTEX_CONFIG {path.name}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"QORTEX_CONFIG {path.name} is not valid TOML: {exc}") from None
    unknown = set(data) - {"defaults", "learners"}
    if unknown:
        raise ConfigError(f"QORTEX_CONFIG has unknown tables: {', '.join(sorted(unknown))}")
    out: dict[str, dict[str, Any]] = {"*": dict(data.get("defaults", {}))}
    learners = data.get("learners", {})
    if not isinstance(learners, dict):
        raise ConfigError("QORTEX_CONFIG [learners] must be a table of tables")
    for name, table in learners.items():
        if not isinstance(table, dict):
            raise ConfigError(f"QORTEX_CONFIG [learners.{name}] must be a table")
        out[name] = dict(table)
    return out


_LAG_NAMES: Final = {"redis": ("stream", "group"), "nats": ("subject", "durable")}


def _stream_lag(raw: object) -> tuple[tuple[str, str, str], ...]:
    """``QORTEX_STREAM_LAG``: space-separated ``redis://HOST:PORT/DB?stream=S&group=G`` or
    ``nats://HOST:PORT?subject=S&durable=D`` entries (or such tuples already parsed)."""
    if not isinstance(raw, str):
        return tuple(raw)  # type: ignore[arg-type]
    out = []
    for entry in raw.split():
        parts = urlsplit(entry)
        names = _LAG_NAMES.get(parts.scheme)
        query = dict(parse_qsl(parts.query))
        if names is None or not all(query.get(n) for n in names) or set(query) - set(names):
            raise ConfigError(
                f"QORTEX_STREAM_LAG entry {entry[:80]!r} must be redis://HOST:PORT/DB?"
                "stream=NAME&group=NAME or nats://HOST:PORT?subject=NAME&durable=NAME")
        out.append((urlunsplit(parts._replace(query="")), query[names[0]], query[names[1]]))
    return tuple(out)
