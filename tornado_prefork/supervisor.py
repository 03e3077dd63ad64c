"""The parent process: forks workers, reaps them, restarts them and stops them.

The supervisor never runs an event loop. Its signal handlers only record the
signal (the byte that `signal.set_wakeup_fd` writes into a pipe); everything
else happens in one ``select`` loop whose timeout is the nearest deadline (a
delayed restart, the end of a graceful stop), so an idle parent sleeps.
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from tornado.log import gen_log

from tornado_prefork import _channel

# Blocked around fork() so that a signal sent to a new child before it has
# restored the default dispositions is not swallowed by the parent's handlers:
# it stays pending and is delivered once the child unblocks it.
_HANDLED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)

_GIVE_UP = "Too many child restarts, giving up"
_BOOT_FAILED = "the workers failed to start: every one exited before it was ready"

# The first delay after a fast failure; each further one in a row doubles it.
_FIRST_BACKOFF = 0.1


class SupervisorError(RuntimeError):
    """The supervisor gave up: too many restarts, or no worker could start.

    Raised in the parent once the children still running have been stopped.

    .. versionadded:: 0.1
    """


@dataclasses.dataclass(frozen=True)
class SupervisorConfig:
    """The supervisor's knobs, shared by `.fork_processes` and `.serve`.

    ``max_restarts``: how many restarts (over all children) before giving up.
    ``graceful_timeout``: seconds a child gets to exit after SIGTERM before SIGKILL.
    ``min_uptime``: a child that dies younger than this many seconds is a fast
    failure and its next start is delayed. ``backoff_cap``: the longest such delay.

    Raises `TypeError` or `ValueError` naming the field that is wrong.
    """

    max_restarts: int = 100
    graceful_timeout: float = 30.0
    min_uptime: float = 1.0
    backoff_cap: float = 5.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value: float = getattr(self, field.name)
            wanted: tuple[type, ...] = (int,) if field.type == "int" else (int, float)
            if isinstance(value, bool) or not isinstance(value, wanted):
                raise TypeError(
                    f"{field.name} must be {'an int' if wanted == (int,) else 'a number'}, "
                    f"not {value!r}"
                )
            if value < 0:
                raise ValueError(f"{field.name} must be >= 0, not {value!r}")


@dataclasses.dataclass
class Child:
    """What the supervisor returns in a newly forked child."""

    task_id: int
    channel: socket.socket


class Worker:
    """One child process as the parent sees it."""

    def __init__(self, slot: int, pid: int, channel: socket.socket, ready: bool) -> None:
        self.slot = slot
        self.pid = pid
        self.channel: socket.socket | None = channel
        self.ready = ready
        self.started_at = time.monotonic()
        # Why the child could not start, as it reported over the channel.
        self.boot_error: str | None = None
        self._reader = _channel.Reader()

    def signal(self, signum: int) -> None:
        """Sends ``signum``; a process that is already gone is not an error."""
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def poll(self) -> int | None:
        """Reaps the process if it has ended and returns its wait status, else None."""
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            # Reaped behind our back (SIGCHLD set to SIG_IGN by other code): the
            # status is lost, so count it as a failure rather than a clean exit.
            return 255 << 8
        return status if pid else None

    def read_messages(self) -> list[bytes]:
        """Reads what the child sent; at EOF the channel is closed."""
        assert self.channel is not None
        try:
            data = self.channel.recv(4096)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            self.close()
            return []
        return self._reader.feed(data)

    def close(self) -> None:
        """Closes the parent's end of the channel."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None


@dataclasses.dataclass
class _Slot:
    worker: Worker | None = None
    fast_failures: int = 0
    # When to fork the slot's next worker; None when none is wanted.
    restart_at: float | None = None


def _record(signum: int, frame: FrameType | None) -> None:
    """Signal handler: the byte written to the wakeup fd is the record."""


