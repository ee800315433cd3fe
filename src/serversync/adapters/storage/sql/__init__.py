"""SQL repositories (extra ``sql``): SQLite as the embedded default, PostgreSQL to scale out."""

from ._credentials import SqlCredentials
from ._directory import SqlDirectory
from ._storage import SqlStorage

__all__ = ["SqlCredentials", "SqlDirectory", "SqlStorage"]
