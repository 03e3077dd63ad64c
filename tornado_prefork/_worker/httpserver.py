"""The workers' HTTPServer: balanced accept, requests in flight, graceful drain.

Tornado's `HTTPServer.close_all_connections` closes every connection at once,
aborting requests that are half-way through. Draining needs to know which
connections have a request in flight, so each request is tracked from its
headers to the moment its response has been written.

A connection counts as open from its accept until its socket closes,
including the life of a WebSocket that took it over: Tornado considers such a
connection done once it is upgraded. The server keeps the one count of each
(`PreforkHTTPServer.open_connections`, `~PreforkHTTPServer.requests_in_flight`):
the accept board, the metrics and the drain read it.
"""

from __future__ import annotations

import asyncio
import socket
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from tornado import httputil
from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream
from tornado.web import RequestHandler
from tornado.websocket import WebSocketHandler

from tornado_prefork._system import tornado_names as _tornado_names
from tornado_prefork._worker.accept import add_accept_handler
from tornado_prefork._worker.board import Board

# The close code of a WebSocket whose server is going away (RFC 6455, 7.4.1).
GOING_AWAY = 1001

# How long a drain waits for the first request on a connection that was
# accepted but has not sent one yet: the client is about to, and closing it
# would fail that request.
NEW_CONNECTION_GRACE = 1.0
# A keep-alive connection whose last response went out this recently is a
# client in mid-stride, whose next request may already be on the wire: it gets
# this long to arrive (and is answered with Connection: close). Connections
# idle for longer are closed at once.
KEEPALIVE_GRACE = 0.1


class RequestObserver:
    """Told of each request of one worker's server (metrics).

    Each method does nothing here.
    """

    def watch(self, server: PreforkHTTPServer) -> None:
        """Once, from the server's constructor, on the worker's event loop:
        the server whose counts (`~PreforkHTTPServer.open_connections`,
        `~PreforkHTTPServer.requests_in_flight`) to read."""

    def request_ended(self, method: str, status: int, seconds: float) -> None:
        """A request's response was written (or its connection closed, or a
        WebSocket took the stream over), ``seconds`` after its headers came.
        ``status`` is 0 when no `RequestHandler` answered it."""


