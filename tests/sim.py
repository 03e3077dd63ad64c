"""A seeded, deterministic simulation of the parent: the real `Supervisor`, its
`Fleet` and `RestartPolicy`, on a virtual clock with simulated processes.

`World` stands in for the system (`tornado_prefork._supervisor.record.System`: the
clock, fork, kill, reaping) and for the signal pipe, and runs the
supervisor's loop turn by turn as `Supervisor._loop` does, jumping the clock
to the nearest deadline or event. A random schedule sends HUP, TTIN, TTOU,
USR1, TERM, INT and QUIT, crashes and hangs workers, makes forks fail, makes
the code of a generation broken, and re-executes the parent in place (a
handover encoded, decoded and adopted) at any moment. `Invariants` are
checked at every step; a failure names its seed, and the same seed replays
the same run.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import random
import signal
import socket
from collections.abc import Iterable

from tornado_prefork._settings import Settings
from tornado_prefork._supervisor import channel as _channel
from tornado_prefork._supervisor.handover import Handover
from tornado_prefork._supervisor.hooks import NewCodeCheck, SupervisorHooks
from tornado_prefork._supervisor.loop import Supervisor
from tornado_prefork._supervisor.record import ExitReason, Process, State, System

WEEK = 7 * 24 * 3600.0
_SIGNALS = [signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1]
_STOPS = [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT]


class Violation(AssertionError):
    """An invariant broke."""


class Exec(BaseException):
    """The parent re-executed itself in place: the handover's text."""

    def __init__(self, text: str) -> None:
        self.text = text


@dataclasses.dataclass
class Sim:
    """One simulated child process."""

    pid: int
    born: float
    generation: int
    check: bool = False
    # When it reports READY (None: never), when it hangs or crashes (None: never).
    ready_at: float | None = None
    hang_at: float | None = None
    crash_at: float | None = None
    # How long it takes to drain after SIGTERM.
    drain: float = 0.1
    # Wait status once it has ended; reaped once the parent has collected it.
    status: int | None = None
    reaped: bool = False
    ended_at: float = 0.0
    # Every signal it received, and the parent's view of the process then.
    signals: list[tuple[float, int]] = dataclasses.field(default_factory=list)

    def healthy(self, now: float) -> bool:
        """Ready, sending heartbeats, not ended."""
        return (
            self.status is None
            and self.ready_at is not None
            and self.ready_at <= now
            and (self.hang_at is None or now < self.hang_at)
        )


class _Signals:
    """The signal pipe, simulated: what arrived, and what is carried across an exec."""

    def __init__(self) -> None:
        self.recorded: list[int] = []
        self.held = False
        self.carried: list[int] = []

    def install(self) -> None:
        pass

    def restore(self) -> None:
        pass

    def received(self) -> list[int]:
        found, self.recorded = self.recorded, []
        return found

    def hold(self) -> list[int]:
        self.held = True
        return self.received()

    def carry(self, signals: Iterable[int]) -> None:
        self.carried += list(dict.fromkeys(signals))

    def release(self) -> None:
        self.held = False
        self.recorded += self.carried
        self.carried = []


class _Check(NewCodeCheck):
    def __init__(self, world: World, proc: Sim, timeout: float) -> None:
        self.world = world
        self.pid = proc.pid
        self.fd = None
        self.timeout = timeout
        self.deadline = world.now + timeout

    def read(self) -> None:
        pass

    def verdict(self, status: int) -> str | None:
        return None if status == 0 else "the new code failed its check"

    def cancel(self) -> None:
        self.world.kill(self.pid, signal.SIGKILL)


class _Hooks(SupervisorHooks):
    def __init__(self, world: World) -> None:
        self.world = world

    def check_new_code(self) -> NewCodeCheck | None:
        return self.world.start_check() if self.world.in_place else None

    def reload_in_place(self, handover: Handover) -> str:
        if self.world.rng.random() < 0.05:
            return "cannot run python: [Errno 2] No such file or directory"
        raise Exec(handover.encode())