class Supervisor:
    """The parent's loop: keeps ``num_workers`` children running.

    `run` forks the children. In a child it returns a `Child`; in the parent it
    returns None once every child has ended: all exited with status 0 (unless
    ``keep_running``, which replaces those too), or the parent was told to stop
    (SIGTERM, SIGINT: graceful; SIGQUIT: at once). ``child_init`` runs in each
    new child before the signals that the parent blocked around ``fork()`` are
    unblocked.

    A child is ready at once if ``ready_on_fork``, else when it sends READY;
    ``on_all_ready(n)`` is called the first time all ``n`` are, ``on_stop()``
    when a stop begins (to stop taking new connections). A child that
    dies before it is ready, or within ``min_uptime``, is a fast failure. If
    every slot fails before any child was ever ready, the application cannot
    start: the supervisor gives up instead of restarting in a loop.

    Must be used from the main thread, which alone can handle signals.
    """

    def __init__(
        self,
        num_workers: int,
        config: SupervisorConfig,
        child_init: Callable[[Child], None],
        *,
        ready_on_fork: bool = True,
        keep_running: bool = False,
        on_all_ready: Callable[[int], None] | None = None,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._child_init = child_init
        self._ready_on_fork = ready_on_fork
        self._keep_running = keep_running
        self._on_all_ready = on_all_ready
        self._on_stop = on_stop
        self._ever_all_ready = False
        self._ever_ready = ready_on_fork
        self._boot_failed_slots: set[int] = set()
        self._logged_errors: set[str] = set()
        self._slots = {slot: _Slot(restart_at=0.0) for slot in range(num_workers)}
        self._restarts = 0
        self._stop_mode: str | None = None
        self._kill_at: float | None = None
        self._failure: str | None = None
        self._pid = os.getpid()
        self._wake_r = self._wake_w = -1
        self._saved_handlers: dict[int, Any] = {}
        self._saved_wakeup = -1

    # -- the loop --------------------------------------------------------

    def run(self) -> Child | None:
        """Forks the workers and supervises them until the end (see the class).

        Raises `SupervisorError` in the parent when it gives up, once the
        children still running have been stopped.
        """
        self._install_signals()
        try:
            child = self._loop()
        except BaseException:
            if os.getpid() == self._pid:
                self._kill_and_reap()
            raise
        finally:
            if os.getpid() == self._pid:
                self._restore_signals()
        if child is None and self._failure is not None:
            raise SupervisorError(self._failure)
        return child

    def _loop(self) -> Child | None:
        while True:
            child = self.spawn_due()
            if child is not None:
                return child
            if not self._has_work():
                return None
            self._wait_and_dispatch()

    def _has_work(self) -> bool:
        return any(s.worker is not None or s.restart_at is not None for s in self._slots.values())

    def _next_deadline(self) -> float | None:
        deadlines = [s.restart_at for s in self._slots.values() if s.restart_at is not None]
        if self._kill_at is not None:
            deadlines.append(self._kill_at)
        return min(deadlines, default=None)

    def _wait_and_dispatch(self) -> None:
        deadline = self._next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        by_fd = {w.channel.fileno(): w for w in self.workers() if w.channel is not None}
        readable, _, _ = select.select([self._wake_r, *by_fd], [], [], timeout)
        if self._wake_r in readable:
            for signum in self._pending_signals():
                self._dispatch(signum)
        for fd in readable:
            worker = by_fd.get(fd)
            if worker is not None and worker.channel is not None:
                for message in worker.read_messages():
                    self.handle_message(worker, message)
        if self._kill_at is not None and time.monotonic() >= self._kill_at:
            self.murder_workers()

    def workers(self) -> list[Worker]:
        """The children alive now (as far as the parent has reaped)."""
        return [s.worker for s in self._slots.values() if s.worker is not None]

    # -- signals ---------------------------------------------------------

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._saved_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in _HANDLED:
            self._saved_handlers[signum] = signal.signal(signum, _record)

    def _restore_signals(self) -> None:
        for signum, handler in self._saved_handlers.items():
            # None means a handler not installed from Python; the default is the best guess.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        signal.set_wakeup_fd(self._saved_wakeup)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _pending_signals(self) -> bytes:
        received = b""
        while True:
            try:
                chunk = os.read(self._wake_r, 512)
            except BlockingIOError:
                return received
            if not chunk:
                return received
            received += chunk

    def _dispatch(self, signum: int) -> None:
        handlers: dict[int, Callable[[], None]] = {
            signal.SIGCHLD: self.reap_workers,
            signal.SIGTERM: self.handle_term,
            signal.SIGINT: self.handle_int,
            signal.SIGQUIT: self.handle_quit,
        }
        handler = handlers.get(signum)
        if handler is not None:
            handler()

    def handle_term(self) -> None:
        """SIGTERM: graceful stop."""
        self.stop(graceful=True)

    def handle_int(self) -> None:
        """SIGINT: graceful stop; a second one (Ctrl-C twice) stops at once."""
        self.stop(graceful=self._stop_mode is None)

    def handle_quit(self) -> None:
        """SIGQUIT: stop at once."""
        self.stop(graceful=False)

    def handle_message(self, worker: Worker, message: bytes) -> None:
        """A message from a child over its channel."""
        if message == _channel.READY:
            worker.ready = True
            self._ever_ready = True
            self._check_all_ready()
            return
        error = _channel.parse_error(message)
        if error is not None:
            worker.boot_error = error

    def _check_all_ready(self) -> None:
        workers = self.workers()
        if self._ever_all_ready or len(workers) < len(self._slots):
            return
        if all(w.ready for w in workers):
            self._ever_all_ready = True
            if self._on_all_ready is not None:
                self._on_all_ready(len(workers))

    # -- the children's lives ---------------------------------------------

    def spawn_due(self) -> Child | None:
        """Forks a worker for each slot whose (re)start time has come."""
        if self._stop_mode is not None:
            return None
        now = time.monotonic()
        for slot_id, slot in self._slots.items():
            if slot.restart_at is not None and slot.restart_at <= now:
                slot.restart_at = None
                child = self.spawn_worker(slot_id)
                if child is not None:
                    return child
        return None

    def spawn_worker(self, slot_id: int) -> Child | None:
        """Forks one worker for ``slot_id``; returns a `Child` in the child."""
        parent_end, child_end = socket.socketpair()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            parent_end.close()
            child_end.close()
            raise
        if pid == 0:
            child = Child(slot_id, child_end)
            try:
                parent_end.close()
                self._become_child()
                self._child_init(child)
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            except BaseException:
                # Returning into the parent's loop from here would make a second supervisor.
                gen_log.exception("child %d failed to start", slot_id)
                os._exit(70)
            return child
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child_end.close()
        parent_end.setblocking(False)
        self._slots[slot_id].worker = Worker(slot_id, pid, parent_end, self._ready_on_fork)
        return None

    def _become_child(self) -> None:
        # Nothing of the supervisor may leak into user code: not the siblings'
        # channels, not the handlers, not the wakeup fd.
        for worker in self.workers():
            worker.close()
        self._restore_signals()

    def reap_workers(self) -> None:
        """Collects every child that has ended and decides about its slot."""
        for slot_id, slot in self._slots.items():
            worker = slot.worker
            if worker is None:
                continue
            status = worker.poll()
            if status is None:
                continue
            slot.worker = None
            worker.close()
            self._worker_ended(slot_id, slot, worker, status)

    def _worker_ended(self, slot_id: int, slot: _Slot, worker: Worker, status: int) -> None:
        pid = worker.pid
        if self._stop_mode is not None:
            gen_log.info("child %d (pid %d) stopped (%s)", slot_id, pid, _describe(status))
            return
        if os.WIFSIGNALED(status):
            gen_log.warning(
                "child %d (pid %d) killed by signal %d, restarting",
                slot_id,
                pid,
                os.WTERMSIG(status),
            )
        elif os.WEXITSTATUS(status) != 0:
            gen_log.warning(
                "child %d (pid %d) exited with status %d, restarting",
                slot_id,
                pid,
                os.WEXITSTATUS(status),
            )
        else:
            gen_log.info("child %d (pid %d) exited normally", slot_id, pid)
            if not self._keep_running:
                return
        if not worker.ready:
            self._report_boot_failure(slot_id, worker)
            if self._failure is not None:
                return
        self._restarts += 1
        if self._restarts > self.config.max_restarts:
            gen_log.error(
                "child %d failed again after %d restarts (max_restarts=%d); giving up",
                slot_id,
                self.config.max_restarts,
                self.config.max_restarts,
            )
            self._failure = _GIVE_UP
            self.stop(graceful=True)
            return
        now = time.monotonic()
        if worker.ready and now - worker.started_at >= self.config.min_uptime:
            slot.fast_failures = 0
            slot.restart_at = now
            return
        slot.fast_failures += 1
        delay = min(_FIRST_BACKOFF * 2 ** (slot.fast_failures - 1), self.config.backoff_cap)
        gen_log.info(
            "child %d failed %d time(s) in a row within %.1f s of its start; next start in %.2f s",
            slot_id,
            slot.fast_failures,
            self.config.min_uptime,
            delay,
        )
        slot.restart_at = now + delay

    def _report_boot_failure(self, slot_id: int, worker: Worker) -> None:
        # The same traceback from every worker is shown once, not once a worker.
        error = worker.boot_error
        if error is not None and error not in self._logged_errors:
            self._logged_errors.add(error)
            gen_log.error("child %d failed to start:\n%s", slot_id, error.rstrip())
        self._boot_failed_slots.add(slot_id)
        if not self._ever_ready and len(self._boot_failed_slots) == len(self._slots):
            gen_log.error("no worker could start; stopping")
            self._failure = _BOOT_FAILED
            self.stop(graceful=True)

    def stop(self, graceful: bool) -> None:
        """Stops every child: SIGTERM and a deadline, or SIGKILL now. Nothing restarts."""
        for slot in self._slots.values():
            slot.restart_at = None
        if self._stop_mode is None and self._on_stop is not None:
            self._on_stop()
        workers = self.workers()
        if graceful:
            if self._stop_mode is not None:
                return
            self._stop_mode = "graceful"
            gen_log.info(
                "stopping %d children gracefully (SIGTERM, up to %.1f s)",
                len(workers),
                self.config.graceful_timeout,
            )
            for worker in workers:
                worker.signal(signal.SIGTERM)
            self._kill_at = time.monotonic() + self.config.graceful_timeout
        else:
            self._stop_mode = "fast"
            gen_log.info("stopping %d children now (SIGKILL)", len(workers))
            self.murder_workers()

    def murder_workers(self) -> None:
        """SIGKILLs every child still alive; their exits are reaped as usual."""
        self._kill_at = None
        workers = self.workers()
        if workers and self._stop_mode == "graceful":
            gen_log.warning(
                "graceful_timeout (%.1f s) passed; killing pids %s",
                self.config.graceful_timeout,
                ", ".join(str(w.pid) for w in workers),
            )
        for worker in workers:
            worker.signal(signal.SIGKILL)

    def _kill_and_reap(self) -> None:
        # Last resort when the loop itself failed: leave no child behind.
        for worker in self.workers():
            worker.signal(signal.SIGKILL)
            try:
                os.waitpid(worker.pid, 0)
            except ChildProcessError:
                pass
            worker.close()
        for slot in self._slots.values():
            slot.worker = None


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"status {os.WEXITSTATUS(status)}"