class PreforkHTTPServer(HTTPServer):
    """An `HTTPServer` that spreads accepts across workers and drains gracefully."""

    def initialize(
        self,
        *args: Any,
        board: Board | None = None,
        seat: int = 0,
        max_requests: int = 0,
        on_max_requests: Callable[[], None] | None = None,
        forwarded_allow_ips: str = "*",
        observer: RequestObserver | None = None,
        **kwargs: Any,
    ) -> None:
        super().initialize(*args, **kwargs)
        # HTTPServer would trust X-Forwarded-For from anyone: decide per request.
        self._forwarded_headers, self.xheaders = self.xheaders, False
        allowed = {ip.strip() for ip in forwarded_allow_ips.split(",") if ip.strip()}
        self._proxies: set[str] | None = None if "*" in allowed else allowed
        self._board = board
        self._seat = seat
        self._open = 0
        self.requests_served = 0
        self._max_requests = max_requests
        self._on_max_requests = on_max_requests
        self._count_connections(0)
        # The requests in flight: a connection that carries none of them is idle.
        self._requests: set[_Tracked] = set()
        self._draining = False
        self._websockets: weakref.WeakSet[WebSocketHandler] = weakref.WeakSet()
        # Connections a WebSocket took over that Tornado has not let go of
        # yet: its on_close does not count them closed, their stream's close does.
        self._upgraded: set[object] = set()
        # When each connection that has carried a request last finished one:
        # idle ones among them are keep-alive connections.
        self._served: dict[object, float] = {}
        # Set whenever a request starts or ends or a connection closes.
        self._changed = asyncio.Event()
        # The listening sockets and how to stop watching each, kept here rather
        # than in TCPServer's private dicts: stop() below undoes them.
        self._listening: list[tuple[socket.socket, Callable[[], None]]] = []
        self._observer = observer
        if observer is not None:
            observer.watch(self)

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        """Like `TCPServer.add_sockets`, with the balanced accept handler."""
        for sock in sockets:
            remove = add_accept_handler(
                sock, _tornado_names.connection_handler(self), self._should_accept
            )
            self._listening.append((sock, remove))

    def stop(self) -> None:
        """Like `TCPServer.stop`: stops accepting and closes the listening sockets."""
        listening, self._listening = self._listening, []
        for sock, remove in listening:
            remove()
            sock.close()
        super().stop()

    def _should_accept(self) -> bool:
        return self._board is None or self._board.should_accept(self._seat)

    @property
    def open_connections(self) -> int:
        """Client connections accepted whose socket is not closed yet
        (WebSockets included)."""
        return self._open

    def _count_connections(self, change: int) -> None:
        self._open += change
        if self._board is not None:
            self._board.publish(self._seat, self._open)

    def handle_stream(self, stream: Any, address: tuple[Any, ...]) -> None:
        self._count_connections(+1)
        super().handle_stream(stream, address)

    def on_close(self, server_conn: object) -> None:
        if server_conn in self._upgraded:
            # Tornado is done with the connection, the WebSocket on it may not
            # be: _websocket_closed counts it closed, before or after this.
            self._upgraded.discard(server_conn)
        else:
            self._count_connections(-1)
        self._served.pop(server_conn, None)
        self._changed.set()
        super().on_close(server_conn)

    def _count_until_closed(self, server_conn: object) -> None:
        """Keeps the connection a WebSocket took over counted as open until its
        socket closes, whichever side closes it: Tornado lets go of it (and
        calls on_close) right after the upgrade."""
        stream = getattr(server_conn, "stream", None)
        # Not for a connection Tornado has let go of already (on_close counted
        # it closed), nor for a stream whose close callback would never run.
        if (
            isinstance(stream, IOStream)
            and not stream.closed()
            and server_conn in _tornado_names.connections(self)
        ):
            self._upgraded.add(server_conn)
            # A detached stream's close callback is free: neither Tornado's
            # HTTP code nor its WebSocket protocol sets one. It runs once.
            stream.set_close_callback(self._websocket_closed)

    def _websocket_closed(self) -> None:
        self._count_connections(-1)
        # The drain waits for the WebSockets it closes.
        self._changed.set()

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        if self._forwarded_headers and self._trusts(request_conn):
            delegate = _tornado_names.proxy_adapter(delegate, request_conn)
        return _Tracked(self, delegate, server_conn, request_conn)

    def _trusts(self, request_conn: httputil.HTTPConnection) -> bool:
        if self._proxies is None:
            return True
        family, remote_ip = _tornado_names.peer(request_conn)
        if family not in (socket.AF_INET, socket.AF_INET6):
            return True  # a unix socket: only local processes can connect
        return remote_ip in self._proxies

    @property
    def requests_in_flight(self) -> int:
        """Requests whose headers arrived and whose response is not yet written."""
        return len(self._requests)

    def _request_started(self, tracked: _Tracked) -> None:
        server_conn = tracked.server_conn
        self._requests.add(tracked)
        if self._draining:
            tracked.close_after_response()
        self._served[server_conn] = float("inf")
        self._changed.set()
        self.requests_served += 1
        if self._observer is not None:
            tracked.began = time.perf_counter()
        if self.requests_served == self._max_requests and self._on_max_requests is not None:
            self._on_max_requests()

    def _request_ended(self, tracked: _Tracked) -> None:
        server_conn = tracked.server_conn
        self._requests.discard(tracked)
        if server_conn in _tornado_names.connections(self):
            # Not for a connection already closed: on_close has forgotten it.
            self._served[server_conn] = time.monotonic()
        if _tornado_names.stream_detached(tracked.request_conn):
            # The handler took the stream over: a WebSocket now lives on it.
            handler = _tornado_names.request_handler(tracked.delegate)
            if isinstance(handler, WebSocketHandler):
                self._websockets.add(handler)
                self._count_until_closed(server_conn)
        self._changed.set()
        if self._observer is not None:
            handler = _tornado_names.request_handler(tracked.delegate)
            status = handler.get_status() if isinstance(handler, RequestHandler) else 0
            self._observer.request_ended(
                tracked.method, status, time.perf_counter() - tracked.began
            )

    async def drain(self, timeout: float) -> None:
        """Stops accepting, lets requests in flight finish, then closes everything.

        Connections already waiting in the listen backlog are accepted first.
        Idle keep-alive connections are closed at once (one that finished a
        response less than `KEEPALIVE_GRACE` ago gets that long for its next
        request), busy ones after their response, which says ``Connection:
        close``; WebSockets get code 1001. A connection that has not sent its
        first request yet gets up to `NEW_CONNECTION_GRACE` seconds to send it.
        Whatever is still open after ``timeout`` seconds is closed, cutting its
        request off.
        """
        self._draining = True
        self._accept_pending()
        self.stop()
        for tracked in self._requests:
            tracked.close_after_response()
        closing = self._close_websockets([])
        began = time.monotonic()
        deadline = began + timeout
        closed: set[object] = set()
        while True:
            # A connection accepted before the drain may finish its upgrade
            # during it: that WebSocket is told 1001 too, not cut at the exit.
            closing += self._close_websockets(closing)
            now = time.monotonic()
            waiting = self._close_idle(began, now, closed)
            websockets = [p for p in closing if _open_stream(p) is not None]
            if not (self._requests or waiting or websockets) or now >= deadline:
                break
            wake = min([deadline, *waiting])
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, wake - now))
            except asyncio.TimeoutError:
                pass
        for protocol in closing:
            stream = _open_stream(protocol)
            if stream is not None:
                stream.close()
        await self.close_all_connections()

    def _close_websockets(self, already: list[Any]) -> list[Any]:
        """Starts the close handshake (1001) of every WebSocket not ``already``
        closing; returns their protocols."""
        closing = []
        for handler in list(self._websockets):
            protocol = handler.ws_connection
            if protocol is not None and protocol not in already:
                closing.append(protocol)
                handler.close(GOING_AWAY, "server shutting down")
        return closing

    def _close_idle(self, began: float, now: float, closed: set[object]) -> list[float]:
        """Closes the idle connections whose grace is over (adding them to
        ``closed``); returns when the others' grace ends."""
        waiting = []
        busy = {tracked.server_conn for tracked in self._requests}
        for conn in list(_tornado_names.connections(self)):
            if conn in busy or conn in closed:
                continue
            # A request arriving before then is answered, with Connection: close.
            if conn in self._served:
                close_at = self._served[conn] + KEEPALIVE_GRACE
            else:
                close_at = began + NEW_CONNECTION_GRACE
            if close_at <= now:
                closed.add(conn)
                _close_soon(conn)
            else:
                waiting.append(close_at)
        return waiting

    def _accept_pending(self) -> None:
        # Connections the kernel completed but nobody accepted yet would be
        # reset when the last listening descriptor closes.
        handle = _tornado_names.connection_handler(self)
        for sock, _ in list(self._listening):
            for _ in range(1024):
                try:
                    connection, address = sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                handle(connection, address)


