"""A worker's accept loop: balanced between siblings, paused when out of descriptors.

Tornado's `tornado.netutil.add_accept_handler` takes every connection it can
and lets an ``EMFILE`` escape: the event loop logs it and calls the handler
again at once, because the connection is still waiting. A worker at its open
file limit then spins on one CPU and writes tens of thousands of log lines a
second. Here, as in asyncio's own servers, accepting pauses for `PAUSE`
seconds instead; connections wait in the listen backlog (where a sibling
sharing the socket may take them) until descriptors are free again.
"""

from __future__ import annotations

import enum
import errno
import os
import resource
import socket
import time
from collections.abc import Callable
from typing import Any

from tornado.ioloop import IOLoop
from tornado.log import gen_log

from tornado_prefork import process
from tornado_prefork._balance import HOLD

# At most this many connections are taken per wake-up of the listening socket,
# as in Tornado; but the board is asked before each one, so a worker stops as
# soon as it holds more than its share and its siblings take the rest.
ACCEPTS_PER_WAKEUP = 128

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
    sibling while ``should_accept()`` says so, for at most `HOLD` seconds. Out
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
        # When this worker began to leave the waiting connection to its siblings.
        self._holding_since = 0.0
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
            if not self._should_accept() and self._hold():
                return
            try:
                connection, address = self._sock.accept()
            except BlockingIOError:
                # Nothing waits (a sibling took it: the socket is shared):
                # whatever the shortage was, this worker has caught up.
                self._starved = False
                return
            except OSError as e:
                if e.errno in LOST_CONNECTION:
                    continue
                if e.errno not in OUT_OF_RESOURCES:
                    raise
                self._pause(e)
                return
            self._holding_since = 0.0
            self._callback(connection, address)

    def _hold(self) -> bool:
        """Whether to leave the waiting connection to a sibling a while longer."""
        now = time.monotonic()
        if now - self._holding_since > 2 * HOLD:
            # No wake-up for a while: the last one was taken, this is new.
            self._holding_since = now
        # Still registered: the event loop wakes us again while the connection
        # waits, and a sibling usually takes it within microseconds. One that
        # is stuck does not.
        return now - self._holding_since < HOLD

    def _pause(self, error: OSError) -> None:
        if not self._starved:
            self._starved = True
            soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            gen_log.warning(
                "worker %s (pid %d) cannot accept on %s: %s (open file limit %d); "
                "trying again every %.0f s until connections close",
                process.task_id(),
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
