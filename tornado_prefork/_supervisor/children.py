"""What happens around a fork: the checks before it, and a child's first steps after it.

Shared by `tornado_prefork.process.fork_processes` and `tornado_prefork.serve`.
Before: refuse to fork where it would go wrong (a child, a second call, a
thread other than the main one, an event loop that every child would share)
and warn about threads. After, in each child: die with the parent, reseed the
random generators, remember the task id.
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
from tornado.log import gen_log

from tornado_prefork._supervisor.record import Child
from tornado_prefork._system import tornado_names as _tornado_names

_task_id: int | None = None
_started = False
# The child's end of its channel, kept open for the child's whole life: closing
# it would look like an exit to the parent.
_channel: socket.socket | None = None

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def task_id() -> int | None:
    """This process's task id: set in a child forked here, else Tornado's own
    (a process forked by `tornado.process.fork_processes`), else None."""
    return _task_id if _task_id is not None else tornado.process.task_id()


def check_can_fork(caller: str) -> None:
    """Raises `RuntimeError` if forking workers here would go wrong.

    Shared by `fork_processes` and `tornado_prefork.serve`; ``caller`` names
    the function in the messages.
    """
    if sys.platform == "win32":
        raise RuntimeError(f"{caller} needs fork(), which Windows does not have")
    child_id = task_id()
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
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _open_event_loops() -> list[asyncio.AbstractEventLoop]:
    """Event loops of this process that Tornado or asyncio know of and that are not closed."""
    loops = _tornado_names.asyncio_loops()
    current = _tornado_names.policy_loop()
    if current is not None:
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


def child_init(parent_pid: int) -> Callable[[Child | None], None]:
    """The function the supervisor runs in each new child, bound to ``parent_pid``;
    it gets the worker's `Child`, or None in a sidecar.

    Loads what the child needs (libc for ``prctl``) in the parent, once.
    """
    _libc()
    return functools.partial(_start_child, parent_pid)


def _start_child(parent_pid: int, child: Child | None) -> None:
    global _task_id, _channel
    die_with_parent(parent_pid)
    _reseed_random()
    if child is not None:
        _task_id = child.task_id
        _channel = child.channel


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def become_subreaper() -> bool:
    """Makes this process (Linux) the one that orphaned descendants are given
    to, instead of init: what a worker started and left behind comes back to
    the supervisor, which reaps it and stops it with the server. False where
    the system does not have it."""
    libc = _libc()
    return libc is not None and libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def die_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """In a new child (Linux): ``signum`` when the parent ``parent_pid`` dies.

    SIGTERM by default rather than SIGKILL: a child's own graceful path
    (atexit, a worker's drain) may run, and with the default disposition it is
    as quick. It survives an ``exec``.
    """
    libc = _libc()
    if libc is not None and libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        gen_log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    # The parent may have died between fork() and prctl(); then no signal
    # would ever come, so send it ourselves. Signals are still blocked here and
    # it is delivered as soon as the child unblocks them.
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)


def _reseed_random() -> None:
    # Siblings forked from one parent would otherwise draw the same numbers:
    # tokens, retry jitter, sampling.
    if "random" in sys.modules:
        import random

        random.seed(int.from_bytes(os.urandom(16), "big"))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(int.from_bytes(os.urandom(4), "big"))
