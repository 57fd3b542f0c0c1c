"""``qortex-mcp``: serve MCP (stdio by default, or HTTP), or look after the stored learning.

Exit codes: 0 success; 1 the command ran and found a problem (unknown learner, replay
mismatch, an import that conflicted); 2 bad configuration or arguments, or the store could
not be opened (one line on stderr, no traceback); 130 interrupted.

In stdio mode stdout carries only MCP messages: every human line goes to stderr, and
logging is configured before anything else runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import anyio

from qortex_mcp import __version__
from qortex_mcp.config import STORE_KINDS, Settings
from qortex_mcp.errors import ConfigError, QortexError, StoreError
from qortex_mcp.logging import configure_logging, get_logger

__all__ = ["build_parser", "main"]

log = get_logger("qortex_mcp.cli")

_SETTING_FLAGS = {  # flag destination -> Settings field
    "store": "store", "state_dir": "state_dir", "database_url": "database_url",
    "log_level": "log_level", "tools": "tools", "config": "config_file",
}


def _setting_flags(parser: argparse.ArgumentParser, *, top: bool,
                   store_urls: bool = False) -> None:
    # Subcommands repeat the flags with SUPPRESS defaults, so a flag given before or after
    # the command name both work and neither overwrites the other with None.
    default: Any = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("settings (each overrides its environment variable)")
    if store_urls:
        group.add_argument("--store", default=default, metavar="KIND|URL",
                           help="QORTEX_STORE, or the store to read: sqlite:///PATH, a .db "
                           "file, json:///PATH, postgresql://...")
    else:
        group.add_argument("--store", choices=STORE_KINDS, default=default,
                           help="QORTEX_STORE")
    group.add_argument("--state-dir", default=default, metavar="DIR", help="QORTEX_STATE_DIR")
    group.add_argument("--database-url", default=default, metavar="URL",
                       help="DATABASE_URL (prefer the variable: flags show in ps)")
    group.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                       default=default, help="QORTEX_LOG_LEVEL")
    group.add_argument("--tools", default=default, metavar="LIST",
                       help="QORTEX_TOOLS: comma list of tools to expose")
    group.add_argument("--config", default=default, metavar="FILE",
                       help="QORTEX_CONFIG: TOML file of learner settings")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qortex-mcp",
        description="Feedback learning for AI agents over MCP. Without a command: serve "
        "MCP over stdio.")
    parser.add_argument("--version", action="version", version=f"qortex-mcp {__version__}")
    _setting_flags(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, store_urls: bool = False
                ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _setting_flags(sub, top=False, store_urls=store_urls)
        return sub

    serve = command("serve", "serve MCP over stdio (default) or streamable HTTP")
    serve.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    serve.add_argument("--host", default="127.0.0.1",
                       help="HTTP address (default 127.0.0.1; others need QORTEX_HTTP_TOKEN)")
    serve.add_argument("--port", type=int, default=8765, help="HTTP port (0 picks a free one)")
    serve.add_argument("--path", default="/mcp", help="HTTP endpoint path")
    dash = command("dashboard", "serve the dashboard over a store that other processes (stdio "
                   "servers) write", store_urls=True)
    dash.add_argument("--host", default="127.0.0.1",
                      help="HTTP address (default 127.0.0.1; others need QORTEX_HTTP_TOKEN)")
    dash.add_argument("--port", type=int, default=8766, help="HTTP port (0 picks a free one)")
    status = command("status", "where the state lives and what it holds")
    status.add_argument("--limit", type=_positive, default=50,
                        help="most learners to list (default 50)")
    status.add_argument("--ingest", metavar="URL",
                        help="also show a stream consumer's lag (redis://... with --stream and "
                        "--group, or nats://... with --subject and --durable)")
    for flag in ("--stream", "--group", "--subject", "--durable"):
        status.add_argument(flag, help=argparse.SUPPRESS)
    inspect = command("inspect", "a learner's arms: posterior mean, credible interval, "
                      "pulls, reward rate")
    inspect.add_argument("learner")
    inspect.add_argument("--context", metavar="JSON", help="posteriors in this context")
    inspect.add_argument("--limit", type=_positive, default=50, help="most arms to show")
    decisions = command("decisions", "a learner's decision log: what each select and rerank "
                        "offered and chose, with propensities")
    decisions.add_argument("learner")
    decisions.add_argument("--after", type=int, default=0, metavar="SEQ",
                           help="only decisions after this one (the last line names the next)")
    decisions.add_argument("--limit", type=_positive, default=50,
                           help="most decisions to show (default 50)")
    export = command("export", "write all events and state as JSON lines")
    export.add_argument("--learner", action="append", metavar="NAME",
                        help="only this learner (repeatable)")
    export.add_argument("--output", "-o", metavar="FILE", help="write here (default stdout)")
    imp = command("import", "apply an export (idempotent: importing twice changes nothing)")
    imp.add_argument("file", help="the export file, or - for stdin")
    replay = command("replay", "rebuild posteriors from the events and report mismatches")
    replay.add_argument("learners", nargs="*", metavar="LEARNER", help="default: all")
    ingest = command("ingest", "apply feedback from a Redis stream or a NATS JetStream subject "
                     "(exactly once; acknowledged after commit)")
    ingest.add_argument("url", metavar="URL", help="redis://HOST:PORT/DB or nats://HOST:PORT")
    ingest.add_argument("--stream", help="Redis: the stream key")
    ingest.add_argument("--group", help="Redis: the consumer group (created if missing)")
    ingest.add_argument("--subject", help="NATS: the subject")
    ingest.add_argument("--durable", help="NATS: the durable consumer name")
    ingest.add_argument("--once", action="store_true",
                        help="drain what is there, then exit")
    ingest.add_argument("--create-learners", action="store_true",
                        help="bare feedback may create learners (default: UNKNOWN_LEARNER)")
    ingest.add_argument("--status", action="store_true",
                        help="print the pending count, lag and oldest pending age, and exit")
    ingest.add_argument("--consumer", metavar="NAME",
                        help="this consumer's name in the group (default host-pid; a stable "
                        "name resumes its own pending messages at restart)")
    ingest.add_argument("--batch-size", type=_positive, default=256,
                        help="most messages per batch and transaction (default 256)")
    ingest.add_argument("--block-ms", type=_positive, default=100,
                        help="longest wait for a batch to fill (default 100)")
    ingest.add_argument("--claim-idle-ms", type=_positive, default=30_000,
                        help="take over messages pending this long elsewhere (default 30000)")
    ingest.add_argument("--max-deliveries", type=_positive, default=5,
                        help="dead-letter a message failing retryably this often (default 5)")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """The environment, overridden by the flags given.

    Raises:
        ConfigError: a bad value.
    """
    flags = {field: getattr(args, dest, None) for dest, field in _SETTING_FLAGS.items()}
    if args.command == "dashboard" and flags["store"] not in (None, *STORE_KINDS):
        flags["store"] = None  # a URL: commands.dashboard opens it (see store_from_url)
    return Settings.from_env(**flags)


def _fail(message: str, code: int) -> int:
    print(f"qortex-mcp: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    configure_logging(settings.log_level)
    if settings.log_level == "info":
        # The SDK logs every tool refusal at INFO; the boundary already logs each call once.
        logging.getLogger("mcp.server.mcpserver").setLevel(logging.WARNING)
    from qortex_mcp import commands

    try:
        code: int = anyio.run(commands.run, args, settings)
    except (ConfigError, StoreError) as exc:
        return _fail(str(exc), 2)
    except QortexError as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    except Exception:  # the top level: one clear line, the traceback in the log
        log.exception("crashed", command=args.command or "serve")
        return _fail("unexpected error (the log above has the details)", 1)
    return code


if __name__ == "__main__":  # pragma: no cover - see __main__.py
    sys.exit(main())
