"""Test support shipped with the package but never used by it: the reliability suite's
fault-injecting store and the launcher that serves with it (``faults``)."""
