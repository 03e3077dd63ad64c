"""tornado_prefork.broadcast in one process (the in-process backend): positions,
replay from history, gaps, the overflow policies, the frames of the hub's protocol."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tornado.testing import AsyncTestCase, gen_test

from tornado_prefork import broadcast
from tornado_prefork._broadcast import codec, journal
from tornado_prefork._broadcast import current as _current
from tornado_prefork._broadcast.local import LocalBackend
from tornado_prefork.broadcast import Gap, GapReason, Message, Overflow, Position


def run(test: Callable[[], Awaitable[Any]]) -> Any:
    """Runs ``test`` on a fresh in-process backend and a fresh loop."""
    _current.install(LocalBackend())
    try:
        return asyncio.run(asyncio.wait_for(test(), 10))
    finally:
        _current.install(None)


def test_position_round_trips_as_text_and_refuses_what_is_not_one() -> None:
    position = Position("3f9a1c0b", 42)
    assert str(position) == "3f9a1c0b-42"
    assert Position.parse(str(position)) == position
    assert Position.parse("3f9a1c0br2-7") == Position("3f9a1c0br2", 7)
    for text in ("", "42", "abc-", "-3", "ab-c", "a b-1", "a-1.5", "a--1", "a-١"):
        with pytest.raises(ValueError, match="EPOCH-SEQ"):
            Position.parse(text)


def test_data_comes_back_as_it_was_published_in_one_order() -> None:
    async def test() -> None:
        async with broadcast.subscribe("room") as subscription:
            sent: list[object] = [b"\x00bytes", "text é", {"n": 1, "list": [1, 2]}, 3, None]
            positions = [await broadcast.publish("room", data) for data in sent]
            events = [await subscription.__anext__() for _ in sent]
        assert [e.data for e in events if isinstance(e, Message)] == sent
        assert [e.position for e in events if isinstance(e, Message)] == positions
        assert [p.seq for p in positions] == [1, 2, 3, 4, 5]
        assert len({p.epoch for p in positions}) == 1

    run(test)


def test_topics_are_numbered_apart_and_subscribers_get_only_theirs() -> None:
    async def test() -> None:
        async with broadcast.subscribe("a") as a, broadcast.subscribe("b") as b:
            await broadcast.publish("a", 1)
            await broadcast.publish("b", 2)
            await broadcast.publish("a", 3)
            assert [e.data for e in await a.read()] == [1, 3]  # type: ignore[union-attr]
            got = await b.read()
        assert [(e.data, e.position.seq) for e in got] == [(2, 1)]  # type: ignore[union-attr]

    run(test)


def test_since_replays_what_followed_and_live_messages_follow_without_duplicates() -> None:
    async def test() -> None:
        positions = [await broadcast.publish("t", i) for i in range(5)]
        async with broadcast.subscribe("t", since=positions[1]) as subscription:
            await broadcast.publish("t", 5)
            events = await subscription.read()
        assert [e.data for e in events] == [2, 3, 4, 5]  # type: ignore[union-attr]

    run(test)


def test_since_older_than_the_history_is_a_gap_saying_what_was_missed() -> None:
    async def test() -> None:
        first = await broadcast.publish("t", 0)
        for i in range(1, journal.HISTORY + 10):
            await broadcast.publish("t", i)
        async with broadcast.subscribe("t", since=first) as subscription:
            events = await subscription.read(limit=journal.HISTORY + 5)
        gap = events[0]
        assert isinstance(gap, Gap) and gap.reason is GapReason.HISTORY
        assert gap.after == first and gap.missed == 9
        assert [e.data for e in events[1:]] == list(range(10, journal.HISTORY + 10))  # type: ignore[union-attr]

    run(test)


def test_a_position_of_another_epoch_is_a_gap_then_the_whole_history() -> None:
    async def test() -> None:
        await broadcast.publish("t", "kept")
        async with broadcast.subscribe("t", since=Position("0ther", 7)) as subscription:
            events = await subscription.read()
        assert isinstance(events[0], Gap) and events[0].reason is GapReason.EPOCH
        assert events[0].missed is None
        assert [e.data for e in events[1:]] == ["kept"]  # type: ignore[union-attr]
        assert [m.data for m in await broadcast.recent("t")] == ["kept"]

    run(test)


@pytest.mark.parametrize(
    ("overflow", "kept"),
    [
        (Overflow.DROP_OLDEST, [7, 8, 9]),
        (Overflow.DROP_NEWEST, [0, 1, 2]),
        (Overflow.LATEST, [9]),
    ],
)
def test_each_overflow_policy_keeps_what_it_says_and_the_drop_is_a_gap(
    overflow: Overflow, kept: list[int]
) -> None:
    async def test() -> None:
        async with broadcast.subscribe("t", max_queue=3, overflow=overflow) as subscription:
            for i in range(10):
                await broadcast.publish("t", i)
            events = await subscription.read()
            await broadcast.publish("t", 10)
            after = await subscription.read()
        messages = [e.data for e in events if isinstance(e, Message)]
        assert messages == kept
        gaps = [e for e in events + after if isinstance(e, Gap)]
        assert gaps and all(g.reason is GapReason.OVERFLOW for g in gaps)
        # Every seq is either received or inside a gap: nothing is lost silently.
        seen = {e.position.seq for e in events + after if isinstance(e, Message)}
        for gap in gaps:
            assert gap.after is not None and gap.resume is not None
            seen |= set(range(gap.after.seq + 1, gap.resume.seq))
        assert seen == set(range(1, 12))
        # And every drop is counted.
        missed = sum(gap.missed or 0 for gap in gaps)
        assert _current.current().fanout.stats.dropped["overflow"] == missed

    run(test)


@pytest.mark.parametrize("overflow", list(Overflow))
@pytest.mark.parametrize("room", [3, 20])
def test_messages_handed_over_together_are_as_if_one_by_one(overflow: Overflow, room: int) -> None:
    """A worker hands the messages of one read from the hub to each
    subscriber together (one wake-up): what a subscriber sees is what it
    would have seen of them one by one, whichever policy, room or not."""

    async def seen(together: bool) -> list[Any]:
        async with broadcast.subscribe("t", max_queue=room, overflow=overflow) as subscription:
            fanout = _current.current().fanout
            entries = [(Position("7", seq), *codec.encode(seq)) for seq in [1, 2, 3, 5, 6, 7, 8, 9]]
            for start in (0, 4):  # two reads: a hole between them
                batch = entries[start : start + 4]
                if together:
                    fanout.deliver_many("t", batch)
                else:
                    for entry in batch:
                        fanout.deliver("t", *entry)
            subscription.end()
            return [
                (e.reason, e.after, e.resume) if isinstance(e, Gap) else e.position
                async for e in subscription
            ]

    async def test() -> None:
        assert await seen(together=True) == await seen(together=False)

    run(test)
    if room == 20:
        # And with room, every message, the hole a gap.
        async def with_room() -> list[Any]:
            return await seen(together=True)

        events = run(with_room)
        if overflow is not Overflow.LATEST:
            assert [e for e in events if isinstance(e, Position)] == [
                Position("7", seq) for seq in [1, 2, 3, 5, 6, 7, 8, 9]
            ]
            assert len([e for e in events if not isinstance(e, Position)]) == 1


def test_overflow_close_ends_the_subscription_with_a_gap_and_calls_back() -> None:
    async def test() -> None:
        closed = []
        subscription = broadcast.Subscription(
            _current.current, "t", None, 2, Overflow.CLOSE, on_close=lambda: closed.append(1)
        )
        async with subscription:
            for i in range(3):
                await broadcast.publish("t", i)
            events = [event async for event in subscription]
            await asyncio.sleep(0)
        assert closed == [1]
        assert len(events) == 1 and isinstance(events[0], Gap)
        assert events[0].reason is GapReason.CLOSED

    run(test)


def test_a_publisher_never_waits_for_a_subscriber_that_does_not_read() -> None:
    async def test() -> None:
        async with broadcast.subscribe("t", max_queue=10):
            for i in range(10_000):
                await broadcast.publish("t", i)
        stats = _current.current().fanout.stats
        assert stats.published == 10_000 and stats.dropped["overflow"] == 9_990
        assert stats.queue_high_water == 10

    run(test)


def test_leaving_a_subscription_removes_it_and_bad_arguments_are_named() -> None:
    async def test() -> None:
        async with broadcast.subscribe("t"):
            assert _current.current().fanout.topics() == ["t"]
        assert _current.current().fanout.topics() == []
        with pytest.raises(ValueError, match="non-empty str"):
            await broadcast.publish("", 1)
        with pytest.raises(TypeError, match="bytes, str or a JSON value, not object"):
            await broadcast.publish("t", object())
        with pytest.raises(TypeError, match="broadcast.Position"):
            broadcast.subscribe("t", since="abc-1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_queue"):
            broadcast.subscribe("t", max_queue=0)
        with pytest.raises(ValueError, match="'sometimes' is not a valid Overflow"):
            broadcast.subscribe("t", overflow="sometimes")
        with pytest.raises(RuntimeError, match="async with"):
            await broadcast.subscribe("t").__anext__()

    run(test)


def test_broadcast_off_says_so() -> None:
    async def enter() -> None:
        async with broadcast.subscribe("t"):
            pass

    _current.turn_off("broadcast='off'")
    try:
        for attempt in (enter, lambda: broadcast.publish("t", 1), lambda: broadcast.recent("t")):
            with pytest.raises(broadcast.BroadcastError, match="broadcast is off.*'off'"):
                asyncio.run(attempt())  # type: ignore[arg-type]
    finally:
        _current.install(None)


def test_a_forgotten_topic_starts_a_new_epoch() -> None:
    kept = journal.Journal("e0", lambda topic: topic == "busy", topics=2)
    first, _ = kept.append("old", codec.Kind.TEXT, b"x")
    kept.append("busy", codec.Kind.TEXT, b"x")
    kept.append("new", codec.Kind.TEXT, b"x")
    assert kept.get("old") is None and kept.get("busy") is not None
    again, seq = kept.append("old", codec.Kind.TEXT, b"y")
    assert (again.epoch, seq) != (first.epoch, 1) and again.epoch.isalnum()


def test_the_history_of_all_topics_is_bounded_the_least_recent_trimmed_first() -> None:
    kept = journal.Journal("e0", lambda topic: False, history_total=10_000)
    for name in ("a", "b", "c"):
        for _ in range(3):
            kept.append(name, codec.Kind.BYTES, b"x" * 1000)
    assert kept.size == 9000
    # Over the budget: "a" (published to least recently) loses its messages
    # first, then "b" its oldest.
    kept.append("d", codec.Kind.BYTES, b"x" * 5000)
    assert kept.size <= 10_000
    a, b = kept.get("a"), kept.get("b")
    assert a is not None and b is not None
    assert (a.oldest, a.last, len(b.entries)) == (4, 3, 2)
    # Its numbering stays: a resume from before is a gap of reason history.
    gap, entries = journal.resume("a", Position("e0", 1), *kept.history("a", Position("e0", 1)))
    assert gap is not None and gap.reason is GapReason.HISTORY and entries == []
    assert kept.append("a", codec.Kind.BYTES, b"y")[1] == 4
    # A topic forgotten takes its bytes with it.
    small = journal.Journal("e0", lambda topic: False, topics=1)
    small.append("a", codec.Kind.BYTES, b"x" * 10)
    small.append("b", codec.Kind.BYTES, b"x" * 5)
    assert small.get("a") is None and small.size == 5


def test_frames_round_trip_however_the_bytes_arrive() -> None:
    frames = [
        codec.hello("abcd1234", 99),
        codec.publish(7, "room:é", codec.Kind.JSON, b'{"a":1}'),
        codec.ack(7, 12, "abcd1234"),
        codec.message(12, "abcd1234", "room:é", codec.Kind.BYTES, b"\x00" * 70_000),
        codec.want("t"),
        codec.drop("t"),
        codec.replay(8, "t", "abcd1234", 3),
        codec.history(
            8, "abcd1234", 2, 5, [(4, codec.Kind.TEXT, b"four"), (5, codec.Kind.TEXT, b"")]
        ),
        codec.TICK,
    ]
    stream = b"".join(frames)
    whole = [(kind, codec.parse(kind, body)) for kind, body in codec.Reader().feed(stream)]
    reader = codec.Reader()
    pieces = []
    for i in range(0, len(stream), 997):
        pieces += [
            (kind, codec.parse(kind, body)) for kind, body in reader.feed(stream[i : i + 997])
        ]
    assert pieces == whole and len(whole) == len(frames)
    assert whole[1][1] == (7, "room:é", codec.Kind.JSON, b'{"a":1}')
    assert whole[2][1] == (7, 12, "abcd1234")
    assert whole[7][1] == (
        8,
        "abcd1234",
        2,
        5,
        [(4, codec.Kind.TEXT, b"four"), (5, codec.Kind.TEXT, b"")],
    )
    with pytest.raises(ValueError, match="frame of"):
        list(codec.Reader().feed(b"\xff\xff\xff\xff\x01"))


def test_data_is_encoded_once_as_compact_json() -> None:
    assert codec.encode({"a": [1, 2]}) == (codec.Kind.JSON, b'{"a":[1,2]}')
    assert json.loads(codec.encode({"b": "é"})[1]) == {"b": "é"}
    with pytest.raises(TypeError):
        codec.encode(float("nan"))


class TestInOneProcess(AsyncTestCase):
    """The same application code runs under AsyncTestCase, with no server."""

    def setUp(self) -> None:
        super().setUp()
        _current.install(LocalBackend())

    def tearDown(self) -> None:
        _current.install(None)
        super().tearDown()

    @gen_test
    async def test_publish_and_subscribe(self) -> None:
        async with broadcast.subscribe("room:42") as subscription:
            position = await broadcast.publish("room:42", {"text": "hi"})
            event = await subscription.__anext__()
        assert isinstance(event, Message)
        assert (event.topic, event.data, event.position) == ("room:42", {"text": "hi"}, position)


def test_a_new_topic_is_kept_when_every_other_has_subscribers() -> None:
    kept = journal.Journal("e0", lambda topic: True, topics=2)
    for name in ("a", "b", "c"):
        topic, seq = kept.append(name, codec.Kind.TEXT, b"x")
        assert seq == 1 and kept.get(name) is topic
    # Reading a topic nobody published to makes none.
    assert kept.history("nobody", Position("e0", 0)) == ("e0", 1, 0, [])
    assert kept.get("nobody") is None


def test_what_a_client_can_send_is_bounded_and_named() -> None:
    async def test() -> None:
        with pytest.raises(ValueError, match="at most 65535 UTF-8 bytes"):
            await broadcast.publish("t" * 70_000, 1)
        with pytest.raises(ValueError, match="at most 65535 UTF-8 bytes"):
            broadcast.subscribe("é" * 40_000)
        with pytest.raises(ValueError, match="broadcast data must be at most"):
            await broadcast.publish("t", b"x" * (codec.MAX_FRAME + 1))

    run(test)
    for text in ("ab-99999999999999999999999", "a" * 33 + "-1", "ab-9223372036854775808"):
        with pytest.raises(ValueError, match="EPOCH-SEQ"):
            Position.parse(text)


def test_a_large_frame_arriving_in_small_reads_comes_out_whole_once() -> None:
    data = codec.message(1, "e", "t", codec.Kind.BYTES, b"y" * (5 * 1024 * 1024))
    reader = codec.Reader()
    frames = []
    for i in range(0, len(data), 65536):
        frames += list(reader.feed(data[i : i + 65536]))
    assert len(frames) == 1 and codec.parse(*frames[0])[4] == b"y" * (5 * 1024 * 1024)


def test_drops_after_a_lost_hub_are_gaps_too() -> None:
    async def test() -> None:
        async with broadcast.subscribe("t", max_queue=2) as subscription:
            subscription.lost(GapReason.HUB_LOST)
            for i in range(5):
                await broadcast.publish("t", i)
            events = await subscription.read()
        lost, overflow, *messages = events
        assert isinstance(lost, Gap) and lost.reason is GapReason.HUB_LOST
        assert lost.resume == Position(lost.resume.epoch, 1)  # type: ignore[union-attr]
        assert isinstance(overflow, Gap) and overflow.reason is GapReason.OVERFLOW
        assert overflow.missed == 3
        assert [m.data for m in messages] == [3, 4]  # type: ignore[union-attr]

    run(test)


def test_the_newest_dropped_with_nothing_after_them_are_a_gap_not_a_silence() -> None:
    async def test() -> None:
        async with broadcast.subscribe("t", max_queue=2, overflow="drop_newest") as subscription:
            for i in range(5):
                await broadcast.publish("t", i)
            first = await subscription.read()
            # Nothing else is published: the drop is told, the read does not hang.
            (gap,) = await subscription.read()
        assert [m.data for m in first] == [0, 1]  # type: ignore[union-attr]
        assert isinstance(gap, Gap) and gap.reason is GapReason.OVERFLOW and gap.missed == 3

    run(test)


def test_a_drain_ends_every_subscription_so_long_polls_answer() -> None:
    async def test() -> None:
        async with broadcast.subscribe("t") as subscription:
            waiting = asyncio.ensure_future(subscription.read())
            await asyncio.sleep(0)
            _current.drain()
            assert await waiting == []

    run(test)
