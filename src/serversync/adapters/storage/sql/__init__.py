"""SQL repositories (extra ``sql``): SQLite as the embedded default, PostgreSQL to scale out."""

from ._directory import SqlDirectory
from ._storage import SqlStorage

__all__ = ["SqlDirectory", "SqlStorage"]
