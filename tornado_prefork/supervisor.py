"""The parent process: forks workers, reaps, restarts, replaces, scales and stops them.

The supervisor never runs an event loop and starts no thread. Its signal
handlers only record the signal (`tornado_prefork._wakeup`); everything else
happens in one ``select`` loop over that pipe and the workers' channels, whose
timeout is the nearest deadline (a delayed restart, a worker that must be
ready, a heartbeat, the end of a graceful stop), so an idle parent sleeps.
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import socket
import time
from collections.abc import Callable

from tornado.log import gen_log

from tornado_prefork import _channel
from tornado_prefork._wakeup import SignalPipe
from tornado_prefork._workers import Child, Slot, Worker

__all__ = ["Child", "Supervisor", "SupervisorConfig", "SupervisorError", "SupervisorHooks"]

# Also blocked around fork(), so that a signal sent to a new child before it
# has restored the default dispositions is not swallowed by the parent's
# handlers: it stays pending and is delivered once the child unblocks it.
_HANDLED = (
    signal.SIGCHLD,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
)

_GIVE_UP = "Too many child restarts, giving up"
_BOOT_FAILED = "the workers failed to start: every one exited before it was ready"

# The first delay after a fast failure; each further one in a row doubles it.
_FIRST_BACKOFF = 0.1
# Between the SIGABRT that makes a silent worker dump its stacks and the SIGKILL.
_ABORT_GRACE = 1.0


class SupervisorError(RuntimeError):
    """The supervisor gave up: too many restarts, or no worker could start.

    Raised in the parent once the children still running have been stopped.

    .. versionadded:: 0.1
    """


@dataclasses.dataclass(frozen=True)
class SupervisorConfig:
    """The supervisor's knobs, shared by `.fork_processes` and `.serve`.

    - ``max_restarts``: restarts (over all children) before giving up.
    - ``graceful_timeout``: seconds a child gets to exit after SIGTERM before SIGKILL.
    - ``min_uptime``: a child that dies younger than this many seconds is a
      fast failure and its next start is delayed; ``backoff_cap`` is the
      longest such delay.
    - ``ready_timeout``: seconds a new child has to report READY before it is
      killed as failed to start (0: no limit).
    - ``timeout``: a ready child silent (no heartbeat) for this many seconds
      gets SIGABRT, then SIGKILL, and is replaced (0: off).
    - ``max_worker_age``: a child older than this many seconds is replaced
      by a new one that is ready before the old one drains (0: off).

    Raises `TypeError` or `ValueError` naming the field that is wrong.

    .. versionadded:: 0.1
    """

    max_restarts: int = 100
    graceful_timeout: float = 30.0
    min_uptime: float = 1.0
    backoff_cap: float = 5.0
    ready_timeout: float = 60.0
    timeout: float = 30.0
    max_worker_age: float = 0.0

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


class SupervisorHooks:
    """What the supervisor tells the code around it. Each method here does nothing.

    .. versionadded:: 0.1
    """

    def all_ready(self, workers: int) -> None:
        """The first time every slot has a ready worker."""

    def stopping(self) -> None:
        """A stop begins (SIGTERM, SIGINT, SIGQUIT, or giving up)."""

    def reload_check(self) -> str | None:
        """Before a reload: a reason to refuse it, or None."""
        return None

    def reloading(self) -> None:
        """A reload begins."""

    def reloaded(self, workers: int, ok: bool) -> None:
        """A reload ended: every worker replaced (``ok``), or abandoned."""

    def scaled(self, workers: int) -> None:
        """The number of slots changed (SIGTTIN, SIGTTOU)."""

    def worker_exited(self, worker: Worker) -> None:
        """A child process was reaped."""

    def reopen_logs(self, workers: list[Worker]) -> None:
        """SIGUSR1: reopen log files (here and, if they handle it, in ``workers``)."""


class Supervisor:
    """The parent's loop: keeps one worker per slot running.

    `run` forks the children. In a child it returns a `Child`; in the parent it
    returns None once every child has ended: all exited with status 0 (unless
    ``keep_running``, which replaces those too), or the parent was told to stop.
    ``child_init`` runs in each new child before the signals that the parent
    blocked around ``fork()`` are unblocked.

    A child is ready at once if ``ready_on_fork``, else when it sends READY.
    One that dies before it is ready, or within ``min_uptime``, is a fast
    failure. If every slot fails before any child was ever ready, the
    application cannot start: the supervisor gives up instead of restarting.

    Signals: TERM and INT stop gracefully (a second INT stops at once), QUIT at
    once; HUP replaces every worker one by one, each new one ready before the
    old one drains; TTIN adds a slot, TTOU removes one (never the last).

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
        hooks: SupervisorHooks | None = None,
    ) -> None:
        self.config = config
        self.hooks = hooks or SupervisorHooks()
        self._child_init = child_init
        self._ready_on_fork = ready_on_fork
        self._keep_running = keep_running
        self._slots = {slot: Slot(restart_at=0.0) for slot in range(num_workers)}
        self._retiring: list[Worker] = []
        self._replace_queue: list[int] = []
        self._reloading = False
        self._restarts = 0
        self._stop_mode: str | None = None
        self._failure: str | None = None
        self._ever_ready = ready_on_fork
        self._ever_all_ready = False
        self._boot_failed_slots: set[int] = set()
        self._logged_errors: set[str] = set()
        self._pid = os.getpid()
        self._signals = SignalPipe(_HANDLED)

    # -- the loop --------------------------------------------------------

    def run(self) -> Child | None:
        """Forks the workers and supervises them until the end (see the class).

        Raises `SupervisorError` in the parent when it gives up, once the
        children still running have been stopped.
        """
        self._signals.install()
        try:
            child = self._loop()
        except BaseException:
            if os.getpid() == self._pid:
                self._kill_and_reap()
            raise
        finally:
            if os.getpid() == self._pid:
                self._signals.restore()
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
        if self.workers():
            return True
        if self._stop_mode is not None:
            return False
        return bool(self._replace_queue) or any(
            s.restart_at is not None for s in self._slots.values()
        )

    def workers(self) -> list[Worker]:
        """Every child alive now (as far as the parent has reaped)."""
        members = [w for slot in self._slots.values() for w in slot.members()]
        return members + self._retiring

    def _wait_and_dispatch(self) -> None:
        deadline = self._next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        by_fd = {w.channel.fileno(): w for w in self.workers() if w.channel is not None}
        readable, _, _ = select.select([self._signals.fd, *by_fd], [], [], timeout)
        if self._signals.fd in readable:
            # A stop first: with Ctrl-C the children's exits may be recorded
            # before the parent's own SIGINT, and must not look like crashes.
            for signum in sorted(self._signals.received(), key=lambda s: s == signal.SIGCHLD):
                self._dispatch(signum)
        for fd in readable:
            worker = by_fd.get(fd)
            if worker is not None and worker.channel is not None:
                for message in worker.read_messages():
                    self.handle_message(worker, message)
        self.check_deadlines()

    def _next_deadline(self) -> float | None:
        deadlines = [d for w in self.workers() if (d := self._deadline_of(w)) is not None]
        if self._stop_mode is None:
            deadlines += [s.restart_at for s in self._slots.values() if s.restart_at is not None]
        return min(deadlines, default=None)

    def _deadline_of(self, worker: Worker) -> float | None:
        """The next moment the parent must act on ``worker``, if any."""
        if worker.killed:
            return None
        if worker.kill_at is not None:
            return worker.kill_at
        config = self.config
        if not worker.ready:
            return worker.started_at + config.ready_timeout if config.ready_timeout else None
        deadlines = []
        if config.timeout:
            deadlines.append(worker.last_heard + config.timeout)
        if config.max_worker_age and not worker.retired and not worker.replacing:
            deadlines.append(worker.started_at + config.max_worker_age)
        return min(deadlines, default=None)

    def check_deadlines(self) -> None:
        """Acts on every worker whose deadline has passed."""
        now = time.monotonic()
        for worker in self.workers():
            deadline = self._deadline_of(worker)
            if deadline is None or now < deadline:
                continue
            if worker.kill_at is not None:
                if worker.retired or self._stop_mode is not None:
                    gen_log.warning(
                        "child %d (pid %d) still running after graceful_timeout (%.1f s); "
                        "killing it",
                        worker.slot,
                        worker.pid,
                        self.config.graceful_timeout,
                    )
                self._kill(worker)
            elif not worker.ready:
                gen_log.error(
                    "child %d (pid %d) not ready after %.1f s (ready_timeout); killing it",
                    worker.slot,
                    worker.pid,
                    now - worker.started_at,
                )
                worker.boot_error = worker.boot_error or "not ready within ready_timeout"
                self._kill(worker)
            elif self.config.timeout and now >= worker.last_heard + self.config.timeout:
                gen_log.error(
                    "child %d (pid %d) silent for %.1f s (timeout %.1f s); "
                    "SIGABRT for its stacks, then SIGKILL",
                    worker.slot,
                    worker.pid,
                    now - worker.last_heard,
                    self.config.timeout,
                )
                worker.signal(signal.SIGABRT)
                worker.kill_at = now + _ABORT_GRACE
            else:
                gen_log.info(
                    "child %d (pid %d) reached max_worker_age (%.0f s); replacing it",
                    worker.slot,
                    worker.pid,
                    self.config.max_worker_age,
                )
                worker.replacing = True
                self.replace([worker.slot])

    def _kill(self, worker: Worker) -> None:
        worker.kill_at = None
        worker.killed = True
        worker.signal(signal.SIGKILL)

    # -- signals and messages ---------------------------------------------

    def _dispatch(self, signum: int) -> None:
        handlers: dict[int, Callable[[], None]] = {
            signal.SIGCHLD: self.reap_workers,
            signal.SIGTERM: self.handle_term,
            signal.SIGINT: self.handle_int,
            signal.SIGQUIT: self.handle_quit,
            signal.SIGHUP: self.handle_hup,
            signal.SIGTTIN: self.handle_ttin,
            signal.SIGTTOU: self.handle_ttou,
            signal.SIGUSR1: self.handle_usr1,
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

    def handle_hup(self) -> None:
        """SIGHUP: replace every worker, one at a time, each successor ready first."""
        if self._stop_mode is not None:
            return
        if self._reloading:
            gen_log.warning("SIGHUP: a reload is already in progress")
            return
        reason = self.hooks.reload_check()
        if reason is not None:
            gen_log.error("reload refused, the workers keep serving: %s", reason)
            return
        gen_log.info("reloading: replacing %d workers one by one", len(self._slots))
        self._reloading = True
        self.hooks.reloading()
        self.replace(sorted(self._slots))

    def handle_ttin(self) -> None:
        """SIGTTIN: one worker more."""
        if self._stop_mode is not None:
            return
        slot_id = min(set(range(len(self._slots) + 1)) - set(self._slots))
        self._slots[slot_id] = Slot(restart_at=time.monotonic())
        gen_log.info("SIGTTIN: %d workers", len(self._slots))
        self.hooks.scaled(len(self._slots))

    def handle_ttou(self) -> None:
        """SIGTTOU: one worker fewer, never fewer than one; it drains gracefully."""
        if self._stop_mode is not None:
            return
        if len(self._slots) <= 1:
            gen_log.warning("SIGTTOU: already down to one worker")
            return
        slot_id = max(self._slots)
        slot = self._slots.pop(slot_id)
        if slot_id in self._replace_queue:
            self._replace_queue.remove(slot_id)
        for worker in slot.members():
            self._retire(worker)
        gen_log.info("SIGTTOU: %d workers", len(self._slots))
        self.hooks.scaled(len(self._slots))

    def handle_usr1(self) -> None:
        """SIGUSR1: reopen log files, for logrotate."""
        self.hooks.reopen_logs(self.workers())

    def handle_message(self, worker: Worker, message: bytes) -> None:
        """A message from a child over its channel."""
        if message == _channel.READY:
            self._became_ready(worker)
        elif message == _channel.RECYCLE:
            if not worker.replacing and not worker.retired:
                gen_log.info(
                    "child %d (pid %d) served max_requests; replacing it",
                    worker.slot,
                    worker.pid,
                )
                worker.replacing = True
                self.replace([worker.slot])
        else:
            error = _channel.parse_error(message)
            if error is not None:
                worker.boot_error = error

    def _became_ready(self, worker: Worker) -> None:
        if worker.ready:
            return
        worker.ready = True
        self._ever_ready = True
        slot = self._slots.get(worker.slot)
        if slot is not None and slot.successor is worker:
            self._promote(worker.slot, slot)
        if not self._ever_all_ready and all(
            s.worker is not None and s.worker.ready for s in self._slots.values()
        ):
            self._ever_all_ready = True
            self.hooks.all_ready(len(self._slots))

    # -- replacing workers (reload, recycling) ------------------------------

    def replace(self, slot_ids: list[int]) -> None:
        """Queues ``slot_ids`` for a successor that is ready before the old worker drains."""
        for slot_id in slot_ids:
            if slot_id not in self._replace_queue:
                self._replace_queue.append(slot_id)

    def _next_replacement(self) -> Child | None:
        # One successor at a time: a deploy never costs more than one extra
        # worker's memory, and a broken one fails on the first slot.
        if any(slot.successor is not None for slot in self._slots.values()):
            return None
        while self._replace_queue:
            slot_id = self._replace_queue.pop(0)
            slot = self._slots.get(slot_id)
            # A slot waiting for a restart gets a fresh worker anyway.
            if slot is not None and slot.worker is not None and not slot.worker.killed:
                return self.spawn_worker(slot_id, successor=True)
        if self._reloading:
            self._reloading = False
            gen_log.info("reload finished: %d workers", len(self._slots))
            self.hooks.reloaded(len(self._slots), ok=True)
        return None

    def _promote(self, slot_id: int, slot: Slot) -> None:
        old, slot.worker, slot.successor = slot.worker, slot.successor, None
        slot.fast_failures = 0
        if old is not None:
            self._retire(old)

    def _retire(self, worker: Worker) -> None:
        worker.retired = True
        self._retiring.append(worker)
        slot = self._slots.get(worker.slot)
        if slot is not None:
            if slot.worker is worker:
                slot.worker = None
            if slot.successor is worker:
                slot.successor = None
        worker.terminate(self.config.graceful_timeout)

    def _replacement_failed(self, worker: Worker, status: int) -> None:
        self._log_boot_error(worker)
        gen_log.error(
            "the new worker for slot %d (pid %d) failed before it was ready (%s); "
            "the old one keeps serving",
            worker.slot,
            worker.pid,
            _describe(status),
        )
        if self._reloading:
            self._reloading = False
            self._replace_queue.clear()
            gen_log.error("reload abandoned; the server keeps running with the old workers")
            self.hooks.reloaded(len(self._slots), ok=False)

    # -- the children's lives ---------------------------------------------

    def spawn_due(self) -> Child | None:
        """Forks a worker for each slot whose (re)start time has come, then the
        next successor a reload or a recycling asked for."""
        if self._stop_mode is not None:
            return None
        now = time.monotonic()
        for slot_id, slot in list(self._slots.items()):
            if slot.restart_at is not None and slot.restart_at <= now:
                slot.restart_at = None
                child = self.spawn_worker(slot_id)
                if child is not None:
                    return child
        return self._next_replacement()

    def spawn_worker(self, slot_id: int, successor: bool = False) -> Child | None:
        """Forks one worker for ``slot_id``; returns a `Child` in the child."""
        seats = {w.seat for w in self.workers()}
        seat = min(set(range(len(seats) + 1)) - seats)
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
            child = Child(slot_id, child_end, seat)
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
        worker = Worker(slot_id, seat, pid, parent_end, ready=False)
        slot = self._slots[slot_id]
        if successor:
            slot.successor = worker
        else:
            slot.worker = worker
        if self._ready_on_fork:
            self._became_ready(worker)
        return None

    def _become_child(self) -> None:
        # Nothing of the supervisor may leak into user code: not the siblings'
        # channels, not the handlers, not the wakeup fd.
        for worker in self.workers():
            worker.close()
        self._signals.restore()

    def reap_workers(self) -> None:
        """Collects every child that has ended and decides what follows."""
        for worker in self.workers():
            status = worker.poll()
            if status is None:
                continue
            worker.close()
            self.hooks.worker_exited(worker)
            if worker in self._retiring:
                self._retiring.remove(worker)
                gen_log.info(
                    "child %d (pid %d) retired (%s)", worker.slot, worker.pid, _describe(status)
                )
                continue
            slot = self._slots[worker.slot]
            if slot.successor is worker:
                slot.successor = None
                self._replacement_failed(worker, status)
                continue
            slot.worker = None
            if slot.successor is not None:
                # The successor was meant to take over; it does so now.
                slot.worker, slot.successor = slot.successor, None
            self._worker_ended(worker.slot, slot, worker, status)

    def _worker_ended(self, slot_id: int, slot: Slot, worker: Worker, status: int) -> None:
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
        if slot.worker is not None:
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

    def _log_boot_error(self, worker: Worker) -> None:
        # The same traceback from every worker is shown once, not once a worker.
        error = worker.boot_error
        if error is not None and error not in self._logged_errors:
            self._logged_errors.add(error)
            gen_log.error("child %d failed to start:\n%s", worker.slot, error.rstrip())

    def _report_boot_failure(self, slot_id: int, worker: Worker) -> None:
        self._log_boot_error(worker)
        self._boot_failed_slots.add(slot_id)
        if not self._ever_ready and self._boot_failed_slots >= set(self._slots):
            gen_log.error("no worker could start; stopping")
            self._failure = _BOOT_FAILED
            self.stop(graceful=True)

    def stop(self, graceful: bool) -> None:
        """Stops every child: SIGTERM and a deadline, or SIGKILL now. Nothing restarts."""
        for slot in self._slots.values():
            slot.restart_at = None
        self._replace_queue.clear()
        if self._stop_mode is None:
            self.hooks.stopping()
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
                worker.terminate(self.config.graceful_timeout)
        else:
            self._stop_mode = "fast"
            gen_log.info("stopping %d children now (SIGKILL)", len(workers))
            for worker in workers:
                self._kill(worker)

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
            slot.worker = slot.successor = None
        self._retiring.clear()


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"status {os.WEXITSTATUS(status)}"
