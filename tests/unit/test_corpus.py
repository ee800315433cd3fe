"""Real-world mail nobody here wrote (../shared/corpus): parsing never fails unexpectedly, and
an "All email messages" queue tracks every message once, end to end."""

from __future__ import annotations

from collections import Counter
from email.message import EmailMessage, Message
from pathlib import Path

import attrs
import pytest

from serversync.errors import MalformedMessageError
from serversync.mime import parse as mime_parse
from serversync.mime import parse_headers, parse_message
from serversync.mime._tree import message_tree
from serversync.model import (
    DecisionReason,
    EmailDirection,
    ItemOutcome,
    MailboxRunReport,
    OutcomeKind,
    ParsedHeaders,
    ParsedMessage,
    RunStatus,
    Workload,
)
from serversync.settings import Limits, SyncSettings
from serversync.testing import InMemoryWorld
from tests.unit.test_message_tree import COMPAT32_PARSER, DEFAULT_PARSER, shape

CORPUS = Path(__file__).parents[2].parent / "shared" / "corpus"

if not CORPUS.is_dir():
    pytest.skip(f"no mail corpus at {CORPUS}", allow_module_level=True)


def _corpus_files() -> list[Path]:
    """Every message file: all files in the source folders, not the README or LICENSES."""
    return sorted(
        path
        for folder in CORPUS.iterdir()
        if folder.is_dir() and folder.name != "LICENSES"
        for path in folder.rglob("*")
        if path.is_file()
    )


FILES = _corpus_files()
NAMES = [path.relative_to(CORPUS).as_posix() for path in FILES]
QUEUE = "corpus@contoso.example"


def test_the_corpus_is_there() -> None:
    folders = {path.relative_to(CORPUS).parts[0] for path in FILES}
    assert len(FILES) >= 200, f"only {len(FILES)} message files in {CORPUS}"
    assert len(folders) >= 3, f"only the folders {sorted(folders)} in {CORPUS}"


@pytest.mark.parametrize("path", FILES, ids=NAMES)
def test_parsing_succeeds_or_raises_malformed_message_error(path: Path) -> None:
    data = path.read_bytes()
    headers: ParsedHeaders | None = None
    message: ParsedMessage | None = None
    errors: list[MalformedMessageError] = []
    try:
        headers = parse_headers(data)
    except MalformedMessageError as exc:
        errors.append(exc)
    try:
        message = parse_message(data)
    except MalformedMessageError as exc:
        errors.append(exc)
    assert all(error.reason for error in errors), "a MalformedMessageError must say why"
    if headers is None:
        assert message is None, "parse_message succeeded where parse_headers failed"
        return
    assert isinstance(headers, ParsedHeaders)
    if message is not None:
        assert isinstance(message, ParsedMessage)
        assert message.headers == headers, "parse_message must read the same headers"


def _incoming(reports: tuple[MailboxRunReport, ...]) -> MailboxRunReport:
    incoming = [r for r in reports if r.workload is Workload.INCOMING]
    assert len(incoming) == 1, f"expected one incoming report, got {len(incoming)}"
    return incoming[0]


def _check_outcome(outcome: ItemOutcome, name: str) -> None:
    if outcome.kind is OutcomeKind.TRACKED:
        assert outcome.activity_id is not None, f"{name}: tracked without an activity"
        assert outcome.message_id is not None, f"{name}: tracked without a Message-ID"
        assert outcome.reason is DecisionReason.ACCEPT_ALL, f"{name}: {outcome.reason}"
    elif outcome.kind is OutcomeKind.DUPLICATE:
        assert outcome.activity_id is not None, f"{name}: duplicate of nothing"
        assert outcome.reason is DecisionReason.DUPLICATE, f"{name}: {outcome.reason}"
    elif outcome.kind is OutcomeKind.NOT_RELEVANT:
        assert outcome.reason is DecisionReason.INVALID_SENDER, (
            f"{name}: rejected for {outcome.reason} ({outcome.explanation})"
        )
        assert outcome.sender is None, f"{name}: has sender {outcome.sender!r}"
    elif outcome.kind is OutcomeKind.FAILED:
        assert outcome.error is not None, f"{name}: failed without an error"
        assert outcome.error.error_type == "MalformedMessageError", (
            f"{name}: failed with {outcome.error.error_type}: {outcome.error.message}"
        )
    else:
        raise AssertionError(f"{name}: unexpected outcome {outcome.kind} ({outcome.explanation})")


