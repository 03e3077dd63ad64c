"""``serve()``: bind before fork, an HTTPServer in every worker, a supervisor above them."""

from __future__ import annotations

import inspect
import os
import socket
import ssl
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.log import gen_log
from tornado.netutil import _DEFAULT_BACKLOG

from tornado_prefork import _app, _sockets, process, worker
from tornado_prefork._app import AppSource
from tornado_prefork._balance import Board
from tornado_prefork._http import PreforkHTTPServer
from tornado_prefork.supervisor import Supervisor, SupervisorConfig

# HTTPServer's own keywords that serve() passes through unchanged.
_SERVER_KEYWORDS = frozenset(inspect.signature(HTTPServer.initialize).parameters) - {
    "self",
    "request_callback",
    "ssl_options",
}


def serve(
    app: AppSource,
    port: int = 8888,
    address: str | None = None,
    *,
    processes: int = 0,
    unix_socket: str | None = None,
    unix_socket_mode: int = 0o600,
    reuse_port: bool = False,
    backlog: int = _DEFAULT_BACKLOG,
    family: socket.AddressFamily = socket.AF_UNSPEC,
    ssl_options: dict[str, Any] | ssl.SSLContext | None = None,
    graceful_timeout: float = 30.0,
    max_restarts: int = 100,
    min_uptime: float = 1.0,
    backoff_cap: float = 5.0,
    **server_options: Any,
) -> None:
    """Serves ``app`` from ``processes`` worker processes until told to stop.

    Replaces ``server.bind(port); server.start(0); IOLoop.current().start()``.

    ``app`` is a `tornado.web.Application` (built here, shared copy-on-write
    by the workers), a callable that returns one (called in each worker, on
    its event loop; it may be a coroutine function), or an import string
    ``"package.module:name"`` naming either (imported in each worker only).

    The sockets are bound here, before any fork: TCP on ``port`` and
    ``address`` (None: every interface, IPv4 and IPv6) with ``backlog`` and
    ``family``, or the unix socket ``unix_socket`` (with ``unix_socket_mode``)
    instead. With ``reuse_port`` each worker binds its own socket
    (``SO_REUSEPORT``) and the kernel spreads connections between them.
    ``ssl_options`` and every other keyword of `tornado.httpserver.HTTPServer`
    (``xheaders``, ``max_body_size``, ``idle_connection_timeout``,
    ``decompress_request``, ...) are passed to each worker's server.

    ``processes`` <= 0 means `.cpu_count`. Each worker reports when it is
    ready; once all are, the parent logs ``Serving on <url> with <n> workers``.
    SIGTERM or SIGINT stops gracefully: each worker stops accepting, finishes
    the requests in flight within ``graceful_timeout`` seconds, closes idle
    keep-alive connections at once and WebSockets with code 1001, then exits;
    SIGQUIT stops at once. ``max_restarts``, ``min_uptime`` and
    ``backoff_cap`` are as for `.fork_processes`; a worker that exits for any
    reason outside a stop is replaced.

    Returns in the parent once every worker has stopped; never returns in a
    worker. Raises before any fork: `TypeError` or `ValueError` for a bad
    argument, `.StartupError` for an address, socket path or import string
    that cannot work, `RuntimeError` as `.fork_processes` does. Raises
    `.SupervisorError` if no worker could start (their traceback is logged
    once) or after too many restarts.

    .. versionadded:: 0.1
    """
    _check_arguments(port, processes, unix_socket_mode, backlog, server_options)
    _app.check(app)
    config = SupervisorConfig(
        max_restarts=max_restarts,
        graceful_timeout=graceful_timeout,
        min_uptime=min_uptime,
        backoff_cap=backoff_cap,
    )
    process.check_can_fork("serve()")
    count = processes if processes > 0 else process.cpu_count()
    listeners = _sockets.bind(
        port,
        address,
        unix_socket=unix_socket,
        unix_socket_mode=unix_socket_mode,
        reuse_port=reuse_port,
        backlog=backlog,
        family=family,
        scheme="https" if ssl_options is not None else "http",
    )
    # With reuse_port the kernel spreads connections over the workers' own sockets.
    board = None if reuse_port else Board(count)
    parent_pid = os.getpid()
    try:
        process.warn_about_threads(stacklevel=3)
        process.mark_started()
        gen_log.info("Starting %d processes for %s", count, _app.describe(app))
        supervisor = Supervisor(
            count,
            config,
            process.child_init(parent_pid),
            ready_on_fork=False,
            keep_running=True,
            on_all_ready=lambda n: gen_log.info(
                "Serving on %s with %d workers", ", ".join(listeners.urls), n
            ),
            # Once no process holds the listening sockets open, new connections
            # are refused instead of waiting in a backlog nobody will accept.
            on_stop=listeners.close,
        )
        child = supervisor.run()
    finally:
        if os.getpid() == parent_pid:
            listeners.close()
    if child is None:
        return

    async def start() -> PreforkHTTPServer:
        application = await _app.load(app)
        server = PreforkHTTPServer(
            application,
            ssl_options=ssl_options,
            board=board,
            slot=child.task_id,
            **server_options,
        )
        server.add_sockets(listeners.for_child())
        return server

    worker.run(child.channel, parent_pid, start, graceful_timeout)


def _check_arguments(
    port: object,
    processes: object,
    unix_socket_mode: object,
    backlog: object,
    server_options: dict[str, Any],
) -> None:
    for name, value in (
        ("port", port),
        ("processes", processes),
        ("unix_socket_mode", unix_socket_mode),
        ("backlog", backlog),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__} {value!r}")
    assert isinstance(port, int) and isinstance(backlog, int)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be from 0 to 65535, not {port}")
    if backlog < 1:
        raise ValueError(f"backlog must be >= 1, not {backlog}")
    unknown = sorted(set(server_options) - _SERVER_KEYWORDS)
    if unknown:
        raise TypeError(
            f"serve() got unexpected keyword argument(s) {', '.join(unknown)}; "
            f"HTTPServer takes {', '.join(sorted(_SERVER_KEYWORDS))}"
        )
