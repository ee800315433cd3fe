"""SQL repositories (extra ``sql``): SQLite as the embedded default, PostgreSQL to scale out."""

from ._act_records import SqlActRecords
from ._credentials import SqlCredentials
from ._directory import SqlDirectory
from ._storage import SqlStorage

__all__ = ["SqlActRecords", "SqlCredentials", "SqlDirectory", "SqlStorage"]
