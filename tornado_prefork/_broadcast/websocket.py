"""`BroadcastWebSocket`: a WebSocket handler's subscriptions, written to its
client with Tornado's own flow control, and ended with the connection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from tornado.log import app_log
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from tornado_prefork._broadcast import current as _current
from tornado_prefork._broadcast.events import Event, Gap, GapReason, Message, Overflow, Position
from tornado_prefork._broadcast.subscription import MAX_QUEUE, Subscription

#: The close code a client too slow for its subscription gets: "try again later".
TRY_AGAIN_LATER = 1013


def _retrieved(write: asyncio.Future[Any]) -> None:
    """A write not awaited: its failure (the client went) is seen at the next
    write, which raises, so it is only taken here, not logged as unretrieved."""
    if not write.cancelled():
        write.exception()


class BroadcastWebSocket(WebSocketHandler):
    """A `tornado.websocket.WebSocketHandler` whose client receives the
    messages of topics: call `broadcast_subscribe` (in ``open``, or when the
    client asks), and each message is written to the client in order.

    Flow control is the connection's buffer: while the kernel takes what is
    written, messages are written as they come; once a write waits in the
    buffer, the next is written when ``write_message()``'s future says the
    client has taken it, so a client that stops reading holds at most
    ``broadcast_max_queue`` messages (each shared with every other
    subscriber) and one write in this worker. Then ``broadcast_overflow``
    applies: by default (`Overflow.CLOSE`) the connection is closed with code
    1013 ("try again later"), and a client that kept the position of the last
    message it received resumes from it on any worker. Subscriptions end
    with the connection.

    Override `on_broadcast` to write something else than the data as
    published; the default writes a str or JSON value as a text message and
    bytes as a binary one, and hands a gap to `on_broadcast_gap`.

    .. versionadded:: 0.1
    """

    broadcast_max_queue: int = MAX_QUEUE
    broadcast_overflow: Overflow = Overflow.CLOSE
    _broadcast_write: asyncio.Future[None] | None = None

    def broadcast_subscribe(self, topic: str, since: Position | None = None) -> None:
        """Writes the messages of ``topic`` (those after ``since`` first, if
        given) to this client until the connection ends."""
        subscription = Subscription(
            _current.current,
            topic,
            since,
            self.broadcast_max_queue,
            Overflow(self.broadcast_overflow),
            on_close=self._broadcast_too_slow,
        )
        tasks: set[asyncio.Task[None]] = self.__dict__.setdefault("_broadcast_tasks", set())
        task = asyncio.get_running_loop().create_task(self._broadcast_forward(subscription))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_broadcast(self, event: Event) -> Awaitable[Any] | None:
        """Writes ``event`` to the client; what it returns is awaited before
        the next event, but for the future of a `write_message` whose frame
        the kernel took at once."""
        if isinstance(event, Gap):
            return self.on_broadcast_gap(event)
        assert isinstance(event, Message)
        data = event.data
        if isinstance(data, bytes):
            return self.write_message(data, binary=True)
        return self.write_message(data if isinstance(data, str) else event.raw.decode())

    def on_broadcast_gap(self, gap: Gap) -> Awaitable[Any] | None:
        """The client missed messages (`Gap`): override it to tell the client
        to reload what it shows (write a message it knows), or close. The
        default does nothing: closing on every gap would make every client
        reconnect at once after a hub restart, each into a gap again."""
        return None

    def on_connection_close(self) -> None:
        for task in list(self.__dict__.get("_broadcast_tasks", ())):
            task.cancel()
        super().on_connection_close()

    async def _broadcast_forward(self, subscription: Subscription) -> None:
        try:
            async with subscription:
                async for event in subscription:
                    if isinstance(event, Gap) and event.reason is GapReason.CLOSED:
                        return
                    written = self.on_broadcast(event)
                    if (
                        isinstance(written, asyncio.Future)
                        and written is self._broadcast_write
                        and self._broadcast_taken()
                    ):
                        # The kernel took the whole frame: nothing to wait for.
                        # (Tornado's future is done only a turn of the loop
                        # later; waiting for each would let a burst overfill
                        # the queue of a client that keeps up.)
                        written.add_done_callback(_retrieved)
                    elif written is not None:
                        await written
        except WebSocketClosedError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            app_log.exception("broadcast to a WebSocket of %s failed", self.request.path)
            self.close(1011, "broadcast failed")

    def write_message(
        self, message: bytes | str | dict[str, Any], binary: bool = False
    ) -> asyncio.Future[None]:
        """As `tornado.websocket.WebSocketHandler.write_message`; the future
        of the last write is kept, for the flow control."""
        future = super().write_message(message, binary)
        self._broadcast_write = future
        return future

    def _broadcast_taken(self) -> bool:
        """Whether everything written to the client so far has left this
        process (`.IOStream.writing` is false: nothing waits in its buffer)."""
        connection = self.ws_connection
        stream = None if connection is None else connection.stream
        return stream is not None and not stream.writing()

    def _broadcast_too_slow(self) -> None:
        app_log.warning(
            "a WebSocket client of %s (%s) stopped reading its broadcast: closed (1013), "
            "%d messages were waiting",
            self.request.path,
            self.request.remote_ip,
            self.broadcast_max_queue,
        )
        self.close(TRY_AGAIN_LATER, "too slow: reconnect from your last position")
