"""A drop-in for `tornado.process`: ``fork_processes``, ``task_id``, ``cpu_count``.

Same signatures, return values, exit behaviour and log lines as Tornado 6's,
with the checks Tornado dropped, per-child reseeding, no orphans and a
supervisor (`tornado_prefork.supervisor`) behind them.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import signal
import socket
import sys
import threading
import warnings
from collections.abc import Callable

import tornado.process
from tornado.ioloop import IOLoop
from tornado.log import gen_log

from tornado_prefork import _cpus
from tornado_prefork.supervisor import Child, Supervisor, SupervisorConfig

_task_id: int | None = None
_started = False
# The child's end of its channel; kept open for the child's whole life so that
# the parent's death shows as EOF (see `parent_channel`).
_parent_channel: socket.socket | None = None

_PR_SET_PDEATHSIG = 1


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
    `tornado_prefork.serve`).

    .. versionadded:: 0.1
    """
    return _task_id


def parent_channel() -> socket.socket | None:
    """In a child: its end of the channel to the parent, which reads EOF when the
    parent is gone. None in a process that was not forked by this package.

    .. versionadded:: 0.1
    """
    return _parent_channel


def fork_processes(
    num_processes: int | None,
    max_restarts: int | None = None,
    *,
    graceful_timeout: float = 30.0,
    min_uptime: float = 1.0,
    backoff_cap: float = 5.0,
) -> int:
    """Starts multiple worker processes and supervises them.

    If ``num_processes`` is None or <= 0, forks `cpu_count` children (the CPUs
    this process may use, not the host's). In each child, returns its *task
    id*, a number from 0 to ``num_processes - 1``. Children that exit abnormally
    (killed by a signal or a non-zero status) are restarted with the same id, up
    to ``max_restarts`` times in all (default 100), after which the children
    still running are stopped and `RuntimeError` is raised in the parent. A
    child that exits with status 0 is not replaced; when every child has, the
    parent calls ``sys.exit(0)``.

    Beyond `tornado.process.fork_processes`:

    - SIGTERM or SIGINT to the parent sends SIGTERM to every child, waits up to
      ``graceful_timeout`` seconds, SIGKILLs what is left and exits 0; SIGQUIT
      SIGKILLs at once. Nothing is restarted during a stop. SIGHUP replaces
      each child in turn (same task id, new process; the old one gets
      SIGTERM); SIGTTIN adds a child with the next task id, SIGTTOU stops the
      one with the highest.
    - A child dies when its parent dies, even by SIGKILL (Linux).
    - A child that dies within ``min_uptime`` seconds of its start is restarted
      after a delay that doubles from 0.1 s with each such failure in a row, up
      to ``backoff_cap`` seconds.
    - Each child reseeds `random` (and numpy's global generator if numpy is
      imported) and starts with the signal handlers the parent had before the
      call.

    Raises, before anything is forked: `TypeError` for arguments of the wrong
    type, `ValueError` for a negative ``max_restarts`` or timing, and
    `RuntimeError` when called from a child, a second time, off the main
    thread, inside a running event loop, or while an event loop that every
    child would share exists and is not closed. Warns (`RuntimeWarning`) when
    other threads are alive, as they do not survive into the children.

    Availability: Unix.

    .. versionadded:: 0.1
    """
    _check_arguments(num_processes, max_restarts)
    config = SupervisorConfig(
        max_restarts=100 if max_restarts is None else max_restarts,
        graceful_timeout=graceful_timeout,
        min_uptime=min_uptime,
        backoff_cap=backoff_cap,
        # Children run the caller's code: nothing sends heartbeats.
        timeout=0,
    )
    check_can_fork("fork_processes()")
    if num_processes is None or num_processes <= 0:
        num_processes = cpu_count()
    warn_about_threads(stacklevel=3)
    mark_started()
    gen_log.info("Starting %d processes", num_processes)
    child = Supervisor(num_processes, config, child_init(os.getpid())).run()
    if child is None:
        # Every child exited (cleanly, or the parent was told to stop): exit
        # instead of returning to code that would start serving in the parent.
        sys.exit(0)
    return child.task_id


