"""A worker's accept loop: balanced between siblings, paused when out of descriptors.

Tornado's `tornado.netutil.add_accept_handler` takes every connection it can
and lets an ``EMFILE`` escape: the event loop logs it and calls the handler
again at once, because the connection is still waiting. A worker at its open
file limit then spins on one CPU and writes tens of thousands of log lines a
second. Here, as in asyncio's own servers, accepting pauses for `PAUSE`
seconds instead; connections wait in the listen backlog (where a sibling
sharing the socket may take them) until descriptors are free again.

Leaving connections to siblings (the accept board) must not leave them
waiting in the listen queue: once it is full the kernel drops new SYNs, and
each of those clients tries again only after a second. So a worker never
holds back while the queue is nearly full (`NEVER_HOLD_AT`); and once the
siblings with fewer connections have taken none for `STUCK` (busy in a long
computation, or stopped), each hold that ends takes every connection that
waited through it, where one connection per `HOLD` would drain a burst of
1,000 connects in 5 s.
"""

from __future__ import annotations

import enum
import errno
import math
import os
import resource
import socket
import time
from collections.abc import Callable
from typing import Any

from tornado.ioloop import IOLoop
from tornado.log import gen_log

from tornado_prefork._supervisor import children as _children
from tornado_prefork._system.sockets import accept_queue
from tornado_prefork._worker.board import HOLD

# At most this many connections are taken per wake-up of the listening socket,
# as in Tornado; but the board is asked before each one, so a worker stops as
# soon as it holds more than its share and its siblings take the rest.
ACCEPTS_PER_WAKEUP = 128

# The share of the backlog in force that, once waiting in the listen queue,
# is taken without asking the board: a burst still arriving is about to have
# its SYNs dropped. Not lower: a burst of connections that fits in the queue
# is still shared out.
NEVER_HOLD_AT = 0.875

# How long a worker leaves connections to siblings that shorten the listen
# queue by none before it stops waiting for them one connection at a time:
# longer than a worker waits for a CPU when workers outnumber CPUs (tens of
# milliseconds with 24 workers on 2 CPUs), short against a client's patience.
STUCK = 0.1

# accept() fails this way when this process (EMFILE) or the whole system
# (ENFILE) has no descriptor left, or the kernel no memory for the socket;
# trying again at once fails the same way.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# How long accepting pauses then (asyncio's servers wait as long).
PAUSE = 1.0
# Linux reports a network error already pending on the new connection as an
# error of accept() itself (see accept(2)): that connection is lost, the
# next one may be fine.
LOST_CONNECTION = frozenset(
    {
        errno.ECONNABORTED,
        errno.EPROTO,
        errno.ENETDOWN,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        errno.ENONET,
        errno.EHOSTUNREACH,
        errno.EOPNOTSUPP,
        errno.ENETUNREACH,
        errno.EPERM,  # a firewall rule refused it
    }
)


class _State(enum.Enum):
    WATCHING = "watching"  # the event loop calls us when a connection waits
    PAUSED = "paused"  # out of resources: looking again after PAUSE seconds
    REMOVED = "removed"  # the server stopped


def add_accept_handler(
    sock: socket.socket,
    callback: Callable[[socket.socket, Any], None],
    should_accept: Callable[[], bool],
) -> Callable[[], None]:
    """Like `tornado.netutil.add_accept_handler`: calls ``callback(connection,
    address)`` for each connection accepted on ``sock`` and returns the
    function that stops watching it.

    Takes up to `ACCEPTS_PER_WAKEUP` at a time, but leaves a connection to a
    sibling while ``should_accept()`` says so, for at most `HOLD` seconds. On
    a TCP socket, whose queue the kernel reports, it never leaves one while
    the queue is at least `NEVER_HOLD_AT` full, and once the siblings have
    taken none for `STUCK` seconds, a hold that ends takes every connection
    that waited through it. Out
    of descriptors (`OUT_OF_RESOURCES`), it pauses for `PAUSE` seconds at a
    time and logs one warning per episode. A connection that failed before it
    was accepted (`LOST_CONNECTION`) is skipped. Other errors of ``accept()``
    propagate, as in Tornado.
    """
    return _Acceptor(sock, callback, should_accept).remove


