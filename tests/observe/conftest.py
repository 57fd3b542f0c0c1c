"""The server tests' fixtures: settings over a real SQLite file and its registry."""

from tests.server.conftest import registry, settings

__all__ = ["registry", "settings"]