def _check_arguments(num_processes: object, max_restarts: object) -> None:
    for name, value in (("num_processes", num_processes), ("max_restarts", max_restarts)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{name} must be an int or None, not {type(value).__name__} {value!r}")
    if max_restarts is not None and max_restarts < 0:  # type: ignore[operator]
        raise ValueError(f"max_restarts must be >= 0 or None, not {max_restarts!r}")


def check_can_fork(caller: str) -> None:
    """Raises `RuntimeError` if forking workers here would go wrong.

    Shared by `fork_processes` and `tornado_prefork.serve`; ``caller`` names
    the function in the messages.
    """
    if sys.platform == "win32":
        raise RuntimeError(f"{caller} needs fork(), which Windows does not have")
    child_id = _task_id if _task_id is not None else tornado.process.task_id()
    if child_id is not None:
        raise RuntimeError(
            f"{caller} was called in a child process (task id {child_id}); only the "
            "parent forks workers, so call it once at start-up and not again in a worker"
        )
    if _started:
        raise RuntimeError(
            f"{caller} was already called in this process; it forks workers once per "
            "process, so call it once at start-up"
        )
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            f"{caller} must be called from the main thread, the only one that can "
            "handle the signals that stop and supervise the workers"
        )
    if _running_loop() is not None:
        raise RuntimeError(
            f"{caller} was called from inside a running event loop; call it before "
            "starting one (before asyncio.run() or IOLoop.start()) and start the "
            "loop in each child, after it returns"
        )
    open_loops = _open_event_loops()
    if open_loops:
        raise RuntimeError(
            f"an event loop already exists in this process and is not closed "
            f"({', '.join(map(repr, open_loops))}); every child would share its "
            f"selector and callbacks. Create event loops only after {caller} returns "
            "(asyncio.run() in the child), or close this one first"
        )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    return asyncio._get_running_loop()


def _open_event_loops() -> list[asyncio.AbstractEventLoop]:
    """Event loops of this process that Tornado or asyncio know of and that are not closed."""
    loops = list(getattr(IOLoop, "_ioloop_for_asyncio", {}))
    with warnings.catch_warnings():
        # The policy system is deprecated from Python 3.14; while it exists it
        # is where asyncio keeps the main thread's loop.
        warnings.simplefilter("ignore", DeprecationWarning)
        policy = asyncio.get_event_loop_policy()
    local = getattr(policy, "_local", None)
    current = getattr(local, "_loop", None)
    if isinstance(current, asyncio.AbstractEventLoop):
        loops.append(current)
    return [loop for loop in dict.fromkeys(loops) if not loop.is_closed()]


def mark_started() -> None:
    """Records that this process forks workers, so that a second call is refused."""
    global _started
    _started = True


def warn_about_threads(stacklevel: int) -> None:
    """Warns once, naming them, if threads other than this one are alive.

    A fork copies only the calling thread; locks held by the others stay
    locked forever in the child. Python 3.12+ warns too, but behind default
    filters that hide it.
    """
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if others:
        warnings.warn(
            f"{len(others)} other thread(s) alive while forking workers: "
            f"{', '.join(others)}. Threads do not exist in the children and any lock "
            "they hold stays locked there; start threads after forking",
            RuntimeWarning,
            stacklevel=stacklevel,
        )


def child_init(parent_pid: int) -> Callable[[Child], None]:
    """The function the supervisor runs in each new child, bound to ``parent_pid``.

    Loads what the child needs (libc for ``prctl``) in the parent, once.
    """
    _libc()
    return functools.partial(_start_child, parent_pid)


def _start_child(parent_pid: int, child: Child) -> None:
    global _task_id, _parent_channel
    _die_with_parent(parent_pid)
    _reseed_random()
    _task_id = child.task_id
    _parent_channel = child.channel


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _die_with_parent(parent_pid: int) -> None:
    # SIGTERM rather than SIGKILL: a child's own graceful path (atexit, a
    # worker's drain) may run, and with the default disposition it is as quick.
    libc = _libc()
    if libc is not None and libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        gen_log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    # The parent may have died between fork() and prctl(); then no signal
    # would ever come, so send it ourselves. Signals are still blocked here and
    # it is delivered as soon as the child unblocks them.
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def _reseed_random() -> None:
    # Siblings forked from one parent would otherwise draw the same numbers:
    # tokens, retry jitter, sampling.
    if "random" in sys.modules:
        import random

        random.seed(int.from_bytes(os.urandom(16), "big"))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(int.from_bytes(os.urandom(4), "big"))
