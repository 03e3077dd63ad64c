"""The parent's loop: signals, messages, deadlines, and creating processes.

The decisions (what the server wants, what is due for a process, what
follows its end) are `tornado_prefork._supervisor.fleet`'s; this module carries them out
and is the part that touches the system. The parent never runs an event loop
and starts no thread. Signal handlers only record the signal
(`tornado_prefork._supervisor.signals`); the loop sleeps in ``poll`` on that pipe, the
workers' channels and the output of a check of new code, with the nearest
deadline as its timeout, and each turn lets the fleet take one step
(`Fleet.reconcile`). Nothing that can take long runs in the loop: the check
of new code before a reload in place is a child whose verdict is an event.
A process that cannot be created is an event with backoff, never an
exception that ends the loop.
"""

from __future__ import annotations

import functools
import os
import selectors
import signal
import socket
from collections.abc import Callable, Sequence

from tornado.log import gen_log

from tornado_prefork._settings import Settings
from tornado_prefork._supervisor import channel as _channel
from tornado_prefork._supervisor import children as _children
from tornado_prefork._supervisor import spawn as _spawn
from tornado_prefork._supervisor.fleet import Fleet, StopMode
from tornado_prefork._supervisor.handover import Handover
from tornado_prefork._supervisor.hooks import NewCodeCheck, SupervisorHooks
from tornado_prefork._supervisor.record import SYSTEM, Child, Process, System
from tornado_prefork._supervisor.signals import SignalPipe
from tornado_prefork._supervisor.spawn import Sidecar
from tornado_prefork.errors import SupervisorError

# Handled first in a batch: with Ctrl-C the children's exits may be recorded
# before the parent's own SIGINT, and must not look like crashes.
_STOPS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_LONGEST_WAIT = 86400.0


