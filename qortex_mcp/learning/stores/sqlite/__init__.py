"""The SQLite store (the default), one module per concept: ``store`` (the
``SqliteLearningStore`` facade: lifecycle, transactions, reads), ``sql`` (schema and
statements), ``writer`` (a group-committed feedback batch), ``thread`` (the database
threads: one hand-off per transaction), ``checks`` (what is verified before a file is
opened), ``errors`` (driver errors onto the error tree)."""

from qortex_mcp.learning.stores.sqlite.store import SqliteLearningStore

__all__ = ["SqliteLearningStore"]
