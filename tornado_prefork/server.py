"""``serve()``: bind before fork, an HTTPServer in every worker, a supervisor above them."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import random
import socket
import ssl
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPServerConnectionDelegate
from tornado.log import gen_log

from tornado_prefork import _settings, process
from tornado_prefork._broadcast import current as _current
from tornado_prefork._broadcast import hub as _hub
from tornado_prefork._broadcast import upstream as _upstream
from tornado_prefork._broadcast.place import HubPlace
from tornado_prefork._metrics.directory import require_prometheus
from tornado_prefork._metrics.healthz import HealthPort
from tornado_prefork._metrics.recorder import ServerMetrics
from tornado_prefork._reload import check as _check
from tornado_prefork._reload import inplace as _inplace
from tornado_prefork._reload import keeper as _keeper
from tornado_prefork._reload import watcher as _watcher
from tornado_prefork._serve import app as _app
from tornado_prefork._serve import preload as _preload
from tornado_prefork._serve.app import AppSource
from tornado_prefork._serve.events import ServeHooks
from tornado_prefork._supervisor import channel as _channel
from tornado_prefork._supervisor import children as _children
from tornado_prefork._supervisor import signals as _signals
from tornado_prefork._supervisor import spawn as _spawn
from tornado_prefork._supervisor.handover import Handover
from tornado_prefork._supervisor.loop import Supervisor
from tornado_prefork._supervisor.record import Child
from tornado_prefork._supervisor.spawn import Sidecar
from tornado_prefork._system import privileges as _privileges
from tornado_prefork._system import sockets as _sockets
from tornado_prefork._system import systemd as _systemd
from tornado_prefork._system.pidfile import PidFile
from tornado_prefork._system.proctitle import set_title
from tornado_prefork._worker import autoreload as _autoreload
from tornado_prefork._worker import eventloop as _eventloop
from tornado_prefork._worker import life as _life
from tornado_prefork._worker.board import Board
from tornado_prefork._worker.httpserver import PreforkHTTPServer
from tornado_prefork._worker.leader import LeaderLocks

# HTTPServer's own keywords that serve() passes through unchanged.
_SERVER_KEYWORDS = frozenset(inspect.signature(HTTPServer.initialize).parameters) - {
    "self",
    "request_callback",
    "ssl_options",
    *_settings.BY_NAME,
}
_D = _settings.default

# Heartbeats come this often relative to ``timeout``, and at least every 5 s.
_HEARTBEATS_PER_TIMEOUT = 4
#: The broadcast hub's name as a sidecar (logs, and a worker's SILENT message).
_HUB = "broadcast hub"
#: What a worker tells the parent of a hub that stopped ticking, before its pid.
_HUB_SILENT = _channel.SILENT + b" " + _HUB.encode()
_MAX_HEARTBEAT = 5.0


def serve(
    app: AppSource,
    port: int = _D("port"),
    address: str | None = _D("address"),
    *,
    processes: int = _D("processes"),
    unix_socket: str | None = _D("unix_socket"),
    unix_socket_mode: int = _D("unix_socket_mode"),
    reuse_port: bool = _D("reuse_port"),
    backlog: int = _D("backlog"),
    family: socket.AddressFamily = socket.AF_UNSPEC,
    ssl_options: dict[str, Any] | ssl.SSLContext | None = None,
    graceful_timeout: float = _D("graceful_timeout"),
    max_restarts: int = _D("max_restarts"),
    min_uptime: float = _D("min_uptime"),
    backoff_cap: float = _D("backoff_cap"),
    ready_timeout: float = _D("ready_timeout"),
    timeout: float = _D("timeout"),
    shutdown_delay: float = _D("shutdown_delay"),
    max_requests: int = _D("max_requests"),
    max_requests_jitter: int = _D("max_requests_jitter"),
    max_worker_age: float = _D("max_worker_age"),
    pid_file: str | None = _D("pid_file"),
    user: str | None = _D("user"),
    group: str | None = _D("group"),
    forwarded_allow_ips: str = _D("forwarded_allow_ips"),
    preload: bool | None = _D("preload"),
    loop: str = _D("loop"),
    metrics_port: int | None = _D("metrics_port"),
    metrics_address: str = _D("metrics_address"),
    health_port: int | None = _D("health_port"),
    health_address: str = _D("health_address"),
    broadcast: str = _D("broadcast"),
    reload: bool = _D("reload"),
    xheaders: bool = _D("xheaders"),
    no_keep_alive: bool = _D("no_keep_alive"),
    decompress_request: bool = _D("decompress_request"),
    max_body_size: int = _D("max_body_size"),
    max_buffer_size: int = _D("max_buffer_size"),
    idle_connection_timeout: float = _D("idle_connection_timeout"),
    body_timeout: float | None = _D("body_timeout"),
    chunk_size: int = _D("chunk_size"),
    max_header_size: int = _D("max_header_size"),
    **server_options: Any,
) -> None:
    """Serves ``app`` from ``processes`` worker processes until told to stop.

    Replaces ``server.bind(port); server.start(0); IOLoop.current().start()``.

    ``app`` is a `tornado.web.Application`, a callable that returns one
    (it may be a coroutine function), a lifespan (a function that returns an
    async context manager, as `contextlib.asynccontextmanager` makes, which
    yields the application: entered in each worker before it is ready,
    exited on its event loop after the drain, within ``graceful_timeout``),
    or an import string ``"package.module:name"`` naming one of them.
    ``preload`` says where its code runs: by default (None) an import string
    is imported in the parent before the fork and a factory is called in
    each worker; ``True`` calls a (synchronous) factory in the parent too;
    ``False`` imports the string in each worker only.

    ``port``, ``address`` (None: every interface), ``backlog`` and ``family``
    say where to listen, or ``unix_socket`` (with ``unix_socket_mode``)
    instead; with ``reuse_port`` each worker listens on a socket of its own.
    ``ssl_options``, ``xheaders``, ``no_keep_alive``, ``decompress_request``,
    ``max_body_size``, ``max_buffer_size``, ``idle_connection_timeout``,
    ``body_timeout``, ``chunk_size``, ``max_header_size`` and any other
    keyword of `tornado.httpserver.HTTPServer` go to each worker's server.
    ``processes`` (0: `.cpu_count`), ``graceful_timeout``, ``max_restarts``,
    ``min_uptime``, ``backoff_cap``, ``ready_timeout``, ``timeout``, ``shutdown_delay``,
    ``max_requests``, ``max_requests_jitter``, ``max_worker_age``,
    ``pid_file``, ``user``, ``group``, ``forwarded_allow_ips``, ``loop``,
    ``reload``, ``metrics_port``, ``metrics_address``, ``health_port``, ``health_address``
    and ``broadcast`` are described in the
    settings table (``tornado-prefork --help`` and the README), with the same
    defaults as the command line's flags, but for ``address`` (the command
    line binds 127.0.0.1). What the server does with them (drain, reload,
    scaling, hung workers, recycling) is in the README.

    Returns in the parent once every worker has stopped; never returns in a
    worker. Raises before any fork: `TypeError` or `ValueError` for a bad
    argument (``serve() argument port must be from 0 to 65535, not 70000``),
    `.StartupError` for an address, socket path, pid file, import string,
    import or missing extra that cannot work, `RuntimeError` when called
    inside a running event loop or with one open, a second time or in a
    worker. Raises `.SupervisorError` if no worker could start (their
    traceback is logged once) or when a worker kept failing at once
    (``max_restarts`` fast failures in a row).

    .. versionadded:: 0.1
    """
    settings = _settings.Settings(
        port=port,
        address=address,
        processes=processes,
        unix_socket=unix_socket,
        unix_socket_mode=unix_socket_mode,
        reuse_port=reuse_port,
        backlog=backlog,
        graceful_timeout=graceful_timeout,
        max_restarts=max_restarts,
        min_uptime=min_uptime,
        backoff_cap=backoff_cap,
        ready_timeout=ready_timeout,
        timeout=timeout,
        shutdown_delay=shutdown_delay,
        max_requests=max_requests,
        max_requests_jitter=max_requests_jitter,
        max_worker_age=max_worker_age,
        pid_file=pid_file,
        user=user,
        group=group,
        forwarded_allow_ips=forwarded_allow_ips,
        preload=preload,
        loop=loop,
        metrics_port=metrics_port,
        metrics_address=metrics_address,
        health_port=health_port,
        health_address=health_address,
        broadcast=broadcast,
        reload=reload,
        xheaders=xheaders,
        no_keep_alive=no_keep_alive,
        decompress_request=decompress_request,
        max_body_size=max_body_size,
        max_buffer_size=max_buffer_size,
        idle_connection_timeout=idle_connection_timeout,
        body_timeout=body_timeout,
        chunk_size=chunk_size,
        max_header_size=max_header_size,
    )
    # Held from here: the supervisor acts on them once it runs.
    with _signals.held(_spawn.HANDLED):
        # A parent re-executed by a reload in place: its workers are taken
        # over first, and kept serving if the new code fails here.
        handover = _keeper.take()
        try:
            plan = _prepare(app, settings, server_options, ssl_options, family, handover)
        except BaseException as e:
            if _check.checking():
                _check.failed(_describe_failure(e))
            if handover is None:
                raise
            _keeper.keep(handover, _describe_failure(e))
        child = _supervise(plan)
    if child is not None:
        _serve_in_worker(child, plan)


@dataclasses.dataclass
class _Plan:
    """What the parent settled before the fork: for itself, and for each worker."""

    app: AppSource
    # What each worker builds the application from (see `_preload.load`).
    source: AppSource
    settings: _settings.Settings
    server_options: dict[str, Any]
    ssl_options: dict[str, Any] | ssl.SSLContext | None
    loop: str
    identity: _privileges.Identity | None
    handover: Handover | None
    metrics: ServerMetrics | None
    health: HealthPort | None
    hub: HubPlace | None
    leaders: LeaderLocks
    sidecars: list[Sidecar]
    listeners: _sockets.Listeners
    board: Board | None
    parent_pid: int = dataclasses.field(default_factory=os.getpid)


def _prepare(
    app: AppSource,
    settings: _settings.Settings,
    server_options: dict[str, Any],
    ssl_options: dict[str, Any] | ssl.SSLContext | None,
    family: socket.AddressFamily,
    handover: Handover | None,
) -> _Plan:
    """Every check, the application's code and the sockets, before any fork.

    In the check of new code before a reload in place (`_newcode`), every
    step but binding, and then the process ends.
    """
    _check_arguments(settings, server_options)
    _check_no_loop(app)
    _app.check(app)
    sidecars = _reload_sidecar(app) if settings.reload else []
    preload = settings.preload
    if settings.reload and preload is None:
        # Each save then costs new workers only, not a re-exec of the parent.
        preload = False
    loop = _eventloop.resolve(settings.loop)
    identity = _privileges.resolve(settings.user, settings.group)
    _children.check_can_fork("serve()")
    # Threads of the caller; those the application's code starts are named below.
    _children.warn_about_threads(stacklevel=4)
    checking = _check.checking()
    # Before the application's code is imported: its metrics must be created
    # in the directory shared by all processes.
    metrics = None
    if checking and settings.metrics_port is not None:
        # The live server holds the port and the directory.
        require_prometheus("metrics_port")
    elif not checking:
        metrics = ServerMetrics.for_serve(handover, settings.metrics_port, settings.metrics_address)
    if metrics is not None:
        sidecars.append(metrics.endpoint())
        if identity is not None and handover is None:
            os.chown(metrics.directory.path, identity.uid, identity.gid)
    health = None
    if not checking:
        shared = None if metrics is None else metrics.health
        health = HealthPort.for_serve(
            handover, settings.health_port, settings.health_address, shared
        )
    if health is not None:
        sidecars.append(health.endpoint())
    source = _preload.load(app, preload, stacklevel=4)
    if checking:
        _check.passed()
    listeners = _open_listeners(settings, handover, family, ssl_options is not None)
    if identity is not None:
        listeners.give_to(identity.uid, identity.gid, identity.name)
    board = _inplace.board(handover, listeners.reuse_port)
    hub = None
    if settings.broadcast != "off" and not checking:
        hub = HubPlace.for_serve(None if handover is None else handover.extras)
        owner = None if identity is None else (identity.uid, identity.gid)
        broker = None if settings.broadcast == "hub" else settings.broadcast
        sidecars.append(Sidecar(_HUB, functools.partial(_hub.run, hub.path, owner, broker)))
        if owner is not None and handover is None:
            hub.give_to(*owner)
    # Named only: a worker makes it, as its own user, for its first leader task.
    leaders = LeaderLocks.named_for_serve(None if handover is None else handover.extras)
    return _Plan(
        app=app,
        source=source,
        settings=settings,
        server_options=server_options,
        ssl_options=ssl_options,
        loop=loop,
        identity=identity,
        handover=handover,
        metrics=metrics,
        health=health,
        hub=hub,
        leaders=leaders,
        sidecars=sidecars,
        listeners=listeners,
        board=board,
    )


def _open_listeners(
    settings: _settings.Settings,
    handover: Handover | None,
    family: socket.AddressFamily,
    tls: bool,
) -> _sockets.Listeners:
    """The sockets handed over by a reload in place, passed by systemd, or bound now."""
    if handover is not None:
        return _inplace.listeners(handover)
    scheme = "https" if tls else "http"
    activated = _systemd.listen_sockets()
    if activated:
        return _sockets.Listeners(activated, [_sockets.describe(scheme, s) for s in activated])
    listeners = _sockets.bind(
        settings.port,
        settings.address,
        unix_socket=settings.unix_socket,
        unix_socket_mode=settings.unix_socket_mode,
        reuse_port=settings.reuse_port,
        backlog=settings.backlog,
        family=family,
        scheme=scheme,
    )
    if listeners.reuse_port:
        _warn_about_reuse_port()
    return listeners


def _supervise(plan: _Plan) -> Child | None:
    """Runs the supervisor: None in the parent once everything has stopped, the
    `Child` in a new worker. Releases the parent's sockets and files at the end."""
    settings = plan.settings
    processes = settings.processes
    count = processes if processes > 0 else process.cpu_count()
    if plan.handover is not None:
        count = plan.handover.count
    pids = PidFile(settings.pid_file) if settings.pid_file is not None else None
    hooks = ServeHooks(
        plan.app,
        plan.source,
        plan.listeners,
        plan.board,
        settings.ready_timeout or 60.0,
        plan.metrics,
        plan.health,
        plan.hub,
        plan.leaders,
        settings.pid_file,
    )
    try:
        if pids is not None:
            pids.create()
        _children.mark_started()
        set_title(f"master {_app.describe(plan.app)}")
        if plan.handover is None:
            gen_log.info("Starting %d processes for %s", count, _app.describe(plan.app))
        else:
            gen_log.info(
                "reloaded in place (pid %d): the workers of the old code serve "
                "until new ones are ready",
                plan.parent_pid,
            )
        child = Supervisor(
            count,
            settings,
            _child_init(plan.parent_pid, plan.listeners, plan.board),
            ready_on_fork=False,
            keep_running=True,
            hooks=hooks,
            handover=plan.handover,
            sidecars=plan.sidecars,
        ).run()
    finally:
        if os.getpid() == plan.parent_pid:
            plan.listeners.close()
            if pids is not None:
                pids.remove()
            if plan.metrics is not None:
                plan.metrics.close()
            if plan.health is not None:
                plan.health.close()
            if plan.hub is not None:
                plan.hub.close()
            plan.leaders.close()
    if child is None:
        gen_log.info("Stopped; the workers took %.1f s to drain", hooks.drain_time())
    return child


