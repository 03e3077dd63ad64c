"""serve()'s reload when the application's code lives in the parent.

A parent that imported the application (preload, or an application object
built before `tornado_prefork.serve`) cannot un-import it, so a reload runs
the same command again in place (`tornado_prefork._handover`). First the new
code is checked in a throwaway interpreter: a module that no longer imports
leaves the old workers serving, with its error shown once, instead of a new
parent that fails half-way. Then the listening sockets and the processes are
handed over, and the new image's `serve()` takes them instead of binding.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from tornado_prefork import _handover, _sockets
from tornado_prefork._app import AppSource
from tornado_prefork._balance import Board
from tornado_prefork._handover import Handover

# A throwaway interpreter that imports one module with this process's import path.
_IMPORT = (
    "import importlib, json, sys\n"
    "sys.path[:] = json.loads(sys.argv[1])\n"
    "importlib.import_module(sys.argv[2])\n"
)
_TAIL = 12


def code_in_parent(source: AppSource) -> bool:
    """Whether the workers are built from code imported in the parent."""
    return not isinstance(source, str)


def check_new_code(app: AppSource, timeout: float) -> str | None:
    """Imports, in a new interpreter with this one's import path and directory,
    the module the application comes from. Returns the end of its traceback
    when it fails (or takes longer than ``timeout`` seconds), else None.

    A script run as ``__main__`` cannot be imported without running it: its
    source is compiled instead.
    """
    module = _module_of(app)
    if module == "__main__":
        return _compile_main()
    try:
        result = subprocess.run(
            [sys.executable, "-c", _IMPORT, json.dumps(sys.path), module],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"importing {module} took longer than {timeout:.0f} s"
    if result.returncode == 0:
        return None
    tail = result.stderr.strip().splitlines()[-_TAIL:]
    return f"importing {module} failed:\n" + "\n".join(tail)


def _module_of(app: AppSource) -> str:
    if isinstance(app, str):
        return app.partition(":")[0]
    module = getattr(app, "__module__", None)
    if not isinstance(module, str):
        module = type(app).__module__
    return module


def _compile_main() -> str | None:
    path = getattr(sys.modules["__main__"], "__file__", None)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            compile(f.read(), path, "exec")
    except SyntaxError as e:
        return f"{e.filename}:{e.lineno}: {e.msg}"
    except OSError as e:
        return f"cannot read {path}: {e.strerror}"
    return None


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
    try:
        _handover.reexec(handover)
    except OSError as e:
        return f"cannot run {sys.executable}: {e}"
    raise AssertionError("execve returned")


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
