"""The fake Graph's JSON batching: ``POST /$batch`` with at most 20 requests, each run as a
request of its own (recorded, faulted and throttled one by one, as Graph counts them),
``dependsOn`` with 424 for the dependents of a failed request, and the answers listed in
an order of their own (Graph promises none)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # _core imports this module
    from serversync.testing.graph._core import GraphRequest, GraphResponse

__all__ = ["MAX_BATCH", "run_batch"]

MAX_BATCH: Final = 20


def _error(status: int, code: str, message: str) -> GraphResponse:
    from serversync.testing.graph._core import GraphResponse

    return GraphResponse(
        status=status,
        headers={"Content-Type": "application/json"},
        body=json.dumps({"error": {"code": code, "message": message}}).encode(),
    )


def _body_of(response: GraphResponse) -> Any:
    if not response.body:
        return None
    if "json" in response.headers.get("Content-Type", "").lower():
        return json.loads(response.body)
    return base64.b64encode(response.body).decode("ascii")


def run_batch(
    body: bytes,
    headers: Mapping[str, str],
    root: str,
    handle: Callable[[GraphRequest], GraphResponse],
) -> GraphResponse:
    """Answer a batch: ``root`` is the URL the items' relative URLs go under
    (``https://graph.microsoft.com/v1.0``), ``handle`` answers one request."""
    from serversync.testing.graph._core import GraphRequest, GraphResponse

    try:
        requests = json.loads(body or b"{}").get("requests")
    except (ValueError, AttributeError):
        return _error(400, "BadRequest", "The batch body is no JSON object.")
    if not isinstance(requests, list) or not requests:
        return _error(400, "BadRequest", "A batch needs a list of requests.")
    if len(requests) > MAX_BATCH:
        return _error(400, "BadRequest", f"Number of requests exceeds limit of {MAX_BATCH}.")
    ids = [str(r.get("id", "")) if isinstance(r, dict) else "" for r in requests]
    if "" in ids or len(set(ids)) != len(ids):
        return _error(400, "BadRequest", "Every request needs an id of its own.")
    status: dict[str, int] = {}
    answers: list[dict[str, Any]] = []
    outer = {
        k: v
        for k, v in headers.items()
        if k.lower() not in ("content-length", "content-type", "prefer")
    }
    for request in requests:
        rid = str(request["id"])
        depends = [str(d) for d in request.get("dependsOn") or ()]
        if any(d not in status for d in depends):
            return _error(400, "BadRequest", f"Request {rid} depends on a later or unknown id.")
        if any(status[d] >= 400 for d in depends):
            response = _error(424, "FailedDependency", "A request it depends on failed.")
        else:
            inner_headers = {**outer, **(request.get("headers") or {})}
            payload = request.get("body")
            raw = b""
            if payload is not None:
                kind = str(inner_headers.get("Content-Type", "application/json"))
                raw = (
                    json.dumps(payload).encode()
                    if "json" in kind.lower() or not isinstance(payload, str)
                    else base64.b64decode(payload)
                )
            response = handle(
                GraphRequest(
                    method=str(request.get("method", "GET")).upper(),
                    url=root + "/" + str(request.get("url", "")).lstrip("/"),
                    headers=inner_headers,
                    body=raw,
                )
            )
        status[rid] = response.status
        answers.append(
            {
                "id": rid,
                "status": response.status,
                "headers": dict(response.headers),
                "body": _body_of(response),
            }
        )
    answers.reverse()  # Graph lists answers in no particular order
    return GraphResponse(
        status=200,
        headers={"Content-Type": "application/json"},
        body=json.dumps({"responses": answers}).encode(),
    )
