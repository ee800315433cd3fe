"""Building JSON batches for Graph and reading their answers (pure)."""

from __future__ import annotations

import pytest

from serversync.adapters.transports.graph._batch import (
    MAX_BATCH,
    BatchItem,
    batch_body,
    chunks,
    inner_url,
    read_batch,
)
from serversync.adapters.transports.graph._errors import error_from_response
from serversync.errors import MessageRejectedError, ServerBusyError, TransientError


def items(count: int) -> list[BatchItem]:
    return [BatchItem(id=str(n), method="GET", url=f"/users/a/messages/{n}") for n in range(count)]


def test_batches_hold_at_most_20_requests_with_ids_of_their_own() -> None:
    assert [len(c) for c in chunks(items(45))] == [20, 20, 5]
    with pytest.raises(ValueError, match="1 to 20"):
        batch_body(items(MAX_BATCH + 1))
    with pytest.raises(ValueError, match="differ"):
        batch_body([*items(2), BatchItem(id="0", method="GET", url="/x")])
    patch = BatchItem(id="p", method="PATCH", url="/users/a/messages/1", body={"categories": []})
    assert batch_body([patch]) == {
        "requests": [
            {
                "id": "p",
                "method": "PATCH",
                "url": "/users/a/messages/1",
                "body": {"categories": []},
                "headers": {"Content-Type": "application/json"},
            }
        ]
    }


def test_inner_urls_keep_odata_dollars_and_escape_spaces() -> None:
    url = inner_url("users/a@b.example/messages/X1", {"$filter": "id eq 'String 0x1042'"})
    assert url == "/users/a@b.example/messages/X1?$filter=id%20eq%20%27String%200x1042%27"


def test_answers_are_matched_by_id_and_a_missing_one_is_a_server_failure() -> None:
    body = {
        "responses": [
            {"id": "2", "status": 429, "headers": {"Retry-After": "3"}, "body": {"error": {}}},
            {"id": "1", "status": 200, "body": {"id": "m1"}},
        ]
    }
    answers = read_batch(body, ["1", "2", "3"])
    assert answers["1"].body == {"id": "m1"}
    assert answers["2"].headers == {"retry-after": "3"}
    assert answers["3"].status == 502
    assert read_batch("not json", ["1"])["1"].status == 502


def test_item_answers_map_like_single_requests() -> None:
    def mapped(status: int, code: str, headers: dict[str, str] | None = None) -> object:
        answer = read_batch(
            {
                "responses": [
                    {
                        "id": "1",
                        "status": status,
                        "headers": headers or {},
                        "body": {"error": {"code": code, "message": code}},
                    }
                ]
            },
            ["1"],
        )["1"]
        return error_from_response(
            answer.status, answer.headers, answer.content, what="w", mailbox_id="m", item=True
        )

    throttled = mapped(429, "ApplicationThrottled", {"Retry-After": "7"})
    assert isinstance(throttled, ServerBusyError)
    assert throttled.retry_after is not None
    assert throttled.retry_after.total_seconds() == 7
    assert isinstance(mapped(404, "ErrorItemNotFound"), MessageRejectedError)
    failed_dependency = mapped(424, "FailedDependency")
    assert isinstance(failed_dependency, TransientError)
    assert "depends on" in str(failed_dependency)
