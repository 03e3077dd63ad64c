"""A lifespan given to serve() on real servers: entered in each worker before
it is ready, exited on its event loop after the drain, within
graceful_timeout, across reloads of both kinds (tests/lifespanapp.py says
each event on stdout, one write per line, so one worker's lines keep their order)."""

from __future__ import annotations

import base64
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests import serving
from tests.lifespanapp import check_one_at_a_time, lock_directory, wait_for_leader
from tests.procs import Scenario
from tests.serving import live_workers

APP = "tests.lifespanapp:lifespan"
# A server older than each of its timeouts, as in tests/test_aged.py.
SHORT = {"timeout": 2.0, "ready_timeout": 2.5, "graceful_timeout": 2.0, "min_uptime": 0.5}
AGE = 3.0


def story(s: Scenario, pid: int) -> list[str]:
    """What worker ``pid`` went through, in order, from its first line to its
    last; ``ready`` when the server said every worker was."""
    events = []
    for line in s.lines:
        if line.startswith(f"{pid} INFO worker {pid} draining"):
            events.append("drain")
        elif events and ("INFO Serving on " in line or "INFO reload finished" in line):
            events.append("ready")
        elif line.endswith(f" {pid}") and line.count(" ") == 1:
            events.append(line.split()[0])
    while events and events[-1] == "ready":
        events.pop()
    return events


def check_story(events: list[str]) -> None:
    """Entered first, ready before the drain, exited last, after every
    request and WebSocket it had ended."""
    assert events[0] == "enter" and events[-1] == "exit", events
    assert events.index("ready") < events.index("drain"), events
    for begun, ended in (("request-start", "request-end"), ("ws-open", "ws-closed")):
        assert (begun in events) == (ended in events), events


def open_websocket(base: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", serving.port_of(base)), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    return sock


def test_entered_before_ready_exited_in_the_loop_after_the_drain() -> None:
    with serving.running(APP, 2, string=True, graceful_timeout=5) as s:
        base = serving.url(s)
        workers = live_workers(s, 2)
        ws = open_websocket(base)
        slow = threading.Thread(target=serving.get, args=(base, "/slow?seconds=1"))
        slow.start()
        s.wait_line("request-start")
        s.wait_line("ws-open")
        s.signal(signal.SIGTERM)
        # The close frame (1001) of the drain, then the client's side goes.
        assert ws.recv(2)[:1] == b"\x88"
        ws.close()
        slow.join(timeout=10)
        assert s.finish(timeout=10) == 0, s.output
    # The exit awaited asyncio.sleep and a connection's wait_closed: on the loop.
    for pid in workers:
        events = story(s, pid)
        check_story(events)
        for begun, ended in (("request-start", "request-end"), ("ws-open", "ws-closed")):
            if begun in events:
                assert events.index(begun) < events.index("drain") < events.index(ended), events


@pytest.mark.parametrize(
    ("app", "logged"),
    [
        ("failing_exit", "the lifespan's exit failed"),
        ("slow_exit", "the lifespan's exit ran out of graceful_timeout; cancelled"),
    ],
)
def test_an_exit_that_fails_or_hangs_is_logged_and_the_server_exits_0(
    app: str, logged: str
) -> None:
    with serving.running(f"tests.lifespanapp:{app}", 2, string=True, graceful_timeout=1) as s:
        serving.url(s)
        workers = live_workers(s, 2)
        s.stop()
    # Cut by the worker itself: no SIGKILL after graceful_timeout.
    (drained,) = s.matching("Stopped; the workers took ")
    assert float(drained.split()[-4]) < 1.0 + 0.5, s.output
    for pid in workers:
        assert s.matching(f"(pid {pid}): {logged}"), s.output
        assert s.matching(f"(pid {pid}) stopped (status 0)"), s.output
    assert not s.matching("killing it"), s.output
    if app == "failing_exit":
        assert s.output.count("RuntimeError: pool already closed") == 2, s.output


def test_preload_true_refuses_a_lifespan() -> None:
    kind, message = serving.refused("tests.lifespanapp:lifespan", string=True, preload=True)
    assert (kind, message.split(":")[0]) == (
        "ValueError",
        "preload=True cannot enter the lifespan tests.lifespanapp",
    )


@pytest.mark.parametrize("preload", [False, None], ids=["rolling", "in-place"])
def test_reloads_of_an_aged_server_exit_every_old_lifespan(
    preload: bool | None, tmp_path: Path
) -> None:
    # The lifespan runs a leader task too: it goes from the old workers to
    # the new ones, one at a time.
    log = tmp_path / "events"
    env = {"LIFESPAN_LOG": str(log)}
    with serving.running(
        "tests.lifespanapp:leader", 2, string=True, preload=preload, env=env, **SHORT
    ) as s:
        base = serving.url(s)
        old = live_workers(s, 2)
        locks = {lock_directory(pid) for pid in old}
        time.sleep(AGE)
        slow = threading.Thread(target=serving.get, args=(base, "/slow?seconds=1"))
        slow.start()
        s.wait_line("request-start")
        s.signal(signal.SIGHUP)
        s.wait_line("reload finished: 2 workers", timeout=20)
        for pid in old:
            s.wait_line(f"(pid {pid}) retired (status 0)")
        slow.join(timeout=10)
        new = live_workers(s, 2)
        wait_for_leader(log, set(old))
        # The same directory, handed over by a reload in place.
        assert {lock_directory(pid) for pid in new} == locks
    assert not s.matching("killing it") and not s.matching("silent for"), s.output
    assert len(s.matching("reloaded in place")) == (preload is None), s.output
    for pid in [*old, *new]:
        check_story(story(s, pid))
    check_one_at_a_time(log, 1.0)
