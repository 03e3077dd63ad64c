"""A worker's backend under serve(): one connection to the hub, made after
the fork, in the worker's event loop, when the application first publishes
or subscribes, and made again whenever it is lost.

When the connection is lost (the hub died, or sent nothing, not even its
tick, for `DEAF_AFTER` seconds), every subscriber of the worker receives a
gap at once, requests waiting for an answer fail, and the worker reconnects
with a growing delay; once back it tells the hub again which topics it
wants. A request (a publish, a replay) waits for the connection for at most
`CONNECT_WAIT` seconds, and while `IN_FLIGHT` of this worker's requests
await their answer or the socket's buffer holds more than `WRITE_BUFFER`
bytes (the bounds between a publisher and the hub).
"""

from __future__ import annotations

import asyncio
import collections
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
#: Requests of one worker awaiting their answer at once.
IN_FLIGHT = 1000
#: Bytes this worker's socket may hold for the hub before requests wait.
WRITE_BUFFER = 8 * 1024 * 1024
#: Messages of one read handed to subscribers in one turn of the loop: their
#: readers get a turn between two chunks, so a burst that arrives in one
#: read (this worker's loop was held up) does not overfill the queue of a
#: subscriber that keeps up.
CHUNK = 64
_RETRY_FIRST = 0.05
_RETRY_MOST = 1.0


