"""Command line entry point (placeholder until the server lands)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("qortex-mcp: the MCP server is not built yet", file=sys.stderr)
    return 1
