"""A process's subscribers: each `Subscription` has a bounded queue with an
overflow policy, and `Fanout` hands every message that reaches the process
to the subscribers of its topic, decoded once for all of them.

A subscription derives its gaps from the positions it receives: a message
whose seq is not the next one, or of another epoch, is preceded by a `Gap`;
one already received (a replay overlapping live messages) is skipped. So a
drop anywhere on the way (the hub's buffer for a worker, this queue) reaches
the subscriber as a gap, with no bookkeeping between the two. A drop that no
later message reveals (the newest ones dropped, then silence) is told when
the queue runs dry: by this queue itself, or by the hub (`Fanout.skipped`).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from tornado_prefork._broadcast.codec import Kind, check_topic, decode
from tornado_prefork._broadcast.events import Event, Gap, GapReason, Message, Overflow, Position


class Source(Protocol):
    """What a subscription needs of its backend (`tornado_prefork._broadcast.backend`)."""

    @property
    def fanout(self) -> Fanout: ...

    async def history(self, topic: str, since: Position) -> tuple[Gap | None, list[Message]]: ...


#: A subscription's queue holds at most this many messages, unless told otherwise.
MAX_QUEUE = 1000


@dataclasses.dataclass
class Stats:
    """What one process's broadcast did, for its metrics (counts since start)."""

    published: int = 0
    delivered: int = 0
    #: Messages dropped, by reason (`GapReason` values).
    dropped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    gaps: int = 0
    #: The most messages any subscription's queue held at once.
    queue_high_water: int = 0
    subscribers: int = 0