class HubLink(Backend, asyncio.Protocol):
    """The connection of this worker to the hub at ``path``; ``silent``
    tells the parent of a hub that is alive but sends nothing (its pid)."""

    def __init__(self, path: str, silent: Callable[[int], None] = lambda pid: None) -> None:
        self.path = path
        self.fanout = Fanout(self._want, self._drop)
        self.epoch: str | None = None
        self._silent = silent
        self._hub_pid = 0
        self._transport: asyncio.Transport | None = None
        self._reader = _codec.Reader()
        # Frames read and not handled yet, and the turn that will go on.
        self._pending: collections.deque[tuple[Frame, memoryview]] = collections.deque()
        self._turn: asyncio.Handle | None = None
        self._requests: dict[int, asyncio.Future[Any]] = {}
        self._next_request = 0
        # Made in the worker's loop, on first use: nothing of an event loop
        # may exist before the fork.
        self._connected: asyncio.Event | None = None
        self._writable: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._lost: asyncio.Future[None] | None = None
        self._heard = 0.0
        self._task: asyncio.Task[None] | None = None
        self._outage_logged = False
        # Whether the connection being made said hello (served at all).
        self._hello_seen = False

    # The backend.

    async def publish(self, topic: str, kind: Kind, raw: bytes) -> Position:
        seq, epoch = await self._ask(lambda request: _codec.publish(request, topic, kind, raw))
        self.fanout.stats.published += 1
        return Position(epoch, seq)

    async def history(self, topic: str, since: Position) -> tuple[Gap | None, list[Message]]:
        epoch, oldest, last, entries = await self._ask(
            lambda request: _codec.replay(request, topic, since.epoch, since.seq)
        )
        gap, kept = _journal.resume(topic, since, epoch, oldest, last, entries)
        return gap, [
            Message(topic, _codec.decode(kind, raw), Position(epoch, seq), raw)
            for seq, kind, raw in kept
        ]

    async def _ask(self, frame: Callable[[int], bytes]) -> Any:
        """Sends the request that ``frame`` makes for a request id, and
        returns the hub's answer, within the bounds of the module's docstring."""
        self._start()
        assert self._slots is not None and self._writable is not None
        async with self._slots:
            transport = await self._connection()
            await self._writable.wait()
            request = (self._next_request + 1) % 2**32
            data = frame(request)  # may raise: nothing is registered yet
            self._next_request = request
            answer = asyncio.get_running_loop().create_future()
            self._requests[request] = answer
            try:
                transport.write(data)
                return await answer
            finally:
                self._requests.pop(request, None)

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
            self._writable = asyncio.Event()
            self._writable.set()
            self._slots = asyncio.Semaphore(IN_FLIGHT)
            self._task = asyncio.get_running_loop().create_task(self._keep_connected())

    async def _connection(self) -> asyncio.Transport:
        assert self._connected is not None
        deadline = time.monotonic() + CONNECT_WAIT
        # Connected and lost again before this wakes: wait again, to the same deadline.
        while not (self._connected.is_set() and self._transport is not None):
            try:
                await asyncio.wait_for(self._connected.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                raise BroadcastError(
                    f"the broadcast hub ({self.path}) cannot be reached: "
                    f"waited {CONNECT_WAIT:.0f} s"
                ) from None
        return self._transport

    async def _keep_connected(self) -> None:
        loop = asyncio.get_running_loop()
        delay = _RETRY_FIRST
        while True:
            # Made first: a connection lost at once must find it.
            self._lost = loop.create_future()
            try:
                await loop.create_unix_connection(lambda: self, self.path)
            except OSError as e:
                if not self._outage_logged:
                    log.warning("broadcast hub %s cannot be reached (%s); retrying", self.path, e)
                    self._outage_logged = True
            else:
                watch = loop.create_task(self._watch())
                try:
                    await self._lost
                finally:
                    watch.cancel()
                if self._hello_seen:
                    # A hub that served, lost: the next one is tried soon.
                    delay = _RETRY_FIRST
            self._hello_seen = False
            # Also after a connection that was lost: a hub that accepts and
            # drops at once must not make this a busy loop.
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MOST)

    async def _watch(self) -> None:
        while True:
            slept = time.monotonic()
            await asyncio.sleep(TICK)
            now = time.monotonic()
            if now - slept > 2 * TICK:
                # This worker's own loop was blocked (or starved of CPU): the
                # hub's ticks wait unread in the socket, it is not the deaf one.
                continue
            silent = now - self._heard
            if self._transport is not None and silent > DEAF_AFTER:
                log.warning(
                    "the broadcast hub sent nothing for %.1f s, not even its tick: "
                    "reconnecting, and asking the parent to replace it",
                    silent,
                )
                if self._hub_pid:
                    self._silent(self._hub_pid)
                self._transport.abort()
                return

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=WRITE_BUFFER)
        self._reader = _codec.Reader()
        self._heard = time.monotonic()

    def pause_writing(self) -> None:
        assert self._writable is not None
        self._writable.clear()

    def resume_writing(self) -> None:
        assert self._writable is not None
        self._writable.set()

    def connection_lost(self, error: Exception | None) -> None:
        was_ready = self.epoch is not None
        self._transport = None
        if self._turn is not None:
            # What arrived before the loss is handed over before its gap.
            self._turn.cancel()
            self._hand_over(None)
        self.epoch = None
        assert self._connected is not None and self._writable is not None
        self._connected.clear()
        self._writable.set()
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
            # Only a connection that said hello carried messages: one lost
            # before (a reconnect that reached the dying hub's socket) adds
            # nothing to the gap its subscribers were told of already.
            self.fanout.lost(GapReason.HUB_LOST)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._heard = time.monotonic()
        try:
            self._pending.extend(self._reader.feed(data))
        except _codec.FrameError as e:
            self._bad_frame(e)
            return
        if self._turn is None:
            self._hand_over(CHUNK)

    def _hand_over(self, most: int | None) -> None:
        """Handles the frames that arrived, in order, with at most ``most``
        messages in this turn of the loop; the rest in the next turn, the
        socket's reading paused meanwhile (what waits stays one read)."""
        self._turn = None
        pending = self._pending
        # Consecutive messages of one topic are handed over together: each
        # subscriber's reader is woken once for them, not once per message.
        run: list[tuple[Position, Kind, bytes]] = []
        run_topic = ""
        handed = 0
        try:
            while pending:
                kind, body = pending[0]
                if kind is Frame.MESSAGE:
                    if handed == most:
                        break
                    seq, epoch, topic, data_kind, raw = _codec.parse(kind, body)
                    pending.popleft()
                    handed += 1
                    if topic != run_topic and run:
                        self.fanout.deliver_many(run_topic, run)
                        run = []
                    run_topic = topic
                    run.append((Position(epoch, seq), data_kind, raw))
                    continue
                pending.popleft()
                if run:
                    self.fanout.deliver_many(run_topic, run)
                    run = []
                self._handle(kind, body)
        except _codec.FrameError as e:
            pending.clear()
            self._bad_frame(e)
        finally:
            if run:  # what came whole before a bad frame too
                self.fanout.deliver_many(run_topic, run)
        # Again: handing many messages to many subscribers can take a while.
        self._heard = time.monotonic()
        transport = self._transport
        if pending and transport is not None:
            # The subscribers' readers, woken, run before the next turn.
            transport.pause_reading()
            self._turn = asyncio.get_running_loop().call_soon(self._hand_over, CHUNK)
        elif transport is not None and not transport.is_reading():
            transport.resume_reading()

    def _bad_frame(self, error: _codec.FrameError) -> None:
        log.error("the broadcast hub sent a bad frame (%s); reconnecting", error)
        if self._transport is not None:
            self._transport.abort()

    def _handle(self, kind: Frame, body: memoryview) -> None:
        if kind is Frame.ACK:
            request, seq, epoch = _codec.parse(kind, body)
            self._answer(request, (seq, epoch))
        elif kind is Frame.HISTORY:
            request, epoch, oldest, last, entries = _codec.parse(kind, body)
            self._answer(request, (epoch, oldest, last, entries))
        elif kind is Frame.SKIPPED:
            topic, epoch, seq = _codec.parse(kind, body)
            self.fanout.skipped(topic, Position(epoch, seq))
        elif kind is Frame.HELLO:
            epoch, pid = _codec.parse(kind, body)
            self._hello(epoch, pid)
        elif kind is Frame.FAILED:
            request, why = _codec.parse(kind, body)
            self._fail(request, why)
        elif kind is Frame.LOST:
            (topic,) = _codec.parse(kind, body)
            self.fanout.lost(GapReason.EPOCH, topic)

    def _hello(self, epoch: str, pid: int) -> None:
        if self._transport is None:
            return  # read before a loss, handled after it: nothing to greet
        assert self._connected is not None
        if self._outage_logged:
            log.info("broadcast hub (pid %d) reached, epoch %s", pid, epoch)
            self._outage_logged = False
        self.epoch = epoch
        self._hub_pid = pid
        self._hello_seen = True
        for topic in self.fanout.topics():
            self._transport.write(_codec.want(topic))
        self._connected.set()

    def _fail(self, request: int, why: str) -> None:
        answer = self._requests.pop(request, None)
        if answer is not None and not answer.done():
            answer.set_exception(BroadcastError(why))

    def _answer(self, request: int, value: object) -> None:
        answer = self._requests.pop(request, None)
        if answer is not None and not answer.done():
            answer.set_result(value)
