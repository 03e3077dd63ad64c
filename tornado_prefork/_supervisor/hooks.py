"""What the supervisor tells the code around it, and the check it runs for it.

`SupervisorHooks` is told of every event that the code around the supervisor
(`tornado_prefork.serve`) acts on; `NewCodeCheck` is the check of new code
before a reload in place. The supervisor's settings are the one `Settings`
of `tornado_prefork._settings`.
"""

from __future__ import annotations

import abc

from tornado_prefork._supervisor.handover import Handover
from tornado_prefork._supervisor.record import ExitReason, Process


class NewCodeCheck(abc.ABC):
    """The check of new code before a reload in place, running in a child of
    the parent (`tornado_prefork._reload.check`) so that the parent's loop goes on.

    The supervisor reaps it by ``pid``, reads ``fd`` when it is readable, and
    gives up on it at ``deadline``, ``timeout`` seconds after its start.
    """

    pid: int
    fd: int | None
    deadline: float
    timeout: float

    @abc.abstractmethod
    def read(self) -> None:
        """Reads what the check has written so far."""

    @abc.abstractmethod
    def verdict(self, status: int) -> str | None:
        """Once reaped with wait ``status``: reads what is left of its output,
        then None if the new code passed, else why not (the end of that output)."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """SIGKILL: a stop, a newer SIGHUP, or its deadline came first."""


class SupervisorHooks:
    """What the supervisor tells the code around it. Each method here does nothing."""

    def worker_started(self, process: Process) -> None:
        """A worker was forked."""

    def worker_ready(self, process: Process) -> None:
        """A worker reported READY."""

    def all_ready(self, workers: int) -> None:
        """The first time every slot has a ready worker."""

    def worker_exited(self, process: Process, reason: ExitReason) -> None:
        """A worker was reaped."""

    def workers_changed(self, ready: int, alive: int) -> None:
        """After an event that may change them (a worker forked, ready or
        reaped, the workers of a handover taken over): the numbers of workers
        ``ready`` and ``alive`` now, as `.Fleet.counts` derives them from the
        records: the one count of them, which the metrics publish."""

    def stop_announced(self) -> None:
        """A stop was asked for with a ``shutdown_delay``: the workers serve
        until it is over, then `stopping` follows. Health checks should fail
        from now on, so that load balancers stop sending."""

    def stopping(self) -> None:
        """A stop begins (SIGTERM, SIGINT, SIGQUIT, or giving up)."""

    def forking(self) -> None:
        """Right before a worker is forked."""

    def reload_check(self) -> str | None:
        """Before a reload that forks new workers: a reason to refuse it, or None.
        Must be quick: the supervisor's loop waits for it."""
        return None

    def check_new_code(self) -> NewCodeCheck | None:
        """SIGHUP when the code lives in the parent: starts the check of the new
        code that must pass before `reload_in_place`. None: the reload forks new
        workers instead (`reload_check`). Raises `OSError` when the check
        cannot be started: the reload is refused."""
        return None

    def reloading(self) -> None:
        """A reload begins."""

    def reload_in_place(self, handover: Handover) -> str:
        """The new code passed its check: re-execute the parent in place with
        ``handover`` (`tornado_prefork._supervisor.handover.reexec`, which does not return
        when it works). Returns why it could not."""
        return "reloading in place is not supported here"

    def reloaded(self, workers: int, ok: bool) -> None:
        """A reload ended: every worker replaced (``ok``), or abandoned."""

    def scaled(self, workers: int) -> None:
        """The number of workers wanted changed (SIGTTIN, SIGTTOU)."""

    def reopen_logs(self, workers: list[Process]) -> None:
        """SIGUSR1: reopen log files (here and, if they handle it, in ``workers``)."""