class World(System):
    """The system the supervisor sees, and the schedule of what happens to it."""

    def __init__(self, seed: int, duration: float) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        rng = self.rng
        self.duration = duration
        self.now = 1000.0
        self.procs: dict[int, Sim] = {}
        self._next_pid = 100
        self.signals = _Signals()
        self.in_place = rng.random() < 0.5
        timeout = rng.choice([2.0, 5.0, 30.0])
        self.config = Settings(
            max_restarts=rng.choice([10, 100, 1000]),
            graceful_timeout=rng.choice([1.0, 5.0, 30.0]),
            min_uptime=rng.choice([0.5, 1.0, 5.0]),
            backoff_cap=rng.choice([1.0, 5.0, 30.0]),
            ready_timeout=rng.choice([2.0, 10.0, 60.0]),
            timeout=timeout,
            max_worker_age=rng.choice([0.0, 0.0, 300.0, 3600.0]),
            shutdown_delay=rng.choice([0.0, 0.0, 2.0]),
        )
        self.heartbeat = min(timeout / 4, 5.0)
        # Code by generation: broken code never gets ready.
        self.broken: set[int] = set()
        self.fork_fails_until = 0.0
        self._events: list[tuple[float, int, str, int]] = []
        self._seq = 0
        self.log: list[str] = []
        self.count = rng.randint(1, 4)
        self.sup = self._supervisor(None)
        self.quiet_from = self.now + duration
        # Most runs go on to the end; some meet a stop on the way.
        self.stops = rng.random() < 0.2
        self.started = self.now
        self._schedule_faults()

    # -- System -----------------------------------------------------------

    def clock(self) -> float:
        return self.now

    def kill(self, pid: int, signum: int) -> None:
        proc = self.procs.get(pid)
        if proc is None or proc.status is not None:
            return
        proc.signals.append((self.now, signum))
        process = self.sup.fleet.processes.get(pid)
        if (
            signum == signal.SIGTERM
            and process is not None
            and process.ever_ready
            and retired_before_successor(self, process)
        ):
            raise Violation(f"{process} stopped ({process.reason}) before its successor was ready")
        if signum == signal.SIGKILL:
            self._end(proc, signal.SIGKILL)
        elif signum == signal.SIGABRT:
            self._at(self.now + 0.05, "end", pid, signal.SIGABRT)
        elif signum == signal.SIGTERM:
            if proc.hang_at is not None and proc.hang_at <= self.now:
                return  # a blocked loop does not drain
            if proc.ready_at is None or self.now < proc.ready_at:
                self._at(self.now + 0.01, "exit", pid, 0)
            else:
                self._at(self.now + proc.drain, "exit", pid, 0)

    def reap(self, pid: int) -> int | None:
        proc = self.procs[pid]
        if proc.status is None or proc.reaped:
            return None
        proc.reaped = True
        return proc.status

    def children(self) -> list[int]:
        return [p.pid for p in self.procs.values() if not p.reaped]

    def fork(self, with_channel: bool) -> tuple[int, socket.socket | None, set[int]]:
        if self.now < self.fork_fails_until:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        proc = self._new(self.sup.fleet.desired.generation)
        if self.sup.fleet.desired.generation not in self.broken:
            proc.ready_at = self.now + self.rng.uniform(0.01, 0.5)
            self._at(proc.ready_at, "ready", proc.pid)
        return proc.pid, None, set()

    # -- the schedule ---------------------------------------------------------

    def _new(self, generation: int, check: bool = False) -> Sim:
        self._next_pid += 1
        proc = Sim(self._next_pid, self.now, generation, check=check)
        proc.drain = self.rng.uniform(0.01, 0.5)
        self.procs[proc.pid] = proc
        return proc

    def start_check(self) -> NewCodeCheck:
        if self.now < self.fork_fails_until:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        proc = self._new(-1, check=True)
        status = 1 if self.sup.fleet.desired.generation + 1 in self.broken else 0
        self._at(self.now + self.rng.choice([0.05, 0.5, 3.0, 90.0]), "exit", proc.pid, status)
        return _Check(self, proc, self.config.ready_timeout or 60.0)

    def _at(self, when: float, kind: str, pid: int = 0, arg: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, self._seq, kind, pid * 1000 + arg))

    def _schedule_faults(self) -> None:
        rng = self.rng
        t = self.now
        end = self.now + self.duration
        while True:
            # Mostly a busy schedule, sometimes hours of calm.
            t += rng.expovariate(1 / rng.choice([2.0, 30.0, 600.0, 7200.0]))
            if t >= end:
                break
            roll = rng.random()
            if roll < 0.35:
                self._at(t, "signal", 0, rng.choice(_SIGNALS))
            elif roll < 0.37 and self.stops:
                self._at(t, "signal", 0, rng.choice(_STOPS))
            elif roll < 0.55:
                self._at(t, "crash")
            elif roll < 0.65:
                self._at(t, "hang")
            elif roll < 0.72:
                self._at(t, "forkfail", 0, rng.choice([1, 5, 60]))
            elif roll < 0.80:
                self._at(t, "broken")
            elif roll < 0.85:
                self._at(t, "signal", 0, signal.SIGHUP)
                # A second signal close behind: TERM during a check, HUP on HUP.
                self._at(
                    t + rng.choice([0.01, 0.05, 0.2]),
                    "signal",
                    0,
                    rng.choice([signal.SIGHUP, signal.SIGTERM, signal.SIGTTIN]),
                )
            else:
                self._at(t, "roundtrip")
        # The end: good code, one last reload, then calm to converge.
        self._at(end, "fixed")
        self._at(end + 0.5, "signal", 0, signal.SIGHUP)

    def _end(self, proc: Sim, signum: int = 0, code: int = 0) -> None:
        if proc.status is not None:
            return
        proc.status = signum if signum else code << 8
        proc.ended_at = self.now
        self.signals.recorded.append(signal.SIGCHLD)

    def _supervisor(self, handover: Handover | None) -> Supervisor:
        sup = Supervisor(
            self.count,
            self.config,
            lambda child: None,
            ready_on_fork=False,
            keep_running=True,
            hooks=_Hooks(self),
            handover=handover,
            system=self,
            signals=self.signals,  # type: ignore[arg-type]
        )
        return sup

    def _apply(self, kind: str, pid: int, arg: int) -> None:
        rng = self.rng
        proc = self.procs.get(pid)
        live = [p for p in self.procs.values() if p.status is None and not p.check]
        if kind == "signal":
            if not self.signals.held:
                self.signals.recorded.append(arg)
            else:
                self.signals.carried.append(arg)
        elif kind == "ready" and proc is not None and proc.status is None:
            process = self.sup.fleet.processes.get(pid)
            if process is not None:
                self.sup.handle_message(process, _channel.READY)
        elif kind == "exit" and proc is not None:
            self._end(proc, code=arg)
        elif kind == "end" and proc is not None:
            self._end(proc, arg)
        elif kind == "crash" and live:
            self._end(rng.choice(live), code=rng.choice([1, 3]))
        elif kind == "hang" and live:
            victim = rng.choice(live)
            if victim.hang_at is None:
                victim.hang_at = self.now
        elif kind == "forkfail":
            self.fork_fails_until = self.now + arg
        elif kind == "broken":
            self.broken.add(self.sup.fleet.desired.generation + 1)
        elif kind == "fixed":
            self.broken.clear()
            self.fork_fails_until = 0.0
            self.quiet_from = self.now
        elif kind == "roundtrip":
            self._round_trip(self.sup.fleet.handover())

    def _heartbeats(self) -> None:
        for process in self.sup.fleet.processes.values():
            proc = self.procs[process.pid]
            if proc.check or proc.ready_at is None or self.now < proc.ready_at:
                continue
            until = self.now if proc.hang_at is None else min(self.now, proc.hang_at)
            if proc.status is not None:
                until = min(until, proc.ended_at)
            beats = int((until - proc.ready_at) / self.heartbeat)
            last = proc.ready_at + beats * self.heartbeat
            if last > process.last_heard:
                process.last_heard = last

    def _round_trip(self, handover: Handover) -> Handover:
        text = handover.encode()
        again = Handover.decode(text, system=self)
        before = [p.record() for p in handover.processes]
        after = [p.record() for p in again.processes]
        if before != after or again.encode() != text:
            raise Violation(f"a handover round trip changed the records:\n{before}\n{after}")
        return again

    # -- the loop -----------------------------------------------------------

    def run(self) -> None:
        """The supervisor's loop until the schedule and its calm are over."""
        end = self.now + self.duration + 600.0
        self.sup.reap_workers()
        while True:
            child = self.sup.reconcile()
            assert child is None
            self.check(end)
            if self.sup.finished() or self.now >= end:
                return
            deadline = self.sup.next_deadline()
            upcoming = self._events[0][0] if self._events else end
            self.now = max(self.now, min(upcoming, end, deadline if deadline else end))
            while self._events and self._events[0][0] <= self.now:
                _, _, kind, code = heapq.heappop(self._events)
                self._apply(kind, code // 1000, code % 1000)
            try:
                self.sup.dispatch(self.signals.received())
                self._heartbeats()
                self.sup.check_deadlines()
                if self.sup.reexec_due:
                    self.sup.reexec()
            except Exec as e:
                handover = self._round_trip(Handover.decode(e.text, system=self))
                self.sup = self._supervisor(handover)
                self.signals.release()
                self.sup.reap_workers()

    # -- invariants -----------------------------------------------------------

    def check(self, end: float) -> None:
        """The invariants, at this step."""
        fleet = self.sup.fleet
        if (
            fleet.failure is not None
            and fleet.policy._ever_ready
            and "giving up" not in (fleet.failure)
        ):
            raise Violation(f"the server ended on its own: {fleet.failure}")
        stopping = fleet.desired.stop is not None
        drain_at = self.sup._drain_at
        if drain_at is not None and (stopping or self.now > drain_at):
            raise Violation(
                f"the shutdown delay, due at {drain_at:.2f}, was not followed by a drain"
            )
        for proc in self.procs.values():
            for when, signum in proc.signals:
                if signum in (signal.SIGKILL, signal.SIGABRT) and not proc.check:
                    hung = proc.hang_at is not None and proc.hang_at <= when
                    never_ready = proc.ready_at is None
                    quit_ = fleet.desired.stop is not None
                    if not (hung or never_ready or quit_):
                        raise Violation(
                            f"{proc.pid} sent heartbeats and got signal {signum} at {when:.2f}"
                        )
            proc.signals = [(w, s) for w, s in proc.signals if w >= self.now]
        if stopping:
            return
        if self.now >= self.quiet_from + 300.0 and fleet.failure is None:
            workers = [p for p in fleet.workers() if p.live]
            generations = {p.generation for p in workers}
            ready = [p for p in workers if p.state is State.READY]
            if generations != {fleet.desired.generation} or len(ready) != fleet.desired.count:
                raise Violation(
                    f"not converged 300 s after the last HUP: want {fleet.desired.count} of "
                    f"generation {fleet.desired.generation}, have "
                    f"{sorted((p.slot, p.generation, p.state.value) for p in workers)}"
                )


def retired_before_successor(world: World, process: Process) -> bool:
    """Whether a ready worker was told to stop for a reload with no ready successor."""
    if process.reason not in (ExitReason.RELOADED, ExitReason.RECYCLED):
        return False
    return not any(
        p.slot == process.slot and p.state is State.READY and p is not process
        for p in world.sup.fleet.workers()
    )


logging.getLogger("tornado.general").setLevel(logging.CRITICAL)
