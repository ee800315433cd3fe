"""JSON batching (``POST /$batch``) for Graph, pure: building batches of at most 20
requests and reading their answers, each of which succeeds or fails on its own.

A batch saves round trips, not quota: Graph counts every request in it against the
mailbox's limits, runs at most 4 of them at once, and may throttle some (429) while the
batch itself answers 200. Items that depend on another one (``dependsOn``) fail with 424
when it failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

import attrs

__all__ = [
    "MAX_BATCH",
    "BatchAnswer",
    "BatchItem",
    "batch_body",
    "chunks",
    "inner_url",
    "read_batch",
]

MAX_BATCH: Final = 20
"""The most requests Graph takes in one batch."""


@attrs.frozen(kw_only=True)
class BatchItem:
    """One request of a batch; ``url`` is relative to the API version (``/users/…``)."""

    id: str
    method: str
    url: str
    body: Any = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    depends_on: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The item as the batch body lists it."""
        out: dict[str, Any] = {"id": self.id, "method": self.method, "url": self.url}
        headers = dict(self.headers)
        if self.body is not None:
            out["body"] = self.body
            headers.setdefault("Content-Type", "application/json")
        if headers:
            out["headers"] = headers
        if self.depends_on:
            out["dependsOn"] = list(self.depends_on)
        return out


@attrs.frozen(kw_only=True)
class BatchAnswer:
    """The answer to one item: its status, headers and body (JSON as parsed)."""

    id: str
    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: Any = None

    @property
    def content(self) -> bytes:
        """The body as bytes, for the error parser."""
        if self.body is None:
            return b""
        return json.dumps(self.body).encode() if not isinstance(self.body, str) else b""


def inner_url(path: str, params: Mapping[str, str] | None = None) -> str:
    """A batch item's URL: ``path`` under the API version, with a query whose OData
    options keep their ``$`` and whose spaces are escaped."""
    url = "/" + path.lstrip("/")
    if params:
        url += "?" + "&".join(
            f"{key}={quote(value, safe=chr(36) + ',()=/@:')}" for key, value in params.items()
        )
    return url


def chunks(items: Sequence[BatchItem], size: int = MAX_BATCH) -> list[list[BatchItem]]:
    """``items`` in batches of at most ``size`` (a dependent item stays with the batch of
    the item it depends on only if the caller orders them so; serversync sends none)."""
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH} requests")
    return [list(items[n : n + size]) for n in range(0, len(items), size)]


def batch_body(items: Sequence[BatchItem]) -> dict[str, Any]:
    """The JSON body of ``POST /$batch`` for ``items``."""
    if not 1 <= len(items) <= MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH} requests, not {len(items)}")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("the ids of a batch's requests must differ")
    return {"requests": [item.as_json() for item in items]}


def read_batch(body: Any, ids: Iterable[str]) -> dict[str, BatchAnswer]:
    """The answers of a batch response by item id, in any order Graph gave them. An item
    Graph did not answer gets a 502 (asked again later, like any server failure)."""
    answers: dict[str, BatchAnswer] = {}
    responses = body.get("responses") if isinstance(body, dict) else None
    for r in responses if isinstance(responses, list) else ():
        if not isinstance(r, dict) or "id" not in r:
            continue
        try:
            status = int(r.get("status", 0))
        except (TypeError, ValueError):
            status = 0
        headers = r.get("headers")
        answers[str(r["id"])] = BatchAnswer(
            id=str(r["id"]),
            status=status or 502,
            headers={str(k).lower(): str(v) for k, v in headers.items()}
            if isinstance(headers, dict)
            else {},
            body=r.get("body"),
        )
    for missing in set(ids) - set(answers):
        answers[missing] = BatchAnswer(id=missing, status=502)
    return answers