async def test_a_queue_accepting_all_email_tracks_the_corpus_once() -> None:
    settings = attrs.evolve(SyncSettings(), limits=Limits(max_batches_per_run=1000))
    world = InMemoryWorld(settings=settings)
    mailbox = world.add_queue(QUEUE)
    names_by_uid = {
        str(world.deliver(QUEUE, path.read_bytes())): name
        for path, name in zip(FILES, NAMES, strict=True)
    }

    async with world.engine() as engine:
        first = _incoming((await engine.run_once()).for_mailbox(mailbox.id))
        assert first.status is RunStatus.SUCCEEDED, f"incoming run failed: {first.error}"

        by_uid = Counter(item.remote_id for item in first.items)
        assert set(by_uid) == set(names_by_uid), (
            f"{len(names_by_uid)} delivered, outcomes for {len(by_uid)}; missing "
            f"{sorted(names_by_uid[u] for u in set(names_by_uid) - set(by_uid))[:10]}"
        )
        repeated = {names_by_uid[u]: n for u, n in by_uid.items() if n != 1}
        assert not repeated, f"messages with more than one outcome: {repeated}"

        for item in first.items:
            _check_outcome(item, names_by_uid[item.remote_id])

        kinds = Counter(item.kind for item in first.items)
        tracked_ids = {item.message_id for item in first.items if item.kind is OutcomeKind.TRACKED}
        activities = world.storage.activities()
        figures = f"outcomes {dict(kinds)}, {len(activities)} activities stored"
        assert kinds[OutcomeKind.TRACKED] > len(FILES) // 2, figures
        assert len(activities) == len(tracked_ids), figures
        stored_ids = Counter(a.message_id for a in activities)
        assert all(n == 1 for n in stored_ids.values()), (
            f"Message-IDs stored twice: {[m for m, n in stored_ids.items() if n > 1]}; {figures}"
        )
        assert set(stored_ids) == tracked_ids, figures
        assert all(a.direction is EmailDirection.INCOMING for a in activities), figures
        tracked_activity_ids = {
            item.activity_id for item in first.items if item.kind is OutcomeKind.TRACKED
        }
        assert {a.id for a in activities} == tracked_activity_ids, figures
        stored_by_id = {a.id: a for a in activities}
        for item in first.items:
            if item.kind is OutcomeKind.DUPLICATE:
                assert item.activity_id in stored_by_id, (
                    f"{names_by_uid[item.remote_id]}: duplicate of an email not stored"
                )
                original = stored_by_id[item.activity_id]
                assert original.message_id == item.message_id, names_by_uid[item.remote_id]

        world.clock.advance(600)
        second = _incoming((await engine.run_once()).for_mailbox(mailbox.id))
        assert second.status is RunStatus.SUCCEEDED, f"second run: {second.status} {second.error}"
        assert second.items == (), f"second run processed {len(second.items)} messages again"
        assert len(world.storage.activities()) == len(activities), "the second run stored more"


def _general_path(data: bytes, monkeypatch: pytest.MonkeyPatch) -> ParsedMessage | str:
    with monkeypatch.context() as patched:
        patched.setattr(mime_parse, "_fast_message", lambda headers, data: None)
        # The stdlib's own parser, not trees cut out by message_tree.
        patched.setattr(mime_parse, "message_tree", lambda data, factory: None)
        try:
            return parse_message(data)
        except MalformedMessageError as exc:
            return f"malformed: {exc.reason}"


@pytest.mark.parametrize("path", FILES, ids=NAMES)
def test_the_fast_lane_of_parse_message_gives_what_the_general_path_gives(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = path.read_bytes()
    try:
        headers = mime_parse.parse_headers(data)
    except MalformedMessageError:
        return
    fast = mime_parse._fast_message(headers, data)
    if fast is not None:  # None: it stepped aside for the general path
        assert fast == _general_path(data, monkeypatch)


@pytest.mark.parametrize("path", FILES, ids=NAMES)
def test_message_trees_are_the_feed_parsers_trees(path: Path) -> None:
    data = path.read_bytes()
    for factory, parser in ((Message, COMPAT32_PARSER), (EmailMessage, DEFAULT_PARSER)):
        tree = message_tree(data, factory)
        if tree is not None:  # None: the feed parser reads it
            assert shape(tree) == shape(parser.parsebytes(data))
