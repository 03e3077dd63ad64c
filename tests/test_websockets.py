"""A WebSocket counts as an open connection of its worker for as long as it is open.

Tornado considers a connection done once a WebSocket took it over; the accept
board and the ``open_connections`` metric must not.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import os
import re
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.testing import AsyncHTTPTestCase, gen_test
from tornado.web import Application
from tornado.websocket import WebSocketClientConnection, websocket_connect

from tests import serving, wsapp
from tornado_prefork._worker.board import Board
from tornado_prefork._worker.httpserver import PreforkHTTPServer, RequestObserver

pytestmark = pytest.mark.tornado_api

APP = "tests.wsapp:app"
# A worker holding this many WebSockets leaves a burst of as many connections
# to its idle sibling until that one has 20 (the board's slack): it takes at
# least MOST of them. Were they not counted, the two would split it evenly.
HELD = 24
BURST = 24
MOST = 17
SIBLING = 1
METRICS_ON = re.compile(r"Metrics on (\S+)/metrics")


async def open_websockets(port: int, count: int) -> list[tuple[WebSocketClientConnection, int]]:
    """``count`` WebSockets opened one after the other, each with the pid of
    the worker that holds it (its first message)."""
    opened = []
    for _ in range(count):
        ws = await websocket_connect(f"ws://127.0.0.1:{port}/pid", connect_timeout=10)
        message = await asyncio.wait_for(ws.read_message(), timeout=10)
        assert isinstance(message, str), message
        opened.append((ws, int(message)))
    return opened


async def close_all(websockets: list[WebSocketClientConnection]) -> None:
    """Closes each with the close handshake and waits until the server closed it too."""
    for ws in websockets:
        ws.close()
    for ws in websockets:
        while await asyncio.wait_for(ws.read_message(), timeout=10) is not None:
            pass


async def closed_by_server(ws: WebSocketClientConnection) -> None:
    """Asks the server to close ``ws`` and waits until it did."""
    await ws.write_message("close")
    assert await asyncio.wait_for(ws.read_message(), timeout=10) is None
    assert ws.close_code == 1000
    ws.close()


def drop(ws: WebSocketClientConnection) -> None:
    """Closes the socket of ``ws`` without a close handshake."""
    assert ws.protocol is not None and ws.protocol.stream is not None
    ws.protocol.stream.close()
    ws.close()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=60))


# How connections are shared among workers: only with the CPUs free.
@pytest.mark.alone
def test_a_worker_holding_websockets_leaves_new_connections_to_its_sibling() -> None:
    with serving.running(APP, 2) as s:
        base = serving.url(s)
        port = serving.port_of(base)
        idle, busy = serving.live_workers(s, 2)

        async def test() -> None:
            # Every WebSocket on one worker: the other cannot accept meanwhile.
            os.kill(idle, signal.SIGSTOP)
            try:
                opened = await open_websockets(port, HELD)
            finally:
                os.kill(idle, signal.SIGCONT)
            assert {pid for _, pid in opened} == {busy}
            shares = collections.Counter(serving.burst(base, BURST, settle=True))
            assert shares[idle] >= MOST, shares
            # Closed, they count no more: the workers share a burst again.
            await close_all([ws for ws, _ in opened])
            time.sleep(serving.SETTLE)
            shares = collections.Counter(serving.burst(base, BURST, settle=True))
            assert min(shares[idle], shares[busy]) >= BURST // 4, shares

        run(test)


def open_connections(metrics: str) -> float:
    """What ``/metrics`` says of the open connections, over every worker."""
    conn = serving.connect(metrics, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    gauges = [
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "tornado_prefork_open_connections"
        for sample in family.samples
    ]
    return sum(gauges)


def until_open_connections(metrics: str, want: float, timeout: float = 10) -> float:
    """Scrapes until the metric says ``want`` (the workers write it twice a
    second), or ``timeout`` passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while (found := open_connections(metrics)) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_open_websockets_are_open_connections_in_the_metrics(tmp_path: Path) -> None:
    with serving.running(APP, 2, metrics_port=0, env={"TMPDIR": str(tmp_path)}) as s:
        port = serving.port_of(serving.url(s))
        match = METRICS_ON.search(s.wait_line("Metrics on ", timeout=15)[0])
        assert match is not None, s.output
        metrics = match.group(1)

        async def test() -> None:
            opened = [ws for ws, _ in await open_websockets(port, 12)]
            assert until_open_connections(metrics, 12) == 12
            # Each closed once, whichever side closes it: the client with the
            # handshake, the server when asked, the client dropping the socket.
            await close_all(opened[:4])
            for ws in opened[4:8]:
                await closed_by_server(ws)
            assert until_open_connections(metrics, 4) == 4
            for ws in opened[8:]:
                drop(ws)
            assert until_open_connections(metrics, 0) == 0

        run(test)


