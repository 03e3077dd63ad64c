"""The workers' graceful drain, in process, under Tornado's AsyncHTTPTestCase."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from tornado.httpclient import HTTPClientError, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.testing import AsyncHTTPTestCase, gen_test
from tornado.web import Application
from tornado.websocket import websocket_connect

from tests import webapp
from tornado_prefork._worker.httpserver import KEEPALIVE_GRACE, PreforkHTTPServer

pytestmark = pytest.mark.tornado_api


class DrainTest(AsyncHTTPTestCase):
    def get_app(self) -> Application:
        return webapp.make_app()

    def get_http_server(self) -> HTTPServer:
        return PreforkHTTPServer(self._app, **self.get_httpserver_options())

    @property
    def server(self) -> PreforkHTTPServer:
        assert isinstance(self.http_server, PreforkHTTPServer)
        return self.http_server

    async def in_flight(self, count: int) -> None:
        deadline = time.monotonic() + 5
        while self.server.requests_in_flight < count:
            assert time.monotonic() < deadline, self.server.requests_in_flight
            await asyncio.sleep(0.01)

    async def raw_request(self, path: str) -> IOStream:
        stream = IOStream(socket.socket())
        await stream.connect(("127.0.0.1", self.get_http_port()))
        await stream.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        return stream

    @gen_test
    async def test_requests_in_flight_finish(self) -> None:
        fetches = [self.http_client.fetch(self.get_url("/slow?seconds=0.5")) for _ in range(3)]
        await self.in_flight(3)
        await self.server.drain(timeout=5)
        responses: list[HTTPResponse] = await asyncio.gather(*fetches)
        assert [r.code for r in responses] == [200, 200, 200]
        assert self.server.requests_in_flight == 0

    @gen_test
    async def test_tornados_close_all_connections_would_abort_them(self) -> None:
        # Why drain() exists: the stock way cuts the same requests off.
        fetch = self.http_client.fetch(self.get_url("/slow?seconds=0.5"))
        await self.in_flight(1)
        self.http_server.stop()
        await self.http_server.close_all_connections()
        with self.assertRaises((HTTPClientError, ConnectionError, OSError)):
            await fetch

    @gen_test
    async def test_no_new_connections_once_draining(self) -> None:
        fetch = self.http_client.fetch(self.get_url("/slow?seconds=0.3"))
        await self.in_flight(1)
        drained = asyncio.ensure_future(self.server.drain(timeout=5))
        await asyncio.sleep(0.05)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", self.get_http_port()), timeout=1)
        assert (await fetch).code == 200
        await drained

    @gen_test
    async def test_idle_keep_alive_closes_at_once_busy_after_its_response(self) -> None:
        idle = await self.raw_request("/")
        head = await idle.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        await idle.read_until(b"}")
        busy = await self.raw_request("/slow?seconds=0.5")
        await self.in_flight(1)
        await asyncio.sleep(KEEPALIVE_GRACE + 0.05)
        drained = asyncio.ensure_future(self.server.drain(timeout=5))
        began = time.monotonic()
        # The idle connection is closed without waiting for the busy one.
        await asyncio.wait_for(idle.read_until_close(), timeout=0.4)
        assert time.monotonic() - began < KEEPALIVE_GRACE
        # The busy one gets its whole response, then the close.
        rest = await asyncio.wait_for(busy.read_until_close(), timeout=5)
        assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b'"slept": 0.5}'), rest
        # So that a keep-alive client does not send another request into it.
        assert b"\r\nConnection: close\r\n" in rest
        await drained

    @gen_test
    async def test_a_keep_alive_client_in_mid_stride_is_answered(self) -> None:
        # Its response came just before the drain; its next request is on the
        # wire as the drain begins: it is answered, and told to close.
        stream = await self.raw_request("/")
        await stream.read_until(b"}")
        drained = asyncio.ensure_future(self.server.drain(timeout=5))
        await asyncio.sleep(0.01)
        await stream.write(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        rest = await asyncio.wait_for(stream.read_until_close(), timeout=2)
        assert rest.startswith(b"HTTP/1.1 200") and b"\r\nConnection: close\r\n" in rest
        await drained

    @gen_test
    async def test_websockets_close_with_going_away(self) -> None:
        ws = await websocket_connect(f"ws://127.0.0.1:{self.get_http_port()}/ws")
        await ws.write_message("ping")
        assert await ws.read_message() == "ping"
        drained = asyncio.ensure_future(self.server.drain(timeout=5))
        assert await ws.read_message() is None
        assert ws.close_code == 1001
        await drained
        ws.close()

    @gen_test
    async def test_the_deadline_cuts_off_what_is_left(self) -> None:
        fetch = self.http_client.fetch(self.get_url("/slow?seconds=10"), request_timeout=20)
        await self.in_flight(1)
        began = time.monotonic()
        await self.server.drain(timeout=0.3)
        assert time.monotonic() - began < 2
        with self.assertRaises((HTTPClientError, ConnectionError, OSError)):
            await fetch
