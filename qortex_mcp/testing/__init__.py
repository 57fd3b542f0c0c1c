"""Test support shipped with the package but never used by it: the reliability suite's
fault-injecting store and the launcher that serves with it (``faults``), and ``FakeClock``
(``qortex_mcp.learning.clock``) to move a learner's time instead of sleeping."""

from qortex_mcp.learning.clock import FakeClock

__all__ = ["FakeClock"]
