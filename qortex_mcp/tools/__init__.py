"""The ten qortex tools as thin adapters over the learning library.

``ALL_TOOLS`` lists them in the order a server registers them; each ``ToolSpec`` binds its
function to a ``QortexRuntime``. Registration (names, prefix, subset) is ``qortex_mcp.server``.
"""

from qortex_mcp.tools.base import ToolSpec
from qortex_mcp.tools.boundary import ERROR_META_KEY, ToolBoundary
from qortex_mcp.tools.inspection import INSPECTION_TOOLS
from qortex_mcp.tools.loop import LOOP_TOOLS
from qortex_mcp.tools.maintenance import MAINTENANCE_TOOLS
from qortex_mcp.tools.sequence import SEQUENCE_TOOLS

__all__ = ["ALL_TOOLS", "ERROR_META_KEY", "ToolBoundary", "ToolSpec"]

ALL_TOOLS: tuple[ToolSpec, ...] = (*LOOP_TOOLS, *SEQUENCE_TOOLS, *INSPECTION_TOOLS,
                                   *MAINTENANCE_TOOLS)
