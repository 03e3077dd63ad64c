"""The broadcast under faults, with real processes: the hub killed in a
publish storm, a worker killed while publishing, a WebSocket client that
stops reading, reloads of both kinds; each lifecycle fault also on a server
older than its timeouts.

The application is tests/broadcastapp.py; its clients (WebSockets, long
polls, publishers) run here in one event loop, each recording every event it
receives. What a subscriber received is checked against the contract with
`unreported`: every seq of the topic in order, or a gap that says so.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import functools
import json
import os
import re
import signal
import socket
import struct
import time
from collections.abc import Callable, Collection, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tornado.websocket import websocket_connect

from tests import procs, serving
from tests.broadcastapp import POLL_WAIT
from tests.procs import Scenario
from tornado_prefork._broadcast.hub import TICK
from tornado_prefork._broadcast.link import DEAF_AFTER
from tornado_prefork.broadcast import BroadcastWebSocket, Position

APP = "tests.broadcastapp:make_app"
TOPIC = "room"
# Production timelines, as tests/test_aged.py has them: short timeouts (but
# ready_timeout, which also bounds the check of new code before a reload in
# place: a fresh interpreter that took up to 3 s on 2 busy CPUs beside a
# storm)...
SHORT: dict[str, Any] = {
    "timeout": 2.0,
    "ready_timeout": 4.0,
    "graceful_timeout": 2.0,
    "min_uptime": 0.5,
}
# ...and a server older than each of them before the fault, its links to the
# hub included: they are taken for deaf after DEAF_AFTER seconds of silence,
# which the link checks every TICK, so an idle link this old has been
# checked at least once past that deadline.
AGE = DEAF_AFTER + TICK
assert max(SHORT.values()) < AGE
# How soon every subscriber must learn of a lost hub.
GAP_WITHIN = 2.0
# The longest a subscriber of a healthy worker may wait for its next message
# while a storm publishes hundreds a second: a worker that stalls waits longer.
STALL = 1.0
# Messages a second of a storm, at most: what the subscribers here, some
# ten in one Python process, follow on two busy CPUs with room to spare (one
# that falls broadcast_max_queue behind is closed, by design).
STORM = 400
T = TypeVar("T")
HUB_SERVING = re.compile(r"broadcast hub \(pid (\d+)\) serving, epoch (\w+)")


@dataclasses.dataclass(frozen=True)
class Got:
    """One event a client received: when, from which worker, and either a
    message (its position, the pid of its publisher) or a gap (its reason
    and where it said the next message would be)."""

    at: float
    worker: int
    position: Position | None = None
    publisher: int = 0
    gap: str | None = None
    resume: Position | None = None


def got(event: dict[str, Any], worker: int) -> Got:
    """An event as tests/broadcastapp.py writes it."""
    now = time.monotonic()
    if "gap" in event:
        resume = event["resume"]
        return Got(now, worker, gap=event["gap"], resume=resume and Position.parse(resume))
    return Got(now, worker, Position.parse(event["c"]), event["d"]["pid"])


def unreported(events: Iterable[Got]) -> list[str]:
    """Where ``events`` break the contract: a message that does not follow
    the one before it (a hole, a duplicate, out of order) with no gap between,
    or that is not where the gap before it said the next one would be."""
    problems = []
    at: Position | None = None
    gap: Got | None = None
    for event in events:
        if event.position is None:
            gap = event
            continue
        position = event.position
        if gap is not None:
            if gap.resume is not None and position != gap.resume:
                problems.append(f"a gap said {gap.resume} comes next, then {position}")
        elif at is not None and position != at.next():
            problems.append(f"{at} then {position}")
        at, gap = position, None
    return problems


@dataclasses.dataclass(eq=False, repr=False)
class Client:
    """A subscriber, as its events came: the worker of each connection (a
    WebSocket) or answer (a long poll), the close code of each connection,
    what failed; counts kept as events come, for conditions checked often."""

    name: str
    events: list[Got] = dataclasses.field(default_factory=list)
    workers: list[int] = dataclasses.field(default_factory=list)
    closes: list[int | None] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    #: Messages received, in all and by publisher.
    received: int = 0
    publishers: collections.Counter[int] = dataclasses.field(default_factory=collections.Counter)
    #: The position of the last message received.
    cursor: Position | None = None

    def add(self, event: Got) -> None:
        self.events.append(event)
        if event.position is not None:
            self.received += 1
            self.publishers[event.publisher] += 1
            self.cursor = event.position

    def messages(self, since: float = 0.0) -> list[Got]:
        return [e for e in self.events if e.position is not None and e.at >= since]

    def gaps(self, since: float = 0.0) -> list[Got]:
        return [e for e in self.events if e.position is None and e.at >= since]

    def __repr__(self) -> str:
        gaps = [(e.gap, str(e.resume), round(e.at, 3)) for e in self.gaps()]
        return (
            f"{self.name}: {self.received} messages to {self.cursor}, gaps {gaps}, "
            f"workers {sorted(set(self.workers))}, closes {self.closes}, "
            f"failures {self.failures[-3:]}"
        )


def each_received(clients: list[Client], count: int) -> Callable[[], bool]:
    """A condition: each of ``clients`` has received ``count`` messages more than now."""
    marks = [c.received for c in clients]
    return lambda: all(c.received - mark >= count for c, mark in zip(clients, marks, strict=True))


@dataclasses.dataclass
class Storm:
    """What the publishers did: messages published, publishes that failed in
    a worker (the hub was lost), requests that failed."""

    published: int = 0
    failed: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)


class Crew:
    """The client tasks of a test: each failure is raised in the test, and
    the end cancels every one (their connections close)."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []
        self._of: dict[Client, asyncio.Task[None]] = {}

    def start(self, work: Coroutine[Any, Any, None], client: Client | None = None) -> None:
        self.tasks.append(task := asyncio.ensure_future(work))
        if client is not None:
            self._of[client] = task

    async def stop(self, client: Client) -> None:
        """Ends the task of ``client`` (its connection closes)."""
        task = self._of.pop(client)
        self.tasks.remove(task)
        await _cancel([task])

    def check(self) -> None:
        _raise_failed(self.tasks)

    async def end(self) -> None:
        tasks, self.tasks = self.tasks, []
        await _cancel(tasks)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    pending = set(tasks)
    while pending:
        # Again until each has ended: asyncio.wait_for() before Python
        # 3.12 loses a cancellation that comes as its operation completes.
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
    _raise_failed(tasks)


