"""Bursts of connects to 2 workers, counting the SYNs the kernel dropped.

argv: ``CONNECTIONS BACKLOG [--own-namespace]``. Serves tests.webapp with 2
workers and that listen backlog, then opens CONNECTIONS connections at once
(asyncio: every connect starts before any is answered), sends one keep-alive
request on each once it is connected and keeps them all open until the last
answer (or 12 s); then,
once the workers hold nothing, the same with one worker stopped (SIGSTOP),
as a worker busy in a long computation is. With ``--own-namespace`` (run
under ``unshare --net``) it brings the loopback up first, and the kernel's
ListenOverflows then counts this program's connections alone.

Prints one JSON line: ``isolated``; for each burst ``overflows`` (the
ListenOverflows delta), ``answered`` and ``split`` (connections per worker,
the stopped worker last); and ``code``, the server's exit status.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests import procs, serving

REQUEST = b"GET / HTTP/1.1\r\nHost: burst\r\n\r\n"


def listen_overflows() -> int:
    """The kernel's count of SYNs and handshakes dropped on a full accept queue."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            found = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(found["ListenOverflows"])
    raise RuntimeError("no TcpExt counters in /proc/net/netstat")


async def ask(port: int, held: list[asyncio.StreamWriter]) -> int:
    """One connection and one request on it, left open in ``held``; the pid of
    the worker that answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    held.append(writer)
    writer.write(REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = re.search(rb"Content-Length: (\d+)", head, re.I)
    assert length is not None, head
    pid: int = json.loads(await reader.readexactly(int(length.group(1))))["pid"]
    return pid


async def burst(port: int, count: int, timeout: float = 12) -> list[int]:
    """Opens ``count`` connections at once (every connect starts before any
    is answered), one request on each, all kept open until the last answer;
    the workers that answered those answered within ``timeout``."""
    held: list[asyncio.StreamWriter] = []
    tasks = [asyncio.ensure_future(ask(port, held)) for _ in range(count)]
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout)
        return [task.result() for task in done if task.exception() is None]
    finally:
        for task in tasks:
            task.cancel()
        for writer in held:
            writer.close()


def measured(port: int, count: int, pids: list[int]) -> dict[str, Any]:
    before = listen_overflows()
    workers = asyncio.run(burst(port, count))
    return {
        "overflows": listen_overflows() - before,
        "answered": len(workers),
        "split": [workers.count(pid) for pid in pids],
    }


def wait_idle(pids: list[int], idle_fds: dict[int, int]) -> None:
    """Until each worker holds no more descriptors than before the burst: it has
    closed the burst's connections, and counted them closed on the board."""
    deadline = time.monotonic() + 10
    while any(procs.open_fds(pid) > idle_fds[pid] for pid in pids):
        assert time.monotonic() < deadline, {pid: procs.open_fds(pid) for pid in pids}
        time.sleep(0.05)


def main() -> None:
    count, backlog = int(sys.argv[1]), int(sys.argv[2])
    isolated = "--own-namespace" in sys.argv[3:]
    # The client and the worker that takes every connection while its sibling
    # is stopped each hold them all open at once.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wanted = count + 256
    assert hard == resource.RLIM_INFINITY or hard >= wanted, f"open file limit {hard}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if isolated:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    results = []
    with serving.start(backlog=backlog) as s:
        port = serving.port_of(serving.url(s))
        pids = serving.live_workers(s, 2)
        idle_fds = {pid: procs.open_fds(pid) for pid in pids}
        results.append(measured(port, count, pids))
        wait_idle(pids, idle_fds)
        os.kill(pids[1], signal.SIGSTOP)
        try:
            results.append(measured(port, count, pids))
        finally:
            os.kill(pids[1], signal.SIGCONT)
        s.signal(signal.SIGTERM)
        code = s.finish(timeout=10)
    print(json.dumps({"isolated": isolated, "bursts": results, "code": code}))


main()
