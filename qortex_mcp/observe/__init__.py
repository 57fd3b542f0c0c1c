"""Looking at what was learned: Prometheus metrics, a REST API, MCP resources, a dashboard.

The web parts are Starlette apps served beside the MCP endpoint by ``serve --transport
http`` (``qortex_mcp.observe.app``), or alone by ``qortex-mcp dashboard``. ``/metrics``
needs the ``observe`` extra (``prometheus_client``); ``metrics_available()`` says whether it
is installed. Nothing here is imported by the learning library.
"""

from __future__ import annotations

import importlib.util

__all__ = ["metrics_available"]


def metrics_available() -> bool:
    """Whether ``prometheus_client`` (the ``observe`` extra) is installed."""
    return importlib.util.find_spec("prometheus_client") is not None
