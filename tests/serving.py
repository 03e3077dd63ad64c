"""Helpers for tests of serve() and the command line: start a server, talk HTTP to it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests import procs
from tests.procs import Scenario

HERE = Path(__file__).resolve().parent
# The two ways users start a server from a shell.
COMMAND = str(Path(sys.executable).parent / "tornado-prefork")
MODULE = [sys.executable, "-m", "tornado_prefork"]

# The first URL of "Serving on URL[, URL...] with N workers".
SERVING = re.compile(r"Serving on (\S+?),? (?:\S+ )*?with (\d+) workers")


def serve_args(
    app: str, string: bool, path: Path | None, hide: tuple[str, ...], settings: dict[str, Any]
) -> list[str]:
    """Arguments that `tests.scenarios.serve` and `tests.scenarios.refused` share."""
    args = [app, *(f"{name}={value!r}" for name, value in settings.items())]
    args += ["--string"] if string else []
    args += ["--path", str(path)] if path is not None else []
    for module in hide:
        args += ["--hide", module]
    return args


def start(
    app: str = "tests.webapp:make_app",
    processes: int = 2,
    *,
    port: int = 0,
    string: bool = False,
    path: Path | None = None,
    hide: tuple[str, ...] = (),
    rlimit: str | None = None,
    listen_fd: int | None = None,
    log_file: Path | None = None,
    fail_if: Path | None = None,
    env: dict[str, str] | None = None,
    **settings: Any,
) -> Scenario:
    """`tests.scenarios.serve` running ``app`` (``module:name``, an import
    string with ``string``) with ``settings``; see `url` for where it listens.

    Its workers run the event loop named by ``TORNADO_PREFORK_TEST_LOOP``
    (``make test-uvloop``), asyncio by default, unless ``settings`` set ``loop``.
    """
    settings.setdefault("loop", os.environ.get("TORNADO_PREFORK_TEST_LOOP", "asyncio"))
    args = serve_args(app, string, path, hide, settings)
    args += ["--processes", str(processes), "--port", str(port)]
    args += ["--rlimit", rlimit] if rlimit else []
    args += ["--log-file", str(log_file)] if log_file else []
    args += ["--fail-if", str(fail_if)] if fail_if else []
    pass_fds: tuple[int, ...] = ()
    if listen_fd is not None:
        args += ["--listen-fd", str(listen_fd)]
        pass_fds = (listen_fd,)
    return Scenario(procs.scenario("serve", *args), env=env, pass_fds=pass_fds)


@contextlib.contextmanager
def running(
    app: str = "tests.webapp:make_app",
    processes: int = 2,
    *,
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
    **options: Any,
) -> Iterator[Scenario]:
    """A server from `start` (or the command ``argv``: the command line, the
    demo, a scenario program); at the end of the block, unless the test
    stopped it already, `Scenario.stop` stops it with SIGTERM and fails unless
    it exits 0 leaving no process behind. If the block fails, it is killed."""
    with Scenario(argv, env=env) if argv else start(app, processes, env=env, **options) as s:
        yield s
        if not s.finished:
            s.stop()


def refused(
    app: str,
    *,
    string: bool = False,
    path: Path | None = None,
    hide: tuple[str, ...] = (),
    as_nobody: bool = False,
    in_a_running_loop: bool = False,
    **settings: Any,
) -> tuple[str, str]:
    """What serve(``app``, ``**settings``) raises, as (type name, message),
    checking that it raised before any fork."""
    args = serve_args(app, string, path, hide, settings)
    args += ["--as-nobody"] if as_nobody else []
    args += ["--in-a-running-loop"] if in_a_running_loop else []
    return procs.refusal(procs.scenario("refused", "serve", *args))


def command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m tornado_prefork ARGS`` run to its end (20 s at most)."""
    return procs.run(
        [*MODULE, *args], timeout=20, env=None if env is None else {**os.environ, **env}
    )


def url(scenario: Scenario, timeout: float = 15) -> str:
    """Waits for the 'Serving on' line and returns the (first) URL in it."""
    line = scenario.wait_line("Serving on ", timeout=timeout)[0]
    match = SERVING.search(line)
    assert match is not None, line
    return match.group(1)


def port_of(base: str) -> int:
    port = urlsplit(base).port
    assert port is not None, base
    return port


def connect(base: str, timeout: float = 10) -> http.client.HTTPConnection:
    parts = urlsplit(base)
    assert parts.hostname is not None and parts.port is not None
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a server on a unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def get(base: str, path: str = "/", timeout: float = 10) -> tuple[int, Any]:
    """One request on a fresh connection: (status, decoded JSON body). ``base``
    may be ``unix:PATH``, as the 'Serving on' line says for a unix socket."""
    conn = UnixHTTPConnection(base[5:]) if base.startswith("unix:") else connect(base, timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else None
    finally:
        conn.close()


# How long a burst may wait, after closing its connections, for the workers
# to count them closed: the next burst then meets an idle server, not one
# whose board still shows the last burst's connections on one worker.
SETTLE = 0.2


def burst(base: str, count: int, settle: bool = False) -> list[int]:
    """Opens ``count`` keep-alive connections at once, as a load generator does,
    then asks on each which worker holds it; returns the workers' pids. Closes
    them, and with ``settle`` waits `SETTLE` seconds before it returns."""
    parts = urlsplit(base)
    assert parts.hostname is not None and parts.port is not None
    socks = [
        socket.create_connection((parts.hostname, parts.port), timeout=10) for _ in range(count)
    ]
    try:
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        pids = []
        for sock in socks:
            data = b""
            while b"}" not in data:
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
            assert data.startswith(b"HTTP/1.1 200"), data
            pids.append(json.loads(data[data.index(b"{") :])["pid"])
        return pids
    finally:
        for sock in socks:
            sock.close()
        if settle:
            time.sleep(SETTLE)


class Load:
    """A client sending requests in a loop on fresh connections, in a thread,
    recording who answered and what failed. Bounded: it stops on `stop` or
    after ``limit`` seconds."""

    def __init__(self, base: str, path: str = "/", limit: float = 30) -> None:
        self.base = base
        self.path = path
        self.pids: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._limit = limit
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        deadline = time.monotonic() + self._limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status, body = get(self.base, self.path)
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(repr(e))
                continue
            if status != 200:
                self.failures.append(f"status {status}")
            else:
                self.pids.append(body["pid"])


def live_workers(s: Scenario, count: int, timeout: float = 10) -> list[int]:
    """Waits until the parent has exactly ``count`` live children; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        children = procs.children_of(s.pid)
        if len(children) == count:
            return children
        assert time.monotonic() < deadline, children
        time.sleep(0.05)


# An app whose code changes on disk between reloads: hotapp.py in a test's directory.
HOT_APP = """
import os
from tornado.web import Application, RequestHandler
{extra}
VERSION = {version!r}

class Handler(RequestHandler):
    def get(self):
        self.write({{"pid": os.getpid(), "version": VERSION}})

def make_app():
    return Application([("/", Handler)])
"""


def hot_server(
    directory: Path, processes: int = 2, **settings: Any
) -> contextlib.AbstractContextManager[Scenario]:
    """`running` ``processes`` workers of ``hotapp:make_app`` imported from ``directory``.

    By default imported in each worker (``preload=False``), so that a reload
    forks workers that import the code on disk; with ``preload=None`` the
    module is imported in the parent and a reload re-executes it in place.
    """
    settings.setdefault("preload", False)
    return running("hotapp:make_app", processes, string=True, path=directory, **settings)