class _Acceptor:
    def __init__(
        self,
        sock: socket.socket,
        callback: Callable[[socket.socket, Any], None],
        should_accept: Callable[[], bool],
    ) -> None:
        self._sock = sock
        self._callback = callback
        self._should_accept = should_accept
        self._loop = IOLoop.current()
        self._state = _State.WATCHING
        self._resume: object = None
        # When this worker began to leave the waiting connection to its
        # siblings; minus infinity once it took one, or the siblings caught up.
        self._holding_since = -math.inf
        # How many connections waited when that hold began.
        self._waited = 0
        # Since when it has been holding back with no pause longer than 2 *
        # HOLD and without the siblings catching up; and when it last did.
        self._ahead_since = -math.inf
        self._last_hold = -math.inf
        # Connections to take without asking the board: those that waited
        # for a whole hold while the siblings were stuck.
        self._overdue = 0
        # From the first failure of an episode until nothing waits to be
        # accepted: one warning per episode, however many pauses it takes.
        self._starved = False
        self._loop.add_handler(sock, self._on_readable, IOLoop.READ)

    def remove(self) -> None:
        if self._state is _State.WATCHING:
            self._loop.remove_handler(self._sock)
        elif self._state is _State.PAUSED:
            self._loop.remove_timeout(self._resume)
        self._state = _State.REMOVED

    def _on_readable(self, fd: socket.socket, events: int) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            if self._state is not _State.WATCHING:
                return
            if self._overdue > 0:
                self._overdue -= 1
            elif self._should_accept():
                # The siblings have caught up: a later hold is a new one.
                self._holding_since = self._last_hold = -math.inf
            elif self._hold():
                return
            try:
                connection, address = self._sock.accept()
            except BlockingIOError:
                # Nothing waits (a sibling took it: the socket is shared):
                # whatever the shortage was, this worker has caught up.
                self._starved = False
                self._overdue = 0
                return
            except OSError as e:
                if e.errno in LOST_CONNECTION:
                    continue
                if e.errno not in OUT_OF_RESOURCES:
                    raise
                self._pause(e)
                return
            # The next connection gets a hold of its own.
            self._holding_since = -math.inf
            self._callback(connection, address)

    def _hold(self) -> bool:
        """Whether to leave the waiting connection to a sibling a while longer."""
        queue = accept_queue(self._sock)
        waiting = 0
        if queue is not None:
            waiting, limit = queue
            if waiting >= limit * NEVER_HOLD_AT:
                return False
        now = time.monotonic()
        if now - self._last_hold > 2 * HOLD:
            self._ahead_since = now
        self._last_hold = now
        if now - self._holding_since > 2 * HOLD:
            self._holding_since = now
            self._waited = waiting
        # Still registered: the event loop wakes us again while the connection
        # waits, and a sibling usually takes it within microseconds. One that
        # is stuck does not.
        if now - self._holding_since < HOLD:
            # That wake-up comes at once: on a CPU shared with the sibling,
            # this worker would keep it from running (and from taking the
            # connection) until the scheduler preempts it.
            os.sched_yield()
            return True
        if waiting < self._waited:
            # Siblings took some meanwhile: slow to be scheduled, not stuck.
            self._ahead_since = now
        elif now - self._ahead_since >= STUCK:
            # No sibling has shortened the queue for a while: they are busy
            # or stopped. Rather than one connection per HOLD, take every one
            # that waited for the whole hold (the oldest, first in the queue).
            self._overdue = max(0, self._waited - 1)
        return False

    def _pause(self, error: OSError) -> None:
        if not self._starved:
            self._starved = True
            soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            gen_log.warning(
                "worker %s (pid %d) cannot accept on %s: %s (open file limit %d); "
                "trying again every %.0f s until connections close",
                _children.task_id(),
                os.getpid(),
                _name(self._sock),
                os.strerror(error.errno or 0),
                soft_limit,
                PAUSE,
            )
        self._loop.remove_handler(self._sock)
        self._state = _State.PAUSED
        self._resume = self._loop.call_later(PAUSE, self._watch_again)

    def _watch_again(self) -> None:
        if self._state is _State.PAUSED:
            self._state = _State.WATCHING
            self._loop.add_handler(self._sock, self._on_readable, IOLoop.READ)


def _name(sock: socket.socket) -> str:
    try:
        where = sock.getsockname()
    except OSError:
        return f"fd {sock.fileno()}"
    if isinstance(where, tuple):
        return f"{where[0]}:{where[1]}"
    return str(where)
