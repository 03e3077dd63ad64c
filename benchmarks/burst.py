"""A burst of connects larger than the listen backlog, to 2 workers.

    python benchmarks/burst.py [--reps N]   # this section of docs/benchmarks.md only

Every connection is opened without waiting (non-blocking connects); one
keep-alive request goes out on each as soon as it is connected, and all stay
open until the last answer, so that each worker's share is what it holds at
the end. A SYN that finds the accept queue full is dropped by the kernel (its
``ListenOverflows`` counter) and sent again by the client after a second, so
a dropped SYN shows as an answer after more than a second. Then the same with
one of the two workers stopped (SIGSTOP), as a worker busy in a long
computation is: the other must take the whole burst. Last, 3,000 connects,
more than a backlog of 2048 holds.

``ListenOverflows`` counts a whole network namespace. As root, with
``unshare`` and ``ip``, the measurements run in a namespace of their own,
where they count this burst alone; otherwise in the machine's, where other
traffic may add to them (the document says which).
"""

from __future__ import annotations

import argparse
import datetime
import errno
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness import ALL_CPUS, LABELS, ROOT, cpu_list, pinned, server, worker_of

# Each pattern with Tornado's default backlog (tornado.netutil's 128, serve()'s
# until 2048) and with 2048.
CASES = [("tornado", 128), ("tornado", 2048), ("prefork", 128), ("prefork", 2048)]
# What each table measures: its title, the connections of a burst, whether
# one worker is stopped, and the cases.
BURSTS = {
    "running": ("1,000 connects, both workers running", 1000, False, CASES),
    "stopped": ("1,000 connects, one worker stopped", 1000, True, CASES),
    "larger": (
        "3,000 connects, more than a backlog of 2048 holds, both workers running",
        3000,
        False,
        [case for case in CASES if case[1] == 2048],
    ),
}
# Both workers on the first CPU and the client on the second, as the
# throughput runs pin them; and nothing pinned (2 workers and the client on
# 2 CPUs, as the split runs).
LAYOUTS = {"pinned": (ALL_CPUS[:1], ALL_CPUS[1:]), "unpinned": (ALL_CPUS, ALL_CPUS)}

START = "<!-- bench-burst:start -->"
END = "<!-- bench-burst:end -->"
_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
_BODY = b"Hello, world"


