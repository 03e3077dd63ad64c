"""Helpers for tests of serve(): start a server scenario, talk HTTP to it."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests import procs

SERVE = """
import logging, os, sys
class Out(logging.Handler):
    # One write(2) per record: lines of the parent and its workers never mix.
    def emit(self, record):
        os.write(1, (self.format(record) + "\\n").encode())
out = Out()
out.setFormatter(logging.Formatter("%(process)d %(levelname)s %(message)s"))
logging.basicConfig(level=logging.INFO, handlers=[out])
import tornado_prefork
from tests import webapp
{before}
tornado_prefork.serve({app}, port={port}, address="127.0.0.1", processes={n}, {kwargs})
os.write(1, b"parent returned\\n")
"""

SERVING = re.compile(r"Serving on (\S+) with (\d+) workers")


def start(
    app: str = "webapp.make_app",
    n: int = 2,
    kwargs: str = "",
    port: int = 0,
    before: str = "",
    env: dict[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> procs.Scenario:
    """A serve() scenario; see `url` for where it listens.

    Its workers run the event loop named by ``TORNADO_PREFORK_TEST_LOOP``
    (``make test-uvloop``), asyncio by default, unless ``kwargs`` sets ``loop``.
    """
    if "loop=" not in kwargs:
        loop = os.environ.get("TORNADO_PREFORK_TEST_LOOP", "asyncio")
        kwargs = f"{kwargs}, loop={loop!r}" if kwargs.strip() else f"loop={loop!r}"
    code = SERVE.format(app=app, n=n, kwargs=kwargs, port=port, before=before)
    return procs.Scenario(code, env=env, merge=True, pass_fds=pass_fds)


def url(scenario: procs.Scenario, timeout: float = 15) -> str:
    """Waits for the 'Serving on' line and returns the URL in it."""
    (line,) = _wait_serving(scenario, timeout)
    match = SERVING.search(line)
    assert match is not None
    return match.group(1)


def _wait_serving(scenario: procs.Scenario, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in scenario.lines if SERVING.search(line)]
        if found:
            return found[:1]
        left = deadline - time.monotonic()
        if left <= 0 or scenario.readline(left) is None:
            scenario.finish(timeout=5, kill=True)
            raise AssertionError(
                "the server never said 'Serving on':\n" + "\n".join(scenario.lines)
            )


def connect(base: str, timeout: float = 10) -> http.client.HTTPConnection:
    parts = urlsplit(base)
    assert parts.hostname is not None and parts.port is not None
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def get(base: str, path: str = "/", timeout: float = 10) -> tuple[int, Any]:
    """One request on a fresh connection: (status, decoded JSON body)."""
    conn = connect(base, timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else None
    finally:
        conn.close()


def burst(base: str, count: int) -> list[int]:
    """Opens ``count`` keep-alive connections at once, as a load generator does,
    then asks on each which worker holds it; returns the workers' pids."""
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
    directory: Path, n: int = 2, kwargs: str = "", preload: bool | None = False
) -> procs.Scenario:
    """``n`` workers serving ``hotapp:make_app``, imported from ``directory``.

    By default imported in each worker (``preload=False``), so that a reload
    forks workers that import the code on disk; with ``preload=None`` the
    module is imported in the parent and a reload re-executes it in place.
    """
    before = f"sys.path.insert(0, {str(directory)!r})"
    kwargs = ", ".join(part for part in (kwargs.strip(), f"preload={preload!r}") if part)
    return start(app="'hotapp:make_app'", n=n, before=before, kwargs=kwargs)


def wait_line(s: procs.Scenario, text: str, timeout: float = 15, count: int = 1) -> None:
    """Reads until ``count`` lines contain ``text``; fails at the timeout."""
    deadline = time.monotonic() + timeout
    while sum(text in line for line in s.lines) < count:
        left = deadline - time.monotonic()
        assert left > 0 and s.readline(left) is not None, f"no {text!r} in:\n" + "\n".join(s.lines)


def live_workers(s: procs.Scenario, count: int, timeout: float = 10) -> list[int]:
    """Waits until the parent has exactly ``count`` live children; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        children = procs.children_of(s.pid)
        if len(children) == count:
            return children
        assert time.monotonic() < deadline, children
        s.readline(0.05)
