"""The parent's view of its children: one `Worker` per process, one `Slot` per task id."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time

from tornado_prefork import _channel


@dataclasses.dataclass
class Child:
    """What the supervisor returns in a newly forked child.

    ``task_id`` is the slot the child fills; ``seat`` is a small number no
    other live worker has (two workers share a task id during a reload).
    """

    task_id: int
    channel: socket.socket
    seat: int


class Worker:
    """One child process as the parent sees it, with the deadlines that concern it."""

    def __init__(self, slot: int, seat: int, pid: int, channel: socket.socket, ready: bool) -> None:
        self.slot = slot
        self.seat = seat
        self.pid = pid
        self.channel: socket.socket | None = channel
        self.ready = ready
        self.started_at = time.monotonic()
        self.last_heard = self.started_at
        # Why the child could not start, as it reported over the channel.
        self.boot_error: str | None = None
        # When to SIGKILL it: set once it was told to stop (SIGTERM or SIGABRT).
        self.kill_at: float | None = None
        # SIGKILL was sent: nothing more to do but reap it.
        self.killed = False
        # Told to drain because it was replaced or its slot removed.
        self.retired = False
        # A successor was asked for (max_requests, max_worker_age).
        self.replacing = False
        self._reader = _channel.Reader()

    def __repr__(self) -> str:
        return f"<Worker {self.slot} pid {self.pid}>"

    def signal(self, signum: int) -> None:
        """Sends ``signum``; a process that is already gone is not an error."""
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def terminate(self, grace: float) -> None:
        """SIGTERM now, SIGKILL when ``grace`` seconds have passed (unless sooner)."""
        deadline = time.monotonic() + grace
        if self.kill_at is None or deadline < self.kill_at:
            self.kill_at = deadline
        self.signal(signal.SIGTERM)

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
            data = self.channel.recv(65536)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            self.close()
            return []
        self.last_heard = time.monotonic()
        return self._reader.feed(data)

    def close(self) -> None:
        """Closes the parent's end of the channel."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None


@dataclasses.dataclass
class Slot:
    """One task id: its worker, and the one forked to replace it, if any."""

    worker: Worker | None = None
    successor: Worker | None = None
    fast_failures: int = 0
    # When to fork the slot's next worker; None when none is wanted.
    restart_at: float | None = None

    def members(self) -> list[Worker]:
        return [w for w in (self.worker, self.successor) if w is not None]
