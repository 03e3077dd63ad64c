"""Messages across workers: publish to a topic in any worker, and every
subscriber of that topic in every worker receives it, in one order, or is
told what it missed.

.. code-block:: python

    from tornado_prefork import broadcast

    position = await broadcast.publish("room:42", {"text": "hi"})
    async with broadcast.subscribe("room:42", since=None) as subscription:
        async for event in subscription:
            if isinstance(event, broadcast.Gap):
                ...  # messages were missed: reload what is shown
            else:
                event.topic, event.data, event.position

Under `tornado_prefork.serve` the workers reach each other through a hub, a
process beside them that numbers each topic's messages and keeps the last of
them; in one process (a test, ``python app.py``) the same code runs on an
in-process backend. docs/broadcast.md says what is guaranteed.

.. versionadded:: 0.1
"""

from __future__ import annotations

from tornado_prefork._broadcast import codec as _codec
from tornado_prefork._broadcast import current as _current
from tornado_prefork._broadcast.events import Event, Gap, GapReason, Message, Overflow, Position
from tornado_prefork._broadcast.subscription import MAX_QUEUE, Subscription
from tornado_prefork._broadcast.websocket import BroadcastWebSocket
from tornado_prefork.errors import BroadcastError

__all__ = [
    "BroadcastError",
    "BroadcastWebSocket",
    "Event",
    "Gap",
    "GapReason",
    "Message",
    "Overflow",
    "Position",
    "Subscription",
    "publish",
    "recent",
    "subscribe",
]

# A position no topic has: resuming from it replays the whole history kept.
_BEFORE_ALL = Position("0", 0)


async def publish(topic: str, data: object) -> Position:
    """Publishes ``data`` to ``topic``: every subscriber of ``topic``, in
    every worker, receives it as a `Message`. Returns its position, once the
    hub has numbered it; a subscriber in this worker may receive it before
    this returns.

    ``data`` is bytes, str, or anything `json.dumps` takes (a subscriber
    receives what `json.loads` makes of it). Raises `TypeError` for other
    data, `ValueError` for a topic that is not a non-empty str, and
    `BroadcastError` when the hub cannot be reached (it is restarting: the
    message may not have been published). Waits while this worker has many
    publishes in flight, never on a slow subscriber.

    .. versionadded:: 0.1
    """
    _codec.check_topic(topic)
    kind, raw = _codec.encode(data)
    return await _current.current().publish(topic, kind, raw)


def subscribe(
    topic: str,
    since: Position | None = None,
    *,
    max_queue: int = MAX_QUEUE,
    overflow: Overflow | str = Overflow.DROP_OLDEST,
) -> Subscription:
    """Subscribes to ``topic``: use it as ``async with subscribe(topic) as
    subscription``, then iterate it (or call `Subscription.read`). Each event
    is a `Message` or a `Gap`.

    With ``since`` (a `Position`, from `publish` or a message), the messages
    published after it come first, replayed from the history the hub keeps
    (the last 1,000 of the topic); a `Gap` comes first when that history does
    not reach back to it. Without, the messages published from now on.

    At most ``max_queue`` messages wait for the subscriber; when more arrive,
    ``overflow`` says which are dropped (`Overflow`), and the subscriber
    receives a `Gap` where they were.

    .. versionadded:: 0.1
    """
    return Subscription(_current.current, topic, since, max_queue, Overflow(overflow))


async def recent(topic: str, limit: int | None = None) -> list[Message]:
    """The messages of ``topic`` that the history still holds, oldest first
    (the last ``limit`` of them, if given): what a page shows when it loads,
    before it subscribes from the last one's position.

    .. versionadded:: 0.1
    """
    _codec.check_topic(topic)
    _, messages = await _current.current().history(topic, _BEFORE_ALL)
    return messages if limit is None else messages[-limit:] if limit > 0 else []
