"""A reload in place whose new code cannot load: the old workers keep serving.

A parent re-executed in place (`tornado_prefork._supervisor.handover`) is the same
process: if the new image ended, every worker would lose its supervisor and
the port would close. Its new code ran its check first
(`tornado_prefork._reload.check`), but the files can change again between the
check and the exec, and a check cannot rule out every failure. So the new
image takes the handover at its first ``import tornado_prefork``, before any
of the new code can fail (`claim`), and `keep` supervises the workers of the
old code when the new code fails: before `tornado_prefork.serve` is reached
(the program ends: ``atexit``), or in it. They need no code from the parent.
The failure is said once; nothing new is forked; SIGHUP checks the code on
disk again and re-executes when it passes; SIGTERM stops as usual.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import time
from typing import NoReturn

from tornado.log import gen_log

from tornado_prefork import _settings
from tornado_prefork._broadcast.place import HubPlace
from tornado_prefork._reload import check as _check
from tornado_prefork._supervisor import handover as _handover
from tornado_prefork._supervisor.handover import Handover
from tornado_prefork._supervisor.hooks import NewCodeCheck, SupervisorHooks
from tornado_prefork._supervisor.loop import Supervisor
from tornado_prefork._supervisor.record import ExitReason, Process
from tornado_prefork._system import systemd as _systemd
from tornado_prefork._system.pidfile import PidFile
from tornado_prefork._worker.board import Board
from tornado_prefork._worker.leader import LeaderLocks
from tornado_prefork.errors import StartupError

_pending: Handover | None = None


def claim() -> None:
    """In a parent re-executed in place, at the first import of tornado_prefork:
    takes the handover, and keeps the old workers if the program ends before
    `take` is called. Elsewhere, nothing."""
    global _pending
    if _handover.ENV not in os.environ or _pending is not None:
        return
    try:
        _pending = _handover.take()
    except (ValueError, OSError) as e:
        # Nothing to supervise with: any workers notice the parent's silence and drain.
        gen_log.error("%s cannot be used (%s); starting afresh", _handover.ENV, e)
        return
    atexit.register(_at_exit)


def take() -> Handover | None:
    """The handover `claim` took, for `tornado_prefork.serve`; None in a parent
    started afresh. Taken once."""
    global _pending
    claim()
    handover, _pending = _pending, None
    return handover


def _at_exit() -> None:
    if _pending is not None:
        keep(_pending, "the new code ended before it called serve() (see above)")


def keep(handover: Handover, error: str) -> NoReturn:
    """Supervises the processes of ``handover`` without forking, until a stop or
    a reload that works; never returns (the process exits 0 after a stop).
    ``error`` says why the new code could not take over."""
    gen_log.error(
        "reload failed: %s; the workers of the old code keep serving (SIGHUP tries again)",
        error.rstrip(),
    )
    config = _settings.Settings.from_record(handover.config)
    hooks = _KeeperHooks(handover, config)
    pids = _pid_file(handover)
    try:
        Supervisor(
            handover.count,
            config,
            lambda child: None,
            ready_on_fork=False,
            keep_running=True,
            hooks=hooks,
            handover=handover,
            can_fork=False,
        ).run()
    finally:
        hooks.close()
        if pids is not None:
            pids.remove()
    gen_log.info("Stopped; the workers took %.1f s to drain", hooks.drain_time)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _pid_file(handover: Handover) -> PidFile | None:
    path = handover.extras.get("pid_file")
    if path is None:
        return None
    pids = PidFile(path)
    try:
        pids.create()
    except StartupError as e:
        gen_log.warning("pid file %s: %s", path, e)
        return None
    return pids


class _KeeperHooks(SupervisorHooks):
    """What a kept server does: the descriptors of the handover held open and
    handed over again, a stop that refuses new connections at once."""

    def __init__(self, handover: Handover, config: _settings.Settings) -> None:
        self.handover = handover
        self.config = config
        self.board = None if handover.board_fd is None else Board.adopt(handover.board_fd)
        self.drain_time = 0.0
        self._stop_began: float | None = None

    def check_new_code(self) -> NewCodeCheck:
        return _check.start(self.config.ready_timeout or 60.0)

    def reload_in_place(self, handover: Handover) -> str:
        kept = self.handover
        handover.listen_fds = kept.listen_fds
        handover.board_fd = kept.board_fd
        handover.extra_fds = kept.extra_fds
        handover.extras = kept.extras
        return _handover.reexec(handover)

    def stopping(self) -> None:
        self._stop_began = time.monotonic()
        # New connections are refused at once, not queued for nobody.
        for fd in self.handover.listen_fds:
            os.close(fd)
        self.handover.listen_fds = []
        _systemd.notify("STOPPING=1")

    def worker_exited(self, process: Process, reason: ExitReason) -> None:
        if self.board is not None:
            self.board.vacate(process.seat)

    def reopen_logs(self, workers: list[Process]) -> None:
        for each in workers:
            each.signal(signal.SIGUSR1)

    def close(self) -> None:
        if self._stop_began is not None:
            self.drain_time = time.monotonic() - self._stop_began
        for fd in [*self.handover.listen_fds, *self.handover.extra_fds]:
            try:
                os.close(fd)
            except OSError:
                pass
        HubPlace.remove_handed_over(self.handover.extras)
        LeaderLocks.remove_handed_over(self.handover.extras)
        directory = self.handover.extras.get("metrics_dir")
        if directory is not None:
            # The directory is the server's own; no worker writes there any more.
            shutil.rmtree(directory, ignore_errors=True)
