"""The dashboard pages (being built)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.routing import BaseRoute

from qortex_mcp.learning import LearnerRegistry

__all__ = ["dashboard_routes"]


def dashboard_routes(registry: Callable[[], LearnerRegistry], *, poll_s: float
                     ) -> list[BaseRoute]:
    return []
