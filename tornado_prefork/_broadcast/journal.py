"""Numbering and history: each topic's messages get dense sequence numbers,
and the last of them are kept for subscribers that resume by position.

Everything here is bounded: a topic keeps at most `HISTORY` messages and
`HISTORY_BYTES` bytes of data, and all topics together `HISTORY_TOTAL` bytes
(beyond it, the topics published to least recently lose their oldest
messages first); at most `TOPICS` topics are remembered, and the one
published to least recently is forgotten first (only topics without
subscribers are). A topic forgotten and published to again starts a new
epoch, so that a position handed out before can never name another message.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Callable

from tornado_prefork._broadcast.codec import Kind
from tornado_prefork._broadcast.events import Gap, GapReason, Position

#: Messages of history kept per topic.
HISTORY = 1000
#: Bytes of history (the messages' data) kept per topic.
HISTORY_BYTES = 4 * 1024 * 1024
#: Bytes of history kept across all topics: what one hub holds at most.
HISTORY_TOTAL = 256 * 1024 * 1024
#: Topics remembered at most (their numbering and history).
TOPICS = 10_000

#: One kept message: (seq, kind, data).
Entry = tuple[int, Kind, bytes]


@dataclasses.dataclass
class Topic:
    """One topic's numbering and history."""

    epoch: str
    last: int = 0
    entries: collections.deque[Entry] = dataclasses.field(default_factory=collections.deque)
    size: int = 0

    @property
    def oldest(self) -> int:
        """The seq of the oldest message kept (``last + 1`` when none is)."""
        return self.entries[0][0] if self.entries else self.last + 1

    def append(self, kind: Kind, raw: bytes, history: int, history_bytes: int) -> int:
        self.last += 1
        self.entries.append((self.last, kind, raw))
        self.size += len(raw)
        while len(self.entries) > history or (self.size > history_bytes and self.entries):
            self.size -= len(self.entries.popleft()[2])
        return self.last

    def after(self, since: Position) -> list[Entry]:
        """The kept messages after ``since`` (all of them, from another epoch)."""
        seq = since.seq if since.epoch == self.epoch else 0
        first = self.oldest
        start = max(seq + 1 - first, 0)
        return list(itertools.islice(self.entries, start, None))


class Journal:
    """Every topic's numbering and history, in one process (the hub, or a
    process with the in-process backend).

    ``epoch`` names this journal's life; ``in_use(topic)`` says whether a
    topic has subscribers, which keeps it from being forgotten.
    """

    def __init__(
        self,
        epoch: str,
        in_use: Callable[[str], bool],
        *,
        history: int = HISTORY,
        history_bytes: int = HISTORY_BYTES,
        history_total: int = HISTORY_TOTAL,
        topics: int = TOPICS,
    ) -> None:
        self.epoch = epoch
        self._in_use = in_use
        self._history = history
        self._history_bytes = history_bytes
        self._history_total = history_total
        # The bytes of data every topic keeps, together.
        self.size = 0
        self._most_topics = topics
        self._topics: collections.OrderedDict[str, Topic] = collections.OrderedDict()
        self._forgotten = 0

    def topic(self, name: str) -> Topic:
        """The topic ``name``, made if it is not remembered."""
        topic = self._topics.get(name)
        if topic is None:
            # A topic made again after being forgotten must not reuse positions.
            epoch = self.epoch if not self._forgotten else f"{self.epoch}r{self._forgotten}"
            topic = self._topics[name] = Topic(epoch)
            self._forget()
        return topic

    def append(self, name: str, kind: Kind, raw: bytes) -> tuple[Topic, int]:
        """Numbers a new message of ``name``: its topic and seq."""
        topic = self.topic(name)
        self._topics.move_to_end(name)
        before = topic.size
        seq = topic.append(kind, raw, self._history, self._history_bytes)
        self.size += topic.size - before
        if self.size > self._history_total:
            self._trim()
        return topic, seq

    def get(self, name: str) -> Topic | None:
        """The topic ``name`` if it is remembered (reading makes none)."""
        return self._topics.get(name)

    def history(self, name: str, since: Position) -> tuple[str, int, int, list[Entry]]:
        """What a resume after ``since`` reads: the topic's epoch, oldest and
        last seq kept, and the messages kept after ``since``. A topic not
        remembered is read as empty, in the epoch it would have, and is not
        made: resumes and page loads naming rooms nobody publishes to must
        not push out the topics in use."""
        topic = self._topics.get(name)
        if topic is None:
            epoch = self.epoch if not self._forgotten else f"{self.epoch}r{self._forgotten}"
            return epoch, 1, 0, []
        return topic.epoch, topic.oldest, topic.last, topic.after(since)

    def _trim(self) -> None:
        """The oldest messages of the topics published to least recently go,
        until the history of all fits `HISTORY_TOTAL` (their numbering stays)."""
        for topic in self._topics.values():
            entries = topic.entries
            while entries and self.size > self._history_total:
                dropped = len(entries.popleft()[2])
                topic.size -= dropped
                self.size -= dropped
            if self.size <= self._history_total:
                return

    def _forget(self) -> None:
        if len(self._topics) <= self._most_topics:
            return
        # The newest, just made, stays; when every topic has subscribers the
        # bound is exceeded rather than a subscribed topic forgotten.
        for name in list(itertools.islice(self._topics, len(self._topics) - 1)):
            if len(self._topics) <= self._most_topics:
                return
            if not self._in_use(name):
                self.size -= self._topics.pop(name).size
                self._forgotten += 1


def resume(
    topic: str, since: Position, epoch: str, oldest: int, last: int, entries: list[Entry]
) -> tuple[Gap | None, list[Entry]]:
    """What a subscriber resuming after ``since`` receives, from a topic whose
    history (``epoch``, seq ``oldest`` to ``last``) holds ``entries`` after it:
    a `Gap` first when that history does not reach back to ``since``, then
    the messages kept after it."""
    if since.epoch != epoch:
        return Gap(topic, GapReason.EPOCH, since, Position(epoch, oldest)), entries
    if since.seq > last:
        # A cursor this topic never handed out (forged, or from a future that
        # was lost): go on from the next message.
        return Gap(topic, GapReason.HISTORY, since, Position(epoch, last + 1)), []
    if since.seq + 1 < oldest:
        return Gap(topic, GapReason.HISTORY, since, Position(epoch, oldest)), entries
    return None, [entry for entry in entries if entry[0] > since.seq]