class Supervisor:
    """Keeps ``num_workers`` workers (and the ``sidecars``) running until told to stop.

    `run` forks the processes. In a worker it returns a `Child`; in the parent
    it returns None once every process has ended. ``child_init`` runs in each
    new child (with its `Child`, or None in a sidecar) before the signals
    that the parent blocked around ``fork()`` are unblocked.

    A worker is ready at once if ``ready_on_fork``, else when it sends READY.
    A worker that exits with status 0 is replaced only if ``keep_running``;
    otherwise its slot is done, and when every slot is, `run` returns.

    With a ``handover`` it takes over the processes of the image it was
    re-executed from, and replaces them by new workers; with ``can_fork``
    False (the new code could not be loaded) it keeps them as they are and
    forks nothing until a reload succeeds. ``noun`` names a worker and
    many in the log (Tornado's ``fork_processes`` says "child", "children").

    Must be used from the main thread, which alone can handle signals.
    """

    def __init__(
        self,
        num_workers: int,
        config: Settings,
        child_init: Callable[[Child | None], None],
        *,
        ready_on_fork: bool = True,
        keep_running: bool = False,
        hooks: SupervisorHooks | None = None,
        sidecars: Sequence[Sidecar] = (),
        give_up_message: str = "a worker kept failing within min_uptime; giving up",
        handover: Handover | None = None,
        can_fork: bool = True,
        noun: tuple[str, str] = ("worker", "workers"),
        system: System = SYSTEM,
        signals: SignalPipe | None = None,
    ) -> None:
        self.config = config
        self.hooks = hooks or SupervisorHooks()
        self.system = system
        self.fleet = Fleet(
            num_workers,
            config,
            self.hooks,
            sidecars,
            keep_running=keep_running,
            give_up_message=give_up_message,
            noun=noun,
            system=system,
        )
        if handover is not None:
            self.fleet.adopt(handover, replace=can_fork)
        self.can_fork = can_fork
        #: The check of new code under way, and checks cancelled but not yet reaped.
        self.check: NewCodeCheck | None = None
        self._cancelled: list[NewCodeCheck] = []
        #: The check passed: re-execute in place at the end of this turn.
        self.reexec_due = False
        # When a stop asked for with a shutdown_delay begins its drain; until
        # then the workers keep accepting and the hooks say "stopping".
        self._drain_at: float | None = None
        # Descendants of workers given to this process (a subreaper) when their
        # own parent ended: pid -> when SIGKILL follows a stop's SIGTERM (or None).
        self._strays: dict[int, float | None] = {}
        self._child_init = child_init
        self._ready_on_fork = ready_on_fork
        self._spawn_failing = False
        self._pid = os.getpid()
        self._signals = signals or SignalPipe(_spawn.HANDLED)

    def run(self) -> Child | None:
        """Forks the processes and supervises them until the end (see the class).

        Raises `.SupervisorError` in the parent when it gives up, once every
        process still running has been stopped.
        """
        self._signals.install()
        _children.become_subreaper()
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
            child = self.reconcile()
            if child is not None:
                return child
            if self.finished():
                return None
            # A new process may already be ready (ready_on_fork): look again at once.
            self._wait_and_dispatch(now=len(self.fleet.processes) > forked)

    def reconcile(self) -> Child | None:
        """One step of the fleet towards what it wants; a `Child` in a new worker."""
        return self.fleet.reconcile(self._spawn)

    def finished(self) -> bool:
        """Whether the loop is over: stopped (or every slot done) and nothing left."""
        if self.fleet.processes or self.check is not None or self._cancelled:
            return False
        if not (self.fleet.desired.stop is not None or self.fleet.all_finished()):
            return False
        # Nothing the server started, directly or not, outlives it.
        self._stop_strays()
        return not self._strays

    def _stop_strays(self) -> None:
        now = self.system.clock()
        for pid, kill_at in list(self._strays.items()):
            if kill_at is None:
                gen_log.info("stopping pid %d, left behind by a worker (SIGTERM)", pid)
                self.system.kill(pid, signal.SIGTERM)
                self._strays[pid] = now + self.config.graceful_timeout
            elif now >= kill_at:
                gen_log.warning("pid %d, left behind by a worker, is still running; SIGKILL", pid)
                self.system.kill(pid, signal.SIGKILL)

    def workers(self) -> list[Process]:
        """Every worker alive now (as far as the parent has reaped), sidecars excluded."""
        return self.fleet.workers()

    def next_deadline(self) -> float | None:
        """The nearest moment at which something is due: the fleet's, the
        check's, or the drain after a shutdown delay."""
        deadlines = [self.fleet.next_deadline(), *self._strays.values(), self._drain_at]
        if self.check is not None:
            deadlines.append(self.check.deadline)
        return min((d for d in deadlines if d is not None), default=None)

    def _wait_and_dispatch(self, now: bool = False) -> None:
        deadline = self.system.clock() if now else self.next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - self.system.clock())
        if timeout is not None:
            # poll() takes at most ~24.8 days; waking early is harmless, the loop
            # computes its deadline again.
            timeout = min(timeout, _LONGEST_WAIT)
        # poll(), not select(): a parent with descriptors above 1024 must not fail.
        with selectors.PollSelector() as selector:
            selector.register(self._signals.fd, selectors.EVENT_READ)
            for process in self.fleet.processes.values():
                if process.channel is not None:
                    selector.register(process.channel, selectors.EVENT_READ, process)
            check = self.check
            if check is not None and check.fd is not None:
                selector.register(check.fd, selectors.EVENT_READ, check)
            ready = selector.select(timeout)
        if any(key.data is None for key, _ in ready):
            self.dispatch(self._signals.received())
        for key, _ in ready:
            if isinstance(key.data, Process):
                self._read(key.data)
            elif key.data is not None and key.data is self.check:
                self.check.read()
        self.check_deadlines()
        if self.reexec_due:
            self.reexec()

    def dispatch(self, signals: Sequence[int]) -> None:
        """Acts on ``signals``, received in this order; stops first."""
        for signum in sorted(signals, key=lambda s: s not in _STOPS):
            handler = self._handlers.get(signum)
            if handler is not None:
                handler()

    @functools.cached_property
    def _handlers(self) -> dict[int, Callable[[], None]]:
        return {
            signal.SIGCHLD: self.reap_workers,
            signal.SIGTERM: self.handle_term,
            signal.SIGINT: self.handle_int,
            signal.SIGQUIT: self.handle_quit,
            signal.SIGHUP: self.handle_hup,
            signal.SIGTTIN: self.handle_ttin,
            signal.SIGTTOU: self.handle_ttou,
            signal.SIGUSR1: self.handle_usr1,
        }

    def check_deadlines(self) -> None:
        """Acts on every process, and the check, whose deadline has passed,
        and begins the drain once the shutdown delay is over."""
        if self._drain_at is not None and self.system.clock() >= self._drain_at:
            self._stop(StopMode.GRACEFUL)
        self.fleet.check_deadlines()
        check = self.check
        if check is not None and self.system.clock() >= check.deadline:
            self._cancel_check()
            self._refuse(f"the check of the new code took longer than {check.timeout:.0f} s")

    def _spawn(self, key: int | str, sidecar: Sidecar | None) -> Child | None:
        """Forks a worker for slot ``key``, or the sidecar; returns a `Child` in a worker."""
        if not self.can_fork:
            # No code to run: the old image's workers serve until a reload succeeds.
            self.fleet.policy.retry_later(key)
            if not self._spawn_failing:
                self._spawn_failing = True
                gen_log.error(
                    "cannot start %s %s: the new code failed to load; the other "
                    "workers keep serving, and SIGHUP tries the code on disk again",
                    self.fleet.noun,
                    key,
                )
            return None
        seats = {p.seat for p in self.workers()}
        seat = -1 if sidecar is not None else min(set(range(len(seats) + 1)) - seats)
        slot = key if isinstance(key, int) else -1
        self.hooks.forking()
        try:
            pid, channel, mask = self.system.fork(with_channel=sidecar is None)
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
        name = f"{self.fleet.noun} {slot}" if sidecar is None else sidecar.name
        process = Process.start(
            name,
            slot,
            seat,
            pid,
            channel,
            self.fleet.desired.generation,
            ready=self._ready_on_fork or sidecar is not None,
            system=self.system,
        )
        self.fleet.started(process)
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

    def handle_term(self) -> None:
        """SIGTERM: graceful stop, after ``shutdown_delay`` if set; a second
        one during that delay drains at once."""
        self._stop_after_delay()

    def handle_int(self) -> None:
        """SIGINT: graceful stop (after ``shutdown_delay``, as SIGTERM); a
        second one (Ctrl-C twice) stops at once, or during the delay drains at once."""
        if self.fleet.desired.stop is not None:
            self._stop(StopMode.FAST)
        else:
            self._stop_after_delay()

    def _stop_after_delay(self) -> None:
        delay = self.config.shutdown_delay
        if self._drain_at is not None or not delay or self.fleet.desired.stop is not None:
            self._stop(StopMode.GRACEFUL)
            return
        # Load balancers take a moment to stop sending: the workers keep
        # accepting while /healthz says 503, then drain.
        if self.check is not None:
            gen_log.info("stopping: the check of the new code is abandoned")
            self._cancel_check()
        self._drain_at = self.system.clock() + delay
        gen_log.info("stopping in %.1f s (shutdown_delay): serving until then", delay)
        self.hooks.stop_announced()

    def handle_quit(self) -> None:
        """SIGQUIT: stop at once."""
        self._stop(StopMode.FAST)

    def _stop(self, mode: StopMode) -> None:
        self._drain_at = None
        if self.check is not None:
            gen_log.info("stopping: the check of the new code is abandoned")
            self._cancel_check()
        self.fleet.stop(mode)

    def handle_hup(self) -> None:
        """SIGHUP: a new generation; every worker is replaced by a ready successor.

        When the code lives in the parent, the new code is checked first in a
        child (`SupervisorHooks.check_new_code`); the reload in place follows
        its verdict (`check_ended`). The newest SIGHUP wins: a check under way
        is abandoned for a new one.
        """
        if self.fleet.desired.stop is not None or self._drain_at is not None:
            return
        if self.check is not None:
            gen_log.info("SIGHUP during the check of the new code: checking again")
            self._cancel_check()
        try:
            check = self.hooks.check_new_code()
        except OSError as e:
            self._refuse(f"cannot check the new code: {e}")
            return
        if check is not None:
            self.check = check
            return
        reason = self.hooks.reload_check()
        if reason is not None:
            gen_log.error("reload refused, the workers keep serving: %s", reason)
            return
        self.hooks.reloading()
        self.fleet.reload()

    def check_ended(self, status: int) -> None:
        """The check of the new code ended with wait ``status``: reload in place,
        or refuse the reload."""
        check = self.check
        assert check is not None
        self.check = None
        reason = check.verdict(status)
        if reason is not None:
            self._refuse(reason)
            return
        # Once this turn's signals and messages are dealt with.
        self.reexec_due = True

    def reexec(self) -> None:
        """Re-executes the parent in place (the check of the new code passed).

        Signals recorded but not yet read, which the exec would lose, are
        read first: a stop among them wins over the reload; the others are
        made pending again, for the new image. Returns only if the exec failed.
        """
        self.reexec_due = False
        if self.fleet.desired.stop is not None or self._drain_at is not None:
            return
        late = self._signals.hold()
        if any(signum in _STOPS for signum in late):
            self._signals.release()
            self.dispatch(late)
            return
        self._signals.carry(late)
        self.hooks.reloading()
        error = self.hooks.reload_in_place(self.fleet.handover())
        self._signals.release()
        gen_log.error("reload failed, the workers keep serving: %s", error)
        self.hooks.reloaded(self.fleet.desired.count, ok=False)

    def _refuse(self, reason: str) -> None:
        # A reload in place refused before the exec: counted as a failed reload.
        gen_log.error("reload refused, the workers keep serving: %s", reason)
        self.hooks.reloaded(self.fleet.desired.count, ok=False)

    def _cancel_check(self) -> None:
        assert self.check is not None
        self.check.cancel()
        self._cancelled.append(self.check)
        self.check = None

    def handle_ttin(self) -> None:
        """SIGTTIN: one worker more."""
        self.fleet.scale(+1)

    def handle_ttou(self) -> None:
        """SIGTTOU: one worker fewer, never fewer than one; it drains gracefully."""
        self.fleet.scale(-1)

    def handle_usr1(self) -> None:
        """SIGUSR1: reopen log files, for logrotate."""
        self.hooks.reopen_logs(self.workers())

    def _read(self, process: Process) -> None:
        for message in process.read_messages():
            self.handle_message(process, message)

    def handle_message(self, process: Process, message: bytes) -> None:
        """A message from a worker over its channel."""
        if message == _channel.READY:
            self.fleet.ready(process)
        elif message == _channel.RECYCLE:
            self.fleet.recycle(process, "served max_requests")
        elif message.startswith(_channel.SILENT + b" "):
            name, _, pid = message[len(_channel.SILENT) + 1 :].decode().rpartition(" ")
            if pid.isdigit():
                self.fleet.silent_sidecar(process, name, int(pid))
        else:
            error = _channel.parse_error(message)
            if error is not None:
                process.boot_error = error

    def reap_workers(self) -> None:
        """Collects every process (and check) that has ended and decides what follows."""
        for process in list(self.fleet.processes.values()):
            status = process.poll()
            if status is None:
                continue
            # What it wrote last (READY, its traceback) is read before the channel goes.
            self._read(process)
            self.fleet.reaped(process, status)
        self._cancelled = [c for c in self._cancelled if self.system.reap(c.pid) is None]
        if self.check is not None:
            status = self.system.reap(self.check.pid)
            if status is not None:
                self.check_ended(status)
        self._reap_strays()

    def _reap_strays(self) -> None:
        # Only pids the kernel lists as ours and no record names: never wait(-1).
        known = {*self.fleet.processes, *(c.pid for c in self._cancelled)}
        if self.check is not None:
            known.add(self.check.pid)
        for pid in self.system.children():
            if pid not in known and pid not in self._strays:
                self._strays[pid] = None
        for pid in list(self._strays):
            if self.system.reap(pid) is not None:
                del self._strays[pid]

    def _kill_and_reap(self) -> None:
        # Last resort when the loop itself failed: leave no child behind.
        if self.check is not None:
            self._cancel_check()
        for check in self._cancelled:
            try:
                os.waitpid(check.pid, 0)
            except ChildProcessError:
                pass
        for process in self.fleet.processes.values():
            process.signal(signal.SIGKILL)
            try:
                os.waitpid(process.pid, 0)
            except ChildProcessError:
                pass
            process.close()
        self.fleet.processes.clear()
        for pid in self._strays:
            self.system.kill(pid, signal.SIGKILL)
