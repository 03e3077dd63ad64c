"""The hub: a sidecar process beside the workers that numbers each topic's
messages, keeps their history, and sends each message once to every worker
that has subscribers for its topic (interest routing).

Workers connect to its unix socket after the fork (so that no process holds
a copy of another's connection and a dead peer's end is seen at once); a peer
of another user is refused (``SO_PEERCRED``). The hub's epoch is new at each
start: a restarted hub is a new epoch, which every subscriber sees as a gap.

Nothing here waits on a worker: what a worker has not read is buffered up to
`LINK_BUFFER` bytes, and messages beyond that are dropped for that worker
alone and counted (its subscribers see the hole as a gap). A tick every
`TICK` seconds on every connection lets a worker notice a hub that died or
stopped answering.

With a broker (``broadcast="redis://..."``) the hub is the machine's one
client of it (`upstream`): Redis numbers the messages and keeps their
history, the hub subscribes upstream to the union of its workers' topics
and sends each message it receives once to every worker that wants it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
from collections.abc import Coroutine, Iterable
from typing import Any, cast

from tornado_prefork._broadcast import codec as _codec
from tornado_prefork._broadcast import journal as _journal
from tornado_prefork._broadcast.backend import new_epoch
from tornado_prefork._broadcast.codec import Frame
from tornado_prefork._broadcast.events import Position
from tornado_prefork._broadcast.upstream import Upstream
from tornado_prefork._system.proctitle import set_title
from tornado_prefork.errors import BroadcastError

log = logging.getLogger("tornado_prefork.broadcast")

#: Bytes the hub holds for one worker that does not read, before it drops.
LINK_BUFFER = 8 * 1024 * 1024
#: Seconds between two ticks.
TICK = 1.0

_CREDENTIALS = struct.Struct("3i")
#: What a resume reads: epoch, oldest and last seq kept, the messages after it.
_History = tuple[str, int, int, list[_journal.Entry]]


class Hub:
    """Every topic's numbering and history, and which connection wants which topic."""

    def __init__(self, allowed_uids: Iterable[int], broker: str | None = None) -> None:
        self.epoch = new_epoch()
        self.allowed_uids = frozenset(allowed_uids)
        self.journal = _journal.Journal(self.epoch, lambda topic: bool(self.wanted.get(topic)))
        self.wanted: dict[str, set[Connection]] = {}
        self.connections: set[Connection] = set()
        self.upstream = None if broker is None else Upstream(broker, self.deliver, self.lost)

    def publish(self, topic: str, kind: _codec.Kind, raw: bytes) -> tuple[int, str]:
        """Numbers a message here (no broker) and delivers it."""
        entry, seq = self.journal.append(topic, kind, raw)
        self.deliver(topic, Position(entry.epoch, seq), kind, raw)
        return seq, entry.epoch

    def deliver(self, topic: str, position: Position, kind: _codec.Kind, raw: bytes) -> None:
        """Sends a numbered message to every worker that wants its topic."""
        links = self.wanted.get(topic)
        if links:
            # Encoded once for every worker that wants it.
            data = _codec.message(position.seq, position.epoch, topic, kind, raw)
            for link in links:
                link.send_message(topic, position.epoch, position.seq, data)

    def lost(self, topic: str) -> None:
        """What the workers wanting ``topic`` had received is gone upstream."""
        data = _codec.lost(topic)
        for link in self.wanted.get(topic, ()):
            link.send(data)

    def want(self, connection: Connection, topic: str) -> None:
        connection.topics.add(topic)
        links = self.wanted.get(topic)
        if links is None:
            links = self.wanted[topic] = set()
            if self.upstream is not None:
                self.upstream.want(topic)
        links.add(connection)

    def unwant(self, connection: Connection, topic: str) -> None:
        connection.topics.discard(topic)
        links = self.wanted.get(topic)
        if links is not None:
            links.discard(connection)
            if not links:
                del self.wanted[topic]
                if self.upstream is not None:
                    self.upstream.drop(topic)

    def forget(self, connection: Connection) -> None:
        self.connections.discard(connection)
        for topic in list(connection.topics):
            self.unwant(connection, topic)

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            for connection in list(self.connections):
                connection.tick()