class Watching(RequestObserver):
    """What the metrics read: the server's own count, the one the board publishes."""

    server: PreforkHTTPServer | None = None

    def watch(self, server: PreforkHTTPServer) -> None:
        self.server = server

    @property
    def open(self) -> int:
        assert self.server is not None
        return self.server.open_connections


class WebSocketCountTest(AsyncHTTPTestCase):
    """Each way a WebSocket ends, on a worker's server in this process (seat 0
    of a board): it counts as open until then, and is counted closed exactly once."""

    def get_app(self) -> Application:
        return Application(wsapp.ROUTES)

    def get_http_server(self) -> HTTPServer:
        self.observed = Watching()
        self.board = Board(seats=2)
        # A sibling with two connections open: it may take the next one only
        # while this server has one open too.
        self.board.publish(SIBLING, 2)
        return PreforkHTTPServer(
            self._app,
            board=self.board,
            seat=0,
            observer=self.observed,
            **self.get_httpserver_options(),
        )

    def tearDown(self) -> None:
        super().tearDown()
        self.board.close_fd()

    @property
    def server(self) -> PreforkHTTPServer:
        assert isinstance(self.http_server, PreforkHTTPServer)
        return self.http_server

    async def connect(self) -> WebSocketClientConnection:
        ws = await websocket_connect(f"ws://127.0.0.1:{self.get_http_port()}/pid")
        assert await ws.read_message() == str(os.getpid())
        # Long after Tornado let go of the connection, and the WebSocket is open.
        await ws.write_message("ping")
        assert await ws.read_message() == "ping"
        assert self.observed.open == 1
        assert self.board.should_accept(SIBLING)
        return ws

    async def counted_closed(self) -> None:
        deadline = time.monotonic() + 5
        while self.observed.open > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # Time for a second count, were there one to come: it would go below 0.
        await asyncio.sleep(0.1)
        assert self.observed.open == 0
        assert not self.board.should_accept(SIBLING)

    @gen_test
    async def test_the_client_closes(self) -> None:
        ws = await self.connect()
        await close_all([ws])
        await self.counted_closed()

    @gen_test
    async def test_the_client_drops_the_connection(self) -> None:
        drop(await self.connect())
        await self.counted_closed()

    @gen_test
    async def test_the_server_closes(self) -> None:
        await closed_by_server(await self.connect())
        await self.counted_closed()

    @gen_test
    async def test_the_drain_closes_with_going_away(self) -> None:
        ws = await self.connect()
        drained = asyncio.ensure_future(self.server.drain(timeout=5))
        assert await ws.read_message() is None
        assert ws.close_code == 1001
        ws.close()
        await drained
        await self.counted_closed()

    @gen_test
    async def test_the_drain_cuts_off_a_client_that_never_answers_the_close(self) -> None:
        stream = await self.raw_upgrade()
        # Its deadline closes it, before the WebSocket's own wait for the client.
        await self.server.drain(timeout=0.5)
        await stream.read_until_close()
        stream.close()
        await self.counted_closed()

    async def raw_upgrade(self) -> IOStream:
        """A WebSocket client that never reads nor answers anything after the upgrade."""
        stream = IOStream(socket.socket())
        await stream.connect(("127.0.0.1", self.get_http_port()))
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.write(
            (
                "GET /pid HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head: Any = await stream.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        # Its first message, sent once Tornado has let go of the connection.
        await stream.read_until(str(os.getpid()).encode())
        assert self.observed.open == 1
        assert self.board.should_accept(SIBLING)
        return stream
