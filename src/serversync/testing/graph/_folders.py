"""The fake Graph's folder tree delta (``GET /users/{id}/mailFolders/delta``): a round lists
every folder under the top of the mailbox, nested ones included, in pages with next links;
its delta link then lists the folders added or changed since, and the ones gone as
``@removed``."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Final

import attrs

__all__ = ["FolderDeltas"]

_DEFAULT_PAGE: Final = 10


@attrs.define
class _FolderRound:
    address: str
    rows: list[dict[str, Any]]
    snapshot: dict[str, dict[str, Any]]
    offset: int = 0


class FolderDeltas:
    """The folder delta rounds of a fake tenant (its lock is the caller's)."""

    def __init__(self) -> None:
        self._rounds: dict[str, _FolderRound] = {}
        self.top_level_only = False

    def clear(self) -> None:
        """Forget every round: their links answer 410."""
        self._rounds.clear()

    def page(
        self,
        address: str,
        folders: Mapping[str, dict[str, Any]],
        params: Mapping[str, str],
        size: int | None,
        path: str,
    ) -> tuple[int, dict[str, Any]]:
        """One page of a round: the status and the JSON body. ``folders`` holds every folder
        of the mailbox but its root, by id, as Graph describes them."""
        if self.top_level_only:
            root = {f["parentFolderId"] for f in folders.values()} - set(folders)
            folders = {k: f for k, f in folders.items() if f["parentFolderId"] in root}
        token = params.get("$skiptoken") or params.get("$deltatoken")
        if token is not None:
            known = self._rounds.get(token)
            if known is None or known.address != address:
                return 410, {
                    "error": {"code": "SyncStateNotFound", "message": "The sync state is lost."}
                }
            if "$deltatoken" in params:
                changed = [dict(f) for k, f in folders.items() if known.snapshot.get(k) != f]
                gone = [
                    {"id": k, "@removed": {"reason": "deleted"}}
                    for k in known.snapshot
                    if k not in folders
                ]
                current = _FolderRound(
                    address=address,
                    rows=changed + gone,
                    snapshot={k: dict(f) for k, f in folders.items()},
                )
            else:
                current = known
        else:
            current = _FolderRound(
                address=address,
                rows=[dict(f) for f in folders.values()],
                snapshot={k: dict(f) for k, f in folders.items()},
            )
        size = size or _DEFAULT_PAGE
        rows = current.rows[current.offset : current.offset + size]
        select = {s.strip() for s in params.get("$select", "").split(",") if s.strip()}
        if select:
            rows = [{k: v for k, v in r.items() if k in select | {"id", "@removed"}} for r in rows]
        token = secrets.token_urlsafe(18)
        if current.offset + size < len(current.rows):
            self._rounds[token] = attrs.evolve(current, offset=current.offset + size)
            link = {"@odata.nextLink": f"{path}?$skiptoken={token}"}
        else:
            self._rounds[token] = attrs.evolve(current, rows=[], offset=0)
            link = {"@odata.deltaLink": f"{path}?$deltatoken={token}"}
        return 200, {"value": rows, **link}
