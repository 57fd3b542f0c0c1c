"""Logging: structlog events, carried by the standard library's loggers, on stderr.

stdout belongs to the MCP protocol in stdio mode. structlog's own default writes to stdout,
so the library never relies on structlog's global configuration: ``get_logger`` wraps a
``logging.Logger`` (``qortex_mcp.*``), whose output goes wherever the host sends standard
logging (stderr by default, warnings and up). Entry points call ``configure_logging``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Final

import structlog

__all__ = ["configure_logging", "get_logger"]

_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                  "error": logging.ERROR}

_PROCESSORS: Final[list[Any]] = [
    structlog.stdlib.filter_by_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    structlog.processors.format_exc_info,
    structlog.processors.KeyValueRenderer(key_order=["ts", "event"], sort_keys=True),
]


def get_logger(name: str) -> Any:
    """A structlog logger for module ``name`` that writes through ``logging``."""
    return structlog.wrap_logger(
        logging.getLogger(name), processors=_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
    )


class _LevelName(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname.lower()} {record.name}: {record.getMessage()}"
        # Another library's logger.exception() (the MCP SDK's for a crashed tool, uvicorn's)
        # carries its exception in the record, not the message: without this the log would
        # say an error happened and never which one. stderr only, never a client.
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def configure_logging(level: str = "info") -> None:
    """Send every log line (ours, the MCP SDK's, uvicorn's) to stderr at ``level``+."""
    numeric = _LEVELS.get(level.lower(), logging.INFO)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelName())
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.getLogger("qortex_mcp").setLevel(numeric)
    logging.captureWarnings(True)
