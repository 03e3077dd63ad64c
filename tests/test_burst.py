"""A burst of connects larger than Tornado's listen backlog: no SYN dropped,
every connection answered, still balanced; the accept loop keeps the listen
queue drained while it leaves connections to siblings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import procs, serving
from tornado_prefork._system import sockets as _sockets
from tornado_prefork._worker import accept as _accept

CONNECTIONS = 1000
# Without a network namespace of its own the kernel's ListenOverflows counts
# the whole machine's drops: a few may be another program's. A burst this
# size on the old backlog of 128 drops hundreds.
STRAY_DROPS = 10


def own_namespace() -> bool:
    """Whether this test can run its scenario under ``unshare --net``, where the
    kernel's counters count its connections alone."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    return procs.run(["unshare", "--net", "true"], timeout=10).returncode == 0


@pytest.mark.alone
def test_a_burst_of_1000_connects_is_answered_without_a_dropped_syn() -> None:
    argv = procs.scenario("burst", str(CONNECTIONS), str(_sockets.DEFAULT_BACKLOG))
    if own_namespace():
        argv = ["unshare", "--net", *argv, "--own-namespace"]
    result = procs.run(argv, timeout=45)
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["code"] == 0, outcome
    drops = 0 if outcome["isolated"] else STRAY_DROPS
    both, one_stopped = outcome["bursts"]
    assert both["overflows"] <= drops, both
    assert both["answered"] == CONNECTIONS, both
    # The bound of the two-worker burst in test_serve: none has less than a quarter.
    assert min(both["split"]) >= CONNECTIONS // 4, both
    # A worker whose sibling takes nothing (stopped, as by a long computation)
    # keeps the queue drained alone.
    assert one_stopped["overflows"] <= drops, one_stopped
    assert one_stopped["answered"] == CONNECTIONS, one_stopped
    assert one_stopped["split"][1] == 0, one_stopped


@contextlib.contextmanager
def waiting_connections(backlog: int, count: int) -> Iterator[socket.socket]:
    """A listening socket with ``count`` connections waiting in its queue."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(backlog)
        listener.setblocking(False)
        clients = [socket.create_connection(listener.getsockname()) for _ in range(count)]
        try:
            yield listener
        finally:
            for client in clients:
                client.close()


def cap() -> int:
    return _sockets.somaxconn() or 128


async def until(condition: Callable[[], object], timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.001)


@pytest.mark.alone
@pytest.mark.tornado_api
def test_a_listen_queue_nearly_full_is_not_left_to_siblings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A hold that never ends: only the queue's length makes the worker accept.
    monkeypatch.setattr(_accept, "HOLD", 60.0)
    asyncio.run(nearly_full())


async def nearly_full() -> None:
    with waiting_connections(64, 60) as listener:
        # The handshakes of loopback connects complete in the kernel at once.
        await until(lambda: _sockets.accept_queue(listener) == (60, 64))
        accepted: list[socket.socket] = []
        # A sibling always has fewer connections: the board always says no.
        remove = _accept.add_accept_handler(
            listener, lambda c, _: accepted.append(c), lambda: False
        )
        try:
            await asyncio.sleep(0.05)
            # Taken until the queue is below NEVER_HOLD_AT; the rest is left.
            left = math.ceil(64 * _accept.NEVER_HOLD_AT) - 1
            assert 0 < left < 60
            assert len(accepted) == 60 - left
            assert _sockets.accept_queue(listener) == (left, 64)
        finally:
            remove()
            for connection in accepted:
                connection.close()


@pytest.mark.alone
@pytest.mark.tornado_api
@pytest.mark.parametrize(
    ("stuck", "taken"),
    # Siblings that took nothing for STUCK are busy or stopped: every
    # connection that waited through the hold is taken at once. Before that
    # they may only be waiting for a CPU: one connection per hold.
    [(0.0, 60), (60.0, 1)],
)
def test_a_hold_that_ends_takes_what_waited_once_the_siblings_are_stuck(
    monkeypatch: pytest.MonkeyPatch, stuck: float, taken: int
) -> None:
    # Longer than any pause of this process between two accepts.
    monkeypatch.setattr(_accept, "HOLD", 0.05)
    monkeypatch.setattr(_accept, "STUCK", stuck)
    asyncio.run(hold_ends(taken))


async def hold_ends(taken: int) -> None:
    with waiting_connections(1024, 60) as listener:
        await until(lambda: _sockets.accept_queue(listener) == (60, min(1024, cap())))
        accepted: list[socket.socket] = []
        remove = _accept.add_accept_handler(
            listener, lambda c, _: accepted.append(c), lambda: False
        )
        try:
            await until(lambda: accepted)
            assert len(accepted) == taken
        finally:
            remove()
            for connection in accepted:
                connection.close()


def test_the_backlog_in_force_is_said_when_net_core_somaxconn_caps_it() -> None:
    cap = _sockets.somaxconn()
    if cap is None:
        pytest.skip(f"cannot read {_sockets.SOMAXCONN}")
    with serving.running(processes=1, backlog=cap + 1) as s:
        serving.url(s)
    (line,) = s.matching("net.core.somaxconn")
    assert (
        f"listen backlog {cap + 1} is capped at {cap} by net.core.somaxconn "
        f"(sysctl -w net.core.somaxconn={cap + 1} raises it)" in line
    ), line
    with serving.running(processes=1, backlog=cap) as s:
        serving.url(s)
    assert s.matching("net.core.somaxconn") == []


def test_a_unix_socket_has_no_queue_to_read(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(f"{tmp_path}/s")
        sock.listen(8)
        assert _sockets.accept_queue(sock) is None
