"""What serve() does when the supervisor's state changes: logs, systemd, sockets, metrics."""

from __future__ import annotations

import signal
import time

from tornado.log import gen_log

from tornado_prefork import logs
from tornado_prefork._broadcast.place import HubPlace
from tornado_prefork._metrics.health import Phase
from tornado_prefork._metrics.healthz import HealthPort
from tornado_prefork._metrics.recorder import ServerMetrics
from tornado_prefork._reload import check as _check
from tornado_prefork._reload import inplace as _inplace
from tornado_prefork._serve import app as _app
from tornado_prefork._serve import preload as _preload
from tornado_prefork._serve.app import AppSource
from tornado_prefork._supervisor.handover import Handover
from tornado_prefork._supervisor.hooks import NewCodeCheck, SupervisorHooks
from tornado_prefork._supervisor.record import ExitReason, Process
from tornado_prefork._system import sockets as _sockets
from tornado_prefork._system import systemd as _systemd
from tornado_prefork._worker.board import Board
from tornado_prefork._worker.leader import LeaderLocks
from tornado_prefork.errors import StartupError


class ServeHooks(SupervisorHooks):
    """What serve() does when the supervisor's state changes: logs, systemd, sockets."""

    def __init__(
        self,
        app: AppSource,
        source: AppSource,
        listeners: _sockets.Listeners,
        board: Board | None,
        check_timeout: float,
        metrics: ServerMetrics | None,
        health: HealthPort | None,
        hub: HubPlace | None,
        leaders: LeaderLocks,
        pid_file: str | None,
    ):
        self.app = app
        # Workers built from code the parent holds: only a re-exec loads new code.
        self.in_parent = _app.code_in_parent(source)
        self.listeners = listeners
        self.board = board
        self.check_timeout = check_timeout
        self.metrics = metrics
        # /healthz alone, and the memory it reads when the metrics are off.
        self.health = health
        self._own_health = health is not None and metrics is None
        self.hub = hub
        self.leaders = leaders
        self.pid_file = pid_file
        self._stop_began: float | None = None

    def drain_time(self) -> float:
        """Seconds from the start of the stop to now."""
        return 0.0 if self._stop_began is None else time.monotonic() - self._stop_began

    def all_ready(self, workers: int) -> None:
        gen_log.info("Serving on %s with %d workers", ", ".join(self.listeners.urls), workers)
        _systemd.notify("READY=1", f"STATUS=serving with {workers} workers")

    def stop_announced(self) -> None:
        _systemd.notify("STATUS=stopping after shutdown_delay: serving until then")
        self._publish_stopping()

    def _publish_stopping(self) -> None:
        if self.metrics is not None:
            self.metrics.stopping()
        elif self.health is not None:
            self.health.health.publish_phase(Phase.STOPPING)

    def stopping(self) -> None:
        self._stop_began = time.monotonic()
        # Once no process holds the listening sockets open, new connections
        # are refused instead of waiting in a backlog nobody will accept.
        self.listeners.close()
        _systemd.notify("STOPPING=1")
        self._publish_stopping()

    def forking(self) -> None:
        if self.in_parent:
            # The workers' collectors must never write to the pages they share.
            _preload.freeze()

    def check_new_code(self) -> NewCodeCheck | None:
        # The new image will run the command again: it is checked the same way.
        return _check.start(self.check_timeout) if self.in_parent else None

    def reload_check(self) -> str | None:
        # The code on disk is what the new workers will import: check it first.
        if isinstance(self.app, str):
            try:
                _app.check(self.app)
            except StartupError as e:
                return str(e)
        return None

    def reloading(self) -> None:
        _systemd.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def reload_in_place(self, handover: Handover) -> str:
        if self.metrics is not None:
            self.metrics.hand_over(handover)
        if self.health is not None:
            self.health.hand_over(handover, own_health=self._own_health)
        if self.hub is not None:
            self.hub.hand_over(handover.extras)
        self.leaders.hand_over(handover.extras)
        if self.pid_file is not None:
            handover.extras["pid_file"] = self.pid_file
        return _inplace.reexec(handover, self.listeners, self.board)

    def reloaded(self, workers: int, ok: bool) -> None:
        if self.metrics is not None:
            self.metrics.reloaded(ok)
        status = "reloaded" if ok else "reload failed; old workers"
        _systemd.notify("READY=1", f"STATUS=serving with {workers} workers ({status})")

    def scaled(self, workers: int) -> None:
        _systemd.notify(f"STATUS=serving with {workers} workers")

    def worker_started(self, process: Process) -> None:
        if self.metrics is not None:
            self.metrics.worker_started(process)

    def worker_ready(self, process: Process) -> None:
        if self.metrics is not None:
            self.metrics.worker_ready(process)

    def worker_exited(self, process: Process, reason: ExitReason) -> None:
        if self.board is not None:
            self.board.vacate(process.seat)
        if self.metrics is not None:
            self.metrics.worker_exited(process, reason)

    def workers_changed(self, ready: int, alive: int) -> None:
        if self.metrics is not None:
            self.metrics.workers_changed(ready, alive)
        elif self.health is not None:
            self.health.health.workers_changed(ready, alive)

    def reopen_logs(self, workers: list[Process]) -> None:
        logs.reopen_files()
        for each in workers:
            each.signal(signal.SIGUSR1)
