"""The parent's loop: a desired state, and each turn one safe step towards it.

The parent holds what it wants (`Desired`: how many workers, which code
generation, stopping or not) and what it has (one `Process` per child, each
in one `State`). Each turn of the loop moves the processes one ready-gated
step towards the wish: HUP raises the generation, TTIN/TTOU change the count,
recycling marks one process, and one path (`_reconcile_slot`) replaces a
process for every reason. A process that cannot be created is an event with
backoff, never an exception that ends the loop.

The parent never runs an event loop and starts no thread. Signal handlers
only record the signal (`tornado_prefork._wakeup`); the loop sleeps in
``poll`` on that pipe and the workers' channels, with the nearest deadline
as its timeout.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable, Sequence

from tornado.log import gen_log

from tornado_prefork import _channel, _spawn
from tornado_prefork._policy import RestartPolicy, Verdict
from tornado_prefork._processes import (
    Action,
    Child,
    Deadlines,
    ExitReason,
    Process,
    Sidecar,
    State,
    describe,
    due,
)
from tornado_prefork._wakeup import SignalPipe
from tornado_prefork.errors import SupervisorError

_BOOT_FAILED = "the workers failed to start: every one exited before it was ready"
# Between the SIGABRT that makes a silent worker dump its stacks and the SIGKILL.
_ABORT_GRACE = 1.0
# How long sidecars get to exit once the workers are gone.
_SIDECAR_GRACE = 5.0
_NO_DEADLINES = Deadlines(ready_timeout=0, timeout=0, max_worker_age=0)
# Processes whose end the parent asked for: not failures.
_RETIRED = (ExitReason.RELOADED, ExitReason.RECYCLED, ExitReason.SCALED_DOWN, ExitReason.STOPPED)


class StopMode(enum.Enum):
    """How the server stops."""

    GRACEFUL = "gracefully"
    FAST = "now"


@dataclasses.dataclass
class Desired:
    """What the parent wants; the loop makes the processes match it."""

    count: int
    generation: int = 0
    stop: StopMode | None = None
    # Slots whose process exited with status 0 when that means "done" (fork_processes).
    finished: set[int] = dataclasses.field(default_factory=set)


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

    def reload_check(self) -> str | None:
        """Before a reload: a reason to refuse it, or None."""
        return None

    def reloading(self) -> None:
        """A reload begins."""

    def reloaded(self, workers: int, ok: bool) -> None:
        """A reload ended: every worker replaced (``ok``), or abandoned."""

    def scaled(self, workers: int) -> None:
        """The number of workers wanted changed (SIGTTIN, SIGTTOU)."""

    def reopen_logs(self, workers: list[Process]) -> None:
        """SIGUSR1: reopen log files (here and, if they handle it, in ``workers``)."""


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
    ) -> None:
        self.config = config
        self.hooks = hooks or SupervisorHooks()
        self.desired = Desired(num_workers)
        self.processes: dict[int, Process] = {}
        self._sidecars = list(sidecars)
        self._child_init = child_init
        self._ready_on_fork = ready_on_fork
        self._keep_running = keep_running
        self._give_up_message = give_up_message
        self._policy = RestartPolicy(
            min_uptime=config.min_uptime,
            backoff_cap=config.backoff_cap,
            max_restarts=config.max_restarts,
        )
        self._limits = Deadlines(config.ready_timeout, config.timeout, config.max_worker_age)
        self._failure: str | None = None
        # Reporting only: the generation being rolled out, the newest one that
        # has a ready worker, and one that failed to start.
        self._reload: int | None = None
        self._proven = 0
        self._abandoned: int | None = None
        self._reported_all_ready = False
        self._spawn_failing = False
        self._logged_errors: set[str] = set()
        self._pid = os.getpid()
        self._signals = SignalPipe(_spawn.HANDLED)

    # -- the loop --------------------------------------------------------

    def run(self) -> Child | None:
        """Forks the processes and supervises them until the end (see the class).

        Raises `.SupervisorError` in the parent when it gives up, once every
        process still running has been stopped.
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
            forked = len(self.processes)
            child = self.reconcile()
            if child is not None:
                return child
            if not self.processes and (self.desired.stop is not None or self._all_finished()):
                return None
            # A new process may already be ready (ready_on_fork): look again at once.
            self._wait_and_dispatch(now=len(self.processes) > forked)

    def _all_finished(self) -> bool:
        return set(range(self.desired.count)) <= self.desired.finished

    def workers(self) -> list[Process]:
        """Every worker alive now (as far as the parent has reaped), sidecars excluded."""
        return [p for p in self.processes.values() if p.slot >= 0]

    def _wait_and_dispatch(self, now: bool = False) -> None:
        deadline = time.monotonic() if now else self._next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        # poll(), not select(): a parent with descriptors above 1024 must not fail.
        with selectors.PollSelector() as selector:
            selector.register(self._signals.fd, selectors.EVENT_READ)
            for process in self.processes.values():
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
        deadlines = [d[0] for p in self.processes.values() if (d := self._due(p)) is not None]
        if self.desired.stop is None:
            deadlines += [self._policy.start_at(key) for key in self._missing()]
        return min(deadlines, default=None)

    def _missing(self) -> list[int | str]:
        """Policy keys of slots and sidecars that have no live process."""
        keys: list[int | str] = [s.name for s in self._sidecars if self._sidecar(s.name) is None]
        filled = {p.slot for p in self.processes.values() if p.live}
        return keys + [
            slot
            for slot in range(self.desired.count)
            if slot not in filled and slot not in self.desired.finished
        ]

    def _due(self, process: Process) -> tuple[float, Action] | None:
        return due(process, self._limits if process.slot >= 0 else _NO_DEADLINES)

    def check_deadlines(self) -> None:
        """Acts on every process whose deadline has passed."""
        now = time.monotonic()
        for process in list(self.processes.values()):
            found = self._due(process)
            if found is None or now < found[0]:
                continue
            action = found[1]
            if action is Action.KILL:
                if process.reason in _RETIRED:
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

    # -- reconciling -------------------------------------------------------

    def reconcile(self) -> Child | None:
        """One step towards the desired state; returns a `Child` in a new worker."""
        if self.desired.stop is not None:
            self._stop_step()
            return None
        now = time.monotonic()
        for sidecar in self._sidecars:
            if self._sidecar(sidecar.name) is None and self._policy.start_at(sidecar.name) <= now:
                self._spawn(sidecar.name, sidecar)
        for slot in range(self.desired.count):
            child = self._reconcile_slot(slot, now)
            if child is not None:
                return child
        for process in self.workers():
            if process.slot >= self.desired.count and process.live:
                process.terminate(self.config.graceful_timeout, ExitReason.SCALED_DOWN)
        self._report_progress()
        return None

    def _reconcile_slot(self, slot: int, now: float) -> Child | None:
        members = [p for p in self.workers() if p.slot == slot and p.live]
        current = [p for p in members if self._is_current(p)]
        stale = [p for p in members if not self._is_current(p)]
        if any(p.state is State.READY for p in current):
            # Ready-gated: the old process drains only once its successor serves.
            for process in stale:
                reason = ExitReason.RECYCLED if process.recycle else ExitReason.RELOADED
                process.terminate(self.config.graceful_timeout, reason)
            return None
        for process in stale:
            if process.state is State.STARTING:
                # Old code that never served: the newest reload wins.
                process.kill(ExitReason.RELOADED)
        if current or (slot in self.desired.finished and not members):
            return None
        if self._policy.start_at(slot) > now:
            return None
        if stale and not self._may_replace():
            return None
        return self._spawn(slot, None)

    def _is_current(self, process: Process) -> bool:
        return process.generation == self.desired.generation and not process.recycle

    def _may_replace(self) -> bool:
        """Whether one more replacement may start now, beside those under way."""
        if self._abandoned == self.desired.generation:
            return False
        starting = sum(
            1 for p in self.workers() if p.state is State.STARTING and self._is_current(p)
        )
        # The first new worker of a generation goes alone: broken code fails
        # once, not in every slot. Then a quarter of the slots at a time.
        surge = 1 if self._proven < self.desired.generation else max(1, self.desired.count // 4)
        return starting < surge

    def _report_progress(self) -> None:
        ready = [p for p in self.workers() if p.state is State.READY]
        slots = set(range(self.desired.count))
        if not self._reported_all_ready and {p.slot for p in ready} >= slots:
            self._reported_all_ready = True
            self.hooks.all_ready(self.desired.count)
        if self._reload is None:
            return
        live = [p for p in self.workers() if p.live]
        if {p.slot for p in ready if self._is_current(p)} >= slots and all(
            self._is_current(p) for p in live
        ):
            self._reload = None
            gen_log.info("reload finished: %d workers", self.desired.count)
            self.hooks.reloaded(self.desired.count, ok=True)

    def _sidecar(self, name: str) -> Process | None:
        return next((p for p in self.processes.values() if p.slot < 0 and p.name == name), None)

    # -- creating processes ------------------------------------------------

    def _spawn(self, key: int | str, sidecar: Sidecar | None) -> Child | None:
        """Forks a worker for slot ``key``, or the sidecar; returns a `Child` in a worker."""
        seats = {p.seat for p in self.workers()}
        seat = -1 if sidecar is not None else min(set(range(len(seats) + 1)) - seats)
        slot = key if isinstance(key, int) else -1
        try:
            pid, channel, mask = _spawn.fork(with_channel=sidecar is None)
        except OSError as e:
            delay = self._policy.retry_later(key)
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
            self.desired.generation,
            ready=self._ready_on_fork or sidecar is not None,
        )
        self.processes[pid] = process
        if sidecar is None:
            self.hooks.worker_started(process)
            if process.state is State.READY:
                self._became_ready(process)
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
            for process in self.processes.values():
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
        self.stop(StopMode.GRACEFUL)

    def handle_int(self) -> None:
        """SIGINT: graceful stop; a second one (Ctrl-C twice) stops at once."""
        self.stop(StopMode.GRACEFUL if self.desired.stop is None else StopMode.FAST)

    def handle_quit(self) -> None:
        """SIGQUIT: stop at once."""
        self.stop(StopMode.FAST)

    def handle_hup(self) -> None:
        """SIGHUP: a new generation; every worker is replaced by a ready successor."""
        if self.desired.stop is not None:
            return
        reason = self.hooks.reload_check()
        if reason is not None:
            gen_log.error("reload refused, the workers keep serving: %s", reason)
            return
        if self._reload is not None:
            gen_log.info("SIGHUP during a reload: the newest code replaces it")
        self.desired.generation += 1
        self._reload = self.desired.generation
        gen_log.info("reloading: replacing %d workers", self.desired.count)
        self.hooks.reloading()

    def handle_ttin(self) -> None:
        """SIGTTIN: one worker more."""
        if self.desired.stop is None:
            self.desired.finished.discard(self.desired.count)
            self.desired.count += 1
            gen_log.info("SIGTTIN: %d workers", self.desired.count)
            self.hooks.scaled(self.desired.count)

    def handle_ttou(self) -> None:
        """SIGTTOU: one worker fewer, never fewer than one; it drains gracefully."""
        if self.desired.stop is not None:
            return
        if self.desired.count <= 1:
            gen_log.warning("SIGTTOU: already down to one worker")
            return
        self.desired.count -= 1
        self._policy.forget(self.desired.count)
        gen_log.info("SIGTTOU: %d workers", self.desired.count)
        self.hooks.scaled(self.desired.count)

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
                self._became_ready(process)
        elif message == _channel.RECYCLE:
            if process.state is State.READY and not process.recycle:
                gen_log.info("%s served max_requests; replacing it", process)
                process.recycle = True
        else:
            error = _channel.parse_error(message)
            if error is not None:
                process.boot_error = error

    def _became_ready(self, process: Process) -> None:
        self._policy.ready()
        self._policy.replaced(process.slot)
        self._proven = max(self._proven, process.generation)
        self.hooks.worker_ready(process)

    # -- the end of processes -------------------------------------------

    def reap_workers(self) -> None:
        """Collects every process that has ended and decides what follows."""
        for process in list(self.processes.values()):
            status = process.poll()
            if status is None:
                continue
            # What it wrote last (READY, its traceback) is read before the channel goes.
            self._read(process)
            process.close()
            del self.processes[process.pid]
            if process.slot < 0:
                self._sidecar_ended(process, status)
            else:
                self._worker_ended(process, status)

    def _worker_ended(self, process: Process, status: int) -> None:
        reason = process.reason
        if reason is None:
            if not process.ever_ready:
                reason = ExitReason.BOOT_FAILED
            else:
                reason = ExitReason.EXITED if status == 0 else ExitReason.CRASHED
        self.hooks.worker_exited(process, reason)
        if reason in _RETIRED:
            word = "stopped" if reason is ExitReason.STOPPED else "retired"
            gen_log.info("%s %s (%s)", process, word, describe(status))
            return
        if self.desired.stop is not None:
            gen_log.info("%s stopped (%s)", process, describe(status))
            return
        _log_exit(process, status)
        if status == 0 and not self._keep_running:
            self.desired.finished.add(process.slot)
            return
        if process.slot >= self.desired.count:
            return
        if not process.ever_ready:
            self._log_boot_error(process)
        if any(p.slot == process.slot and p.live for p in self.workers()):
            self._replacement_failed(process, status)
            return
        self._restart_later(process)

    def _replacement_failed(self, process: Process, status: int) -> None:
        if process.ever_ready:
            return
        self._policy.retry_later(process.slot)
        gen_log.error(
            "the new %s failed before it was ready (%s); the old one keeps serving",
            process,
            describe(status),
        )
        if process.generation == self._reload:
            self._reload = None
            self._abandoned = process.generation
            gen_log.error("reload abandoned; the server keeps running with the old workers")
            self.hooks.reloaded(self.desired.count, ok=False)

    def _restart_later(self, process: Process) -> None:
        slot = process.slot
        slots = range(self.desired.count)
        verdict = self._policy.ended(slot, process.started_at, process.ever_ready, slots)
        if verdict is Verdict.GIVE_UP:
            gen_log.error(
                "worker %d failed %d times in a row within %.1f s of its start "
                "(max_restarts=%d); giving up",
                slot,
                self._policy.streak(slot),
                self.config.min_uptime,
                self.config.max_restarts,
            )
            self._give_up(self._give_up_message)
        elif verdict is Verdict.BOOT_FAILED:
            gen_log.error("no worker could start; stopping")
            self._give_up(_BOOT_FAILED)
        elif self._policy.streak(slot):
            gen_log.info(
                "worker %d failed %d time(s) in a row within %.1f s of its start; "
                "next start in %.2f s",
                slot,
                self._policy.streak(slot),
                self.config.min_uptime,
                max(0.0, self._policy.start_at(slot) - time.monotonic()),
            )

    def _sidecar_ended(self, process: Process, status: int) -> None:
        if self.desired.stop is not None:
            gen_log.info("%s stopped (%s)", process, describe(status))
            return
        self._policy.ended(process.name, process.started_at, was_ready=True)
        gen_log.warning(
            "%s exited (%s); restarting it in %.2f s",
            process,
            describe(status),
            max(0.0, self._policy.start_at(process.name) - time.monotonic()),
        )

    def _log_boot_error(self, process: Process) -> None:
        # The same traceback from every worker is shown once, not once a worker.
        error = process.boot_error
        if error is not None and error not in self._logged_errors:
            self._logged_errors.add(error)
            gen_log.error("worker %d failed to start:\n%s", process.slot, error.rstrip())

    def _give_up(self, message: str) -> None:
        self._failure = message
        self.stop(StopMode.GRACEFUL)

    # -- stopping ----------------------------------------------------------

    def stop(self, mode: StopMode) -> None:
        """Stops every process: SIGTERM and a deadline, or SIGKILL now. Nothing restarts."""
        first = self.desired.stop is None
        if not first and mode is StopMode.GRACEFUL:
            return
        self.desired.stop = mode
        if first:
            self.hooks.stopping()
        workers = [p for p in self.workers() if p.state is not State.KILLED]
        gen_log.info(
            "stopping %d workers %s%s",
            len(workers),
            mode.value,
            f" (SIGTERM, up to {self.config.graceful_timeout:.1f} s)"
            if mode is StopMode.GRACEFUL
            else " (SIGKILL)",
        )
        self._stop_step()

    def _stop_step(self) -> None:
        """Tells every worker to stop; once none is left, the sidecars."""
        graceful = self.desired.stop is StopMode.GRACEFUL
        workers = self.workers()
        targets = workers or [p for p in self.processes.values() if p.slot < 0]
        grace = self.config.graceful_timeout if workers else _SIDECAR_GRACE
        for process in targets:
            if graceful and process.live:
                process.terminate(grace, ExitReason.STOPPED)
            elif not graceful and process.state is not State.KILLED:
                process.kill(ExitReason.STOPPED)

    def _kill_and_reap(self) -> None:
        # Last resort when the loop itself failed: leave no child behind.
        for process in self.processes.values():
            process.signal(signal.SIGKILL)
            try:
                os.waitpid(process.pid, 0)
            except ChildProcessError:
                pass
            process.close()
        self.processes.clear()


def _log_exit(process: Process, status: int) -> None:
    # Tornado's own lines, word for word after the name.
    if os.WIFSIGNALED(status):
        gen_log.warning("%s killed by signal %d, restarting", process, os.WTERMSIG(status))
    elif os.WEXITSTATUS(status) != 0:
        gen_log.warning("%s exited with status %d, restarting", process, os.WEXITSTATUS(status))
    else:
        gen_log.info("%s exited normally", process)
