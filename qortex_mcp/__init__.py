"""qortex-mcp: feedback learning for AI agents, over MCP or as a library."""

from importlib.metadata import PackageNotFoundError, version

from qortex_mcp.errors import QortexError

try:
    __version__ = version("qortex-mcp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["QortexError", "__version__"]
