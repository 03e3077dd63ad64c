"""The parent's model: what it wants, what it has, and the one step between them.

`Fleet` holds the desired state (`Desired`: how many workers, which code
generation, stopping or not) and the processes, each in one `State`. Each
`reconcile` moves the processes one ready-gated step towards the wish: HUP
raises the generation (the newest reload wins), TTIN/TTOU change the count,
recycling marks one process, and `_reconcile_slot` replaces a process for
every reason. `check_deadlines` decides about silent, late and aged
processes, `reaped` what follows the end of one, with the `RestartPolicy`.
Creating processes, reading their channels, signals and waiting are the
supervisor's (`tornado_prefork._supervisor.loop`); nothing here forks or sleeps,
and the clock and the signals go through one `System`, so that the
simulation (tests/test_simulation.py) drives these decisions on a virtual
clock.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import signal
from collections.abc import Callable, Sequence

from tornado.log import gen_log

from tornado_prefork._settings import Settings
from tornado_prefork._supervisor.handover import Handover
from tornado_prefork._supervisor.hooks import SupervisorHooks
from tornado_prefork._supervisor.policy import RestartPolicy, Verdict
from tornado_prefork._supervisor.record import (
    SYSTEM,
    Action,
    Child,
    Deadlines,
    ExitReason,
    Process,
    State,
    System,
    describe,
    due,
)
from tornado_prefork._supervisor.spawn import Sidecar

_BOOT_FAILED = "the workers failed to start: every one exited before it was ready"
# How long sidecars get to exit once the workers are gone.
_SIDECAR_GRACE = 5.0
# Between the SIGABRT that makes a silent worker dump its stacks and the SIGKILL.
_ABORT_GRACE = 1.0
_NO_DEADLINES = Deadlines(ready_timeout=0, timeout=0, max_worker_age=0)
# Processes whose end the parent asked for: not failures.
RETIRED = (ExitReason.RELOADED, ExitReason.RECYCLED, ExitReason.SCALED_DOWN, ExitReason.STOPPED)

#: Creates the process for a slot (an int) or a sidecar; returns a `Child` in a new worker.
Spawn = Callable[[int | str, Sidecar | None], Child | None]


class StopMode(enum.Enum):
    """How the server stops."""

    GRACEFUL = "gracefully"
    FAST = "now"


@dataclasses.dataclass
class Desired:
    """What the parent wants; `Fleet.reconcile` makes the processes match it."""

    count: int
    generation: int = 0
    stop: StopMode | None = None
    # Slots whose process exited with status 0 when that means "done" (fork_processes).
    finished: set[int] = dataclasses.field(default_factory=set)


class Fleet:
    """The desired state, the processes, and the decisions between them."""

    def __init__(
        self,
        count: int,
        config: Settings,
        hooks: SupervisorHooks,
        sidecars: Sequence[Sidecar],
        *,
        keep_running: bool,
        give_up_message: str,
        noun: tuple[str, str] = ("worker", "workers"),
        system: System = SYSTEM,
    ) -> None:
        self.config = config
        self.hooks = hooks
        self.system = system
        #: What a worker is called in the log, one and many: "worker", or
        #: Tornado's "child" (`tornado_prefork.fork_processes`).
        self.noun, self.nouns = noun
        self.desired = Desired(count)
        self.processes: dict[int, Process] = {}
        self.policy = RestartPolicy(
            min_uptime=config.min_uptime,
            backoff_cap=config.backoff_cap,
            max_restarts=config.max_restarts,
            clock=system.clock,
        )
        self.limits = Deadlines(config.ready_timeout, config.timeout, config.max_worker_age)
        # Why the server gave up, once it has.
        self.failure: str | None = None
        self._sidecars = list(sidecars)
        self._keep_running = keep_running
        self._give_up_message = give_up_message
        # Reporting only: the generation being rolled out, the newest one that
        # has a ready worker, and one whose first new worker failed.
        self._reload: int | None = None
        self._proven = 0
        self._abandoned: int | None = None
        self._reported_all_ready = False
        self._logged_errors: set[str] = set()

    def handover(self) -> Handover:
        """Every process and the wish, for a parent that re-executes itself."""
        return Handover(
            list(self.processes.values()),
            self.desired.generation,
            self.desired.count,
            config=self.config.supervisor_record(),
        )

    def adopt(self, handover: Handover, *, replace: bool = True) -> None:
        """Takes over the processes of the image before this one.

        With ``replace`` they are the old generation: each is replaced by a
        ready new worker, as in a reload. Without it (the new code could not
        be loaded), they stay the current one and keep serving.
        """
        for process in handover.processes:
            process.system = self.system
            self.processes[process.pid] = process
        self.desired.count = handover.count
        self.desired.generation = handover.generation
        self._proven = handover.generation
        if replace:
            self.desired.generation += 1
            self._reload = self.desired.generation
        # The server was serving all along: no second "all ready".
        self._reported_all_ready = True
        self._counted()

    def reload(self) -> None:
        """A reload: every worker is to be replaced by one of a new generation."""
        if self._reload is not None:
            gen_log.info("SIGHUP during a reload: the newest code replaces it")
        self.desired.generation += 1
        self._reload = self.desired.generation
        gen_log.info("reloading: replacing %d %s", self.desired.count, self.nouns)

    def scale(self, delta: int) -> None:
        """One worker more (+1, SIGTTIN) or fewer (-1, SIGTTOU: never fewer than
        one; it drains gracefully)."""
        if self.desired.stop is not None:
            return
        name = "SIGTTIN" if delta > 0 else "SIGTTOU"
        if self.desired.count + delta < 1:
            gen_log.warning("%s: already down to one %s", name, self.noun)
            return
        if delta > 0:
            self.desired.finished.discard(self.desired.count)
        self.desired.count += delta
        if delta < 0:
            self.policy.forget(self.desired.count)
        gen_log.info("%s: %d %s", name, self.desired.count, self.nouns)
        self.hooks.scaled(self.desired.count)

    def started(self, process: Process) -> None:
        """``process`` was forked now (a worker ready on fork is ready at once)."""
        self.processes[process.pid] = process
        if process.slot < 0:
            return
        self.hooks.worker_started(process)
        self._counted()
        if process.state is State.READY:
            self.became_ready(process)

    def ready(self, process: Process) -> None:
        """``process`` reported READY."""
        if process.became_ready():
            self.became_ready(process)

    def recycle(self, process: Process, why: str) -> None:
        """``process`` is to be replaced by a ready successor (max_requests,
        max_worker_age)."""
        if process.state is State.READY and not process.recycle:
            gen_log.info("%s %s; replacing it", process, why)
            process.recycle = True

    def due(self, process: Process) -> tuple[float, Action] | None:
        """What is due for ``process`` next, and when (sidecars have no deadlines)."""
        return due(process, self.limits if process.slot >= 0 else _NO_DEADLINES)

    def next_deadline(self) -> float | None:
        """The nearest moment at which something is due."""
        deadlines = [d[0] for p in self.processes.values() if (d := self.due(p)) is not None]
        if self.desired.stop is None:
            deadlines += [self.policy.start_at(key) for key in self.missing()]
        return min(deadlines, default=None)

    def check_deadlines(self) -> None:
        """Acts on every process whose deadline has passed."""
        now = self.system.clock()
        for process in list(self.processes.values()):
            found = self.due(process)
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
                self.recycle(
                    process, f"reached max_worker_age ({self.config.max_worker_age:.0f} s)"
                )

    def reaped(self, process: Process, status: int) -> None:
        """``process`` ended with wait ``status``: decides what follows."""
        process.close()
        del self.processes[process.pid]
        if process.slot < 0:
            self.sidecar_ended(process, status)
        else:
            self.worker_ended(process, status)

    def all_finished(self) -> bool:
        return set(range(self.desired.count)) <= self.desired.finished

    def workers(self) -> list[Process]:
        """Every worker alive now (as far as the parent has reaped), sidecars excluded."""
        return [p for p in self.processes.values() if p.slot >= 0]

    def counts(self) -> tuple[int, int]:
        """The workers ready (they reported READY, draining ones included) and
        alive (forked, starting and draining ones included), until reaped."""
        workers = self.workers()
        return sum(1 for p in workers if p.ever_ready), len(workers)

    def _counted(self) -> None:
        # After every change of the records that can change `counts`.
        self.hooks.workers_changed(*self.counts())

    def missing(self) -> list[int | str]:
        """Policy keys of slots and sidecars that have no live process and may
        get one when the policy says (not a slot still waiting for the end of a
        failed process: that end is an event of its own)."""
        keys: list[int | str] = [s.name for s in self._sidecars if self.sidecar(s.name) is None]
        filled = {p.slot for p in self.processes.values() if p.live}
        return keys + [
            slot
            for slot in range(self.desired.count)
            if slot not in filled and slot not in self.desired.finished and not self._failing(slot)
        ]

    def _failing(self, slot: int) -> bool:
        # Killed for a failure (hung, not ready): its end must reach the restart
        # policy, with its backoff and give-up, before the slot starts again.
        return any(
            p.slot == slot and not p.live and p.reason not in RETIRED for p in self.workers()
        )

    def reconcile(self, spawn: Spawn) -> Child | None:
        """One step towards the desired state; returns a `Child` in a new worker.

        ``spawn`` creates the process for a slot or a sidecar.
        """
        if self.desired.stop is not None:
            self.stop_step()
            return None
        now = self.system.clock()
        for sidecar in self._sidecars:
            if self.sidecar(sidecar.name) is None and self.policy.start_at(sidecar.name) <= now:
                spawn(sidecar.name, sidecar)
        for slot in range(self.desired.count):
            child = self._reconcile_slot(slot, now, spawn)
            if child is not None:
                return child
        for process in self.workers():
            if process.slot >= self.desired.count and process.live:
                process.terminate(self.config.graceful_timeout, ExitReason.SCALED_DOWN)
        self._report_progress()
        return None

    def _reconcile_slot(self, slot: int, now: float, spawn: Spawn) -> Child | None:
        if self._failing(slot):
            return None
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
                # Old code: the newest reload wins. SIGTERM, not SIGKILL: its
                # READY may be on the way, and then it drains like any worker.
                process.terminate(self.config.graceful_timeout, ExitReason.RELOADED)
        if current or (slot in self.desired.finished and not members):
            return None
        if self.policy.start_at(slot) > now:
            return None
        if stale and not self._may_replace():
            return None
        return spawn(slot, None)

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
            gen_log.info("reload finished: %d %s", self.desired.count, self.nouns)
            self.hooks.reloaded(self.desired.count, ok=True)

    def sidecar(self, name: str) -> Process | None:
        return next((p for p in self.processes.values() if p.slot < 0 and p.name == name), None)

    def silent_sidecar(self, worker: Process, name: str, pid: int) -> None:
        """``worker`` says the sidecar ``name`` (``pid``) stopped talking to
        it: alive but deaf (its loop blocked or wedged). It is killed, and
        restarted as any sidecar that ends; what other workers say of it
        meanwhile, or of one it replaced, is moot."""
        sidecar = self.sidecar(name)
        if sidecar is None or sidecar.pid != pid or sidecar.state is State.KILLED:
            return
        gen_log.warning(
            "%s %d (pid %d) heard nothing from the %s (pid %d), not even its tick: "
            "killing it; it restarts",
            self.noun,
            worker.slot,
            worker.pid,
            name,
            sidecar.pid,
        )
        sidecar.kill(ExitReason.HUNG)

    def became_ready(self, process: Process) -> None:
        self.policy.ready()
        self.policy.replaced(process.slot)
        self._proven = max(self._proven, process.generation)
        self.hooks.worker_ready(process)
        self._counted()

    def worker_ended(self, process: Process, status: int) -> None:
        reason = process.reason
        if reason is None:
            if not process.ever_ready:
                reason = ExitReason.BOOT_FAILED
            else:
                reason = ExitReason.EXITED if status == 0 else ExitReason.CRASHED
        self.hooks.worker_exited(process, reason)
        self._counted()
        if reason in RETIRED:
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
        if not process.ever_ready and any(
            p.slot == process.slot and p.state is State.READY for p in self.workers()
        ):
            self._replacement_failed(process, status)
            return
        self._restart_later(process)

    def _replacement_failed(self, process: Process, status: int) -> None:
        self.policy.retry_later(process.slot)
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
        verdict = self.policy.ended(slot, process.started_at, process.ever_ready, slots)
        if verdict is Verdict.GIVE_UP:
            gen_log.error(
                "%s %d failed %d times in a row within %.1f s of its start "
                "(max_restarts=%d); giving up",
                self.noun,
                slot,
                self.policy.streak(slot),
                self.config.min_uptime,
                self.config.max_restarts,
            )
            self._give_up(self._give_up_message)
        elif verdict is Verdict.BOOT_FAILED:
            gen_log.error("no %s could start; stopping", self.noun)
            self._give_up(_BOOT_FAILED)
        elif self.policy.streak(slot):
            gen_log.info(
                "%s %d failed %d time(s) in a row within %.1f s of its start; next start in %.2f s",
                self.noun,
                slot,
                self.policy.streak(slot),
                self.config.min_uptime,
                max(0.0, self.policy.start_at(slot) - self.system.clock()),
            )

    def sidecar_ended(self, process: Process, status: int) -> None:
        if self.desired.stop is not None:
            gen_log.info("%s stopped (%s)", process, describe(status))
            return
        self.policy.ended(process.name, process.started_at, was_ready=True)
        gen_log.warning(
            "%s exited (%s); restarting it in %.2f s",
            process,
            describe(status),
            max(0.0, self.policy.start_at(process.name) - self.system.clock()),
        )

    def _log_boot_error(self, process: Process) -> None:
        # The same traceback from every worker is shown once, not once a worker.
        error = process.boot_error
        if error is not None and error not in self._logged_errors:
            self._logged_errors.add(error)
            gen_log.error("%s %d failed to start:\n%s", self.noun, process.slot, error.rstrip())

    def _give_up(self, message: str) -> None:
        self.failure = message
        self.stop(StopMode.GRACEFUL)

    def stop_step(self) -> None:
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
            "stopping %d %s %s%s",
            len(workers),
            self.nouns,
            mode.value,
            f" (SIGTERM, up to {self.config.graceful_timeout:.1f} s)"
            if mode is StopMode.GRACEFUL
            else " (SIGKILL)",
        )
        self.stop_step()


def _log_exit(process: Process, status: int) -> None:
    # Tornado's own lines, word for word after the name.
    if os.WIFSIGNALED(status):
        gen_log.warning("%s killed by signal %d, restarting", process, os.WTERMSIG(status))
    elif os.WEXITSTATUS(status) != 0:
        gen_log.warning("%s exited with status %d, restarting", process, os.WEXITSTATUS(status))
    else:
        gen_log.info("%s exited normally", process)