class Subscription:
    """Messages of one topic, as `tornado_prefork.broadcast.subscribe` returns
    them: use it as ``async with subscribe(...) as subscription``, then
    ``async for event in subscription`` (or `read` for what is there now).
    One task reads a subscription.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        backend: Callable[[], Source],
        topic: str,
        since: Position | None,
        max_queue: int,
        overflow: Overflow,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        check_topic(topic)
        if since is not None and not isinstance(since, Position):
            raise TypeError(f"since must be a broadcast.Position or None, not {since!r}")
        if not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be an int >= 1, not {max_queue!r}")
        self.topic = topic
        self.since = since
        self.max_queue = max_queue
        self.overflow = Overflow(overflow)
        self._limit = 1 if self.overflow is Overflow.LATEST else max_queue
        # Found when entered: a subscription made before the fork (in a
        # preloaded module) belongs to the worker that enters it.
        self._backend_of = backend
        self._fanout: Fanout | None = None
        self._queue: collections.deque[Event] = collections.deque()
        self._messages = 0
        self._waiter: asyncio.Future[None] | None = None
        # The last position received: the next message should follow it.
        self._at = since
        # Why the next hole in the positions is there, when this side made it.
        self._hole: GapReason | None = None
        # The newest message dropped with nothing after it queued yet: told
        # as a gap when the queue runs dry, if no later message tells it.
        self._dropped_to: Position | None = None
        self._entered = False
        self._ended = False
        # Told when the policy ``close`` ends the subscription: its reader
        # may be stuck on a client that stopped reading.
        self._on_close = on_close

    @property
    def fanout(self) -> Fanout:
        assert self._fanout is not None
        return self._fanout

    async def __aenter__(self) -> Subscription:
        if self._entered:
            raise RuntimeError("a broadcast subscription can be entered once")
        self._entered = True
        backend = self._backend_of()
        self._fanout = backend.fanout
        # Attached before the replay, so that nothing published meanwhile is
        # missed; what both bring is received once.
        self._fanout.add(self)
        try:
            if self.since is not None:
                gap, replayed = await backend.history(self.topic, self.since)
                self._queue.extendleft(reversed([*([gap] if gap else []), *replayed]))
                self._messages += len(replayed)
                self._overfull()
        except BaseException:
            self._fanout.remove(self)
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._end()
        self.fanout.remove(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if not self._entered:
            raise RuntimeError("use a broadcast subscription as 'async with subscribe(...)'")
        while True:
            while not self._queue:
                if self._dropped_to is not None:
                    return self._tell_dropped()
                if self._ended:
                    raise StopAsyncIteration
                if self._waiter is not None:
                    raise RuntimeError("a broadcast subscription is read by one task at a time")
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            event = self._next()
            if event is not None:
                return event

    async def read(self, limit: int = 100) -> list[Event]:
        """Waits for an event, then returns it with the others that are
        there, at most ``limit`` (a long-poll answer); ``[]`` once the
        subscription has ended (its worker drains: the client asks another)."""
        try:
            events = [await self.__anext__()]
        except StopAsyncIteration:
            return []
        while len(events) < limit and self._queue:
            event = self._next()
            if event is not None:
                events.append(event)
        return events

    def _next(self) -> Event | None:
        """The next event to yield, or None when the queue's head is a
        message already received. A gap found in the positions is yielded
        first, and its message stays at the head."""
        event = self._queue[0]
        stats = self.fanout.stats
        if isinstance(event, Gap):
            self._queue.popleft()
            resume = event.resume
            self._at = None if resume is None else Position(resume.epoch, resume.seq - 1)
            stats.gaps += 1
            return event
        at = self._at
        position = event.position
        if at is not None and position.epoch == at.epoch and position.seq <= at.seq:
            self._queue.popleft()
            self._messages -= 1
            return None
        if at is not None and (position.epoch != at.epoch or position.seq != at.seq + 1):
            reason = GapReason.EPOCH if position.epoch != at.epoch else self._hole
            self._at = Position(position.epoch, position.seq - 1)
            self._hole = None
            stats.gaps += 1
            return Gap(self.topic, reason or GapReason.LINK_OVERFLOW, at, position)
        self._queue.popleft()
        self._messages -= 1
        self._at = position
        stats.delivered += 1
        return event

    def _tell_dropped(self) -> Gap:
        """The gap of the newest messages dropped, with nothing after them."""
        dropped, self._dropped_to = self._dropped_to, None
        assert dropped is not None
        at = self._at
        self._at = dropped
        self.fanout.stats.gaps += 1
        return Gap(self.topic, self._hole or GapReason.LINK_OVERFLOW, at, dropped.next())

    def offer(self, message: Message) -> None:
        """A message of this topic reached the process (the overflow policy
        applies if the queue is full)."""
        if self._ended:
            return
        queue = self._queue
        if self._messages < self._limit and (not queue or isinstance(queue[-1], Message)):
            # The common case, once per subscriber of each message: room, and
            # no gap waiting for its end.
            queue.append(message)
            self._messages += 1
            self._dropped_to = None
            stats = self.fanout.stats
            if self._messages > stats.queue_high_water:
                stats.queue_high_water = self._messages
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)
            return
        last = queue[-1] if queue else None
        if isinstance(last, Gap) and last.resume is None:
            # The gap of a lost hub ends here: drops after it are seen as holes.
            self._queue[-1] = dataclasses.replace(last, resume=message.position)
        self._queue.append(message)
        self._messages += 1
        self._dropped_to = None
        self._overfull()
        stats = self.fanout.stats
        if self._messages > stats.queue_high_water:
            stats.queue_high_water = self._messages
        self._wake()

    def offer_many(self, messages: list[Message]) -> None:
        """Messages of this topic that reached the process together, in
        order: as many `offer` calls, with one wake-up of the reader."""
        queue = self._queue
        count = self._messages + len(messages)
        if (
            count <= self._limit
            and not self._ended
            and (not queue or isinstance(queue[-1], Message))
        ):
            queue.extend(messages)
            self._messages = count
            self._dropped_to = None
            stats = self.fanout.stats
            if count > stats.queue_high_water:
                stats.queue_high_water = count
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)
            return
        for message in messages:
            self.offer(message)

    def skipped(self, position: Position) -> None:
        """The hub dropped this topic's messages for this worker up to
        ``position``: a gap when the queue runs dry, if nothing later tells it."""
        if self._ended:
            return
        newest = self._last_position()
        if newest is None or (newest.epoch == position.epoch and newest.seq < position.seq):
            self._dropped_to = position
            self._wake()

    def lost(self, reason: GapReason) -> None:
        """The process lost what was published for a while (the hub is gone):
        the subscriber is told at once, whatever comes next."""
        if self._ended:
            return
        if not (self._queue and isinstance(self._queue[-1], Gap)):
            self._queue.append(Gap(self.topic, reason, self._last_position()))
        self._dropped_to = None
        self._wake()

    def end(self) -> None:
        """No more events: what is queued is read, then the iteration ends."""
        self._end()

    def _last_position(self) -> Position | None:
        for event in reversed(self._queue):
            if isinstance(event, Message):
                return event.position
        return self._at

    def _overfull(self) -> None:
        """Applies the overflow policy while the queue holds more than it may."""
        excess = self._messages - self._limit
        if excess <= 0:
            return
        stats = self.fanout.stats
        stats.dropped[GapReason.OVERFLOW.value] += excess
        self._hole = GapReason.OVERFLOW
        if self.overflow is Overflow.CLOSE:
            self._queue.clear()
            self._messages = 0
            self._queue.append(Gap(self.topic, GapReason.CLOSED, self._at))
            self._end()
            if self._on_close is not None:
                # Not from within the link's read of the hub's frames.
                asyncio.get_running_loop().call_soon(self._on_close)
            return
        newest = self.overflow is Overflow.DROP_NEWEST
        for _ in range(excess):
            self._drop(newest)

    def _drop(self, newest: bool) -> None:
        """Drops the newest or the oldest message waiting."""
        indexes = range(len(self._queue) - 1, -1, -1) if newest else range(len(self._queue))
        for i in indexes:
            event = self._queue[i]
            if isinstance(event, Message):
                del self._queue[i]
                self._messages -= 1
                if newest:
                    self._dropped_to = event.position
                elif self._at is None:
                    # Nothing received yet: the subscriber starts before
                    # the first message dropped, so it sees the drop.
                    self._at = Position(event.position.epoch, event.position.seq - 1)
                return

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Fanout:
    """The subscribers of one process, by topic.

    ``wanted(topic)`` and ``unwanted(topic)`` are told of a topic's first
    subscriber and of its last one leaving (a worker tells the hub).
    """

    def __init__(self, wanted: Callable[[str], None], unwanted: Callable[[str], None]) -> None:
        self._wanted = wanted
        self._unwanted = unwanted
        # Dicts as ordered sets: subscribers are served in the order they came.
        self._subscribers: dict[str, dict[Subscription, None]] = {}
        self.stats = Stats()

    def topics(self) -> list[str]:
        """Every topic with a subscriber in this process."""
        return list(self._subscribers)

    def has(self, topic: str) -> bool:
        return topic in self._subscribers

    def add(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.topic)
        if subscribers is None:
            self._wanted(subscription.topic)
            subscribers = self._subscribers[subscription.topic] = {}
        subscribers[subscription] = None
        self.stats.subscribers += 1

    def remove(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.topic)
        if subscribers is None or subscription not in subscribers:
            return
        del subscribers[subscription]
        self.stats.subscribers -= 1
        if not subscribers:
            del self._subscribers[subscription.topic]
            self._unwanted(subscription.topic)

    def deliver(self, topic: str, position: Position, kind: Kind, raw: bytes) -> None:
        """A message reached this process: each subscriber of ``topic`` gets it."""
        subscribers = self._subscribers.get(topic)
        if not subscribers:
            return
        message = Message(topic, decode(kind, raw), position, raw)
        for subscription in list(subscribers):
            subscription.offer(message)

    def deliver_many(self, topic: str, entries: list[tuple[Position, Kind, bytes]]) -> None:
        """Messages of ``topic`` that reached this process together (one read
        from the hub), in order: as `deliver` for each, each subscriber
        woken once."""
        subscribers = self._subscribers.get(topic)
        if not subscribers:
            return
        messages = [
            Message(topic, decode(kind, raw), position, raw) for position, kind, raw in entries
        ]
        for subscription in list(subscribers):
            subscription.offer_many(messages)

    def skipped(self, topic: str, position: Position) -> None:
        """The hub dropped ``topic``'s messages for this process up to ``position``."""
        for subscription in list(self._subscribers.get(topic, ())):
            subscription.skipped(position)

    def lost(self, reason: GapReason, topic: str | None = None) -> None:
        """Every subscriber (of ``topic`` if given) missed what was published
        for a while."""
        every = self._every() if topic is None else list(self._subscribers.get(topic, ()))
        for subscription in every:
            subscription.lost(reason)

    def end_all(self) -> None:
        """Every subscription ends (the worker drains): long polls answer now."""
        for subscription in self._every():
            subscription.end()

    def _every(self) -> list[Subscription]:
        return [s for subscribers in self._subscribers.values() for s in subscribers]
