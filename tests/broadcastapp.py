"""The application the broadcast fault tests serve: publish, long-poll and a
WebSocket, each saying which worker served it, every event with its position.

- ``POST /publish?topic=T&count=N&size=S[&at_once=1][&bytes=1]``: publishes
  N messages one after the other (or all at once), each ``{"pid": PID,
  "pad": "x" * S}`` (or its JSON text as bytes); answers how many were
  published and how many failed (`BroadcastError`: the hub was lost).
  With ``hold=S`` (and ``at_once``), the worker's loop is then held up for S
  seconds once the publishes are sent: their messages come back in one read.
- ``POST /storm?topic=T&seconds=S&rate=R``: the same in the background, R
  messages a second for S seconds or until the worker dies; answers at once.
- ``GET /poll?topic=T&cursor=C``: a long poll, from cursor C if given.
- ``/ws?topic=T&cursor=C&max_queue=N``: a `BroadcastWebSocket` subscribed
  from C if given, its queue N messages if given.
- ``GET /pid``: the worker's pid.

An event is written as JSON: a message ``{"c": CURSOR, "d": DATA}`` (``d``
is the data's JSON text as it travelled, so the publisher's pid is in it), a
gap ``{"gap": REASON, "after": CURSOR, "resume": CURSOR}`` (null where
unknown). The first WebSocket message, and every long-poll answer, has the
worker's ``pid``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable
from typing import Any

from tornado.web import Application, RequestHandler

from tornado_prefork import broadcast
from tornado_prefork.broadcast import BroadcastError, Event, Gap, Message, Position

# How long a poll waits for an event before it answers with none.
POLL_WAIT = 5.0
_storms: set[asyncio.Task[None]] = set()


def encoded(event: Event) -> bytes:
    """An event as the clients receive it (a message's data is not decoded again)."""
    if isinstance(event, Gap):
        return json.dumps(
            {
                "gap": event.reason.value,
                "after": None if event.after is None else str(event.after),
                "resume": None if event.resume is None else str(event.resume),
            }
        ).encode()
    return b'{"c":"%s","d":%s}' % (str(event.position).encode(), event.raw)


def _since(handler: RequestHandler) -> Position | None:
    cursor = handler.get_argument("cursor", None)
    return Position.parse(cursor) if cursor else None


async def _publish(
    topic: str,
    count: int,
    size: int,
    at_once: bool = False,
    as_bytes: bool = False,
    hold: float = 0.0,
) -> tuple[int, int]:
    """Publishes ``count`` messages one after the other (all at once with
    ``at_once``; their JSON text as bytes with ``as_bytes``): how many were
    published, how many failed."""
    data: object = {"pid": os.getpid(), "pad": "x" * size}
    if as_bytes:
        data = json.dumps(data).encode()

    async def one() -> bool:
        try:
            await broadcast.publish(topic, data)
        except BroadcastError:
            return False
        return True

    if at_once:
        publishes = asyncio.gather(*(one() for _ in range(count)))
        if hold:
            await asyncio.sleep(0.05)  # every publish written to the hub
            time.sleep(hold)  # noqa: ASYNC251 (the point: this loop is held up)
        done = await publishes
    else:
        done = [await one() for _ in range(count)]
    return sum(done), count - sum(done)


class Publish(RequestHandler):
    async def post(self) -> None:
        published, failed = await _publish(
            self.get_argument("topic"),
            int(self.get_argument("count", "1")),
            int(self.get_argument("size", "0")),
            self.get_argument("at_once", "") == "1",
            self.get_argument("bytes", "") == "1",
            float(self.get_argument("hold", "0")),
        )
        self.write({"pid": os.getpid(), "published": published, "failed": failed})


class Storm(RequestHandler):
    def post(self) -> None:
        topic = self.get_argument("topic")
        started = time.monotonic()
        until = started + float(self.get_argument("seconds"))
        size = int(self.get_argument("size", "0"))
        rate = float(self.get_argument("rate"))

        async def storm() -> None:
            sent = 0
            while time.monotonic() < until:
                await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
                await _publish(topic, 10, size)
                sent += 10

        task = asyncio.get_running_loop().create_task(storm())
        _storms.add(task)
        task.add_done_callback(_storms.discard)
        self.write({"pid": os.getpid()})


class Poll(RequestHandler):
    waiting: asyncio.Future[list[Event]] | None = None

    async def get(self) -> None:
        try:
            async with broadcast.subscribe(self.get_argument("topic"), _since(self)) as sub:
                self.waiting = asyncio.ensure_future(asyncio.wait_for(sub.read(1000), POLL_WAIT))
                try:
                    events = await self.waiting
                except asyncio.CancelledError:
                    return
                except asyncio.TimeoutError:
                    events = []
        except BroadcastError as e:
            self.set_status(503)
            self.write({"pid": os.getpid(), "error": str(e)})
            return
        self.set_header("Content-Type", "application/json")
        self.write(b'{"pid":%d,"events":[%s]}' % (os.getpid(), b",".join(map(encoded, events))))

    def on_connection_close(self) -> None:
        if self.waiting is not None:
            self.waiting.cancel()


class Socket(broadcast.BroadcastWebSocket):
    def open(self) -> None:
        self.write_message({"pid": os.getpid()})
        self.broadcast_max_queue = int(
            self.get_argument("max_queue", str(self.broadcast_max_queue))
        )
        self.broadcast_subscribe(self.get_argument("topic"), _since(self))

    def on_broadcast(self, event: Event) -> Awaitable[Any] | None:
        assert isinstance(event, (Message, Gap))
        return self.write_message(encoded(event))


class Pid(RequestHandler):
    def get(self) -> None:
        self.write({"pid": os.getpid()})


def make_app() -> Application:
    return Application(
        [
            (r"/publish", Publish),
            (r"/storm", Storm),
            (r"/poll", Poll),
            (r"/ws", Socket),
            (r"/pid", Pid),
        ]
    )
