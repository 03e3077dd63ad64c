"""Every use of a private Tornado (or asyncio) name, in one place.

Tornado offers no public way to do these few things. Each accessor says what
it relies on, and ``tests/test_tornado_private.py`` checks each against the
installed Tornado (the suite runs on Tornado 6.4 and the newest), so a Tornado
upgrade means reading this file and running that test.
"""

from __future__ import annotations

import asyncio
import socket
import warnings
from collections.abc import Callable, Collection
from typing import Any

# Imported here, in the parent: a worker may have dropped the privileges to read it.
import tornado.autoreload
from tornado import httputil
from tornado.httpserver import HTTPServer, _ProxyAdapter
from tornado.ioloop import IOLoop
from tornado.options import OptionParser
from tornado.tcpserver import TCPServer


def proxy_adapter(
    delegate: httputil.HTTPMessageDelegate, request_conn: httputil.HTTPConnection
) -> httputil.HTTPMessageDelegate:
    """Wraps ``delegate`` as ``HTTPServer(xheaders=True)`` does, for one request.

    Relies on ``tornado.httpserver._ProxyAdapter``, which applies the
    ``X-Real-Ip``/``X-Forwarded-For``/``X-Scheme`` headers to the request's
    context and undoes that when the request ends.
    """
    return _ProxyAdapter(delegate, request_conn)


def connection_handler(server: TCPServer) -> Callable[[socket.socket, Any], None]:
    """What ``server`` does with a connection its listening socket accepted:
    wraps it in an `.IOStream` (or `.SSLIOStream`) and calls ``handle_stream``.

    Relies on ``TCPServer._handle_connection``, the callback `TCPServer.add_sockets`
    gives `tornado.netutil.add_accept_handler`; a server that accepts on its
    own terms has no other way to hand Tornado a socket.
    """
    handle: Callable[[socket.socket, Any], None] = server._handle_connection
    return handle


def request_handler(delegate: object) -> object:
    """The `.RequestHandler` behind one request's delegate, once the request
    has been routed to it; None before, or for a delegate of another kind.

    Relies on Tornado's private delegates: each adapter (``_ProxyAdapter``,
    ``_RoutingDelegate``) keeps the next one in ``.delegate``, and the last,
    ``web._HandlerDelegate``, keeps the handler in ``.handler``.
    """
    for _ in range(8):
        handler = getattr(delegate, "handler", None)
        if handler is not None:
            return handler
        delegate = getattr(delegate, "delegate", None)
        if delegate is None:
            return None
    return None


def peer(request_conn: httputil.HTTPConnection) -> tuple[int | None, str | None]:
    """The address family of the connection a request came on and the client's
    IP address (before any ``X-Forwarded-For``); None for either that is unknown.

    Relies on the ``address_family`` and ``remote_ip`` of
    ``HTTP1Connection.context``, a ``tornado.httpserver._HTTPRequestContext``.
    """
    context = getattr(request_conn, "context", None)
    family = getattr(context, "address_family", None)
    remote_ip = getattr(context, "remote_ip", None)
    return family, remote_ip


def stream_detached(request_conn: httputil.HTTPConnection) -> bool:
    """Whether the request's handler took the connection's stream over
    (`.HTTP1Connection.detach`, as a WebSocket does).

    Relies on ``HTTP1Connection.stream``, which ``detach`` sets to None.
    """
    return getattr(request_conn, "stream", True) is None


def finish_future(request_conn: httputil.HTTPConnection) -> asyncio.Future[None] | None:
    """The future an `.HTTP1Connection` resolves once its response has been
    written, the connection closed or the stream detached; None for another
    kind of connection.

    Relies on ``HTTP1Connection._finish_future``.
    """
    future = getattr(request_conn, "_finish_future", None)
    return future if isinstance(future, asyncio.Future) else None


def close_after_response(request_conn: httputil.HTTPConnection) -> None:
    """Makes an `.HTTP1Connection` close once its current response is written,
    and say ``Connection: close`` in that response if its headers are not out
    yet. Does nothing for another kind of connection.

    Relies on ``HTTP1Connection._disconnect_on_finish``, which Tornado reads
    when it writes the response headers and again when the response ends.
    """
    if hasattr(request_conn, "_disconnect_on_finish"):
        request_conn._disconnect_on_finish = True


def connections(server: HTTPServer) -> Collection[Any]:
    """The `.HTTP1ServerConnection` objects ``server`` has open.

    Relies on ``HTTPServer._connections``, the set Tornado adds a connection to
    in ``handle_stream`` and removes it from in ``on_close``.
    """
    found: Collection[Any] = server._connections
    return found


def asyncio_loops() -> list[asyncio.AbstractEventLoop]:
    """The asyncio event loops that have a Tornado `.IOLoop`, open or closed.

    Relies on ``IOLoop._ioloop_for_asyncio``, Tornado's map from each asyncio
    loop to its IOLoop.
    """
    return list(IOLoop._ioloop_for_asyncio)


def policy_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop the asyncio policy holds for this thread, without making one.

    ``asyncio.get_event_loop()`` would create a loop (or warn); this relies on
    the default policy keeping the loop in ``policy._local._loop``. None when
    there is none, or the policy keeps it elsewhere.
    """
    with warnings.catch_warnings():
        # The policy system is deprecated from Python 3.14; while it exists it
        # is where asyncio keeps the main thread's loop.
        warnings.simplefilter("ignore", DeprecationWarning)
        policy = asyncio.get_event_loop_policy()
    local = getattr(policy, "_local", None)
    loop = getattr(local, "_loop", None)
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else None


def option_type(parser: OptionParser, name: str) -> type | None:
    """The ``type`` of the option ``name`` (dashes or underscores) defined on
    ``parser``, or None if there is no such option.

    Relies on ``OptionParser._options`` (the defined options, by normalized
    name) and ``OptionParser._normalize_name``.
    """
    option = parser._options.get(parser._normalize_name(name))
    if option is None:
        return None
    kind: type | None = option.type
    return kind


def block_autoreload(loop: IOLoop) -> None:
    """Makes `tornado.autoreload.start` a no-op on ``loop``.

    Relies on ``tornado.autoreload._io_loops``, the loops ``start`` already
    watches from: it returns at once for those. Tornado has no way to stop
    autoreload once started, nor to refuse it.
    """
    tornado.autoreload._io_loops[loop] = True
