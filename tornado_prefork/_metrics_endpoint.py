"""The metrics endpoint: ``/metrics`` and ``/healthz`` for the whole server.

It runs in a small process of its own, forked by the parent beside the
workers (the parent itself runs no event loop and no thread). ``/metrics``
adds up the files every process wrote to the multiprocess directory;
``/healthz`` answers from what the parent publishes in
`tornado_prefork._metrics_health.Health`.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from tornado.httpserver import HTTPServer
from tornado.log import gen_log
from tornado.web import Application, RequestHandler

from tornado_prefork._metrics_health import Health
from tornado_prefork._metrics_merge import MergingCollector


class _ServerCollector:
    """The parent's view: workers alive and ready, and the version, at each scrape."""

    def __init__(self, health: Health, version: str) -> None:
        self._health = health
        self._version = version

    def collect(self) -> Iterator[Metric]:
        yield InfoMetricFamily(
            "tornado_prefork", "The tornado-prefork server", value={"version": self._version}
        )
        yield GaugeMetricFamily(
            "tornado_prefork_workers", "Worker processes alive", value=self._health.alive
        )
        yield GaugeMetricFamily(
            "tornado_prefork_workers_ready",
            "Worker processes ready to serve",
            value=self._health.ready,
        )


def registry(directory: str, health: Health, version: str) -> CollectorRegistry:
    """What a scrape reads: every process's files, and the parent's view."""
    collectors = CollectorRegistry()
    collectors.register(MergingCollector(directory))
    collectors.register(_ServerCollector(health, version))
    return collectors


class _MetricsHandler(RequestHandler):
    def initialize(self, collectors: CollectorRegistry) -> None:
        self.collectors = collectors

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.collectors))


class _HealthHandler(RequestHandler):
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


def application(collectors: CollectorRegistry, health: Health) -> Application:
    """The endpoint's two routes."""
    return Application(
        [
            (r"/metrics", _MetricsHandler, {"collectors": collectors}),
            (r"/healthz", _HealthHandler, {"health": health}),
        ],
        log_function=_quiet,
    )


def _quiet(handler: RequestHandler) -> None:
    # Scrapes and probes come every few seconds: only failures are worth a line.
    status = handler.get_status()
    if status >= 500 and status != 503:
        gen_log.warning("metrics endpoint: %s %d", handler.request.uri, status)


def run(sockets: list[socket.socket], directory: str, health: Health, version: str) -> None:
    """The endpoint process: serves on ``sockets`` until SIGTERM, then returns.

    The supervisor's start of a sidecar has closed its copies of the server's
    listening sockets (never unlinking a unix socket's file).
    """
    asyncio.run(_serve(sockets, application(registry(directory, health, version), health)))


async def _serve(sockets: list[socket.socket], app: Application) -> None:
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
