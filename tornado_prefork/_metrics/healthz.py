"""``/healthz``: what a load balancer or a Kubernetes probe asks, with no
extra installed.

`HealthHandler` answers from the parent's `Health`: 200 while a worker is
ready, 503 while the server starts, has no ready worker, or stops. The
metrics endpoint serves it beside ``/metrics``; with ``health_port`` a
sidecar of its own serves it alone (`HealthPort`), which needs nothing but
Tornado.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket

from tornado.httpserver import HTTPServer
from tornado.log import gen_log
from tornado.web import Application, RequestHandler

from tornado_prefork._metrics.health import Health
from tornado_prefork._supervisor.handover import Handover
from tornado_prefork._supervisor.spawn import Sidecar
from tornado_prefork._system import sockets as _sockets
from tornado_prefork.errors import StartupError


class HealthHandler(RequestHandler):
    """``GET /healthz``: ``ok`` (200), or why the server should take no traffic (503)."""

    def initialize(self, health: Health) -> None:
        self.health = health

    def get(self) -> None:
        problem = self.health.problem()
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        if problem is not None:
            self.set_status(503)
            self.finish(problem + "\n")
        else:
            self.finish("ok\n")


def quiet(handler: RequestHandler) -> None:
    """The endpoints' access log: probes come every few seconds, so only
    failures are worth a line."""
    status = handler.get_status()
    if status >= 500 and status != 503:
        gen_log.warning("%s: %s %d", type(handler).__name__, handler.request.uri, status)


def bind(port: int, address: str, setting: str) -> _sockets.Listeners:
    """The listening sockets of an endpoint; `.StartupError` naming ``setting``."""
    try:
        return _sockets.bind(
            port,
            address,
            unix_socket=None,
            unix_socket_mode=0o600,
            reuse_port=False,
            backlog=128,
            family=socket.AF_UNSPEC,
            scheme="http",
        )
    except StartupError as e:
        raise StartupError(f"{setting}: {e}") from e.__cause__


class HealthPort:
    """``health_port``: ``/healthz`` alone, in a sidecar, on sockets the
    parent bound before the fork; handed over by a reload in place."""

    def __init__(self, sockets: list[socket.socket], urls: list[str], health: Health) -> None:
        self.sockets = sockets
        self.urls = urls
        self.health = health
        gen_log.info("Health on %s", ", ".join(self.urls))

    @classmethod
    def for_serve(
        cls, handover: Handover | None, port: int | None, address: str, health: Health | None
    ) -> HealthPort | None:
        """The endpoint a re-executed parent was handed, else a new one if
        ``port`` is set (reading ``health``, the metrics' when they are on)."""
        if handover is not None and "health_fds" in handover.extras:
            extras = handover.extras
            sockets = [socket.socket(fileno=int(fd)) for fd in extras["health_fds"].split(",")]
            if health is None:
                health = Health(int(extras["health_fd"]))
            return cls(sockets, extras["health_urls"].split(), health)
        if port is None:
            return None
        listeners = bind(port, address, "health endpoint (health_port)")
        urls = [f"{url}/healthz" for url in listeners.urls]
        return cls(listeners.sockets, urls, health if health is not None else Health())

    def hand_over(self, handover: Handover, own_health: bool) -> None:
        """Before a re-execution in place: the sockets (and the memory, when
        it is this endpoint's own) kept open across the exec."""
        handover.extra_fds += [sock.fileno() for sock in self.sockets]
        handover.extras.update(
            health_fds=",".join(str(sock.fileno()) for sock in self.sockets),
            health_urls=" ".join(self.urls),
        )
        if own_health:
            handover.extra_fds.append(self.health.fd)
            handover.extras["health_fd"] = str(self.health.fd)

    def endpoint(self) -> Sidecar:
        """The endpoint process, for the supervisor."""
        return Sidecar("health endpoint", functools.partial(run, self.sockets, self.health))

    def in_worker(self, own_health: bool) -> None:
        """A worker's copies of the sockets (and of the memory's descriptor,
        when it is this endpoint's own) are closed after the fork."""
        for sock in self.sockets:
            sock.close()
        if own_health:
            os.close(self.health.fd)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def run(sockets: list[socket.socket], health: Health) -> None:
    """The health endpoint process: serves ``/healthz`` until SIGTERM."""
    asyncio.run(
        serve(
            sockets,
            Application([(r"/healthz", HealthHandler, {"health": health})], log_function=quiet),
        )
    )


async def serve(sockets: list[socket.socket], app: Application) -> None:
    """Serves ``app`` on ``sockets`` until SIGTERM: an endpoint sidecar's life."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl-C reaches the whole process group at once; the parent sends SIGTERM
    # once the workers have drained, and until then the probe must say 503.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server = HTTPServer(app)
    server.add_sockets(sockets)
    await stop.wait()
    server.stop()
    await server.close_all_connections()