def _serve_in_worker(child: Child, plan: _Plan) -> NoReturn:
    """A worker's whole life: build the application, serve, drain, exit."""
    settings = plan.settings
    set_title(f"worker {child.task_id}")
    max_requests = settings.max_requests
    jitter = random.randint(0, settings.max_requests_jitter)
    limit = max_requests + jitter if max_requests else 0
    observer = plan.metrics.in_worker(child.task_id) if plan.metrics is not None else None
    if plan.health is not None:
        plan.health.in_worker(own_health=plan.metrics is None)
    http = settings.http_server_keywords()

    async def start(lifespan: contextlib.AsyncExitStack) -> PreforkHTTPServer:
        # Bound while still the parent's user: the port may be below 1024, and
        # only sockets of one user may share an SO_REUSEPORT address.
        sockets = plan.listeners.for_child()
        if plan.board is not None:
            plan.board.close_fd()
        if plan.identity is not None:
            _privileges.drop(plan.identity)
        _autoreload.prevent()
        if plan.hub is not None:
            plan.hub.in_worker(
                lambda pid: _channel.send(child.channel, b"%s %d" % (_HUB_SILENT, pid))
            )
        else:
            _current.turn_off("broadcast='off'")
        plan.leaders.in_worker()
        application = await _app.load(plan.source, lifespan)
        _autoreload.warn_if_asked(application, first=child.task_id == 0)
        server = PreforkHTTPServer(
            application,
            ssl_options=plan.ssl_options,
            board=plan.board,
            seat=child.seat,
            max_requests=limit,
            on_max_requests=lambda: _channel.send(child.channel, _channel.RECYCLE),
            forwarded_allow_ips=settings.forwarded_allow_ips,
            observer=observer,
            **http,
            **plan.server_options,
        )
        server.add_sockets(sockets)
        return server

    timeout = settings.timeout
    heartbeat = min(timeout / _HEARTBEATS_PER_TIMEOUT, _MAX_HEARTBEAT) if timeout else 0.0
    _life.run(
        child.channel, plan.parent_pid, start, settings.graceful_timeout, heartbeat, plan.loop
    )


