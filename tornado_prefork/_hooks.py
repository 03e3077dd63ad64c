"""What the supervisor needs from the code around it: its settings, and whom it tells.

`SupervisorConfig` holds the timing and restart settings (their defaults and
checks live in the settings table); `SupervisorHooks` is told of every event
that the code around the supervisor (`tornado_prefork.serve`) acts on.
"""

from __future__ import annotations

import dataclasses

from tornado_prefork._handover import Handover
from tornado_prefork._processes import ExitReason, Process


@dataclasses.dataclass(frozen=True)
class SupervisorConfig:
    """The supervisor's timing and restart settings (their defaults and checks
    live in the settings table).

    - ``max_restarts``: fast failures in a row of one slot before giving up.
    - ``graceful_timeout``: seconds a process gets to exit after SIGTERM before SIGKILL.
    - ``min_uptime``: a process that dies younger than this failed fast.
    - ``backoff_cap``: the longest delay before restarting a failing slot.
    - ``ready_timeout``: seconds a new worker has to report READY (0: no limit).
    - ``timeout``: a ready worker silent for this many seconds is aborted (0: off).
    - ``max_worker_age``: a worker older than this is replaced (0: off).

    .. versionadded:: 0.1
    """

    max_restarts: int
    graceful_timeout: float
    min_uptime: float
    backoff_cap: float
    ready_timeout: float
    timeout: float
    max_worker_age: float


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

    def stopping(self) -> None:
        """A stop begins (SIGTERM, SIGINT, SIGQUIT, or giving up)."""

    def forking(self) -> None:
        """Right before a worker is forked."""

    def reload_check(self) -> str | None:
        """Before a reload: a reason to refuse it, or None."""
        return None

    def reloading(self) -> None:
        """A reload begins."""

    def reload_in_place(self, handover: Handover) -> bool:
        """A reload of code that lives in the parent: re-execute it in place with
        ``handover`` (`tornado_prefork._handover.reexec`, which does not return
        when it works). True when the reload was dealt with here (it failed and
        was reported); False to replace the workers by forking new ones."""
        return False

    def reloaded(self, workers: int, ok: bool) -> None:
        """A reload ended: every worker replaced (``ok``), or abandoned."""

    def scaled(self, workers: int) -> None:
        """The number of workers wanted changed (SIGTTIN, SIGTTOU)."""

    def reopen_logs(self, workers: list[Process]) -> None:
        """SIGUSR1: reopen log files (here and, if they handle it, in ``workers``)."""
