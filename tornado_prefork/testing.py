"""Testing helpers: a real multi-process server for your application, in a test.

::

    from tornado_prefork.testing import running_server

    def test_my_app():
        with running_server("mypkg.web:make_app", processes=2) as server:
            response = urllib.request.urlopen(server.url + "/health")
            ...

or, with pytest, the ``prefork_server`` fixture, which the package registers
as a pytest plugin (nothing to add to ``conftest.py``)::

    def test_my_app(prefork_server):
        server = prefork_server("mypkg.web:make_app", processes=2)

The server runs ``python -m tornado_prefork`` in a fresh interpreter on an
unused port of 127.0.0.1, so that the test process itself never forks. It is
ready once every worker is, whatever it logs. On
exit it is stopped with SIGTERM, and `AssertionError` is raised unless it
exited with status 0 and left no process behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from tornado_prefork._settings import SETTINGS

# How often a start that has not said it is ready looks whether the server exited.
_EXIT_POLL = 0.05
# Switches that are not off by default have a --no- form.
_NEGATABLE = {s.name for s in SETTINGS if s.kind is bool and s.cli_default is not False}


@dataclasses.dataclass
class RunningServer:
    """A server started by `running_server`."""

    url: str
    pid: int
    worker_pids: list[int]
    output: list[str]


@contextlib.contextmanager
def running_server(
    app: str,
    processes: int = 2,
    *,
    timeout: float = 30,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    app_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Iterator[RunningServer]:
    """Starts ``app`` (an import string) in ``processes`` workers and yields a
    `RunningServer` once every worker is ready.

    ``options`` are command-line flags by their `tornado_prefork.serve`
    names (``graceful_timeout=5``, ``xheaders=True``, ``max_body_size=...``,
    ``preload=False`` for ``--no-preload``, ``log_level="warning"``).
    The server runs in ``cwd`` (default: this process's) and imports ``app``
    from ``app_dir`` (default: ``cwd``). ``timeout`` bounds the start and the
    stop. Raises `AssertionError` with the server's output as soon as it
    exits before serving (an import error, say), or if it is not serving
    within ``timeout``. On exit: SIGTERM, then `AssertionError` unless the
    server exited 0 with no process left; it is killed in any case.

    Readiness does not depend on what the server logs: the server tells this
    helper over ``$NOTIFY_SOCKET``, as it tells systemd, once every worker is
    ready; and the helper picks the port (and holds it until then) unless
    ``port`` or ``unix_socket`` is given.

    .. versionadded:: 0.1
    """
    if app_dir is not None:
        options["app_dir"] = os.fspath(app_dir)
    held, url = _address(options)
    argv = [sys.executable, "-m", "tornado_prefork", app, f"--processes={processes}"]
    if held is not None:
        argv.append(f"--port={held.getsockname()[1]}")
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False and name in _NEGATABLE:
            argv.append("--no-" + flag[2:])
        elif value is not False and value is not None:
            argv.append(f"{flag}={value}")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    # An address of the abstract namespace the kernel picks: nothing to remove.
    notify.bind("")
    name = notify.getsockname()
    notify_env = {"NOTIFY_SOCKET": "@" + (name.decode() if isinstance(name, bytes) else name)[1:]}
    with (
        contextlib.ExitStack() as cleanup,
        subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {}), **notify_env},
            cwd=cwd,
        ) as proc,
    ):
        cleanup.enter_context(notify)
        if held is not None:
            cleanup.enter_context(held)
        assert proc.stdout is not None
        output = _Lines(proc.stdout)
        try:
            server = _started(app, proc, output, notify, url, timeout)
            if held is not None:
                # The server listens on the port now.
                held.close()
            yield server
            _stop(app, proc, output.lines, timeout, server.worker_pids)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            output.close(timeout=5)


def _address(options: dict[str, Any]) -> tuple[socket.socket | None, str]:
    """Where the server will listen: a socket holding a free port for it (None
    if the options say where), and the URL to reach it."""
    scheme = "https" if options.get("certfile") else "http"
    if options.get("unix_socket") is not None:
        return None, f"unix:{options['unix_socket']}"
    address = options.get("address")
    if address in (None, "", "None"):
        # Not given: the command line's 127.0.0.1; "" or "None": every
        # interface, 127.0.0.1 among them.
        address = "127.0.0.1"
    family, kind, _, _, found = socket.getaddrinfo(
        address, options.get("port", 0), type=socket.SOCK_STREAM
    )[0]
    where: tuple[str, int] = (str(found[0]), int(found[1]))
    held = None
    if "port" not in options:
        # Bound, not listening, with SO_REUSEADDR: the server (which sets it
        # too) binds and listens beside it, while no port the kernel hands
        # out (a bind to port 0, an outgoing connection) can be this one.
        held = socket.socket(family, kind)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(where)
        where = held.getsockname()[:2]
    host = f"[{where[0]}]" if family == socket.AF_INET6 else where[0]
    return held, f"{scheme}://{host}:{where[1]}"


def _started(
    app: str,
    proc: subprocess.Popen[bytes],
    output: _Lines,
    notify: socket.socket,
    url: str,
    timeout: float,
) -> RunningServer:
    deadline = time.monotonic() + timeout
    while not _said_ready(notify, min(_EXIT_POLL, max(0.0, deadline - time.monotonic()))):
        if proc.poll() is not None:
            # Everything it wrote, for the message.
            output.close(timeout=5)
            raise AssertionError(
                f"{app} exited with status {proc.returncode} before serving:\n" + output.text
            )
        if time.monotonic() >= deadline:
            raise AssertionError(f"{app} did not start within {timeout} s:\n" + output.text)
    return RunningServer(url, proc.pid, workers(proc.pid), output.lines)


def _said_ready(notify: socket.socket, timeout: float) -> bool:
    """Whether the server sent ``READY=1`` (once every worker is ready)
    within ``timeout`` seconds."""
    if not select.select([notify], [], [], timeout)[0]:
        return False
    return "READY=1" in notify.recv(65536).decode(errors="replace").split("\n")


def _stop(
    app: str, proc: subprocess.Popen[bytes], output: list[str], timeout: float, first: list[int]
) -> None:
    workers = sorted(set(first) | set(children(proc.pid)))
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{app} did not stop within {timeout} s") from None
    left = [pid for pid in workers if alive(pid)]
    if code != 0 or left:
        raise AssertionError(
            f"{app} exited with status {code}, workers left: {left}\n" + "\n".join(output)
        )


class _Lines:
    """What a process writes to one pipe, read line by line by a thread as it
    comes, so that a chatty process never blocks on a full pipe. The tests of
    this package read their scenarios' output with it too."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.lines: list[str] = []
        self.ended = False
        self._pipe = pipe
        self._news = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def _read(self) -> None:
        try:
            for raw in self._pipe:
                with self._news:
                    self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                    self._news.notify_all()
        except (OSError, ValueError):
            pass  # closed by `close` while a process that outlived its parent held it open
        with self._news:
            self.ended = True
            self._news.notify_all()

    def wait(self, match: Callable[[str], object], count: int, timeout: float) -> list[str]:
        """The lines ``match`` is true for, as soon as there are ``count`` of
        them; fewer if the pipe ends or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        with self._news:
            while True:
                found = [line for line in self.lines if match(line)]
                left = deadline - time.monotonic()
                if len(found) >= count or self.ended or left <= 0:
                    return found
                self._news.wait(left)

    def close(self, timeout: float) -> None:
        """Reads on until the pipe ends, for ``timeout`` at most, then closes it."""
        self._thread.join(timeout)
        self._pipe.close()


def children(pid: int) -> list[int]:
    """The live (not zombie) child processes of ``pid``, from ``/proc`` (Linux).

    .. versionadded:: 0.1
    """
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def workers(pid: int) -> list[int]:
    """The worker processes of a server whose parent is ``pid``: its live
    children but the broadcast hub (`tornado_prefork.broadcast`), found by
    the listening socket it holds (Linux). The metrics and health endpoints,
    when a test turns them on, are children too.

    .. versionadded:: 0.1
    """
    found = children(pid)
    if not found:
        return found
    hubs = _hubs()
    return [child for child in found if child not in hubs]


# The socket directory of a broadcast hub (`tornado_prefork._broadcast.place`).
_HUB_DIR = "/tornado-prefork-broadcast-"


def _hubs() -> set[int]:
    """The pids of every broadcast hub running: the processes that hold the
    listening socket of one (from /proc/net/unix and each process's fds)."""
    inodes = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        # 00010000: __SO_ACCEPTCON, a listening socket.
        if len(fields) >= 8 and _HUB_DIR in fields[7] and fields[3] == "00010000":
            inodes.add(f"socket:[{fields[6]}]")
    found: set[int] = set()
    if not inodes:
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
        except OSError:
            continue
        if links & inodes:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie waiting to be reaped (Linux).

    .. versionadded:: 0.1
    """
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (the state, the
    parent's pid, ...; see proc(5)), or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields follow its last ")".
    return text.rpartition(")")[2].split()


try:
    import pytest
except ImportError:  # pytest is only needed for the fixture
    pass
else:

    @pytest.fixture
    def prefork_server() -> Iterator[Callable[..., RunningServer]]:
        """A factory fixture: ``prefork_server(app, processes=2, **options)``
        starts a server as `running_server` does; each is stopped and checked
        at the end of the test. Registered as a pytest plugin (entry point
        ``pytest11``), so any suite with the package installed has it.

        .. versionadded:: 0.1
        """
        with contextlib.ExitStack() as stack:

            def start(app: str, processes: int = 2, **options: Any) -> RunningServer:
                return stack.enter_context(running_server(app, processes, **options))

            yield start
