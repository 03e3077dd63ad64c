"""The parent's record of one child process: its state, its channel, what is due for it.

Each process is in exactly one `State`; `due` is the one place that says
what the parent must do about a process next, and when.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import signal
import socket
import time
from typing import Any

from tornado_prefork._supervisor import channel as _channel
from tornado_prefork._supervisor import spawn as _spawn

# Module level: inside `Process`, the name ``signal`` is its method.
_SIGTERM = signal.SIGTERM


class State(enum.Enum):
    """Where a child process is in its life, as the parent sees it."""

    #: Forked; has not reported READY yet.
    STARTING = "starting"
    #: Serving.
    READY = "ready"
    #: Told to stop (SIGTERM, or SIGABRT for its stacks); SIGKILL at ``kill_at``.
    DRAINING = "draining"
    #: SIGKILL sent: nothing left to do but reap it.
    KILLED = "killed"


class ExitReason(enum.Enum):
    """Why a process ended, as hooks and metrics report it."""

    CRASHED = "crashed"
    HUNG = "hung"
    RECYCLED = "recycled"
    RELOADED = "reloaded"
    SCALED_DOWN = "scaled_down"
    STOPPED = "stopped"
    BOOT_FAILED = "boot_failed"
    EXITED = "exited"


class Action(enum.Enum):
    """What `due` asks the parent to do about a process."""

    #: Past its drain deadline, or its ready deadline: SIGKILL.
    KILL = "kill"
    #: Not ready within ``ready_timeout``: SIGKILL, counted as a failed start.
    NOT_READY = "not ready"
    #: Ready but silent for ``timeout``: SIGABRT for its stacks, SIGKILL soon after.
    HUNG = "hung"
    #: Lived ``max_worker_age``: replace it.
    AGED = "aged"


@dataclasses.dataclass
class Child:
    """What the supervisor returns in a newly forked worker.

    ``task_id`` is the slot the worker fills; ``seat`` is a small number no
    other live worker has (two workers share a task id during a replacement).
    """

    task_id: int
    channel: socket.socket
    seat: int


class System:
    """The system calls the parent's model makes: the clock, signals, reaping.

    One object, so that the simulation of the parent (tests/test_simulation.py)
    runs the same decisions on a virtual clock and simulated processes.
    """

    def clock(self) -> float:
        """Seconds on a clock that never goes back."""
        return time.monotonic()

    def kill(self, pid: int, signum: int) -> None:
        """Sends ``signum``; a process that is already gone is not an error."""
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def reap(self, pid: int) -> int | None:
        """The wait status of ``pid`` if it has ended (reaping it), else None."""
        try:
            found, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            # Reaped behind our back (SIGCHLD set to SIG_IGN by other code): the
            # status is lost, so count it as a failure rather than a clean exit.
            return 255 << 8
        return status if found else None

    def children(self) -> list[int]:
        """The pids of this process's children, as the kernel lists them (Linux);
        empty where it cannot tell."""
        try:
            with open(f"/proc/self/task/{os.getpid()}/children") as f:
                return [int(pid) for pid in f.read().split()]
        except OSError:
            return []

    def fork(
        self, with_channel: bool
    ) -> tuple[int, socket.socket | None, set[int | signal.Signals]]:
        """`tornado_prefork._supervisor.spawn.fork`."""
        return _spawn.fork(with_channel)


#: The real system.
SYSTEM = System()


def _handed(default: Any = None) -> Any:
    return dataclasses.field(default=default, metadata={"handover": True})


def _kept(default: Any) -> Any:
    return dataclasses.field(default=default, compare=False, repr=False)


@dataclasses.dataclass(eq=False)
class Process:
    """One child process as the parent sees it.

    The fields marked for the handover are the whole record that a parent
    re-executed in place takes over (`record`, `from_record`): one record on
    both sides of the exec.
    """

    name: str = _handed()
    slot: int = _handed()
    seat: int = _handed()
    pid: int = _handed()
    generation: int = _handed()
    state: State = _handed(State.STARTING)
    started_at: float = _handed(0.0)
    # When the parent last read anything from it (heartbeats included).
    last_heard: float = _handed(0.0)
    ever_ready: bool = _handed(False)
    # When DRAINING: the moment SIGKILL follows.
    kill_at: float | None = _handed()
    # Set when the parent decided the process must go, and why.
    reason: ExitReason | None = _handed()
    # Replace it by a ready successor (max_requests, max_worker_age).
    recycle: bool = _handed(False)
    # Why it could not start, as it reported over the channel.
    boot_error: str | None = _handed()
    channel: socket.socket | None = _kept(None)
    system: System = _kept(SYSTEM)
    _reader: _channel.Reader = dataclasses.field(
        default_factory=_channel.Reader, compare=False, repr=False
    )

    @classmethod
    def start(
        cls,
        name: str,
        slot: int,
        seat: int,
        pid: int,
        channel: socket.socket | None,
        generation: int,
        *,
        ready: bool = False,
        system: System = SYSTEM,
    ) -> Process:
        """The record of a process forked now."""
        now = system.clock()
        state = State.READY if ready else State.STARTING
        return cls(
            name,
            slot,
            seat,
            pid,
            generation,
            state,
            now,
            now,
            ready,
            channel=channel,
            system=system,
        )

    def record(self) -> dict[str, Any]:
        """The handed-over fields, as JSON values."""
        record = {}
        for field in _HANDED:
            value = getattr(self, field.name)
            record[field.name] = value.value if isinstance(value, enum.Enum) else value
        return record

    @classmethod
    def from_record(
        cls, record: dict[str, Any], channel: socket.socket | None, system: System = SYSTEM
    ) -> Process:
        """The inverse of `record`. Fields it does not know are ignored and the
        ones it lacks take their defaults, so that records of other versions of
        tornado-prefork are read; raises `ValueError` for a record that is not one."""
        values = {f.name: record[f.name] for f in _HANDED if f.name in record}
        try:
            values["state"] = State(values.get("state", State.READY.value))
            reason = values.get("reason")
            values["reason"] = None if reason is None else ExitReason(reason)
            return cls(**values, channel=channel, system=system)
        except (TypeError, ValueError) as e:
            raise ValueError(f"not a process record: {record!r} ({e})") from e

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid})"

    def __repr__(self) -> str:
        return f"<Process {self} {self.state.value}>"

    @property
    def live(self) -> bool:
        """Starting or ready: not on its way out."""
        return self.state in (State.STARTING, State.READY)

    def became_ready(self) -> bool:
        """Records READY; False if it was not starting (late or repeated)."""
        if self.state is not State.STARTING:
            return False
        self.state = State.READY
        self.ever_ready = True
        return True

    def signal(self, signum: int) -> None:
        """Sends ``signum``; a process that is already gone is not an error."""
        self.system.kill(self.pid, signum)

    def terminate(self, grace: float, reason: ExitReason, signum: int = _SIGTERM) -> None:
        """``signum`` now, SIGKILL when ``grace`` seconds have passed (or sooner if
        an earlier deadline was set)."""
        if self.state is State.KILLED:
            return
        self.reason = self.reason or reason
        deadline = self.system.clock() + grace
        if self.kill_at is None or deadline < self.kill_at:
            self.kill_at = deadline
        self.state = State.DRAINING
        self.signal(signum)

    def kill(self, reason: ExitReason) -> None:
        """SIGKILL now."""
        self.reason = self.reason or reason
        self.state = State.KILLED
        self.kill_at = None
        self.signal(signal.SIGKILL)

    def poll(self) -> int | None:
        """Reaps the process if it has ended and returns its wait status, else None."""
        return self.system.reap(self.pid)

    def heard(self) -> None:
        """The process said something: it is alive."""
        self.last_heard = self.system.clock()

    def read_messages(self) -> list[bytes]:
        """Reads everything the child has sent so far, up to EOF or what is buffered."""
        messages: list[bytes] = []
        while self.channel is not None:
            try:
                data = self.channel.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                self.close()
                break
            self.heard()
            messages += self._reader.feed(data)
        return messages

    def close(self) -> None:
        """Closes the parent's end of the channel."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None


_HANDED = [f for f in dataclasses.fields(Process) if f.metadata.get("handover")]


@dataclasses.dataclass(frozen=True)
class Deadlines:
    """The supervisor's timing settings that `due` needs."""

    ready_timeout: float
    timeout: float
    max_worker_age: float


def due(process: Process, limits: Deadlines) -> tuple[float, Action] | None:
    """The next thing the parent must do about ``process``, and when; None if nothing.

    The one place that orders a process's deadlines.
    """
    if process.state is State.KILLED:
        return None
    if process.state is State.DRAINING:
        assert process.kill_at is not None
        return process.kill_at, Action.KILL
    if process.state is State.STARTING:
        if not limits.ready_timeout:
            return None
        return process.started_at + limits.ready_timeout, Action.NOT_READY
    candidates = []
    if limits.timeout:
        candidates.append((process.last_heard + limits.timeout, Action.HUNG))
    if limits.max_worker_age and not process.recycle:
        candidates.append((process.started_at + limits.max_worker_age, Action.AGED))
    return min(candidates, default=None, key=lambda c: c[0])


def describe(status: int) -> str:
    """A wait status in words: ``status 3`` or ``signal 9``."""
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"status {os.WEXITSTATUS(status)}"
