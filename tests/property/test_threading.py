"""``parse_message_ids``: total on any text, ordered, bracketed, free of repeats."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from serversync.model import MessageId
from serversync.relevance.threading import normalize_message_id, parse_message_ids
from tests import strategies as s

# Text rich in what the parser looks at: brackets, "@", folding whitespace and id characters.
_header_ish = st.text(
    alphabet=st.sampled_from(list("<>@. \t\r\n\x0b\x0c\u00a0\u2028ab1-_")) | st.characters(),
    max_size=80,
)


def _without_whitespace(text: str) -> str:
    return "".join(text.split())


@given(st.text() | _header_ish)
@example("")
@example(" \r\n\t ")
@example("<>")
@example("<<a@b>>")
@example("< a@b >")
@example("a<b@c")
@example("<a@b> <a@b>")
@example("<a\r\n @b>")
@example("x@y z@w")
@example("\u2028<a@b>\u00a0")
def test_never_raises_and_returns_bracketed_ids_without_whitespace_or_repeats(
    value: str,
) -> None:
    ids = parse_message_ids(value)
    assert isinstance(ids, tuple)
    assert len(set(ids)) == len(ids), f"repeated ids in {ids!r}"
    for mid in ids:
        assert mid.startswith("<"), mid
        assert mid.endswith(">"), mid
        assert len(mid) > 2, mid
        assert _without_whitespace(mid) == mid, f"whitespace in {mid!r}"
    assert normalize_message_id(value) == (ids[0] if ids else None)


@given(st.text() | _header_ish)
@example("<b@x> <a@x> <b@x> <c@x>")
@example("<a@x><b@x>")
def test_keeps_the_order_of_the_header(value: str) -> None:
    """Each id is found in the (whitespace-free) header after the one before it."""
    ids = parse_message_ids(value)
    squeezed = _without_whitespace(value)
    position = 0
    for mid in ids:
        bracketed = squeezed.find(mid, position)
        found = bracketed if bracketed >= 0 else squeezed.find(mid[1:-1], position)
        assert found >= 0, f"{mid!r} not found in order in {value!r} (ids {ids!r})"
        position = found + 1


@given(
    st.lists(s.message_ids(), min_size=1, max_size=8),
    st.data(),
)
def test_joined_ids_come_back_in_order(ids: list[MessageId], data: st.DataObject) -> None:
    separators = [data.draw(s.folding_whitespace(), label="separator") for _ in ids]
    lead = data.draw(st.sampled_from(["", " ", "\r\n "]), label="lead")
    value = lead + "".join(mid + sep for mid, sep in zip(ids, separators, strict=True))
    assert parse_message_ids(value) == tuple(dict.fromkeys(ids))


@given(st.lists(s.message_ids(), min_size=1, max_size=5), st.integers(min_value=1, max_value=4))
def test_repeats_are_dropped_keeping_the_first(ids: list[MessageId], times: int) -> None:
    value = " ".join(ids * times)
    assert parse_message_ids(value) == tuple(dict.fromkeys(ids))


@given(s.message_ids(domain_literals=False), st.data())
def test_folding_inside_brackets_is_removed(mid: MessageId, data: st.DataObject) -> None:
    """A long id folded by a client (whitespace inside the brackets) is unfolded."""
    cut = data.draw(st.integers(min_value=1, max_value=len(mid) - 1), label="cut")
    fold = data.draw(s.folding_whitespace(), label="fold")
    assert parse_message_ids(mid[:cut] + fold + mid[cut:]) == (mid,)


@given(s.message_ids(domain_literals=False))
def test_a_single_id_without_brackets_counts(mid: MessageId) -> None:
    bare = mid[1:-1]
    assert parse_message_ids(f"  {bare}\r\n") == (mid,)


@given(st.lists(s.message_ids(angles_in_literals=True), min_size=1, max_size=4))
@example(["<0@[<]>"])
@example(["<a@[x>y]>", "<b@example.com>"])
def test_domain_literals_may_hold_angle_brackets(ids: list[MessageId]) -> None:
    """RFC 5322 dtext (%d33-90 / %d94-126) includes "<" and ">"; such ids stay whole."""
    assert parse_message_ids(" ".join(ids)) == tuple(dict.fromkeys(ids))


def test_pinned_edge_cases() -> None:
    assert parse_message_ids(None) == ()
    assert parse_message_ids("") == ()
    assert parse_message_ids("   ") == ()
    # A folded References header, as found on the wire.
    folded = "<one@example.com>\r\n <two@example.com>\r\n\t<three@example.com>"
    assert parse_message_ids(folded) == (
        "<one@example.com>",
        "<two@example.com>",
        "<three@example.com>",
    )
    # Folding inside brackets comes from line-length limits, not from the id.
    assert parse_message_ids("<very-long-id\r\n @example.com>") == ("<very-long-id@example.com>",)
    # Ids without brackets: one "@" token counts, two are ambiguous and ignored.
    assert parse_message_ids("abc@example.com") == ("<abc@example.com>",)
    assert parse_message_ids("abc@example.com def@example.com") == ()
    # Comments and junk around ids are ignored; bracketed ids win over bare tokens.
    assert parse_message_ids("(comment) <a@b> junk c@d") == ("<a@b>",)
    assert parse_message_ids("no ids here") == ()
    assert normalize_message_id(None) is None
    assert normalize_message_id("<x@y> <z@w>") == "<x@y>"
