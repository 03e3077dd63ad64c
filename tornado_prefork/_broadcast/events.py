"""What a subscriber receives: a `Message` at a `Position`, or a `Gap`."""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import Any

_POSITION = re.compile(r"([0-9A-Za-z]{1,32})-([0-9]{1,19})", re.ASCII)


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a message stands in its topic: the hub's ``epoch`` and the
    message's ``seq``, dense within an epoch (1, 2, 3, ...).

    ``str(position)`` (``"3f9a1c0b-42"``) and `Position.parse` round-trip, so
    that a cursor can travel in a URL, a cookie or a form field, and be
    handed to any worker: ``subscribe(topic, since=position)`` resumes after it.

    .. versionadded:: 0.1
    """

    epoch: str
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch}-{self.seq}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """The position written as ``text`` by ``str(position)``; `ValueError`
        naming ``text`` if it is not one (a cursor comes from a client: its
        epoch is at most 32 letters and digits, its seq below 2**63)."""
        match = _POSITION.fullmatch(str(text))
        if match is None or int(match.group(2)) >= 2**63:
            raise ValueError(f"a broadcast position must be EPOCH-SEQ, not {str(text)!r:.80}")
        return cls(match.group(1), int(match.group(2)))

    def next(self) -> Position:
        """The position of the message after this one."""
        return Position(self.epoch, self.seq + 1)


@dataclasses.dataclass(frozen=True)
class Message:
    """A message as published: ``data`` decoded as it was given to
    `publish` (bytes, str, or what `json.loads` makes of a JSON value), and
    where it stands in its topic.

    ``raw`` is the data as it travelled (UTF-8 text for a str or a JSON
    value): a WebSocket handler can send it to many clients without encoding
    it again.

    .. versionadded:: 0.1
    """

    topic: str
    data: Any
    position: Position
    raw: bytes = dataclasses.field(repr=False, compare=False, default=b"")


class GapReason(enum.Enum):
    """Why a subscriber missed messages."""

    #: Its own queue was full: the overflow policy dropped some.
    OVERFLOW = "overflow"
    #: The hub's buffer for this worker was full: the hub dropped some.
    LINK_OVERFLOW = "link overflow"
    #: ``since`` is older than the history the hub keeps.
    HISTORY = "history"
    #: ``since`` or the last message seen belongs to another epoch (the hub
    #: restarted, or the topic's history was forgotten).
    EPOCH = "new epoch"
    #: The connection to the hub was lost: what was published meanwhile is unknown.
    HUB_LOST = "hub lost"
    #: The subscription was closed by its overflow policy ``close``.
    CLOSED = "closed"


@dataclasses.dataclass(frozen=True)
class Gap:
    """Messages of ``topic`` were missed, and why (``reason``).

    ``after`` is the last position this subscriber had (the last message it
    received, or its ``since``), ``resume`` the position of the next message
    it will receive, each when known; ``missed`` counts the messages in
    between when both are in one epoch. A new epoch is always a gap. An
    application answers a gap by reloading what it shows (from its database,
    or by starting over).

    .. versionadded:: 0.1
    """

    topic: str
    reason: GapReason
    after: Position | None = None
    resume: Position | None = None

    @property
    def missed(self) -> int | None:
        """How many messages were missed, when it is known."""
        if self.after is None or self.resume is None or self.after.epoch != self.resume.epoch:
            return None
        return max(0, self.resume.seq - self.after.seq - 1)


#: What iterating a subscription yields.
Event = Message | Gap


class Overflow(enum.Enum):
    """What a subscription does when its queue is full; each drop is counted
    and turns into a `Gap` for the subscriber.

    .. versionadded:: 0.1
    """

    #: Drop the oldest message waiting (the default): the subscriber stays current.
    DROP_OLDEST = "drop_oldest"
    #: Drop the message arriving: the subscriber reads what was queued first.
    DROP_NEWEST = "drop_newest"
    #: Keep only the newest message: for state that a later message replaces.
    LATEST = "latest"
    #: End the subscription with a `Gap` of reason ``closed`` (a WebSocket
    #: helper then closes the connection, and its client resumes by cursor).
    CLOSE = "close"
