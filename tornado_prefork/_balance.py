"""Spreading connections across workers that share one listening socket.

Every worker waiting on the shared socket is woken for a new connection and
the first to call ``accept()`` wins; the worker that happens to be running
takes a whole burst (64 keep-alive clients split 59/5 or 64/0). Each worker
publishes how many connections it has open on a board in memory shared by all
workers (mapped before the fork), and leaves a connection to its siblings
while it has more than the least loaded of them. A sibling that is dead or
stuck cannot take it, so a worker that held back takes the connection anyway
after `DEFER` seconds.
"""

from __future__ import annotations

import mmap

# How many more open connections than the least loaded sibling a worker may have.
SLACK = 1
# How long a worker leaves a pending connection to its siblings.
DEFER = 0.005


class Board:
    """Open connections per worker slot, shared between processes.

    Created in the parent before the fork. Each slot has a single writer (its
    worker), and aligned 8-byte stores are atomic, so no lock is needed.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._memory = mmap.mmap(-1, 8 * max(1, slots))
        self._counts = memoryview(self._memory).cast("q")

    def publish(self, slot: int, open_connections: int) -> None:
        """Records the number of connections ``slot``'s worker has open."""
        self._counts[slot] = open_connections

    def should_accept(self, slot: int) -> bool:
        """True unless a sibling has clearly fewer connections open than ``slot``."""
        if self.slots < 2:
            return True
        mine = self._counts[slot]
        least = min(self._counts[i] for i in range(self.slots) if i != slot)
        return mine <= least + SLACK
