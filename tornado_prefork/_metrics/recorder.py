"""``serve(metrics_port=...)``: one Prometheus endpoint for all the workers.

Ties the pieces together for `tornado_prefork.serve`: the multiprocess
directory (`_metrics_dir`), the endpoint process (`_metrics_endpoint`), and
the built-in instruments (`_metrics_instruments`). In the parent it only
writes memory: mmap files, the shared `Health`, and, as workers are reaped,
the files that fold what they counted (a tmpfs: memory too); it starts no
thread, runs no event loop and never waits for the endpoint. The numbers
of workers alive and ready it publishes are the fleet's, counted from its
records (`SupervisorHooks.workers_changed`): it keeps no list of workers.
"""

from __future__ import annotations

import functools
import os
import socket

from tornado.log import gen_log

from tornado_prefork._metrics import healthz as _healthz
from tornado_prefork._metrics.directory import MetricsDirectory, require_prometheus
from tornado_prefork._metrics.health import Health, Phase
from tornado_prefork._supervisor.handover import Handover
from tornado_prefork._supervisor.record import ExitReason, Process
from tornado_prefork._supervisor.spawn import Sidecar
from tornado_prefork._worker.httpserver import RequestObserver
from tornado_prefork.errors import StartupError


class ServerMetrics:
    """The metrics of one server, from before the first fork to the parent's exit.

    Made by `start`, or by `adopt` in a parent that re-executed itself.
    """

    def __init__(
        self,
        sockets: list[socket.socket],
        urls: list[str],
        directory: MetricsDirectory,
        health: Health,
    ) -> None:
        # The modules that import prometheus_client are imported only now.
        from tornado_prefork._metrics.instruments import SupervisorMetrics

        self.sockets = sockets
        self.urls = urls
        self.directory = directory
        self.health = health
        self._counters = SupervisorMetrics()
        gen_log.info("Metrics on %s (and /healthz)", ", ".join(self.urls))

    @classmethod
    def start(cls, port: int, address: str) -> ServerMetrics:
        """Binds ``address``:``port`` (0: any free port) and sets up a fresh
        multiprocess directory.

        Raises `StartupError`, having left nothing behind, when
        ``prometheus_client`` is not installed or the address cannot be bound.
        """
        listeners = _healthz.bind(port, address, "metrics endpoint (metrics_port)")
        try:
            directory = MetricsDirectory()
            try:
                # Only now: prometheus_client reads the directory when imported.
                require_prometheus("metrics_port")
            except StartupError:
                directory.remove()
                raise
        except BaseException:
            listeners.close()
            raise
        urls = [f"{url}/metrics" for url in listeners.urls]
        return cls(listeners.sockets, urls, directory, Health())

    @classmethod
    def for_serve(
        cls, handover: Handover | None, port: int | None, address: str
    ) -> ServerMetrics | None:
        """What `tornado_prefork.serve` uses: the metrics a re-executed parent was
        handed, else new ones if ``port`` is set, else None."""
        if handover is not None and "metrics_dir" in handover.extras:
            return cls.adopt(handover.extras)
        return None if port is None else cls.start(port, address)

    def hand_over(self, handover: Handover) -> None:
        """Before a re-execution in place: puts what `adopt` needs in the
        handover, the endpoint's sockets and the shared `Health` among the
        descriptors kept open across the exec."""
        handover.extra_fds += [*(sock.fileno() for sock in self.sockets), self.health.fd]
        handover.extras.update(
            metrics_fds=",".join(str(sock.fileno()) for sock in self.sockets),
            metrics_health_fd=str(self.health.fd),
            metrics_dir=self.directory.path,
            metrics_urls=" ".join(self.urls),
            # Ended workers whose files a scrape kept the parent from folding.
            metrics_pending=",".join(str(pid) for pid in sorted(self.directory.pending)),
        )

    @classmethod
    def adopt(cls, extras: dict[str, str]) -> ServerMetrics:
        """In the re-executed parent: the metrics of `hand_over`, with the
        running endpoint process, its directory and memory. Until the fleet
        takes over the workers of the image before (`workers_changed`), the
        memory says what that image last published. Raises `StartupError` if
        prometheus_client can no longer be imported."""
        # Absent from the handover of a version that did not fold.
        pending = frozenset(int(pid) for pid in extras.get("metrics_pending", "").split(",") if pid)
        directory = MetricsDirectory(extras["metrics_dir"], pending)
        require_prometheus("metrics_port")
        sockets = [socket.socket(fileno=int(fd)) for fd in extras["metrics_fds"].split(",")]
        health = Health(int(extras["metrics_health_fd"]))
        return cls(sockets, extras["metrics_urls"].split(), directory, health)

    def endpoint(self) -> Sidecar:
        """The endpoint process, for the supervisor."""
        from tornado_prefork._metrics import endpoint as _endpoint
        from tornado_prefork._version import __version__

        run = functools.partial(
            _endpoint.run,
            self.sockets,
            self.directory.path,
            self.health,
            __version__,
        )
        return Sidecar("metrics endpoint", run)

    # -- the parent, from the supervisor's hooks ----------------------------

    def workers_changed(self, ready: int, alive: int) -> None:
        """The fleet's counts of workers: the server serves from its first ready one on."""
        self.health.workers_changed(ready, alive)

    def worker_started(self, process: Process) -> None:
        self.directory.worker_started(process.pid, self.health)

    def worker_ready(self, process: Process) -> None:
        self.directory.tidy(self.health)

    def worker_exited(self, process: Process, reason: ExitReason) -> None:
        # Before the counter below: its file may have to be written again first.
        self.directory.worker_ended(process.pid, self.health)
        self._counters.worker_exited(reason)

    def stopping(self) -> None:
        """From now on ``/healthz`` says 503, while the workers drain."""
        self.health.publish_phase(Phase.STOPPING)

    def reloaded(self, ok: bool) -> None:
        self.directory.tidy(self.health)
        self._counters.reloaded(ok)

    # -- elsewhere -----------------------------------------------------------

    def in_worker(self, task_id: int) -> RequestObserver:
        """In a worker, after the fork: the observer for its HTTP server.

        Closes the worker's copies of the endpoint's socket and of the
        descriptor of `Health` first.
        """
        from tornado_prefork._metrics.instruments import RequestMetrics

        for sock in self.sockets:
            sock.close()
        os.close(self.health.fd)
        return RequestMetrics(task_id)

    def close(self) -> None:
        """In the parent, at the end: closes the endpoint's socket, removes the directory."""
        for sock in self.sockets:
            sock.close()
        self.directory.remove()
