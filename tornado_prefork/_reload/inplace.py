"""serve()'s reload when the application's code lives in the parent.

A parent that imported the application (preload, or an application object
built before `tornado_prefork.serve`) cannot un-import it, so a reload runs
the same command again in place (`tornado_prefork._supervisor.handover`), once the
same command has passed its check in a child (`tornado_prefork._reload.check`):
new code that cannot load leaves the old workers serving, with its error
shown once. The listening sockets and the processes are handed over, and
the new image's `serve()` takes them instead of binding.
"""

from __future__ import annotations

import json
import socket

from tornado_prefork._supervisor import handover as _handover
from tornado_prefork._supervisor.handover import Handover
from tornado_prefork._system import sockets as _sockets
from tornado_prefork._worker.board import Board


def reexec(handover: Handover, listeners: _sockets.Listeners, board: Board | None) -> str:
    """Re-executes this parent with ``handover``, ``listeners`` and ``board``;
    returns why it could not (it does not return when it works)."""
    handover.listen_fds = [sock.fileno() for sock in listeners.sockets]
    handover.board_fd = None if board is None else board.fd
    handover.extras["urls"] = json.dumps(listeners.urls)
    handover.extras["backlog"] = str(listeners.backlog)
    if listeners.unix_path is not None:
        handover.extras["unix_path"] = listeners.unix_path
    if listeners.reuse_port:
        handover.extras["reuse_port"] = "1"
    return _handover.reexec(handover)


def listeners(handover: Handover) -> _sockets.Listeners:
    """The listening sockets a re-executed parent was handed."""
    sockets = []
    for fd in handover.listen_fds:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        sockets.append(sock)
    return _sockets.Listeners(
        sockets,
        json.loads(handover.extras["urls"]),
        unix_path=handover.extras.get("unix_path"),
        reuse_port="reuse_port" in handover.extras,
        backlog=int(handover.extras["backlog"]),
    )


def board(handover: Handover | None, reuse_port: bool) -> Board | None:
    """The accept board: the one handed over (its workers still on it), or a new one.

    None with ``reuse_port``, where the kernel spreads the connections.
    """
    if reuse_port:
        return None
    if handover is not None and handover.board_fd is not None:
        return Board.adopt(handover.board_fd)
    return Board()
