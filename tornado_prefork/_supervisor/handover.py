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
its handlers are installed (`tornado_prefork._supervisor.signals`), not acted on by the
default disposition, which would end the parent and with it every worker.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import sys
from typing import Any

from tornado.log import gen_log

from tornado_prefork._supervisor import spawn as _spawn
from tornado_prefork._supervisor.record import SYSTEM, Process, State, System

ENV = "TORNADO_PREFORK_HANDOVER"


#: The handover's shape. 1: before the schema had a number (processes without
#: ``last_heard``, ``ever_ready``, ``recycle`` and ``boot_error``); 2: each
#: process is its own record (`Process.record`) beside its channel's descriptor.
SCHEMA = 2


@dataclasses.dataclass
class Handover:
    """Everything a re-executed parent takes over."""

    processes: list[Process]
    generation: int
    count: int
    listen_fds: list[int] = dataclasses.field(default_factory=list)
    board_fd: int | None = None
    # Descriptors of other parts of the server (the metrics endpoint's).
    extra_fds: list[int] = dataclasses.field(default_factory=list)
    # Paths and names the server keeps (the unix socket, the metrics directory).
    extras: dict[str, str] = dataclasses.field(default_factory=dict)
    # The supervisor's settings (`Settings.supervisor_record`), for a new image that
    # cannot read its own (`tornado_prefork._reload.keeper`).
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    def fds(self) -> list[int]:
        """Every descriptor that must stay open across the exec."""
        channels = [p.channel.fileno() for p in self.processes if p.channel is not None]
        board = [] if self.board_fd is None else [self.board_fd]
        return self.listen_fds + board + self.extra_fds + channels

    def encode(self) -> str:
        """The handover as text for the environment."""
        data = dataclasses.asdict(dataclasses.replace(self, processes=[]))
        data["version"] = SCHEMA
        data["processes"] = [
            {**p.record(), "channel_fd": None if p.channel is None else p.channel.fileno()}
            for p in self.processes
        ]
        return json.dumps(data)

    @classmethod
    def decode(cls, text: str, system: System = SYSTEM) -> Handover:
        """The inverse of `encode`, for this schema and the one before; fields it
        does not know are ignored. The channels become sockets again. Raises
        `ValueError` for text that is not a handover."""
        try:
            data: dict[str, Any] = json.loads(text)
            version = data.get("version", 1)
            processes = [_process(p, version, system) for p in data["processes"]]
            known = {f.name for f in dataclasses.fields(cls)} - {"processes"}
            return cls(processes=processes, **{k: v for k, v in data.items() if k in known})
        except (TypeError, KeyError, AttributeError, ValueError, OSError) as e:
            raise ValueError(f"malformed {ENV}: {e}") from e


def _process(record: dict[str, Any], version: int, system: System) -> Process:
    fd = record.get("channel_fd")
    if version < 2:
        # Never heard of since the exec: it was heard of until then, as far as
        # that image could tell (it read every heartbeat). Its start time would
        # declare every worker older than ``timeout`` hung at once.
        record = {"last_heard": system.clock(), **record}
        record.setdefault("ever_ready", record.get("state") != State.STARTING.value)
    channel = None
    if fd is not None:
        channel = socket.socket(fileno=fd)
        channel.setblocking(False)
    return Process.from_record(record, channel, system)


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


def command() -> list[str]:
    """This process's own command line, as the interpreter it runs."""
    return [sys.executable, *sys.orig_argv[1:]]


def reexec(handover: Handover) -> str:
    """Runs this process's own command line again, in place, handing ``handover`` over.

    Does not return when the exec succeeds. When it fails, returns why, with
    everything as it was before the call.
    """
    argv = command()
    gen_log.info("reloading in place: running %s again", " ".join(sys.orig_argv))
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
    except OSError as e:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in fds:
            os.set_inheritable(fd, False)
        return f"cannot run {sys.executable}: {e}"
    raise AssertionError("execve returned")