class _Tracked(httputil.HTTPMessageDelegate):
    """Wraps one request's delegate to track it while it is in flight."""

    def __init__(
        self,
        server: PreforkHTTPServer,
        delegate: httputil.HTTPMessageDelegate,
        server_conn: object,
        request_conn: httputil.HTTPConnection,
    ) -> None:
        self.server = server
        self.delegate = delegate
        self.server_conn = server_conn
        self.request_conn = request_conn
        self._counted = False
        self.method = ""
        # When the headers arrived (perf_counter), for the request's duration.
        self.began = 0.0

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Any:
        self._counted = True
        if isinstance(start_line, httputil.RequestStartLine):
            self.method = start_line.method
        self.server._request_started(self)
        # Resolved once the response has been written, the connection closed
        # or the stream detached (WebSocket), whichever comes first.
        finished = _tornado_names.finish_future(self.request_conn)
        if finished is not None:
            finished.add_done_callback(lambda _: self._end())
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        self.delegate.finish()

    def on_connection_close(self) -> None:
        self._end()
        self.delegate.on_connection_close()

    def close_after_response(self) -> None:
        """Marks the response ``Connection: close`` (if its headers are not
        written yet) and closes the connection once it is written, so that a
        keep-alive client does not send its next request into a closing socket."""
        _tornado_names.close_after_response(self.request_conn)

    def _end(self) -> None:
        if self._counted:
            self._counted = False
            self.server._request_ended(self)


def _open_stream(protocol: object) -> IOStream | None:
    """The stream of a WebSocket protocol, if it is still open."""
    stream = getattr(protocol, "stream", None)
    if isinstance(stream, IOStream) and not stream.closed():
        return stream
    return None


def _close_soon(conn: object) -> None:
    assert isinstance(conn, HTTP1ServerConnection)
    IOLoop.current().add_future(asyncio.ensure_future(conn.close()), lambda f: f.result())
