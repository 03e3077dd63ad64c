"""One-worker tasks: a coroutine that runs in one worker of the server at a time.

Each task has a lock file in a private directory (`LeaderLocks`) that the
parent names before the fork and removes when the server ends; the first
worker that needs it makes it, so that a server without leader tasks has
none; a reload in place hands it to the new image, so old and new workers
share it. Each worker opens the file itself, after the fork: an ``flock`` belongs to the
open file description, which an inherited descriptor would share with every
sibling. Once ready, a worker tries a non-blocking lock every `POLL` seconds
on its event loop and runs the coroutine while it holds it. When its drain
begins, the coroutine is cancelled and the lock released once it has ended;
the kernel releases the lock of a worker that is killed.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import functools
import hashlib
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from tornado.log import gen_log

from tornado_prefork._supervisor import children as _children
from tornado_prefork._system.private_dir import PrivateDirectory

#: Seconds between two tries of a lock that another worker holds.
POLL = 0.3
#: The first delay before a task that raised runs again, doubled at each
#: failure in a row up to `RESTART_CAP`.
RESTART_FIRST = 1.0
#: The longest delay; a run that lasted longer starts the delays over.
RESTART_CAP = 30.0

TaskFunction = Callable[[], Coroutine[Any, Any, object]]

# Where this worker's locks are (None: not a worker of serve(); each task then
# simply runs), set when the worker starts.
_locks: LeaderLocks | None = None
# Set once the worker is ready: tasks registered before wait for it.
_ready: asyncio.Event | None = None
_stopping = False
# The tasks of this process by name, kept referenced until they end.
_tasks: dict[str, asyncio.Task[None]] = {}


class LeaderLocks(PrivateDirectory):
    """The directory of a server's lock files."""

    EXTRA = "leader_dir"
    PREFIX = "tornado-prefork-leader-"

    def in_worker(self) -> None:
        """In a new worker, before its application is built: its tasks take
        their locks here, once it is ready (`serving`)."""
        global _locks, _ready
        _locks = self
        _ready = asyncio.Event()


def leader_task(function: TaskFunction, *, name: str | None = None) -> asyncio.Task[None]:
    """Runs the coroutine function ``function`` in one worker of the server at a time.

    Call it where the application is built: in the factory or the lifespan
    given to `.serve`. Each worker then competes for the task once it is
    ready, and the one that wins runs ``function()`` until it ends. When that
    worker ends (a crash, a kill, recycling, a reload, scaling down, a hung
    worker aborted), another worker starts the task within 0.3 s of the
    release: at once for a worker that dies, when its drain begins for one
    that stops (once the coroutine, cancelled, has ended). Two workers never
    run it at once, across reloads of both kinds too.

    A coroutine that raises is logged, naming the worker, and runs again in
    the same worker after 1 s, then 2, 4, ... up to 30 s while it keeps
    failing; one that returns is not run again until another worker leads.
    A long-lived task is a loop (``while True: ...; await asyncio.sleep(60)``).

    ``name`` says which task it is across workers and reloads (default: the
    function's module and qualified name); a second task of the same name in
    one process raises `ValueError`. Outside a worker of `.serve` (a test, a
    single process) the task simply runs. Returns the `asyncio.Task` that
    competes for and runs the coroutine: cancelling it gives the task up in
    this process. Call it where an event loop runs or is current.

    .. versionadded:: 0.1
    """
    if not callable(function):
        raise TypeError(f"leader_task() needs a coroutine function, not {function!r}")
    key = name if name is not None else _name_of(function)
    running = _tasks.get(key)
    if running is not None and not running.done():
        raise ValueError(f"a leader task named {key!r} runs already in this process; give name=")
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = asyncio.get_event_loop()
    task = loop.create_task(_lead(function, key))
    _tasks[key] = task
    task.add_done_callback(functools.partial(_forget, key))
    return task


def serving() -> None:
    """The worker is ready: its tasks compete for their locks."""
    if _ready is not None:
        _ready.set()


def stop() -> Awaitable[object]:
    """The worker's drain begins: its tasks are cancelled. The returned
    awaitable ends once every one has ended (and released its lock)."""
    global _stopping
    _stopping = True
    tasks = [task for task in _tasks.values() if not task.done()]
    for task in tasks:
        task.cancel()
    return asyncio.gather(*tasks, return_exceptions=True)


def _forget(key: str, task: asyncio.Task[None]) -> None:
    if _tasks.get(key) is task:
        del _tasks[key]


def _name_of(function: Callable[..., object]) -> str:
    while isinstance(function, functools.partial):
        function = function.func
    module = getattr(function, "__module__", None) or "?"
    return f"{module}.{getattr(function, '__qualname__', repr(function))}"


def _who() -> str:
    task = _children.task_id()
    return f"pid {os.getpid()}" if task is None else f"worker {task} (pid {os.getpid()})"


async def _lead(function: TaskFunction, name: str) -> None:
    if _locks is None or _ready is None:
        await _run(function, name)
        return
    await _ready.wait()
    if _stopping:
        return
    lock = hashlib.sha256(name.encode()).hexdigest()[:32] + ".lock"
    try:
        _locks.make()
        # Opened here, after the fork: a lock of its own, never a sibling's.
        fd = os.open(
            os.path.join(_locks.directory, lock), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
    except OSError as e:
        gen_log.error("leader task %s cannot run in %s: %s", name, _who(), e)
        return
    try:
        while not _locked(fd):
            await asyncio.sleep(POLL)
        gen_log.info("leader task %s starts in %s", name, _who())
        await _run(function, name)
        # Returned: it runs again only in the next worker that leads.
        await asyncio.get_running_loop().create_future()
    finally:
        # Once the coroutine has ended: the lock goes with the descriptor.
        os.close(fd)


def _locked(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


async def _run(function: TaskFunction, name: str) -> None:
    """Runs ``function()`` until it returns, again after a delay each time it raises."""
    delay = RESTART_FIRST
    while True:
        began = time.monotonic()
        try:
            await function()
            return
        except Exception:
            if time.monotonic() - began > RESTART_CAP:
                delay = RESTART_FIRST
            gen_log.exception(
                "leader task %s failed in %s; it runs again in %.0f s", name, _who(), delay
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, RESTART_CAP)
