"""Memory benchmark: what N workers of a large app cost, started each way.

    python benchmarks/memory.py            # by hand; needs wrk and taskset

The app (``benchmarks/heavy.py``) builds 1.5 million small objects at import.
Each way of starting it runs 4 workers pinned to CPU 0 (``taskset -c 0``); wrk,
pinned to CPU 1, sends ``Connection: close`` requests for 6 s, during which
a worker runs a full ``gc.collect()`` after its first answer and every 500th. Then the
proportional set size (PSS, shared pages divided among the processes that
map them) of the parent and the workers is added up from
``/proc/PID/smaps_rollup``. Also: restart latency, from the SIGKILL of the
only worker until its replacement answers, with and without preload.

Prints Markdown tables; the results are kept in ``docs/memory.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tornado_prefork.testing import children

HERE = Path(__file__).resolve().parent
HEAVY = str(HERE / "heavy.py")
PREFORK = [sys.executable, "-m", "tornado_prefork", "heavy:make_app", "--no-access-log"]

# name: (label, argv after the interpreter's pinning; {port} and {n} filled in)
WAYS = {
    "tornado": (
        "Tornado's pattern (import, `bind_sockets`, `fork_processes`)",
        [sys.executable, HEAVY, "--pattern", "tornado"],
    ),
    "tornado-freeze": (
        "Tornado's pattern with `gc.freeze()` before the fork",
        [sys.executable, HEAVY, "--pattern", "tornado-freeze"],
    ),
    "serve-object": (
        "`serve(heavy.make_app(), processes=4)`",
        [sys.executable, HEAVY, "--pattern", "serve"],
    ),
    "cli-no-preload": ("`tornado-prefork heavy:make_app --no-preload`", [*PREFORK, "--no-preload"]),
    "cli-default": ("`tornado-prefork heavy:make_app` (the default)", PREFORK),
    "cli-preload": ("`tornado-prefork heavy:make_app --preload`", [*PREFORK, "--preload"]),
}
RESTARTS = ["tornado", "cli-default", "cli-no-preload"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answer(port: int, timeout: float = 5) -> int:
    """One request on a fresh connection; the pid of the worker that answered."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return int(response.getheader("X-Worker") or 0) if response.status == 200 else 0
    finally:
        conn.close()


@contextlib.contextmanager
def running(way: str, processes: int) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The server started ``way``, pinned to CPU 0, once every worker is there."""
    port = free_port()
    argv = [*WAYS[way][1], "--processes", str(processes), "--port", str(port)]
    if way.startswith("cli"):
        argv += ["--address", "127.0.0.1", "--log-level", "warning"]
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *argv],
        cwd=HERE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(children(proc.pid)) < processes or not _answers(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{way} did not start")
            time.sleep(0.1)
        yield proc, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _answers(port: int) -> bool:
    try:
        return answer(port, timeout=1) != 0
    except (OSError, http.client.HTTPException):
        return False


def rollup(pid: int) -> dict[str, int]:
    """smaps_rollup of ``pid``, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        values[name] = int(rest.split()[0])
    return values


def wrk_close(port: int, seconds: int) -> float:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{seconds}s", "-H", "Connection: close"]
        + [f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match is not None, out
    return float(match.group(1))


def memory(way: str, processes: int, seconds: int) -> dict[str, float]:
    with running(way, processes) as (proc, port):
        rps = wrk_close(port, seconds)
        time.sleep(1)
        workers = children(proc.pid)
        parent = rollup(proc.pid)
        each = [rollup(pid) for pid in workers]
    mib = 1024
    return {
        "total": (parent["Pss"] + sum(w["Pss"] for w in each)) / mib,
        "parent": parent["Pss"] / mib,
        "worker_private": statistics.mean(w["Private_Clean"] + w["Private_Dirty"] for w in each)
        / mib,
        "rps": rps,
    }


def restart_latency(way: str, times: int) -> list[float]:
    """N=1: seconds from the SIGKILL of the worker until its replacement answers."""
    found = []
    with running(way, 1) as (proc, port):
        for _ in range(times):
            # Older than min_uptime, so that no crash-loop delay applies.
            time.sleep(1.2)
            (victim,) = children(proc.pid)
            os.kill(victim, signal.SIGKILL)
            began = time.monotonic()
            while True:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    if answer(port, timeout=2) not in (0, victim):
                        break
                time.sleep(0.001)
            found.append(time.monotonic() - began)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--restarts", type=int, default=5)
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"needs {tool}: apt-get install -y {'wrk' if tool == 'wrk' else 'util-linux'}")
    print(
        f"| how it runs ({args.processes} workers) | total PSS | parent PSS | "
        "private per worker | requests/s |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    base = None
    for way, (label, _) in WAYS.items():
        m = memory(way, args.processes, args.seconds)
        base = base or m["total"]
        print(
            f"| {label} | {m['total']:.0f} MiB ({m['total'] / base:.2f}x) | {m['parent']:.0f} MiB "
            f"| {m['worker_private']:.1f} MiB | {m['rps']:.0f} |",
            flush=True,
        )
    print()
    print("| restart latency (1 worker, SIGKILL until the replacement answers) | median | max |")
    print("| --- | ---: | ---: |")
    for way in RESTARTS:
        times = restart_latency(way, args.restarts)
        print(
            f"| {WAYS[way][0]} | {statistics.median(times) * 1000:.0f} ms "
            f"| {max(times) * 1000:.0f} ms |",
            flush=True,
        )


if __name__ == "__main__":
    main()
