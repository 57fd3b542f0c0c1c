"""Moved to ``qortex_mcp.rerank.clicks`` (``ClickModel`` is also ``qortex_mcp.rerank.ClickModel``);
this name stays for one release so existing imports keep working, with a warning."""

import warnings

from qortex_mcp.rerank.clicks import MIN_WEIGHT, ClickModel, reciprocal_rank

__all__ = ["MIN_WEIGHT", "ClickModel", "reciprocal_rank"]

warnings.warn("qortex_mcp.clicks moved to qortex_mcp.rerank.clicks", DeprecationWarning,
              stacklevel=2)