def _describe_failure(error: BaseException) -> str:
    if isinstance(error, SystemExit):
        return f"the new code exited ({error.code})"
    return "the new code failed to start:\n" + "".join(
        traceback.format_exception_only(type(error), error)
    )


def _warn_about_reuse_port() -> None:
    caveat = _sockets.reuse_port_caveat()
    if caveat is not None:
        gen_log.warning(
            "reuse_port: connections waiting on a worker's socket when it stops "
            "(reload, scale-down, recycling) are reset: %s; see docs/reuse-port.md",
            caveat,
        )


def _child_init(
    parent_pid: int, listeners: _sockets.Listeners, board: Board | None
) -> Callable[[Child | None], None]:
    common = _children.child_init(parent_pid)

    def init(child: Child | None) -> None:
        common(child)
        if child is not None:
            _life.prepare()
            return
        # A sidecar: holding the listening sockets would keep connections
        # queueing once a stop has closed the parent's.
        for sock in listeners.sockets:
            sock.close()
        if board is not None:
            board.close_fd()

    return init


def _check_arguments(settings: _settings.Settings, server_options: dict[str, Any]) -> None:
    settings.check("serve() argument")
    if settings.broadcast not in _settings.BROADCASTS:
        _upstream.check_url(settings.broadcast)
    unknown = sorted(set(server_options) - _SERVER_KEYWORDS)
    if unknown:
        raise TypeError(
            f"serve() got unexpected keyword argument(s) {', '.join(unknown)}; "
            f"HTTPServer takes {', '.join(sorted(_SERVER_KEYWORDS))}"
        )


