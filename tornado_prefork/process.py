"""A drop-in for `tornado.process`: ``fork_processes``, ``task_id``, ``cpu_count``.

Same signatures, return values, exit behaviour and log lines as Tornado 6's,
with the checks Tornado dropped, per-child reseeding, no orphans and a
supervisor behind them.
"""

from __future__ import annotations

import os
import sys

from tornado.log import gen_log

from tornado_prefork import _settings
from tornado_prefork._supervisor import children as _children
from tornado_prefork._supervisor.loop import Supervisor
from tornado_prefork._system import cpus as _cpus

_GIVE_UP = "Too many child restarts, giving up"


def cpu_count() -> int:
    """Returns the number of CPUs this process may really use.

    Unlike `tornado.process.cpu_count`, which counts the host, this counts the
    CPUs in the process's affinity mask, capped by the cgroup CPU quota (v2
    ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``) rounded up.
    Always at least 1.

    .. versionadded:: 0.1
    """
    count = _cpus.usable_cpus()
    if count is None:
        gen_log.error("Could not detect number of processors; assuming 1")
        return 1
    return max(1, count)


def task_id() -> int | None:
    """Returns the current task id, if any.

    Returns None if this process was not created by `fork_processes` (or by
    `tornado_prefork.serve`, or by `tornado.process.fork_processes`, whose
    task id is answered too, so that code which changed only this import
    still works).

    .. versionadded:: 0.1
    """
    return _children.task_id()


def fork_processes(
    num_processes: int | None,
    max_restarts: int | None = None,
    *,
    graceful_timeout: float = _settings.default("graceful_timeout"),
    min_uptime: float = _settings.default("min_uptime"),
    backoff_cap: float = _settings.default("backoff_cap"),
) -> int:
    """Starts multiple worker processes and supervises them.

    If ``num_processes`` is None or <= 0, forks `cpu_count` children (the CPUs
    this process may use, not the host's). In each child, returns its *task
    id*, a number from 0 to ``num_processes - 1``. Children that exit abnormally
    (killed by a signal or a non-zero status) are restarted with the same id.
    A child that exits with status 0 is not replaced; when every child has,
    the parent calls ``sys.exit(0)``.

    Unlike Tornado, ``max_restarts`` (default 100) counts only *fast failures*
    in a row of one task id: a child that died before ``min_uptime`` seconds.
    A child that lived longer resets the count, so a long-lived server never
    gives up because of rare crashes. Past ``max_restarts``, the children
    still running are stopped and `RuntimeError` is raised in the parent.
    Each fast failure in a row doubles the delay before the next start, from
    0.1 s up to ``backoff_cap`` seconds.

    Beyond `tornado.process.fork_processes`:

    - SIGTERM or SIGINT to the parent sends SIGTERM to every child, waits up to
      ``graceful_timeout`` seconds, SIGKILLs what is left and exits 0; SIGQUIT
      SIGKILLs at once. Nothing is restarted during a stop. SIGHUP replaces
      each child in turn (same task id, new process; the old one gets
      SIGTERM); SIGTTIN adds a child with the next task id, SIGTTOU stops the
      one with the highest.
    - A child dies when its parent dies, even by SIGKILL (Linux).
    - Each child reseeds `random` (and numpy's global generator if numpy is
      imported) and starts with the signal handlers the parent had before the
      call.

    Raises, before anything is forked: `TypeError` for arguments of the wrong
    type, `ValueError` for a value out of the bounds of the settings of the
    same names (a negative ``max_restarts``, a timing that is negative, nan,
    infinite or over a day, more than 10000 processes), and
    `RuntimeError` when called from a child, a second time, off the main
    thread, inside a running event loop, or while an event loop that every
    child would share exists and is not closed. Warns (`RuntimeWarning`) when
    other threads are alive, as they do not survive into the children.

    Availability: Unix.

    .. versionadded:: 0.1
    """
    _check_arguments(num_processes, max_restarts)
    settings = _settings.Settings(
        graceful_timeout=graceful_timeout,
        min_uptime=min_uptime,
        backoff_cap=backoff_cap,
        max_restarts=_settings.default("max_restarts") if max_restarts is None else max_restarts,
        # Children run the caller's code: nothing reports readiness or sends heartbeats.
        ready_timeout=0,
        timeout=0,
        max_worker_age=0,
    )
    settings.check("fork_processes() argument")
    _children.check_can_fork("fork_processes()")
    if num_processes is None or num_processes <= 0:
        num_processes = cpu_count()
    _children.warn_about_threads(stacklevel=3)
    _children.mark_started()
    gen_log.info("Starting %d processes", num_processes)
    supervisor = Supervisor(
        num_processes,
        settings,
        _children.child_init(os.getpid()),
        give_up_message=_GIVE_UP,
        # Tornado's log lines, byte for byte: "child 1 (pid 4242) exited normally".
        noun=("child", "children"),
    )
    child = supervisor.run()
    if child is None:
        # Every child exited (cleanly, or the parent was told to stop): exit
        # instead of returning to code that would start serving in the parent.
        sys.exit(0)
    return child.task_id


def _check_arguments(num_processes: object, max_restarts: object) -> None:
    """The types Tornado's signature allows; the bounds are the table's."""
    for name, value in (("num_processes", num_processes), ("max_restarts", max_restarts)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(
                f"fork_processes() argument {name} must be an int or None, "
                f"not {type(value).__name__} {value!r}"
            )
    # As in Tornado, a count <= 0 means cpu_count(); a larger one is bounded
    # as serve()'s processes.
    if isinstance(num_processes, int) and num_processes > 0:
        door = "fork_processes() argument num_processes"
        _settings.BY_NAME["processes"].check(num_processes, door)
