"""The parent's model: what it wants, what it has, and the one step between them.

`Fleet` holds the desired state (`Desired`: how many workers, which code
generation, stopping or not) and the processes, each in one `State`. Each
`reconcile` moves the processes one ready-gated step towards the wish: HUP
raises the generation (the newest reload wins), TTIN/TTOU change the count,
recycling marks one process, and `_reconcile_slot` replaces a process for
every reason. `worker_ended` decides what follows the end of a process, with
the `RestartPolicy`. Creating processes, signals and waiting are the
supervisor's (`tornado_prefork._supervisor`); nothing here forks or sleeps.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import socket
import time
from collections.abc import Callable, Sequence

from tornado.log import gen_log

from tornado_prefork._handover import Adopted, Handover
from tornado_prefork._hooks import SupervisorConfig, SupervisorHooks
from tornado_prefork._policy import RestartPolicy, Verdict
from tornado_prefork._processes import Child, ExitReason, Process, Sidecar, State, describe

_BOOT_FAILED = "the workers failed to start: every one exited before it was ready"
# How long sidecars get to exit once the workers are gone.
_SIDECAR_GRACE = 5.0
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
        config: SupervisorConfig,
        hooks: SupervisorHooks,
        sidecars: Sequence[Sidecar],
        *,
        keep_running: bool,
        give_up_message: str,
    ) -> None:
        self.config = config
        self.hooks = hooks
        self.desired = Desired(count)
        self.processes: dict[int, Process] = {}
        self.policy = RestartPolicy(
            min_uptime=config.min_uptime,
            backoff_cap=config.backoff_cap,
            max_restarts=config.max_restarts,
        )
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
        processes = [
            Adopted(
                name=p.name,
                slot=p.slot,
                seat=p.seat,
                pid=p.pid,
                channel_fd=None if p.channel is None else p.channel.fileno(),
                generation=p.generation,
                state=p.state.value,
                started_at=p.started_at,
                kill_at=p.kill_at,
                reason=None if p.reason is None else p.reason.value,
            )
            for p in self.processes.values()
        ]
        return Handover(processes, self.desired.generation, self.desired.count)

    def adopt(self, handover: Handover) -> None:
        """Takes over the processes of the image before this one, as the old
        generation: each is replaced by a ready new worker, as in a reload."""
        for a in handover.processes:
            channel = None if a.channel_fd is None else socket.socket(fileno=a.channel_fd)
            if channel is not None:
                channel.setblocking(False)
            process = Process(
                a.name, a.slot, a.seat, a.pid, channel, a.generation, started_at=a.started_at
            )
            process.state = State(a.state)
            process.ever_ready = process.state is not State.STARTING
            process.kill_at = a.kill_at
            process.reason = None if a.reason is None else ExitReason(a.reason)
            self.processes[a.pid] = process
        self.desired.count = handover.count
        self.desired.generation = handover.generation + 1
        self._reload = self.desired.generation
        self._proven = handover.generation
        # The server was serving all along: no second "all ready".
        self._reported_all_ready = True

    def new_generation(self) -> None:
        """A reload: every worker is to be replaced by one of a new generation."""
        if self._reload is not None:
            gen_log.info("SIGHUP during a reload: the newest code replaces it")
        self.desired.generation += 1
        self._reload = self.desired.generation
        gen_log.info("reloading: replacing %d workers", self.desired.count)

    def all_finished(self) -> bool:
        return set(range(self.desired.count)) <= self.desired.finished

    def workers(self) -> list[Process]:
        """Every worker alive now (as far as the parent has reaped), sidecars excluded."""
        return [p for p in self.processes.values() if p.slot >= 0]

    def missing(self) -> list[int | str]:
        """Policy keys of slots and sidecars that have no live process."""
        keys: list[int | str] = [s.name for s in self._sidecars if self.sidecar(s.name) is None]
        filled = {p.slot for p in self.processes.values() if p.live}
        return keys + [
            slot
            for slot in range(self.desired.count)
            if slot not in filled and slot not in self.desired.finished
        ]

    def reconcile(self, spawn: Spawn) -> Child | None:
        """One step towards the desired state; returns a `Child` in a new worker.

        ``spawn`` creates the process for a slot or a sidecar.
        """
        if self.desired.stop is not None:
            self.stop_step()
            return None
        now = time.monotonic()
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
            gen_log.info("reload finished: %d workers", self.desired.count)
            self.hooks.reloaded(self.desired.count, ok=True)

    def sidecar(self, name: str) -> Process | None:
        return next((p for p in self.processes.values() if p.slot < 0 and p.name == name), None)

    def became_ready(self, process: Process) -> None:
        self.policy.ready()
        self.policy.replaced(process.slot)
        self._proven = max(self._proven, process.generation)
        self.hooks.worker_ready(process)

    def worker_ended(self, process: Process, status: int) -> None:
        reason = process.reason
        if reason is None:
            if not process.ever_ready:
                reason = ExitReason.BOOT_FAILED
            else:
                reason = ExitReason.EXITED if status == 0 else ExitReason.CRASHED
        self.hooks.worker_exited(process, reason)
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
        if any(p.slot == process.slot and p.live for p in self.workers()):
            self._replacement_failed(process, status)
            return
        self._restart_later(process)

    def _replacement_failed(self, process: Process, status: int) -> None:
        if process.ever_ready:
            return
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
                "worker %d failed %d times in a row within %.1f s of its start "
                "(max_restarts=%d); giving up",
                slot,
                self.policy.streak(slot),
                self.config.min_uptime,
                self.config.max_restarts,
            )
            self._give_up(self._give_up_message)
        elif verdict is Verdict.BOOT_FAILED:
            gen_log.error("no worker could start; stopping")
            self._give_up(_BOOT_FAILED)
        elif self.policy.streak(slot):
            gen_log.info(
                "worker %d failed %d time(s) in a row within %.1f s of its start; "
                "next start in %.2f s",
                slot,
                self.policy.streak(slot),
                self.config.min_uptime,
                max(0.0, self.policy.start_at(slot) - time.monotonic()),
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
            max(0.0, self.policy.start_at(process.name) - time.monotonic()),
        )

    def _log_boot_error(self, process: Process) -> None:
        # The same traceback from every worker is shown once, not once a worker.
        error = process.boot_error
        if error is not None and error not in self._logged_errors:
            self._logged_errors.add(error)
            gen_log.error("worker %d failed to start:\n%s", process.slot, error.rstrip())

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
            "stopping %d workers %s%s",
            len(workers),
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