def _reload_sidecar(app: AppSource) -> list[Sidecar]:
    if not isinstance(app, str):
        raise ValueError(
            "serve() argument reload needs app as an import string 'package.module:name': "
            "new workers import the code on disk then, while an application or function "
            "given to serve() is the code the parent already holds"
        )
    # Workers inherit it: see the docstring.
    sys.dont_write_bytecode = True
    return [Sidecar("file watcher", functools.partial(_watcher.run, _watcher.source_root(app)))]


def _check_no_loop(app: AppSource) -> None:
    # fork_processes() returns in each child, serve() never does: its own advice.
    if _children._running_loop() is not None:
        raise RuntimeError(
            "serve() was called from inside a running event loop; it runs the event "
            "loops itself, one per worker: call it at start-up, outside asyncio.run() "
            "or IOLoop.start()"
        )
    loops = _children._open_event_loops()
    if loops and isinstance(app, HTTPServerConnectionDelegate):
        raise RuntimeError(
            f"an event loop already exists ({', '.join(map(repr, loops))}), most likely "
            "created by the application's constructor (IOLoop.current()); every worker "
            "would share it. Pass serve() a function that returns the application, or an "
            "import string 'package.module:name', so that each worker builds its own"
        )
    if loops:
        raise RuntimeError(
            f"an event loop already exists in this process and is not closed "
            f"({', '.join(map(repr, loops))}); every worker would share its selector and "
            "callbacks. Do not create one before serve(): each worker gets its own"
        )