def listen_overflows() -> int:
    """The kernel's count of SYNs and handshakes dropped on a full accept queue."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            found = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(found["ListenOverflows"])
    raise RuntimeError("no TcpExt counters in /proc/net/netstat")


def somaxconn() -> int:
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


def burst(port: int, connections: int, timeout: float = 30) -> dict[int, tuple[float, int]]:
    """Opens ``connections`` at once, one request on each: for each connection
    answered within ``timeout``, seconds from the first connect to its answer
    and the worker that answered."""
    selector = selectors.DefaultSelector()
    socks = []
    replies: dict[int, bytes] = {}
    answered: dict[int, tuple[float, int]] = {}
    try:
        began = time.monotonic()
        for i in range(connections):
            sock = socket.socket()
            socks.append(sock)
            sock.setblocking(False)
            code = sock.connect_ex(("127.0.0.1", port))
            if code not in (0, errno.EINPROGRESS):
                raise OSError(code, os.strerror(code))
            selector.register(sock, selectors.EVENT_WRITE, i)
        deadline = began + timeout
        while len(answered) < connections and time.monotonic() < deadline:
            for key, events in selector.select(timeout=0.5):
                sock, i = key.fileobj, key.data
                assert isinstance(sock, socket.socket)
                if events & selectors.EVENT_WRITE:
                    sock.send(_REQUEST)
                    selector.modify(sock, selectors.EVENT_READ, i)
                    continue
                chunk = sock.recv(4096)
                replies[i] = replies.get(i, b"") + chunk
                if not chunk or replies[i].endswith(_BODY):
                    selector.unregister(sock)
                    (pid,) = worker_of(replies[i]) or [0]
                    answered[i] = (time.monotonic() - began, pid)
    finally:
        selector.close()
        for sock in socks:
            sock.close()
    return answered


def one(pattern: str, backlog: int, layout: str, connections: int, stopped: bool) -> dict[str, Any]:
    """One burst of ``connections`` on a fresh, idle 2-worker server, its
    second worker stopped with ``stopped``."""
    server_cpus, client_cpus = LAYOUTS[layout]
    with server(pattern, 2, cpus=server_cpus, backlog=backlog) as s:
        pids = s.workers()
        time.sleep(0.3)
        if stopped:
            os.kill(pids[1], signal.SIGSTOP)
        try:
            with pinned(client_cpus):
                before = listen_overflows()
                answered = burst(s.port, connections)
                overflows = listen_overflows() - before
        finally:
            if stopped:
                os.kill(pids[1], signal.SIGCONT)
    times = [t for t, _ in answered.values()]
    seen = Counter(pid for _, pid in answered.values())
    return {
        "overflows": overflows,
        "answered": len(times),
        "late": sum(1 for t in times if t > 1.0),
        "last": max(times, default=float("nan")),
        "split": sorted((seen.get(pid, 0) for pid in pids), reverse=True),
    }


def measure(reps: int) -> dict[str, Any]:
    """``reps`` interleaved rounds of every burst, layout and case."""
    # The client holds every connection open, and so does a worker whose
    # sibling is stopped (the servers inherit the limit).
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runs: dict[str, list[dict[str, Any]]] = {}
    for rep in range(reps):
        for name, (title, connections, stopped, cases) in BURSTS.items():
            for layout in LAYOUTS:
                for pattern, backlog in cases:
                    r = one(pattern, backlog, layout, connections, stopped)
                    runs.setdefault(key(name, layout, pattern, backlog), []).append(r)
                    print(
                        f"  rep {rep + 1} {title}, {layout}: {pattern} backlog {backlog}: "
                        f"{r['overflows']} SYNs dropped, last answer {r['last']:.2f} s, "
                        f"split {'/'.join(map(str, r['split']))}",
                        file=sys.stderr,
                        flush=True,
                    )
    return {"runs": runs, "reps": reps, "somaxconn": somaxconn()}


def key(burst: str, layout: str, pattern: str, backlog: int) -> str:
    return f"{burst} {layout} {pattern} {backlog}"


def can_isolate() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    return probe.returncode == 0


def bursts(reps: int) -> dict[str, Any]:
    """The measurements, in a network namespace of their own when possible."""
    if not can_isolate():
        return {**measure(reps), "isolated": False}
    out = subprocess.run(
        ["unshare", "--net", sys.executable, __file__, "--reps", str(reps), "--in-namespace"],
        stdout=subprocess.PIPE,
        check=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return {**json.loads(out.splitlines()[-1]), "isolated": True}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def section(data: dict[str, Any]) -> list[str]:
    """The section of docs/benchmarks.md, between its markers."""
    if data["isolated"]:
        where = "in a network namespace of its own (`unshare --net`): the drops are its own"
    else:
        where = "in the machine's network namespace: other traffic may add to the drops"
    lines = [
        START,
        "## A burst of connects larger than the backlog (2 workers)",
        "",
        f"Measured {datetime.date.today().isoformat()} by `python benchmarks/burst.py` "
        "(a step of `make bench` too; no wrk needed): non-blocking connects all at once, "
        "one keep-alive request on each as soon as it is connected, all kept open until "
        "the last answer. A SYN "
        "that finds the accept queue full is dropped (the kernel's `ListenOverflows`) and "
        "sent again by the client after a second. With one of the two workers stopped "
        "(SIGSTOP, as a worker busy in a long computation is) the other must take the "
        "whole burst. Pinned: both workers on CPU "
        f"{cpu_list(LAYOUTS['pinned'][0])} with `taskset`, the client on CPU "
        f"{cpu_list(LAYOUTS['pinned'][1])}; unpinned: all on {len(ALL_CPUS)} CPUs. Each "
        "pattern with Tornado's default backlog (128) and with gunicorn's and uvicorn's "
        "(2048); "
        f"`net.core.somaxconn` is {data['somaxconn']} here (the kernel lowers a larger "
        f"backlog to it). Run {where}; {data['reps']} interleaved runs, medians, and "
        "every run's split.",
        "",
    ]
    for name, (title, connections, _, cases) in BURSTS.items():
        lines += [
            f"{title[0].upper()}{title[1:]}:",
            "",
            "| CPUs | pattern | backlog | SYNs dropped | answered after 1 s | last answer s "
            "| split |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for layout in LAYOUTS:
            for pattern, backlog in cases:
                runs = data["runs"][key(name, layout, pattern, backlog)]
                lost = connections * len(runs) - sum(r["answered"] for r in runs)
                lines.append(
                    f"| {layout} | {LABELS[pattern]} | {backlog} | "
                    f"{_median([r['overflows'] for r in runs]):.0f} | "
                    f"{_median([r['late'] for r in runs]):.0f} | "
                    f"{_median([r['last'] for r in runs]):.2f}"
                    + (f" ({lost} never answered)" if lost else "")
                    + " | "
                    + ", ".join("/".join(map(str, r["split"])) for r in runs)
                    + " |"
                )
        lines.append("")
    return [*lines, END]


def update_document(text: list[str]) -> None:
    """Puts ``text`` between the burst markers of docs/benchmarks.md (before the
    failures section if the markers are not there yet)."""
    document = ROOT / "docs" / "benchmarks.md"
    old = document.read_text()
    new = "\n".join(text)
    if START in old and END in old:
        head, rest = old.split(START, 1)
        _, tail = rest.split(END, 1)
        document.write_text(f"{head}{new}{tail}")
        return
    head, marker, tail = old.partition("## Failures")
    document.write_text(f"{head}{new}\n\n{marker}{tail}" if marker else f"{old}\n{new}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_namespace:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        print(json.dumps(measure(args.reps)))
        return 0
    text = section(bursts(args.reps))
    update_document(text)
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
