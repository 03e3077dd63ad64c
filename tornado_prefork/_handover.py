"""Reloading in place: the parent re-executes itself and hands over what lives on.

When the application's code lives in the parent (preload), a reload cannot
un-import it. The parent runs the same command again with ``execve``: the pid
stays, so systemd, the pid file and ``kill -HUP $(cat pidfile)`` keep
working, and the new image imports the new code. What must survive the exec
is handed over in one environment variable (as systemd's ``LISTEN_FDS``
does): the listening sockets, the shared accept board, and every process
with its channel (those on their way out too, so that they are reaped). The
new image adopts the processes as the old generation and replaces them as a
rolling reload does, each new worker ready before an old one drains.

The signals the supervisor handles are blocked across the exec, so that a
SIGHUP or SIGTERM that comes while the new image imports is delivered once
its handlers are installed (`tornado_prefork._wakeup`), not acted on by the
default disposition, which would end the parent and with it every worker.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
from typing import Any

from tornado_prefork import _spawn

ENV = "TORNADO_PREFORK_HANDOVER"


@dataclasses.dataclass(frozen=True)
class Adopted:
    """One live process handed from one image to the next."""

    name: str
    slot: int
    seat: int
    pid: int
    channel_fd: int | None
    generation: int
    state: str
    started_at: float
    # Set for a process on its way out: when SIGKILL follows, and why it goes.
    kill_at: float | None = None
    reason: str | None = None


@dataclasses.dataclass
class Handover:
    """Everything a re-executed parent takes over."""

    processes: list[Adopted]
    generation: int
    count: int
    listen_fds: list[int] = dataclasses.field(default_factory=list)
    board_fd: int | None = None
    # Descriptors of other parts of the server (the metrics endpoint's).
    extra_fds: list[int] = dataclasses.field(default_factory=list)
    # Paths and names the server keeps (the unix socket, the metrics directory).
    extras: dict[str, str] = dataclasses.field(default_factory=dict)

    def fds(self) -> list[int]:
        """Every descriptor that must stay open across the exec."""
        channels = [p.channel_fd for p in self.processes if p.channel_fd is not None]
        board = [] if self.board_fd is None else [self.board_fd]
        return self.listen_fds + board + self.extra_fds + channels

    def encode(self) -> str:
        """The handover as text for the environment."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def decode(cls, text: str) -> Handover:
        """The inverse of `encode`; raises `ValueError` for text that is not one."""
        try:
            data: dict[str, Any] = json.loads(text)
            processes = [Adopted(**p) for p in data.pop("processes")]
            return cls(processes=processes, **data)
        except (TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"malformed {ENV}: {e}") from e


def take() -> Handover | None:
    """In a re-executed parent: the handover, removed from the environment so that
    no worker or program it runs sees it; None in a parent started afresh.

    The descriptors handed over are made non-inheritable again.
    """
    text = os.environ.pop(ENV, None)
    if text is None:
        return None
    handover = Handover.decode(text)
    for fd in handover.fds():
        os.set_inheritable(fd, False)
    return handover


def reexec(handover: Handover) -> None:
    """Runs this process's own command line again, in place, handing ``handover`` over.

    Does not return when the exec succeeds. Raises `OSError` when it fails,
    with everything as it was before the call.
    """
    argv = [sys.executable, *sys.orig_argv[1:]]
    env = {**os.environ, ENV: handover.encode()}
    fds = handover.fds()
    for fd in fds:
        os.set_inheritable(fd, True)
    # Blocked across the exec; the new image unblocks them once it handles them.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _spawn.HANDLED)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in fds:
            os.set_inheritable(fd, False)
        raise
