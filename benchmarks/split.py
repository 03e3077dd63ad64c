"""How 2 workers split keep-alive connections, in the three ways they arrive.

- ``staggered``: wrk's 64 connections, which wrk opens one after another;
  counted mid-run from ``/proc``.
- ``burst``: 64 connections opened at once on an idle server (a client pool
  or a load balancer starting up); each sends one request and stays open.
- ``busy``: 64 new connections, one every 10 ms, while wrk keeps both workers
  busy with 64 others.

Each connection's worker is the pid in its response's ``X-Worker`` header.
Two workers on a 2-CPU machine: neither the server nor the client is pinned.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter

from harness import (
    ACCEPT_PATTERNS,
    Server,
    established_per_worker,
    ratio,
    server,
    worker_of,
    wrk,
)

CASES = ["staggered", "burst", "busy"]
CONNECTIONS = 64
_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
_BODY = b"Hello, world"


def _ask(sock: socket.socket) -> int:
    """Sends one keep-alive request on ``sock``; the worker that answered."""
    sock.sendall(_REQUEST)
    data = b""
    while not data.endswith(_BODY):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    (pid,) = worker_of(data) or [0]
    return pid


def burst(port: int) -> list[int]:
    """Opens every connection before any is used; the worker of each."""
    socks = []
    try:
        for _ in range(CONNECTIONS):
            sock = socket.socket()
            socks.append(sock)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        for sock in socks:
            sock.settimeout(10)
        return [_ask(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def trickle(port: int) -> list[int]:
    """Opens the connections 10 ms apart, each used at once and kept open."""
    socks = []
    workers = []
    try:
        for _ in range(CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(sock)
            workers.append(_ask(sock))
            time.sleep(0.01)
        return workers
    finally:
        for sock in socks:
            sock.close()


def _counts(workers: list[int], pids: list[int]) -> list[int]:
    seen = Counter(workers)
    return sorted((seen.get(pid, 0) for pid in pids), reverse=True)


def one_pattern(pattern: str, seconds: float) -> dict[str, list[int]]:
    """Connections per worker, most first, in each case, for one server of ``pattern``."""
    found: dict[str, list[int]] = {}
    with server(pattern, 2) as s:
        pids = s.workers()
        time.sleep(0.3)
        found["burst"] = _counts(burst(s.port), pids)
        time.sleep(0.3)
        sample: dict[int, int] = {}

        def look(s: Server = s) -> None:
            time.sleep(seconds / 2)
            sample.update(established_per_worker(pids, s.port))

        watcher = threading.Thread(target=look)
        watcher.start()
        wrk(s.port, seconds)
        watcher.join()
        found["staggered"] = sorted(sample.values(), reverse=True)
        time.sleep(0.3)
        new: list[int] = []

        def arrive(s: Server = s) -> None:
            time.sleep(0.5)
            with contextlib.suppress(OSError):
                new.extend(trickle(s.port))

        arriving = threading.Thread(target=arrive)
        arriving.start()
        wrk(s.port, seconds + 1)
        arriving.join()
        found["busy"] = _counts(new, pids)
    return found


def splits(reps: int, seconds: float) -> dict[str, dict[str, list[list[int]]]]:
    """``reps`` interleaved rounds of every accept pattern: pattern -> case -> counts."""
    results: dict[str, dict[str, list[list[int]]]] = {
        p: {c: [] for c in CASES} for p in ACCEPT_PATTERNS
    }
    for rep in range(reps):
        for pattern in ACCEPT_PATTERNS:
            for case, counts in one_pattern(pattern, seconds).items():
                results[pattern][case].append(counts)
            shown = ", ".join(f"{c} {'/'.join(map(str, results[pattern][c][-1]))}" for c in CASES)
            print(f"  rep {rep + 1} {pattern}: {shown}", flush=True)
    return results


def median_ratio(runs: list[list[int]]) -> float:
    """The median over the runs of max/min connections per worker."""
    values = sorted(ratio([float(c) for c in counts]) for counts in runs)
    return values[len(values) // 2] if values else float("nan")
