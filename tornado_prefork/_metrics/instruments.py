"""The built-in metrics: what each worker counts, and what the parent counts.

Every value is a prometheus_client multiprocess value, an 8-byte write to a
memory-mapped file (about 2 µs with prometheus_client's checks), so a request
costs four writes: its counter, two for the histogram, the per-worker
counter. Labelled children are looked up once and kept. The gauges (requests
in flight, open connections) would change twice per request: they are the
server's own counts, read and written every `GAUGE_INTERVAL` seconds
instead, and the worker then also writes again any of its files a tmp
cleaner removed. So are the broadcast counts (`broadcast`), once more as a
worker ends gracefully.
"""

from __future__ import annotations

import atexit

from prometheus_client import Counter, Gauge, Histogram
from tornado.ioloop import PeriodicCallback

from tornado_prefork._metrics.broadcast import BroadcastMetrics
from tornado_prefork._metrics.directory import relink
from tornado_prefork._supervisor.record import ExitReason
from tornado_prefork._worker.httpserver import PreforkHTTPServer, RequestObserver

# Methods outside this set are counted as "other": a client chooses the
# method, and each distinct one would be a new time series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
# How stale the in-flight and open-connection gauges may be, in seconds.
GAUGE_INTERVAL = 0.5


class RequestMetrics(RequestObserver):
    """A worker's instruments, fed by its `PreforkHTTPServer`.

    Created in the worker, after the fork, for the worker with task id ``worker``.
    """

    def __init__(self, worker: int) -> None:
        self._requests = Counter(
            "tornado_prefork_requests",
            "HTTP requests answered, by method and status class",
            ["method", "status_class"],
            registry=None,
        )
        self._duration = Histogram(
            "tornado_prefork_request_duration_seconds",
            "Time from a request's headers to the end of its response",
            registry=None,
        )
        self._in_flight = Gauge(
            "tornado_prefork_requests_in_flight",
            "Requests whose response is not written yet",
            multiprocess_mode="livesum",
            registry=None,
        )
        self._connections = Gauge(
            "tornado_prefork_open_connections",
            "Client connections open in the workers",
            multiprocess_mode="livesum",
            registry=None,
        )
        self._by_worker = Counter(
            "tornado_prefork_worker_requests",
            "HTTP requests answered, by worker task id (successors keep the id)",
            ["worker"],
            registry=None,
        ).labels(str(worker))
        # Keyed by the labels, not the raw method: any client can invent methods.
        self._by_kind: dict[tuple[str, str], Counter] = {}
        self._broadcast = BroadcastMetrics(worker)

    def watch(self, server: PreforkHTTPServer) -> None:
        # The server is made on the worker's event loop: the sampler runs there.
        PeriodicCallback(lambda: self._sample(server), GAUGE_INTERVAL * 1000).start()
        # A graceful exit runs the atexit handlers: the last counts go in the totals.
        atexit.register(self._broadcast.sample)

    def _sample(self, server: PreforkHTTPServer) -> None:
        relink()
        self._in_flight.set(server.requests_in_flight)
        self._connections.set(server.open_connections)
        self._broadcast.sample()

    def request_ended(self, method: str, status: int, seconds: float) -> None:
        key = (
            method if method in _METHODS else "other",
            _STATUS_CLASSES.get(status // 100, "unknown"),
        )
        counter = self._by_kind.get(key)
        if counter is None:
            counter = self._by_kind[key] = self._requests.labels(*key)
        counter.inc()
        self._duration.observe(seconds)
        self._by_worker.inc()


class SupervisorMetrics:
    """The parent's counters, incremented from the supervisor's hooks.

    Created in the parent once the multiprocess directory is set. Every label
    value is created at 0, so that a rate over it exists before the first event.
    """

    def __init__(self) -> None:
        exits = Counter(
            "tornado_prefork_worker_exits",
            "Worker processes that ended, by reason",
            ["reason"],
            registry=None,
        )
        self._exits = {reason: exits.labels(reason.value) for reason in ExitReason}
        reloads = Counter(
            "tornado_prefork_reloads",
            "Rolling reloads (SIGHUP) that ended, by result",
            ["result"],
            registry=None,
        )
        self._reloads = {ok: reloads.labels("ok" if ok else "failed") for ok in (True, False)}
        self._boot_failures = Counter(
            "tornado_prefork_boot_failures",
            "Workers that exited before they were ready",
            registry=None,
        )

    def worker_exited(self, reason: ExitReason) -> None:
        self._exits[reason].inc()
        if reason is ExitReason.BOOT_FAILED:
            self._boot_failures.inc()

    def reloaded(self, ok: bool) -> None:
        self._reloads[ok].inc()
