"""Creating one child process: the fork itself, its channel, and a sidecar's life.

Signals the parent handles are blocked around ``fork()``, so that one sent to
a new child before it has restored the default dispositions is not swallowed
by the parent's handlers: it stays pending and is delivered once the child
unblocks it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import NoReturn

from tornado.log import gen_log

HANDLED = (
    signal.SIGCHLD,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
)


@dataclasses.dataclass(frozen=True)
class Sidecar:
    """A small supervised process that is not a request worker (a metrics
    endpoint, a file watcher).

    Forked before the workers with the same start as a worker (default signal
    dispositions, parent-death signal, none of the parent's descriptors but the
    ones inherited on purpose); ``run`` is called in it and the process ends
    when it returns (status 0) or raises (status 1). Restarted with backoff if
    it ends outside a stop; untouched by reloads and scaling; stopped with
    SIGTERM once every worker has ended.
    """

    name: str
    run: Callable[[], None]


# Exit status of a child whose start (before any user code) failed.
START_FAILED = 70


def fork(with_channel: bool) -> tuple[int, socket.socket | None, set[int | signal.Signals]]:
    """Forks with the handled signals blocked.

    Returns ``(pid, channel, mask)``: in the parent the child's pid and the
    parent's end of a new channel (non-blocking), with the signal mask already
    restored; in the child 0 and the child's end, with the signals still
    blocked: the child unblocks them (`unblock`) once it is set up. Raises
    `OSError` when the channel or the process cannot be created, leaving
    nothing open.
    """
    pair = socket.socketpair() if with_channel else None
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if pair is not None:
            pair[0].close()
            pair[1].close()
        raise
    if pid == 0:
        if pair is None:
            return 0, None, mask
        pair[0].close()
        return 0, pair[1], mask
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if pair is None:
        return pid, None, mask
    pair[1].close()
    pair[0].setblocking(False)
    return pid, pair[0], mask


def unblock(mask: set[int | signal.Signals]) -> None:
    """In the child, once set up: the signal mask from before the fork."""
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def run_sidecar(sidecar: Sidecar) -> NoReturn:
    """Runs ``sidecar`` in this (new) process and ends it: status 0 when ``run``
    returns, 1 when it raises."""
    code = 0
    try:
        sidecar.run()
    except BaseException:
        gen_log.exception("%s failed", sidecar.name)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
