"""The metrics endpoint: ``/metrics`` and ``/healthz`` for the whole server.

It runs in a small process of its own, forked by the parent beside the
workers (the parent itself runs no event loop and no thread). ``/metrics``
adds up the files every process wrote to the multiprocess directory, and
says what it could not count; ``/healthz`` answers from what the parent
publishes in `tornado_prefork._metrics.health.Health`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from tornado.web import Application, RequestHandler

from tornado_prefork._metrics.health import Health
from tornado_prefork._metrics.healthz import HealthHandler, quiet, serve
from tornado_prefork._metrics.instruments import GAUGE_INTERVAL
from tornado_prefork._metrics.merge import MergingCollector

# How long a scrape that had to put the directory back waits for the
# processes to write their files again (each does every GAUGE_INTERVAL).
_REWRITE_WAIT = 2 * GAUGE_INTERVAL


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


class _DirectoryCollector:
    """What the last read of the files could not count."""

    def __init__(self, files: MergingCollector) -> None:
        self._files = files

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "tornado_prefork_metrics_uncounted_processes",
            "Processes whose values are not in this scrape: the metrics directory "
            "was full or gone when they wrote, and each said so in the log",
            value=self._files.uncounted,
        )
        yield GaugeMetricFamily(
            "tornado_prefork_metrics_unreadable_files",
            "Files of the metrics directory this scrape left out (the log says why)",
            value=len(self._files.unreadable),
        )


class Scrapes(CollectorRegistry):
    """What a scrape reads: every process's files, what they could not count,
    and the parent's view."""

    def __init__(self, directory: str, health: Health, version: str) -> None:
        super().__init__()
        self.files = MergingCollector(directory)
        self.register(self.files)
        self.register(_DirectoryCollector(self.files))
        self.register(_ServerCollector(health, version))


def registry(directory: str, health: Health, version: str) -> Scrapes:
    """What a scrape reads, from ``directory`` and ``health``."""
    return Scrapes(directory, health, version)


class _MetricsHandler(RequestHandler):
    def initialize(self, collectors: Scrapes, health: Health) -> None:
        self.collectors = collectors
        self.health = health

    async def get(self) -> None:
        text = self._latest()
        if self.collectors.files.remade:
            # Totals without the workers' files would drop, which Prometheus
            # takes for a counter reset; they are back within the wait.
            await asyncio.sleep(_REWRITE_WAIT)
            text = self._latest()
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(text)

    def _latest(self) -> bytes:
        # The parent folds no file of an ended worker while the files are read.
        self.health.hold(wait=True)
        try:
            return generate_latest(self.collectors)
        finally:
            self.health.release()


def application(collectors: Scrapes, health: Health) -> Application:
    """The endpoint's two routes."""
    return Application(
        [
            (r"/metrics", _MetricsHandler, {"collectors": collectors, "health": health}),
            (r"/healthz", HealthHandler, {"health": health}),
        ],
        log_function=quiet,
    )


def run(sockets: list[socket.socket], directory: str, health: Health, version: str) -> None:
    """The endpoint process: serves on ``sockets`` until SIGTERM, then returns.

    The supervisor's start of a sidecar has closed its copies of the server's
    listening sockets (never unlinking a unix socket's file).
    """
    asyncio.run(serve(sockets, application(registry(directory, health, version), health)))