def _raise_failed(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            task.result()


async def until(
    crew: Crew,
    condition: Callable[[], bool],
    what: str,
    clients: Iterable[object] = (),
    timeout: float = 15,
) -> None:
    """Waits until ``condition()`` holds, or fails saying ``what`` and the
    state of ``clients``; a client task that failed fails it first."""
    deadline = time.monotonic() + timeout
    while not condition():
        crew.check()
        if time.monotonic() > deadline:
            state = "\n".join(map(str, clients))
            raise AssertionError(f"{what}: not within {timeout} s\n{state}")
        await asyncio.sleep(0.01)


async def request(port: int, method: str, path: str, timeout: float = 10) -> tuple[int, Any]:
    """One HTTP request on a connection of its own (each may reach another
    worker): (status, decoded JSON body)."""

    async def exchange() -> tuple[int, Any]:
        # A socket of its own: closed here however the connect ends.
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        try:
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
            data = await reader.read()
        finally:
            writer.close()
            # Now, not once the loop runs the transport's close: the test's
            # loop may end first, and the socket would be left to the collector.
            sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head:
            raise ConnectionError("closed without an answer")
        return int(head.split(b" ", 2)[1]), json.loads(body) if body else None

    return await asyncio.wait_for(exchange(), timeout)


# What a client's request may meet when its worker is killed or the hub lost.
REQUEST_FAILED = (OSError, ValueError, asyncio.TimeoutError)


async def websocket(
    port: int, client: Client, reconnect_on: Collection[int | None] = (), query: str = ""
) -> None:
    """A WebSocket subscriber (``query`` added to its URL); when its
    connection ends with a code in ``reconnect_on`` (None: cut without a
    close), it connects again with the position of the last message it
    received as its cursor."""
    while True:
        cursor = client.cursor
        url = f"ws://127.0.0.1:{port}/ws?topic={TOPIC}{query}" + (
            f"&cursor={cursor}" if cursor else ""
        )
        try:
            ws = await websocket_connect(url, connect_timeout=10)
        except REQUEST_FAILED as e:
            if None not in reconnect_on:
                raise
            client.failures.append(repr(e))
            await asyncio.sleep(0.05)
            continue
        try:
            hello = await ws.read_message()
            if hello is not None:
                worker = json.loads(hello)["pid"]
                client.workers.append(worker)
                while (text := await ws.read_message()) is not None:
                    client.add(got(json.loads(text), worker))
        finally:
            # Cancelled at the end of the test: the socket goes now, not once
            # the server has answered the close.
            stream = None if ws.protocol is None else ws.protocol.stream
            ws.close()
            if stream is not None:
                stream.close()
        client.closes.append(ws.close_code)
        if ws.close_code not in reconnect_on:
            return


async def long_poll(port: int, client: Client) -> None:
    """A long-poll subscriber: each poll asks for what followed its cursor;
    a poll that fails is asked again."""
    while True:
        cursor = client.cursor
        path = f"/poll?topic={TOPIC}" + (f"&cursor={cursor}" if cursor else "")
        try:
            status, body = await request(port, "GET", path, timeout=POLL_WAIT + 5)
        except REQUEST_FAILED as e:
            client.failures.append(repr(e))
            await asyncio.sleep(0.02)
            continue
        if status != 200:
            client.failures.append(f"{status} {body}")
            await asyncio.sleep(0.02)
            continue
        client.workers.append(body["pid"])
        for event in body["events"]:
            client.add(got(event, body["pid"]))


async def publishing(
    port: int,
    storm: Storm,
    count: int = 20,
    size: int = 0,
    at_once: bool = False,
    rate: float | None = None,
    as_bytes: bool = False,
) -> None:
    """Publishes ``count`` messages at a time (one after the other, or all at
    once; as bytes with ``as_bytes``) through whichever worker takes each
    request, until cancelled; at most ``rate`` a second if given."""
    path = (
        f"/publish?topic={TOPIC}&count={count}&size={size}"
        f"&at_once={int(at_once)}&bytes={int(as_bytes)}"
    )
    started, sent = time.monotonic(), 0
    while True:
        if rate is not None:
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
            sent += count
        try:
            status, body = await request(port, "POST", path)
        except REQUEST_FAILED as e:
            storm.errors.append(repr(e))
            await asyncio.sleep(0.01)
            continue
        if status != 200:
            storm.errors.append(f"{status} {body}")
            continue
        storm.published += body["published"]
        storm.failed += body["failed"]


async def websockets_on(
    crew: Crew,
    port: int,
    workers: Collection[int],
    each: int,
    reconnect_on: Collection[int | None] = (),
) -> list[Client]:
    """WebSocket subscribers, opened one after the other until each of
    ``workers`` holds at least ``each`` of them."""
    clients: list[Client] = []

    def short() -> bool:
        held = collections.Counter(c.workers[0] for c in clients)
        return any(held[worker] < each for worker in workers)

    while short():
        assert len(clients) < 6 * each * len(workers), [str(c) for c in clients]
        client = Client(f"websocket {len(clients)}")
        crew.start(websocket(port, client, reconnect_on), client)
        await until(crew, functools.partial(bool, client.workers), f"{client.name} connected")
        clients.append(client)
    return clients


def long_polls(crew: Crew, port: int, count: int) -> list[Client]:
    clients = [Client(f"long poll {i}") for i in range(count)]
    for client in clients:
        crew.start(long_poll(port, client))
    return clients


def hub_starts(s: Scenario) -> list[tuple[int, str]]:
    """(pid, epoch) of each broadcast hub the server started so far."""
    return [
        (int(match[1]), match[2])
        for line in s.matching("broadcast hub (pid")
        if (match := HUB_SERVING.search(line))
    ]


def the_hub(s: Scenario) -> tuple[int, str]:
    """The server's hub, once it serves: (pid, epoch); fails unless it is
    the only one the server started and it is alive."""
    s.wait_line("serving, epoch")
    ((pid, epoch),) = hub_starts(s)
    assert pid in procs.hubs() & set(procs.every_child(s.pid)), s.output
    return pid, epoch


def longest_wait(events: list[Got], since: float, until: float) -> float:
    """The longest time between two events received from ``since`` to ``until``."""
    times = [since, *(e.at for e in events if since <= e.at <= until), until]
    return max(b - a for a, b in zip(times, times[1:], strict=False))


def run(test: Callable[[Crew], Coroutine[Any, Any, T]], timeout: float = 60) -> T:
    """Runs ``test`` with a crew for its clients, which end with it."""

    async def main() -> T:
        crew = Crew()
        try:
            return await asyncio.wait_for(test(crew), timeout)
        finally:
            await crew.end()

    return asyncio.run(main())


@pytest.mark.parametrize("aged", [False, True], ids=["young", "aged"])
def test_a_hub_killed_in_a_publish_storm_is_a_gap_for_every_subscriber_at_once(
    aged: bool,
) -> None:
    with serving.running(APP, 2, **(SHORT if aged else {})) as s:
        base = serving.url(s)
        port = serving.port_of(base)
        workers = set(serving.live_workers(s, 2))
        hub, epoch = the_hub(s)

        async def test(crew: Crew) -> None:
            sockets = await websockets_on(crew, port, workers, each=2)
            clients = sockets + long_polls(crew, port, 4)
            if aged:
                await asyncio.sleep(AGE)
            storm = Storm()
            for _ in range(2):
                crew.start(publishing(port, storm, rate=STORM / 2))
            await until(crew, each_received(clients, 200), "every subscriber receives", clients)
            with serving.Load(base, "/pid") as load:
                killed = time.monotonic()
                os.kill(hub, signal.SIGKILL)
                more = each_received(clients, 200)
                await asyncio.to_thread(s.wait_line, "serving, epoch", 2)
                (_, new_epoch) = hub_starts(s)[1]

                def caught_up() -> bool:
                    return more() and all(
                        c.cursor is not None and c.cursor.epoch == new_epoch for c in clients
                    )

                await until(crew, caught_up, "every subscriber receives the new hub's", clients)
                await crew.end()
            assert load.failures == [], load.failures
            assert load.pids, "no GET was answered while the hub was lost"
            for client in clients:
                assert client.gaps(0) == client.gaps(killed), client
                first = client.gaps(killed)[0]
                assert first.at - killed < GAP_WITHIN, client
                assert unreported(client.events) == [], client
            # A WebSocket's subscription lives on: told once.
            for client in sockets:
                assert [gap.gap for gap in client.gaps()] == ["hub lost"], client
            # The gaps came from both workers: each lost the hub.
            assert {c.gaps(killed)[0].worker for c in clients} == workers
            assert new_epoch != epoch
            assert storm.published > 0

        run(test)
        assert s.matching(f"broadcast hub (pid {hub}) exited (signal 9); restarting it")


@pytest.mark.parametrize("aged", [False, True], ids=["young", "aged"])
def test_a_worker_killed_while_publishing_stalls_no_other_and_costs_no_message(
    aged: bool,
) -> None:
    with serving.running(APP, 3, **(SHORT if aged else {})) as s:
        port = serving.port_of(serving.url(s))
        workers = set(serving.live_workers(s, 3))
        hub, epoch = the_hub(s)

        async def test(crew: Crew) -> int:
            # Those of the killed worker connect again with their cursor.
            sockets = await websockets_on(crew, port, workers, each=1, reconnect_on={None})
            clients = sockets + long_polls(crew, port, 2)
            if aged:
                await asyncio.sleep(AGE)
            storm = Storm()
            crew.start(publishing(port, storm, rate=STORM / 2))
            path = f"/storm?topic={TOPIC}&seconds=30&rate={STORM / 2}"
            status, body = await request(port, "POST", path)
            assert status == 200, body
            victim = int(body["pid"])

            def from_victim() -> bool:
                return all(c.publishers[victim] >= 100 for c in clients)

            await until(crew, from_victim, "every subscriber receives the storm", clients)
            killed = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            more = each_received(clients, 200)

            def moved_on() -> bool:
                # Those of the victim, once they are connected to another worker.
                return more() and all(c.workers[-1] != victim for c in sockets)

            await until(
                crew, moved_on, "every subscriber receives what the others publish", clients
            )
            ended = time.monotonic()
            await crew.end()
            for client in clients:
                assert client.gaps() == [], client
                assert unreported(client.events) == [], client
            survivors = [c for c in sockets if c.workers[0] != victim]
            assert {c.workers[0] for c in survivors} == workers - {victim}
            for client in survivors:
                assert client.closes == [], client
                assert longest_wait(client.events, killed, ended) < STALL, client
            for client in sockets:
                if client.workers[0] == victim:
                    assert client.closes == [None], client
                    assert client.workers[1] != victim, client
            # At most the publishing request it was serving.
            assert len(storm.errors) <= 1, storm
            assert storm.failed == 0, storm
            return victim

        victim = run(test)
        s.wait_line(f"(pid {victim}) killed by signal 9, restarting")
    assert hub_starts(s) == [(hub, epoch)]


# preload=False: each worker imports the app and a HUP forks new workers;
# None (an import string's default): the parent imports it, and a HUP
# re-executes the parent in place, which adopts the old workers and the hub.
RELOADS = {"rolling": False, "in-place": None}


@pytest.mark.parametrize("aged", [False, True], ids=["young", "aged"])
@pytest.mark.parametrize("kind", RELOADS)
def test_a_reload_in_a_publish_storm_sends_websockets_away_to_resume_with_no_loss(
    kind: str, aged: bool
) -> None:
    settings: dict[str, Any] = SHORT if aged else {}
    with serving.running(APP, 2, string=True, preload=RELOADS[kind], **settings) as s:
        port = serving.port_of(serving.url(s))
        old = set(serving.live_workers(s, 2))
        hub, epoch = the_hub(s)

        async def test(crew: Crew) -> set[int]:
            # Each connects again however it was sent away: a close without
            # 1001 fails below, once the messages were checked.
            sockets = await websockets_on(crew, port, old, each=2, reconnect_on={1001, None})
            clients = sockets + long_polls(crew, port, 2)
            if aged:
                await asyncio.sleep(AGE)
            storm = Storm()
            for _ in range(2):
                crew.start(publishing(port, storm, rate=STORM / 2))
            await until(crew, each_received(clients, 100), "every subscriber receives", clients)
            s.signal(signal.SIGHUP)
            await asyncio.to_thread(s.wait_line, "reload finished: 2 workers", timeout=20)
            for pid in old:
                await asyncio.to_thread(s.wait_line, f"(pid {pid}) retired (status 0)")
            new = set(serving.live_workers(s, 2))
            assert new.isdisjoint(old)
            more = each_received(clients, 100)

            def resumed() -> bool:
                return more() and all(c.workers[-1] in new for c in clients)

            await until(crew, resumed, "every subscriber resumes on a new worker", clients)
            await crew.end()
            for client in clients:
                assert client.gaps() == [], client
                assert unreported(client.events) == [], client
                assert {m.position.epoch for m in client.messages() if m.position} == {epoch}
            # Old workers drain one after the other: one sent away may first
            # reach another old one, and be sent away again.
            for client in sockets:
                assert client.closes and set(client.closes) == {1001}, client
                assert len(client.workers) == len(client.closes) + 1, client
                assert client.workers[0] in old and client.workers[-1] in new, client
            assert storm.errors == [] and storm.failed == 0, storm
            return new

        new = run(test)
        assert hub_starts(s) == [(hub, epoch)]
        assert procs.hubs() & set(procs.every_child(s.pid)) == {hub}
        assert set(serving.live_workers(s, 2)) == new
    in_place = s.matching(f"reloaded in place (pid {s.pid})")
    assert len(in_place) == (1 if kind == "in-place" else 0), s.output


# A slow client's messages: big enough that the memory they hold shows.
SIZE = 8 * 1024
# Messages a second: what two readers in this process follow on two busy
# CPUs (a reader that falls broadcast_max_queue behind is closed too).
RATE = 800
# What the worker may hold for a client that stopped reading: its queue
# (BroadcastWebSocket.broadcast_max_queue messages, published as bytes: each
# its SIZE bytes, shared with every subscriber of the worker, and less than a
# KiB of objects), and at most one message written but not yet taken by the
# socket; then SLACK for what else the worker does meanwhile (its readers'
# writes, the link's buffers).
SLACK = 4 * 1024 * 1024
BOUND = BroadcastWebSocket.broadcast_max_queue * (SIZE + 1024) + SIZE + SLACK
# The queue of a client that stops reading fills once the kernel's buffers
# are full (a few hundred of these messages), then in max_queue messages: a
# second or two of the storm, on two busy CPUs.
FIRES_WITHIN = 5.0
# The client stays stalled while the storm offers it this many messages: a
# worker that kept what it was offered would hold more than BOUND.
OFFERED = 5 * BOUND // (4 * SIZE)


def slow_websocket(port: int) -> tuple[socket.socket, int, bytearray]:
    """A WebSocket client with a small receive buffer that reads its
    handshake and its first message, then nothing: (its socket, the pid of
    its worker, what it read beyond that message)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws?topic={TOPIC} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    buffer = bytearray(rest)
    while not (first := frames(buffer, 1)):
        buffer += sock.recv(4096)
    ((_, hello),) = first
    return sock, json.loads(hello)["pid"], buffer


def frames(buffer: bytearray, most: int | None = None) -> list[tuple[int, bytes]]:
    """The whole frames at the start of ``buffer`` (a server's: unmasked),
    ``most`` of them at most, as (opcode, payload); taken out of it."""
    found: list[tuple[int, bytes]] = []
    while len(buffer) >= 2 and (most is None or len(found) < most):
        length, at = buffer[1] & 0x7F, 2
        if length >= 126:
            size = 2 if length == 126 else 8
            if len(buffer) < 2 + size:
                break
            length = int.from_bytes(buffer[2 : 2 + size], "big")
            at += size
        if len(buffer) < at + length:
            break
        found.append((buffer[0] & 0x0F, bytes(buffer[at : at + length])))
        del buffer[: at + length]
    return found


def read_to_close(sock: socket.socket, buffer: bytearray) -> tuple[int, list[tuple[int, bytes]]]:
    """Reads until the close frame: (bytes read, every frame)."""
    read = len(buffer)
    found = frames(buffer)
    while not found or found[-1][0] != 0x8:
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed without a close frame after {len(found)} frames"
        read += len(chunk)
        buffer += chunk
        found += frames(buffer)
    return read, found


def reset_peak(pid: int) -> int:
    """Resets the peak of the memory resident in ``pid`` to what is resident
    now, and returns that (smaps_rollup's Rss, in bytes)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(pid)


def peak_rss(pid: int) -> int:
    """The most bytes resident in ``pid`` since `reset_peak` (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(pid)


def test_a_websocket_client_that_stops_reading_is_closed_and_costs_its_worker_little() -> None:
    with serving.running(APP, 2) as s:
        port = serving.port_of(serving.url(s))
        workers = set(serving.live_workers(s, 2))
        # What the kernel can hold of what the worker writes to the client.
        in_kernel = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])

        async def test(crew: Crew) -> None:
            readers = await websockets_on(crew, port, workers, each=2)
            storm = Storm()
            for _ in range(2):
                work = publishing(
                    port, storm, size=SIZE, at_once=True, rate=RATE / 2, as_bytes=True
                )
                crew.start(work)
            await until(crew, each_received(readers, 100), "every reader receives", readers)
            sock, worker, buffer = await asyncio.to_thread(slow_websocket, port)
            # Those of its worker read on; the others would only take the CPU.
            for client in readers:
                if client.workers != [worker]:
                    await crew.stop(client)
            readers = [c for c in readers if c.workers == [worker]]
            with sock:
                before = reset_peak(worker)
                stalled, published = time.monotonic(), storm.published
                line = f"{worker} WARNING a WebSocket client of /ws (127.0.0.1) stopped reading"
                await asyncio.to_thread(s.wait_line, line, timeout=10)
                fired = time.monotonic()
                more = each_received(readers, 100)
                rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                read, found = await asyncio.to_thread(read_to_close, sock, buffer)
                await until(
                    crew,
                    lambda: storm.published - published >= OFFERED and more(),
                    "the storm offers the stalled client enough",
                    readers,
                    timeout=30,
                )
                grown = peak_rss(worker) - before
            await crew.end()
            # Closed with 1013 once its queue was full, having been written
            # no more than the kernel holds (and one message).
            *messages, (_, close) = found
            assert struct.unpack("!H", close[:2]) == (1013,), close
            assert {op for op, _ in messages} <= {0x1}, found[:3]
            assert unreported(got(json.loads(m), worker) for _, m in messages) == []
            assert read <= in_kernel + rcvbuf + 2 * (SIZE + 100), (read, len(messages))
            assert grown < BOUND, (grown, BOUND)
            assert fired - stalled < FIRES_WITHIN
            assert len(readers) >= 2
            for client in readers:
                assert client.gaps() == [] and client.closes == [], client
                assert unreported(client.events) == [], client

        run(test)
    assert len(s.matching("stopped reading its broadcast: closed (1013)")) == 1, s.output


def test_a_burst_that_arrives_in_one_read_does_not_close_a_client_that_keeps_up() -> None:
    """The worker's loop held up while 1,000 messages it published come back
    from the hub: they arrive in one read, ten times a WebSocket's queue. The
    client reads on, so it gets every one, no gap, and is not closed: the
    link hands a read over in chunks, and a write the kernel took at once is
    not waited for."""
    with serving.running(APP, 1) as s:
        port = serving.port_of(serving.url(s))

        async def test(crew: Crew) -> None:
            client = Client("websocket")
            crew.start(websocket(port, client, query="&max_queue=100"), client)
            await until(crew, lambda: bool(client.workers), "the websocket opens", [client])
            status, body = await request(
                port, "POST", f"/publish?topic={TOPIC}&count=1000&at_once=1&hold=0.5", 30
            )
            assert (status, body["published"]) == (200, 1000), body
            await until(crew, lambda: client.received >= 1000, "every message arrives", [client])
            await crew.end()
            assert client.gaps() == [] and client.closes == [], client
            assert unreported(client.events) == [], client

        run(test)
    assert s.matching("stopped reading its broadcast") == [], s.output
