"""Each private Tornado name `tornado_prefork._system.tornado_names` relies on exists and
behaves as used, on the Tornado installed (``make test`` runs these tests, marked
``tornado_api``, on the newest Tornado and on 6.4)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from tornado import httputil
from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream
from tornado.options import OptionParser
from tornado.tcpserver import TCPServer
from tornado.testing import AsyncHTTPTestCase, gen_test
from tornado.web import Application, RequestHandler

from tornado_prefork._system import tornado_names as _tornado_names

pytestmark = pytest.mark.tornado_api


class _RecordingServer(HTTPServer):
    """Wraps each request as `PreforkHTTPServer` does, recording what it saw."""

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.seen: list[dict[str, Any]] = []

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        future = _tornado_names.finish_future(request_conn)
        adapted = _tornado_names.proxy_adapter(delegate, request_conn)
        self.seen.append(
            {
                "request_conn": request_conn,
                "delegate": adapted,
                "handler_at_start": _tornado_names.request_handler(adapted),
                "peer": _tornado_names.peer(request_conn),
                "finish_future": future,
                "done_at_start": future is not None and future.done(),
                "open": list(_tornado_names.connections(self)),
            }
        )
        return adapted


class _Handler(RequestHandler):
    def get(self) -> None:
        if self.get_argument("close", None):
            assert self.request.connection is not None
            _tornado_names.close_after_response(self.request.connection)
        self.write({"remote_ip": self.request.remote_ip, "protocol": self.request.protocol})


class _DetachingHandler(RequestHandler):
    """Takes the stream over, as a WebSocket does, and answers on it itself."""

    detached: list[tuple[bool, bool]] = []

    def get(self) -> None:
        connection = self.request.connection
        assert connection is not None
        before = _tornado_names.stream_detached(connection)
        stream = self.detach()
        self.detached.append((before, _tornado_names.stream_detached(connection)))
        response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        stream.write(response).add_done_callback(lambda _: stream.close())


class TornadoPrivateNamesTest(AsyncHTTPTestCase):
    def get_app(self) -> Application:
        return Application([("/", _Handler), ("/detach", _DetachingHandler)])

    def get_http_server(self) -> HTTPServer:
        return _RecordingServer(self._app, **self.get_httpserver_options())

    @property
    def server(self) -> _RecordingServer:
        assert isinstance(self.http_server, _RecordingServer)
        return self.http_server

    def test_proxy_adapter_applies_forwarded_headers(self) -> None:
        response = self.fetch("/", headers={"X-Real-Ip": "10.1.2.3", "X-Scheme": "https"})
        assert response.code == 200
        assert b'"remote_ip": "10.1.2.3"' in response.body
        assert b'"protocol": "https"' in response.body

    def test_finish_future_resolves_once_the_response_is_written(self) -> None:
        assert self.fetch("/").code == 200
        # A keep-alive connection starts the next request as soon as one ends.
        seen = self.server.seen[0]
        assert isinstance(seen["finish_future"], asyncio.Future)
        assert not seen["done_at_start"]
        assert seen["finish_future"].done()

    def test_request_handler_is_the_handler_the_request_was_routed_to(self) -> None:
        assert self.fetch("/").code == 200
        seen = self.server.seen[0]
        assert seen["handler_at_start"] is None
        assert isinstance(_tornado_names.request_handler(seen["delegate"]), _Handler)

    def test_peer_is_the_family_and_address_of_the_client(self) -> None:
        assert self.fetch("/", headers={"X-Real-Ip": "10.1.2.3"}).code == 200
        assert self.server.seen[0]["peer"] == (socket.AF_INET, "127.0.0.1")

    def test_stream_detached_once_the_handler_took_the_stream(self) -> None:
        _DetachingHandler.detached.clear()
        assert self.fetch("/detach").code == 200
        assert _DetachingHandler.detached == [(False, True)]

    def test_connections_holds_the_open_connections(self) -> None:
        assert self.fetch("/").code == 200
        seen = self.server.seen[0]
        assert len(seen["open"]) == 1
        assert isinstance(seen["open"][0], HTTP1ServerConnection)

    @gen_test
    async def test_close_after_response_says_connection_close_and_closes(self) -> None:
        stream_sock = socket.create_connection(("127.0.0.1", self.get_http_port()))
        stream_sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(stream_sock, b"GET /?close=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        received = b""
        while True:
            chunk = await asyncio.wait_for(loop.sock_recv(stream_sock, 4096), 5)
            if not chunk:
                break  # the server closed the keep-alive connection
            received += chunk
        stream_sock.close()
        head = received.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 200")
        assert b"connection: close" in head
        assert len(_tornado_names.connections(self.server)) == 0


def test_close_after_response_ignores_other_connections() -> None:
    class Other(httputil.HTTPConnection):
        pass

    _tornado_names.close_after_response(Other())
    assert _tornado_names.finish_future(Other()) is None
    assert _tornado_names.peer(Other()) == (None, None)
    assert not _tornado_names.stream_detached(Other())


def test_request_handler_of_another_delegate_is_none() -> None:
    assert _tornado_names.request_handler(httputil.HTTPMessageDelegate()) is None
    assert _tornado_names.request_handler(object()) is None


def test_connection_handler_makes_a_stream_and_hands_it_to_handle_stream() -> None:
    class Server(TCPServer):
        streams: list[tuple[IOStream, Any]] = []

        def handle_stream(self, stream: IOStream, address: Any) -> None:
            self.streams.append((stream, address))

    async def main() -> bytes:
        ours, theirs = socket.socketpair()
        server = Server()
        _tornado_names.connection_handler(server)(ours, "peer")
        [(stream, address)] = server.streams
        assert address == "peer"
        theirs.sendall(b"hello")
        try:
            return await asyncio.wait_for(stream.read_bytes(5), 5)
        finally:
            stream.close()
            theirs.close()

    assert asyncio.run(main()) == b"hello"


def test_asyncio_loops_lists_the_loops_tornado_knows() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert loop not in _tornado_names.asyncio_loops()

        async def wrap() -> None:
            IOLoop.current()

        loop.run_until_complete(wrap())
        assert loop in _tornado_names.asyncio_loops()
    finally:
        loop.close()


def test_policy_loop_is_the_loop_set_for_this_thread() -> None:
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        assert _tornado_names.policy_loop() is loop
        asyncio.set_event_loop(None)
        assert _tornado_names.policy_loop() is None
    finally:
        loop.close()


def test_option_type_by_either_spelling() -> None:
    parser = OptionParser()
    parser.define("reuse_port", type=bool, default=False)
    parser.define("processes", type=int, default=0)
    assert _tornado_names.option_type(parser, "reuse-port") is bool
    assert _tornado_names.option_type(parser, "reuse_port") is bool
    assert _tornado_names.option_type(parser, "processes") is int
    assert _tornado_names.option_type(parser, "no-such-option") is None


def test_block_autoreload_keeps_start_from_watching(monkeypatch: Any) -> None:
    import tornado.autoreload
    from tornado.ioloop import PeriodicCallback

    # Counts the file-checking callbacks autoreload.start() schedules.
    started: list[PeriodicCallback] = []
    monkeypatch.setattr(PeriodicCallback, "start", lambda self: started.append(self))

    async def main() -> tuple[int, int]:
        loop = IOLoop.current()
        try:
            _tornado_names.block_autoreload(loop)
            tornado.autoreload.start()  # what Application(debug=True) calls
            blocked = len(started)
            del tornado.autoreload._io_loops[loop]
            tornado.autoreload.start()  # unblocked, the same loop gets a watcher
            return blocked, len(started)
        finally:
            tornado.autoreload._io_loops.pop(loop, None)

    assert asyncio.run(main()) == (0, 1)
