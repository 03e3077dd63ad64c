"""What the parent tells the metrics endpoint process: memory shared before the fork."""

from __future__ import annotations

import enum
import fcntl
import mmap
import os
import tempfile


class Phase(enum.IntEnum):
    """Where the server is in its life, as `/healthz` sees it."""

    STARTING = 0
    SERVING = 1
    STOPPING = 2


class Health:
    """The parent's state for the endpoint process, in memory shared before the fork.

    The parent is the only writer; aligned 8-byte stores are atomic, so the
    reader never sees half a number. The phase lives here alone: the parent
    reads it back, and a parent re-executed in place goes on from the one
    the image before it left. The memory is a file descriptor's
    (``fd``, Linux ``memfd``), so that a parent that re-executes itself can
    map the same memory again, the one the running endpoint process reads:
    ``Health(fd)`` maps an existing one.
    """

    _PHASE, _READY, _ALIVE = range(3)
    _SIZE = 8 * 3

    def __init__(self, fd: int | None = None) -> None:
        self.fd: int = _shared_memory(self._SIZE) if fd is None else fd
        self._memory = mmap.mmap(self.fd, self._SIZE)
        self._fields = memoryview(self._memory).cast("q")

    def publish_workers(self, ready: int, alive: int) -> None:
        """Called by the parent with the fleet's counts whenever they may have changed."""
        self._fields[self._READY] = ready
        self._fields[self._ALIVE] = alive

    def workers_changed(self, ready: int, alive: int) -> None:
        """The fleet's counts of workers: the server serves from its first ready one on."""
        self.publish_workers(ready, alive)
        if ready and self.phase is Phase.STARTING:
            self.publish_phase(Phase.SERVING)

    def publish_phase(self, phase: Phase) -> None:
        """Called by the parent when the server's phase changes."""
        self._fields[self._PHASE] = phase

    @property
    def phase(self) -> Phase:
        return Phase(self._fields[self._PHASE])

    @property
    def ready(self) -> int:
        """Workers that said they are ready and have not been reaped."""
        return self._fields[self._READY]

    @property
    def alive(self) -> int:
        """Workers forked and not yet reaped (successors and draining ones included)."""
        return self._fields[self._ALIVE]

    def problem(self) -> str | None:
        """Why the server should take no new traffic now, or None if it should."""
        phase = self.phase
        if phase is not Phase.SERVING:
            return phase.name.lower()
        if self.ready < 1:
            return "no worker is ready"
        return None

    def hold(self, wait: bool) -> bool:
        """Takes the lock that keeps a scrape and the parent's folding of the
        files of ended workers apart: a scrape sees a fold done or not begun.
        The parent never waits (``wait`` False: whether it got the lock); the
        endpoint waits for it.

        A POSIX record lock on the shared memory's descriptor: it belongs to a
        process, not to the descriptor both share, and outlives the directory.
        """
        if wait:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
            return True
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            # Held (EAGAIN, EACCES), or no lock to be had: the fold waits.
            return False
        return True

    def release(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN)


def _shared_memory(size: int) -> int:
    """A descriptor of ``size`` bytes of memory that only it names."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("tornado-prefork-health")
    else:
        fd, path = tempfile.mkstemp(prefix="tornado-prefork-health-")
        os.unlink(path)
    os.ftruncate(fd, size)
    return fd
