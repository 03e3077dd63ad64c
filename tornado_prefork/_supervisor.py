"""The parent's loop: signals, messages, deadlines, and creating processes.

The decisions (what the server wants, what follows the end of a process) are
`tornado_prefork._fleet`'s; this module is the part that touches the system.
The parent never runs an event loop and starts no thread. Signal handlers
only record the signal (`tornado_prefork._wakeup`); the loop sleeps in
``poll`` on that pipe and the workers' channels, with the nearest deadline as
its timeout, and each turn lets the fleet take one step (`Fleet.reconcile`).
A process that cannot be created is an event with backoff, never an
exception that ends the loop.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
from collections.abc import Callable, Sequence

from tornado.log import gen_log

from tornado_prefork import _channel, _spawn
from tornado_prefork._fleet import RETIRED, Fleet, StopMode
from tornado_prefork._handover import Handover
from tornado_prefork._hooks import SupervisorConfig, SupervisorHooks
from tornado_prefork._processes import (
    Action,
    Child,
    Deadlines,
    ExitReason,
    Process,
    Sidecar,
    State,
    due,
)
from tornado_prefork._wakeup import SignalPipe
from tornado_prefork.errors import SupervisorError

# Between the SIGABRT that makes a silent worker dump its stacks and the SIGKILL.
_ABORT_GRACE = 1.0
_NO_DEADLINES = Deadlines(ready_timeout=0, timeout=0, max_worker_age=0)


class Supervisor:
    """Keeps ``num_workers`` workers (and the ``sidecars``) running until told to stop.

    `run` forks the processes. In a worker it returns a `Child`; in the parent
    it returns None once every process has ended. ``child_init`` runs in each
    new child (with its `Child`, or None in a sidecar) before the signals
    that the parent blocked around ``fork()`` are unblocked.

    A worker is ready at once if ``ready_on_fork``, else when it sends READY.
    A worker that exits with status 0 is replaced only if ``keep_running``;
    otherwise its slot is done, and when every slot is, `run` returns.

    Must be used from the main thread, which alone can handle signals.
    """

    def __init__(
        self,
        num_workers: int,
        config: SupervisorConfig,
        child_init: Callable[[Child | None], None],
        *,
        ready_on_fork: bool = True,
        keep_running: bool = False,
        hooks: SupervisorHooks | None = None,
        sidecars: Sequence[Sidecar] = (),
        give_up_message: str = "a worker kept failing within min_uptime; giving up",
        handover: Handover | None = None,
    ) -> None:
        self.config = config
        self.hooks = hooks or SupervisorHooks()
        self.fleet = Fleet(
            num_workers,
            config,
            self.hooks,
            sidecars,
            keep_running=keep_running,
            give_up_message=give_up_message,
        )
        if handover is not None:
            self.fleet.adopt(handover)
        self._child_init = child_init
        self._ready_on_fork = ready_on_fork
        self._limits = Deadlines(config.ready_timeout, config.timeout, config.max_worker_age)
        self._spawn_failing = False
        self._pid = os.getpid()
        self._signals = SignalPipe(_spawn.HANDLED)

    def run(self) -> Child | None:
        """Forks the processes and supervises them until the end (see the class).

        Raises `.SupervisorError` in the parent when it gives up, once every
        process still running has been stopped.
        """
        self._signals.install()
        try:
            # Processes handed over by a re-exec may have ended meanwhile.
            self.reap_workers()
            child = self._loop()
        except BaseException:
            if os.getpid() == self._pid:
                self._kill_and_reap()
            raise
        finally:
            if os.getpid() == self._pid:
                self._signals.restore()
        if child is None and self.fleet.failure is not None:
            raise SupervisorError(self.fleet.failure)
        return child

    def _loop(self) -> Child | None:
        while True:
            forked = len(self.fleet.processes)
            child = self.fleet.reconcile(self._spawn)
            if child is not None:
                return child
            if not self.fleet.processes and (
                self.fleet.desired.stop is not None or self.fleet.all_finished()
            ):
                return None
            # A new process may already be ready (ready_on_fork): look again at once.
            self._wait_and_dispatch(now=len(self.fleet.processes) > forked)

    def workers(self) -> list[Process]:
        """Every worker alive now (as far as the parent has reaped), sidecars excluded."""
        return self.fleet.workers()

    def _wait_and_dispatch(self, now: bool = False) -> None:
        deadline = time.monotonic() if now else self._next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        # poll(), not select(): a parent with descriptors above 1024 must not fail.
        with selectors.PollSelector() as selector:
            selector.register(self._signals.fd, selectors.EVENT_READ)
            for process in self.fleet.processes.values():
                if process.channel is not None:
                    selector.register(process.channel, selectors.EVENT_READ, process)
            ready = selector.select(timeout)
        if any(key.data is None for key, _ in ready):
            # A stop first: with Ctrl-C the children's exits may be recorded
            # before the parent's own SIGINT, and must not look like crashes.
            for signum in sorted(self._signals.received(), key=lambda s: s == signal.SIGCHLD):
                self._dispatch(signum)
        for key, _ in ready:
            if key.data is not None:
                self._read(key.data)
        self.check_deadlines()

    def _next_deadline(self) -> float | None:
        deadlines = [d[0] for p in self.fleet.processes.values() if (d := self._due(p)) is not None]
        if self.fleet.desired.stop is None:
            deadlines += [self.fleet.policy.start_at(key) for key in self.fleet.missing()]
        return min(deadlines, default=None)

    def _due(self, process: Process) -> tuple[float, Action] | None:
        return due(process, self._limits if process.slot >= 0 else _NO_DEADLINES)

    def check_deadlines(self) -> None:
        """Acts on every process whose deadline has passed."""
        now = time.monotonic()
        for process in list(self.fleet.processes.values()):
            found = self._due(process)
            if found is None or now < found[0]:
                continue
            action = found[1]
            if action is Action.KILL:
                if process.reason in RETIRED:
                    gen_log.warning(
                        "%s still running after graceful_timeout (%.1f s); killing it",
                        process,
                        self.config.graceful_timeout,
                    )
                process.kill(ExitReason.CRASHED)
            elif action is Action.NOT_READY:
                gen_log.error(
                    "%s not ready after %.1f s (ready_timeout); killing it",
                    process,
                    now - process.started_at,
                )
                process.boot_error = process.boot_error or "not ready within ready_timeout"
                process.kill(ExitReason.BOOT_FAILED)
            elif action is Action.HUNG:
                gen_log.error(
                    "%s silent for %.1f s (timeout %.1f s); SIGABRT for its stacks, then SIGKILL",
                    process,
                    now - process.last_heard,
                    self.config.timeout,
                )
                process.terminate(_ABORT_GRACE, ExitReason.HUNG, signal.SIGABRT)
            else:
                gen_log.info(
                    "%s reached max_worker_age (%.0f s); replacing it",
                    process,
                    self.config.max_worker_age,
                )
                process.recycle = True

    def _spawn(self, key: int | str, sidecar: Sidecar | None) -> Child | None:
        """Forks a worker for slot ``key``, or the sidecar; returns a `Child` in a worker."""
        seats = {p.seat for p in self.workers()}
        seat = -1 if sidecar is not None else min(set(range(len(seats) + 1)) - seats)
        slot = key if isinstance(key, int) else -1
        self.hooks.forking()
        try:
            pid, channel, mask = _spawn.fork(with_channel=sidecar is None)
        except OSError as e:
            delay = self.fleet.policy.retry_later(key)
            if not self._spawn_failing:
                self._spawn_failing = True
                gen_log.error(
                    "cannot create a process (%s); retrying in %.2f s with backoff, "
                    "the running workers keep serving",
                    e,
                    delay,
                )
            return None
        if pid == 0:
            return self._start_in_child(slot, seat, channel, mask, sidecar)
        if self._spawn_failing:
            self._spawn_failing = False
            gen_log.info("processes can be created again")
        name = f"worker {slot}" if sidecar is None else sidecar.name
        process = Process(
            name,
            slot,
            seat,
            pid,
            channel,
            self.fleet.desired.generation,
            ready=self._ready_on_fork or sidecar is not None,
        )
        self.fleet.processes[pid] = process
        if sidecar is None:
            self.hooks.worker_started(process)
            if process.state is State.READY:
                self.fleet.became_ready(process)
        return None

    def _start_in_child(
        self,
        slot: int,
        seat: int,
        channel: socket.socket | None,
        mask: set[int | signal.Signals],
        sidecar: Sidecar | None,
    ) -> Child:
        child = None if channel is None else Child(slot, channel, seat)
        try:
            # Nothing of the supervisor may leak into user code: not the siblings'
            # channels, not the handlers, not the wakeup fd.
            for process in self.fleet.processes.values():
                process.close()
            self._signals.restore()
            self._child_init(child)
            _spawn.unblock(mask)
        except BaseException:
            # Returning into the parent's loop from here would make a second supervisor.
            gen_log.exception("a new process failed to start")
            os._exit(_spawn.START_FAILED)
        if sidecar is not None:
            _spawn.run_sidecar(sidecar)
        assert child is not None
        return child

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
        self.fleet.stop(StopMode.GRACEFUL)

    def handle_int(self) -> None:
        """SIGINT: graceful stop; a second one (Ctrl-C twice) stops at once."""
        self.fleet.stop(StopMode.GRACEFUL if self.fleet.desired.stop is None else StopMode.FAST)

    def handle_quit(self) -> None:
        """SIGQUIT: stop at once."""
        self.fleet.stop(StopMode.FAST)

    def handle_hup(self) -> None:
        """SIGHUP: a new generation; every worker is replaced by a ready successor."""
        if self.fleet.desired.stop is not None:
            return
        reason = self.hooks.reload_check()
        if reason is not None:
            gen_log.error("reload refused, the workers keep serving: %s", reason)
            return
        self.hooks.reloading()
        if self.hooks.reload_in_place(self.fleet.handover()):
            return
        self.fleet.new_generation()

    def handle_ttin(self) -> None:
        """SIGTTIN: one worker more."""
        if self.fleet.desired.stop is None:
            self.fleet.desired.finished.discard(self.fleet.desired.count)
            self.fleet.desired.count += 1
            gen_log.info("SIGTTIN: %d workers", self.fleet.desired.count)
            self.hooks.scaled(self.fleet.desired.count)

    def handle_ttou(self) -> None:
        """SIGTTOU: one worker fewer, never fewer than one; it drains gracefully."""
        if self.fleet.desired.stop is not None:
            return
        if self.fleet.desired.count <= 1:
            gen_log.warning("SIGTTOU: already down to one worker")
            return
        self.fleet.desired.count -= 1
        self.fleet.policy.forget(self.fleet.desired.count)
        gen_log.info("SIGTTOU: %d workers", self.fleet.desired.count)
        self.hooks.scaled(self.fleet.desired.count)

    def handle_usr1(self) -> None:
        """SIGUSR1: reopen log files, for logrotate."""
        self.hooks.reopen_logs(self.workers())

    def _read(self, process: Process) -> None:
        for message in process.read_messages():
            self.handle_message(process, message)

    def handle_message(self, process: Process, message: bytes) -> None:
        """A message from a worker over its channel."""
        if message == _channel.READY:
            if process.became_ready():
                self.fleet.became_ready(process)
        elif message == _channel.RECYCLE:
            if process.state is State.READY and not process.recycle:
                gen_log.info("%s served max_requests; replacing it", process)
                process.recycle = True
        else:
            error = _channel.parse_error(message)
            if error is not None:
                process.boot_error = error

    def reap_workers(self) -> None:
        """Collects every process that has ended and decides what follows."""
        for process in list(self.fleet.processes.values()):
            status = process.poll()
            if status is None:
                continue
            # What it wrote last (READY, its traceback) is read before the channel goes.
            self._read(process)
            process.close()
            del self.fleet.processes[process.pid]
            if process.slot < 0:
                self.fleet.sidecar_ended(process, status)
            else:
                self.fleet.worker_ended(process, status)

    def _kill_and_reap(self) -> None:
        # Last resort when the loop itself failed: leave no child behind.
        for process in self.fleet.processes.values():
            process.signal(signal.SIGKILL)
            try:
                os.waitpid(process.pid, 0)
            except ChildProcessError:
                pass
            process.close()
        self.fleet.processes.clear()