class Connection(asyncio.Protocol):
    """One worker's connection to the hub."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.topics: set[str] = set()
        self.dropped = 0
        # Per topic, the last message dropped for this worker and not yet told
        # (bounded by the topics it wants).
        self.skipped: dict[str, tuple[str, int]] = {}
        self._reader = _codec.Reader()
        self._transport: asyncio.Transport | None = None
        self._peer = "a worker"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's.
        transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if hasattr(socket, "SO_PEERCRED") and sock is not None:
            pid, uid, _ = _CREDENTIALS.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
            )
            self._peer = f"pid {pid}"
            if uid not in self.hub.allowed_uids:
                log.warning("broadcast hub: refused a connection from pid %d of uid %d", pid, uid)
                transport.abort()
                return
        if sock is not None:
            # The kernel holds what a worker has not read yet, rather than
            # asyncio's buffer, which is copied as it grows.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LINK_BUFFER)
        self._transport = transport
        self.hub.connections.add(self)
        transport.write(_codec.hello(self.hub.epoch, os.getpid()))

    def connection_lost(self, error: Exception | None) -> None:
        self._transport = None
        self.hub.forget(self)
        if self.dropped:
            log.warning(
                "broadcast hub: %s left; %d messages were dropped for it (it did not read)",
                self._peer,
                self.dropped,
            )

    def send(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def send_message(self, topic: str, epoch: str, seq: int, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        if transport.get_write_buffer_size() > LINK_BUFFER:
            # Its subscribers see the hole in the positions as a gap, and
            # hear of it by a SKIPPED frame if no later message comes.
            if not self.dropped:
                log.warning("broadcast hub: %s does not read; dropping its messages", self._peer)
            self.dropped += 1
            self.skipped[topic] = (epoch, seq)
            return
        transport.write(data)

    def tick(self) -> None:
        """Every `TICK`: the tick, and what was skipped once the worker reads again."""
        transport = self._transport
        if transport is None:
            return
        if self.skipped and transport.get_write_buffer_size() < LINK_BUFFER // 2:
            for topic, (epoch, seq) in self.skipped.items():
                transport.write(_codec.skipped(topic, epoch, seq))
            self.skipped.clear()
        transport.write(_codec.TICK)

    def data_received(self, data: bytes) -> None:
        try:
            for kind, body in self._reader.feed(data):
                self._handle(kind, body)
        except _codec.FrameError as e:
            log.warning("broadcast hub: %s sent a bad frame (%s); closing it", self._peer, e)
            if self._transport is not None:
                self._transport.abort()

    def _handle(self, kind: Frame, body: memoryview) -> None:
        hub = self.hub
        upstream = hub.upstream
        if kind is Frame.PUBLISH:
            request, topic, data_kind, raw = _codec.parse(kind, body)
            if upstream is None:
                seq, epoch = hub.publish(topic, data_kind, raw)
                self.send(_codec.ack(request, seq, epoch))
            else:
                self._answer(request, upstream.publish(topic, data_kind, raw))
        elif kind is Frame.WANT:
            (topic,) = _codec.parse(kind, body)
            hub.want(self, topic)
        elif kind is Frame.DROP:
            (topic,) = _codec.parse(kind, body)
            hub.unwant(self, topic)
        elif kind is Frame.REPLAY:
            request, topic, epoch, seq = _codec.parse(kind, body)
            if upstream is None:
                self.send(
                    _codec.history(request, *hub.journal.history(topic, Position(epoch, seq)))
                )
            else:
                self._answer(request, upstream.history(topic, Position(epoch, seq)))
        else:
            raise ValueError(f"unexpected frame {kind.name}")

    def _answer(self, request: int, asked: Coroutine[Any, Any, Position | _History]) -> None:
        """Answers ``request`` once the broker has: an ACK or a HISTORY, or a
        FAILED saying why not. Started now: requests reach the broker in the
        order they came."""

        def answered(done: asyncio.Future[Position | _History]) -> None:
            error = done.exception()
            if isinstance(error, BroadcastError):
                self.send(_codec.failed(request, str(error)))
            elif error is not None:
                log.error("broadcast hub: the broker's answer cannot be read: %r", error)
                self.send(_codec.failed(request, f"the broker's answer cannot be read: {error}"))
            else:
                result = done.result()
                if isinstance(result, Position):
                    self.send(_codec.ack(request, result.seq, result.epoch))
                else:
                    self.send(_codec.history(request, *result))

        asyncio.ensure_future(asked).add_done_callback(answered)


async def _serve(path: str, owner: tuple[int, int] | None, broker: str | None) -> None:
    hub = Hub({os.getuid(), *([owner[0]] if owner is not None else [])}, broker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl-C reaches the whole process group; the parent stops the hub with
    # SIGTERM once the workers, who may still publish while they drain, are gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = await loop.create_unix_server(lambda: Connection(hub), path, backlog=1024)
    os.chmod(path, 0o600)
    if owner is not None:
        # Workers that dropped root connect as their own user.
        os.chown(path, *owner)
    log.info("broadcast hub (pid %d) serving, epoch %s", os.getpid(), hub.epoch)
    ticking = loop.create_task(hub.tick())
    upstream = None if hub.upstream is None else loop.create_task(hub.upstream.run())
    await stop.wait()
    ticking.cancel()
    if upstream is not None:
        upstream.cancel()
    server.close()
    # Closing the server waits for its connections (Python 3.12): end them.
    for connection in list(hub.connections):
        connection.close()
    await server.wait_closed()


def run(path: str, owner: tuple[int, int] | None, broker: str | None = None) -> None:
    """The hub sidecar's life: serves ``path`` until it is stopped; the
    workers run as ``owner`` (uid, gid) when they drop root; messages cross
    machines through ``broker`` (a Redis URL) when there is one."""
    set_title("broadcast hub")
    asyncio.run(_serve(path, owner, broker))
