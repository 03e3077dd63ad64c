"""A worker's backend under serve(): one connection to the hub, made after
the fork, in the worker's event loop, when the application first publishes
or subscribes, and made again whenever it is lost.

When the connection is lost (the hub died, or sent nothing, not even its
tick, for `DEAF_AFTER` seconds), every subscriber of the worker receives a
gap at once, publishes waiting for their number fail, and the worker
reconnects with a growing delay; once back it tells the hub again which
topics it wants. A publish waits for the connection for at most
`CONNECT_WAIT` seconds, and while `IN_FLIGHT` of this worker's publishes
await their number (the bound between a publisher and the hub).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from tornado_prefork._broadcast import codec as _codec
from tornado_prefork._broadcast import journal as _journal
from tornado_prefork._broadcast.backend import Backend
from tornado_prefork._broadcast.codec import Frame, Kind
from tornado_prefork._broadcast.events import Gap, GapReason, Message, Position
from tornado_prefork._broadcast.hub import TICK
from tornado_prefork._broadcast.subscription import Fanout
from tornado_prefork.errors import BroadcastError

log = logging.getLogger("tornado_prefork.broadcast")

#: Seconds without a frame from the hub after which it is taken for lost.
DEAF_AFTER = 3.5 * TICK
#: Seconds a publish or a replay waits for a connection to the hub.
CONNECT_WAIT = 5.0
#: Publishes of one worker awaiting their number at once.
IN_FLIGHT = 1000
_RETRY_FIRST = 0.05
_RETRY_MOST = 1.0


class HubLink(Backend, asyncio.Protocol):
    """The connection of this worker to the hub at ``path``."""

    def __init__(self, path: str, silent: Callable[[], None] = lambda: None) -> None:
        self.path = path
        # Tells the supervisor that the hub is alive but deaf, so that it is replaced.
        self._silent = silent
        self.fanout = Fanout(self._want, self._drop)
        self.epoch: str | None = None
        self._transport: asyncio.Transport | None = None
        self._reader = _codec.Reader()
        self._requests: dict[int, asyncio.Future[Any]] = {}
        self._next_request = 0
        self._connected: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._lost: asyncio.Future[None] | None = None
        self._heard = 0.0
        self._task: asyncio.Task[None] | None = None
        self._outage_logged = False

    # The backend.

    async def publish(self, topic: str, kind: Kind, raw: bytes) -> Position:
        self._start()
        assert self._slots is not None
        async with self._slots:
            transport = await self._connection()
            request, answer = self._request()
            transport.write(_codec.publish(request, topic, kind, raw))
            seq, epoch = await answer
        self.fanout.stats.published += 1
        return Position(epoch, seq)

    async def history(self, topic: str, since: Position) -> tuple[Gap | None, list[Message]]:
        self._start()
        transport = await self._connection()
        request, answer = self._request()
        transport.write(_codec.replay(request, topic, since.epoch, since.seq))
        epoch, oldest, last, entries = await answer
        gap, kept = _journal.resume(topic, since, epoch, oldest, last, entries)
        return gap, [
            Message(topic, _codec.decode(kind, raw), Position(epoch, seq), raw)
            for seq, kind, raw in kept
        ]

    def _want(self, topic: str) -> None:
        self._start()
        if self._transport is not None and self.epoch is not None:
            self._transport.write(_codec.want(topic))

    def _drop(self, topic: str) -> None:
        if self._transport is not None and self.epoch is not None:
            self._transport.write(_codec.drop(topic))

    # The connection.

    def _start(self) -> None:
        if self._task is None:
            self._connected = asyncio.Event()
            self._slots = asyncio.Semaphore(IN_FLIGHT)
            self._task = asyncio.get_running_loop().create_task(self._keep_connected())

    async def _connection(self) -> asyncio.Transport:
        assert self._connected is not None
        if not self._connected.is_set():
            try:
                await asyncio.wait_for(self._connected.wait(), CONNECT_WAIT)
            except asyncio.TimeoutError:
                raise BroadcastError(
                    f"the broadcast hub ({self.path}) cannot be reached: "
                    f"waited {CONNECT_WAIT:.0f} s"
                ) from None
        assert self._transport is not None
        return self._transport

    def _request(self) -> tuple[int, asyncio.Future[Any]]:
        self._next_request = (self._next_request + 1) % 2**32
        answer = asyncio.get_running_loop().create_future()
        self._requests[self._next_request] = answer
        return self._next_request, answer

    async def _keep_connected(self) -> None:
        loop = asyncio.get_running_loop()
        delay = _RETRY_FIRST
        while True:
            try:
                await loop.create_unix_connection(lambda: self, self.path)
            except OSError as e:
                if not self._outage_logged:
                    log.warning("broadcast hub %s cannot be reached (%s); retrying", self.path, e)
                    self._outage_logged = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MOST)
                continue
            delay = _RETRY_FIRST
            self._lost = loop.create_future()
            watch = loop.create_task(self._watch())
            try:
                await self._lost
            finally:
                watch.cancel()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            silent = time.monotonic() - self._heard
            if self._transport is not None and silent > DEAF_AFTER:
                log.warning(
                    "the broadcast hub sent nothing for %.1f s, not even its tick: "
                    "reconnecting, and asking the parent to replace it",
                    silent,
                )
                self._silent()
                self._transport.abort()
                return

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._reader = _codec.Reader()
        self._heard = time.monotonic()

    def connection_lost(self, error: Exception | None) -> None:
        was_ready = self.epoch is not None
        self._transport = None
        self.epoch = None
        assert self._connected is not None
        self._connected.clear()
        requests, self._requests = self._requests, {}
        for answer in requests.values():
            if not answer.done():
                answer.set_exception(
                    BroadcastError(
                        "the connection to the broadcast hub was lost before it answered; "
                        "a message being published may or may not have been"
                    )
                )
        if was_ready:
            log.warning("lost the broadcast hub; subscribers are told of a gap, reconnecting")
            self._outage_logged = True
        self.fanout.lost(GapReason.HUB_LOST)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._heard = time.monotonic()
        try:
            for kind, body in self._reader.feed(data):
                self._handle(kind, body)
        except (ValueError, IndexError) as e:
            log.error("the broadcast hub sent a bad frame (%s); reconnecting", e)
            if self._transport is not None:
                self._transport.abort()

    def _handle(self, kind: Frame, body: memoryview) -> None:
        if kind is Frame.MESSAGE:
            seq, epoch, topic, data_kind, raw = _codec.parse(kind, body)
            self.fanout.deliver(topic, Position(epoch, seq), data_kind, raw)
        elif kind is Frame.ACK:
            request, seq, epoch = _codec.parse(kind, body)
            self._answer(request, (seq, epoch))
        elif kind is Frame.HISTORY:
            request, epoch, oldest, last, entries = _codec.parse(kind, body)
            self._answer(request, (epoch, oldest, last, entries))
        elif kind is Frame.HELLO:
            epoch, pid = _codec.parse(kind, body)
            self._hello(epoch, pid)

    def _hello(self, epoch: str, pid: int) -> None:
        assert self._transport is not None and self._connected is not None
        if self._outage_logged:
            log.info("broadcast hub (pid %d) reached, epoch %s", pid, epoch)
            self._outage_logged = False
        self.epoch = epoch
        for topic in self.fanout.topics():
            self._transport.write(_codec.want(topic))
        self._connected.set()

    def _answer(self, request: int, value: object) -> None:
        answer = self._requests.pop(request, None)
        if answer is not None and not answer.done():
            answer.set_result(value)
