"""Spreading connections across workers that share one listening socket.

Every worker waiting on the shared socket is woken for a new connection and
the first to call ``accept()`` wins; the worker that happens to be running
takes a whole burst (64 keep-alive clients split 59/5 or 64/0). Each worker
publishes how many connections it has open on a board in memory shared by all
workers (mapped before the fork), and leaves a connection to its siblings
while it has more than the least loaded of them. A sibling that is dead or
stuck cannot take it, so a worker that held back takes the connection anyway
after `HOLD` seconds (and, once its siblings have taken none for a while,
every connection that waited as long: `tornado_prefork._worker.accept`).
"""

from __future__ import annotations

import mmap
import os

# How many more open connections than the least loaded sibling a worker may
# have: SLACK, or a quarter of the sibling's count when that is more. Even
# counts would make workers contend for every connection under churn.
SLACK = 1
# How long a worker leaves a pending connection to its siblings.
HOLD = 0.005
# Seats on every board: more workers than SIGTTIN will sensibly reach (a
# seat is the lowest number no other live worker has, so seats stay below the
# number of workers alive at once, draining ones included). 8 KiB of memory;
# a worker scans only the seats in use.
SEATS = 1024
# What a seat nobody sits in holds: larger than any count, so that the least
# of the counts is a live worker's whenever there is one.
VACANT = 1 << 62


class Board:
    """Open connections per worker seat, shared between processes.

    Created in the parent before the first fork. Holds `SEATS` seats (a worker
    whose seat does not fit simply always accepts) and one word, the number
    of seats in use (one past the highest seat taken), so that checking costs
    the same with 2 workers whatever the capacity. Each seat has a single
    writer at a time, and aligned 8-byte stores are atomic, so no lock is
    needed.

    The seats-in-use word is raised by the workers and lowered by the parent
    when it vacates a seat. Two writers can race there (a worker raising it
    while the parent lowers it); each `publish` raises it again if needed, so
    a newcomer is at worst unseen by its siblings until its next connection.

    The memory is a memfd, `fd`, so that a parent that re-executes itself can
    hand the board to its new image (`adopt`) with the workers still on it.
    """

    def __init__(self, seats: int = SEATS, *, fd: int | None = None) -> None:
        if fd is None:
            self.seats = max(1, seats)
            self.fd = os.memfd_create("tornado-prefork-board")
            os.ftruncate(self.fd, 8 * (self.seats + 1))
        else:
            self.fd = fd
            self.seats = os.fstat(fd).st_size // 8 - 1
        self._memory = mmap.mmap(self.fd, 8 * (self.seats + 1))
        words = memoryview(self._memory).cast("q")
        self._in_use = words[:1]
        self._counts = words[1:]
        if fd is None:
            for seat in range(self.seats):
                self._counts[seat] = VACANT
            self._in_use[0] = 0

    @classmethod
    def adopt(cls, fd: int) -> Board:
        """The board whose memfd is ``fd`` (a board's `fd`, handed over across
        an exec), as its workers left it. Raises `OSError` for a bad ``fd``."""
        return cls(fd=fd)

    def close_fd(self) -> None:
        """Closes `fd` (in a worker, which never hands the board over); the
        memory stays mapped and shared."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @property
    def in_use(self) -> int:
        """One past the highest seat taken: the seats a check looks at."""
        return self._in_use[0]

    def _fits(self, seat: int) -> bool:
        # Sidecars have seat -1; a seat past the board is not on it either.
        return 0 <= seat < self.seats

    def publish(self, seat: int, open_connections: int) -> None:
        """Records the number of connections the worker in ``seat`` has open."""
        if self._fits(seat):
            self._counts[seat] = open_connections
            if self._in_use[0] <= seat:
                self._in_use[0] = seat + 1

    def vacate(self, seat: int) -> None:
        """The worker in ``seat`` is gone (called by the parent when it is reaped)."""
        if not self._fits(seat):
            return
        self._counts[seat] = VACANT
        if self._in_use[0] == seat + 1:
            taken = [
                i for i, count in enumerate(self._counts[: seat + 1].tolist()) if count < VACANT
            ]
            self._in_use[0] = taken[-1] + 1 if taken else 0

    def should_accept(self, seat: int) -> bool:
        """True unless a sibling has clearly fewer connections open than ``seat``."""
        if not self._fits(seat):
            return True
        counts = self._counts[: max(self._in_use[0], seat + 1)].tolist()
        mine = counts[seat]
        counts[seat] = VACANT
        least = min(counts)
        if least == VACANT:
            return True
        return mine <= least + max(SLACK, least // 4)
