"""PostgreSQL store (the ``postgres`` extra: ``pip install 'qortex-mcp[postgres]'``).

Several qortex-mcp instances share learners through one database; see ``store.py`` for how
writes stay exact and ``listener.py`` for how instances hear about each other's changes.
"""

from qortex_mcp.learning.postgres.store import PostgresLearningStore

__all__ = ["PostgresLearningStore"]
