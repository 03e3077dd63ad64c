"""The child's side: start serving, tell the parent, drain on stop or parent death.

Runs in each worker after fork, on a fresh event loop. Knows the channel to
the parent, not the parent's slot table.

A stop, within ``graceful_timeout`` of its signal: the leader tasks are
cancelled (so that another worker takes them over at once) while the server
drains; once they have ended, the application's lifespan is exited, on the
event loop still, with what is left of the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import NoReturn

from tornado.ioloop import PeriodicCallback
from tornado.log import gen_log

from tornado_prefork import logs
from tornado_prefork._broadcast import current as _broadcast
from tornado_prefork._supervisor import channel as _channel
from tornado_prefork._supervisor import children as _children
from tornado_prefork._system import python_names as _python_names
from tornado_prefork._worker import eventloop as _eventloop
from tornado_prefork._worker import leader as _leader
from tornado_prefork._worker.httpserver import PreforkHTTPServer
from tornado_prefork.errors import StartupError

# Exit status of a worker that could not start (as gunicorn's workers).
BOOT_ERROR = 3

# With the parent gone nobody enforces graceful_timeout and nobody would
# replace this worker: finish quickly, so that no worker outlives its parent by
# more than a second.
ORPHAN_DRAIN = 0.5

# The part of graceful_timeout (at most EXIT_MARGIN_MAX seconds) kept back
# from the lifespan's exit: the worker cuts it and exits by itself before the
# parent's SIGKILL.
EXIT_MARGIN = 0.1
EXIT_MARGIN_MAX = 0.5

# What builds a worker's server; the lifespans it enters go on the stack.
Start = Callable[[contextlib.AsyncExitStack], Awaitable[PreforkHTTPServer]]


def prepare() -> None:
    """Runs in the child right after fork, before signals are unblocked.

    Until the worker is ready it has nothing to drain: SIGTERM and SIGINT
    (the parent's stop, or the parent-death signal) end it at once, even in
    the middle of a slow import, so that it never outlives its parent or
    holds the port. `run` takes them over once the server is listening.
    """
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    # Its default would end the process; the files were opened moments ago anyway.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def run(
    channel: socket.socket,
    parent_pid: int,
    start: Start,
    graceful_timeout: float,
    heartbeat: float,
    loop: str = "asyncio",
) -> NoReturn:
    """Serves until told to stop, drains, and ends the process.

    ``start`` builds the server on the worker's event loop, entering the
    application's lifespan (if it has one) on the exit stack it is given. If
    it raises, the traceback goes to the parent (which shows it once for all
    workers; only the message of a `.StartupError`, which says it all) and
    the worker exits with status 3. Every ``heartbeat`` seconds (0: never) the
    event loop itself tells the parent it is alive, so a blocked loop falls
    silent; SIGABRT then dumps the stacks of all threads to stderr. The
    event loop is a new one of the kind ``loop`` (`tornado_prefork._worker.eventloop`).

    After a graceful drain the worker runs the `atexit` handlers, as a
    Python program that ends normally does (the process's own and those it
    inherited from the parent), then exits with status 0.
    """
    faulthandler.enable(all_threads=True)
    try:
        code = _eventloop.run(_serve(channel, parent_pid, start, graceful_timeout, heartbeat), loop)
    except BaseException:
        gen_log.exception("worker failed")
        code = 1
    if code == 0:
        # Telemetry flushes and temp-file clean-ups registered by the app.
        # SystemExit is the Python way to get them, but it would unwind into
        # the caller's code after serve(), which is the parent's.
        _python_names.run_atexit_handlers()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _serve(
    channel: socket.socket,
    parent_pid: int,
    start: Start,
    graceful_timeout: float,
    heartbeat: float,
) -> int:
    lifespan = contextlib.AsyncExitStack()
    try:
        server = await start(lifespan)
    except Exception as e:
        # A StartupError's message names the problem and the way out; a
        # traceback would only bury it.
        error = str(e) if isinstance(e, StartupError) else traceback.format_exc()
        _channel.send_error(channel, error)
        # A lifespan entered before what failed next is exited all the same.
        await _exit_lifespan(lifespan, time.monotonic() + graceful_timeout, 0.0)
        return BOOT_ERROR
    stop = _StopWatch(channel, parent_pid)
    _channel.send(channel, _channel.READY)
    if heartbeat:
        PeriodicCallback(
            lambda: _channel.send(channel, _channel.HEARTBEAT), heartbeat * 1000
        ).start()
    _leader.serving()
    orphaned = await stop.wait()
    began = time.monotonic()
    timeout = min(graceful_timeout, ORPHAN_DRAIN) if orphaned else graceful_timeout
    leaders = _leader.stop()
    gen_log.info(
        "worker %d draining %d request(s) in flight (up to %.1f s)%s",
        os.getpid(),
        server.requests_in_flight,
        timeout,
        ", parent is gone" if orphaned else "",
    )
    # Long polls waiting for a message answer now; their clients ask another worker.
    _broadcast.drain()
    await server.drain(timeout)
    margin = min(timeout * EXIT_MARGIN, EXIT_MARGIN_MAX)
    # The leader tasks first: they may use what the lifespan closes.
    await _finish(leaders, began + timeout - margin, margin, "its leader tasks")
    await _exit_lifespan(lifespan, began + timeout - margin, margin)
    stop.ignore_late_signals()
    return 0


async def _exit_lifespan(
    lifespan: contextlib.AsyncExitStack, deadline: float, margin: float
) -> None:
    """Exits the application's lifespan by ``deadline``; an error is logged."""
    try:
        await _finish(lifespan.aclose(), deadline, margin, "the lifespan's exit")
    except Exception:
        gen_log.exception("%s: the lifespan's exit failed", _who())


async def _finish(work: Awaitable[object], deadline: float, margin: float, what: str) -> None:
    """Awaits ``work`` until ``deadline``, then cancels it and gives it
    ``margin`` seconds more to end. Raises what ``work`` raises."""
    task = asyncio.ensure_future(work)
    if not (await asyncio.wait([task], timeout=max(0.0, deadline - time.monotonic())))[0]:
        gen_log.warning("%s: %s ran out of graceful_timeout; cancelled", _who(), what)
        task.cancel()
        # One that ignores its cancellation is left to the end of the loop.
        await asyncio.wait([task], timeout=margin)
    if task.done() and not task.cancelled():
        task.result()


def _who() -> str:
    return f"worker {_children.task_id()} (pid {os.getpid()})"


class _StopWatch:
    """Waits, on the worker's event loop, for the reason to stop: SIGTERM or
    SIGINT, or the parent gone (EOF on the channel, or its death signal)."""

    def __init__(self, channel: socket.socket, parent_pid: int) -> None:
        self._channel = channel
        self._parent_pid = parent_pid
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._orphaned = False
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, self._on_signal)
        self._loop.add_signal_handler(signal.SIGUSR1, logs.reopen_files)
        channel.setblocking(False)
        self._loop.add_reader(channel.fileno(), self._on_channel)

    async def wait(self) -> bool:
        """Returns once told to stop: True if the parent is gone."""
        await self._stop.wait()
        return self._orphaned

    def _on_signal(self) -> None:
        # SIGTERM also comes from PR_SET_PDEATHSIG when the parent dies.
        self._orphaned = self._orphaned or os.getppid() != self._parent_pid
        self._stop.set()

    def _on_channel(self) -> None:
        try:
            data = self._channel.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._loop.remove_reader(self._channel.fileno())
            self._orphaned = True
            self._stop.set()

    def ignore_late_signals(self) -> None:
        """Once drained: asyncio closes its wakeup pipe before it removes its
        handlers, so a late signal (the parent's SIGTERM after a Ctrl-C, a log
        rotation) would hit a closed fd and print a traceback."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            self._loop.remove_signal_handler(signum)
            signal.signal(signum, signal.SIG_IGN)
