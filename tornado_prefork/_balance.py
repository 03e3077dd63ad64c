"""Spreading connections across workers that share one listening socket.

Every worker waiting on the shared socket is woken for a new connection and
the first to call ``accept()`` wins; the worker that happens to be running
takes a whole burst (64 keep-alive clients split 59/5 or 64/0). Each worker
publishes how many connections it has open on a board in memory shared by all
workers (mapped before the fork), and leaves a connection to its siblings
while it has more than the least loaded of them. A sibling that is dead or
stuck cannot take it, so a worker that held back takes the connection anyway
after `HOLD` seconds.
"""

from __future__ import annotations

import mmap

# How many more open connections than the least loaded sibling a worker may
# have: SLACK, or a quarter of the sibling's count when that is more. Even
# counts would make workers contend for every connection under churn.
SLACK = 1
# How long a worker leaves a pending connection to its siblings.
HOLD = 0.005


class Board:
    """Open connections per worker seat, shared between processes.

    Created in the parent before the first fork, with room for ``seats``
    workers (seats are handed out by the supervisor; a worker whose seat does
    not fit simply always accepts). Each seat has a single writer at a time,
    and aligned 8-byte stores are atomic, so no lock is needed. A vacant seat
    holds -1.
    """

    def __init__(self, seats: int) -> None:
        self.seats = max(1, seats)
        self._memory = mmap.mmap(-1, 8 * self.seats)
        self._counts = memoryview(self._memory).cast("q")
        for seat in range(self.seats):
            self._counts[seat] = -1

    def publish(self, seat: int, open_connections: int) -> None:
        """Records the number of connections the worker in ``seat`` has open."""
        if seat < self.seats:
            self._counts[seat] = open_connections

    def vacate(self, seat: int) -> None:
        """The worker in ``seat`` is gone (called by the parent when it is reaped)."""
        self.publish(seat, -1)

    def should_accept(self, seat: int) -> bool:
        """True unless a sibling has clearly fewer connections open than ``seat``."""
        if seat >= self.seats:
            return True
        counts = self._counts
        others = [counts[i] for i in range(self.seats) if i != seat and counts[i] >= 0]
        if not others:
            return True
        least = min(others)
        return counts[seat] <= least + max(SLACK, least // 4)
