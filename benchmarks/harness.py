"""What every benchmark needs: servers in their own process group, pinned to
CPUs, wrk pinned to the others, and readings from ``/proc``."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tornado_prefork.testing import children

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "benchmarks" / "hello.py"

PATTERNS = [
    "tornado",
    "tornado-uvloop",
    "tornado-reuseport",
    "prefork",
    "prefork-reuseport",
    "prefork-uvloop",
]
LABELS = {
    "tornado": "Tornado fork_processes",
    "tornado-uvloop": "Tornado on uvloop",
    "tornado-reuseport": "Tornado + reuse_port",
    "prefork": "serve(loop='asyncio')",
    "prefork-reuseport": "serve(reuse_port=True)",
    "prefork-uvloop": "serve(loop='uvloop')",
}
# Tornado on uvloop is there for throughput only: what the loop alone is worth.
SERVERS = [p for p in PATTERNS if p != "tornado-uvloop"]
# The split compares the accept paths; the loop does not change them.
ACCEPT_PATTERNS = [p for p in SERVERS if not p.endswith("uvloop")]
RELOADS = {"prefork", "prefork-reuseport"}

TICK = os.sysconf("SC_CLK_TCK")
ALL_CPUS = sorted(os.sched_getaffinity(0))


def cpu_plan(counts: list[int]) -> dict[int, tuple[list[int], list[int]]]:
    """For each worker count the machine can pin: (server CPUs, wrk CPUs).

    N workers get N CPUs of their own and wrk gets the rest, so that client
    and server never compete; a count that leaves wrk no CPU is not measured.
    """
    return {n: (ALL_CPUS[:n], ALL_CPUS[n:]) for n in counts if n < len(ALL_CPUS)}


def cpu_list(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str = "/", timeout: float = 5) -> tuple[int, int]:
    """One request on a fresh connection: (status, pid of the worker)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, int(response.getheader("X-Worker") or 0)
    finally:
        conn.close()


class Server:
    """One pattern's hello-world server in its own process group, on ``cpus``."""

    def __init__(
        self,
        pattern: str,
        processes: int,
        cpus: list[int] = ALL_CPUS,
        backlog: int | None = None,
    ) -> None:
        self.pattern = pattern
        self.processes = processes
        self.port = free_port()
        self.started = time.monotonic()
        argv = [sys.executable, str(HELLO), "--pattern", pattern]
        argv += ["--processes", str(processes), "--port", str(self.port)]
        argv += [] if backlog is None else ["--backlog", str(backlog)]
        self.proc = subprocess.Popen(
            ["taskset", "-c", cpu_list(cpus), *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd=ROOT,
        )
        self.launch_time = self._wait_ready()

    def _wait_ready(self, timeout: float = 20) -> float:
        """Seconds from launch until every worker has answered."""
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < self.processes:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"{self.pattern}: only {len(seen)} workers answered")
            with contextlib.suppress(OSError, http.client.HTTPException):
                socks = [socket.create_connection(("127.0.0.1", self.port)) for _ in range(16)]
                for sock in socks:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                for sock in socks:
                    seen.update(worker_of(read_all(sock)))
                    sock.close()
            time.sleep(0.005)
        return time.monotonic() - self.started

    def workers(self) -> list[int]:
        return children(self.proc.pid)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@contextlib.contextmanager
def server(
    pattern: str, processes: int, cpus: list[int] = ALL_CPUS, backlog: int | None = None
) -> Iterator[Server]:
    s = Server(pattern, processes, cpus, backlog)
    try:
        yield s
    finally:
        s.stop()


@contextlib.contextmanager
def pinned(cpus: list[int]) -> Iterator[None]:
    """This process (the client side of a measurement) on ``cpus`` only."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def worker_of(response: bytes) -> list[int]:
    """The worker pid that an HTTP response names, if any."""
    match = re.search(rb"X-Worker: (\d+)", response)
    return [int(match.group(1))] if match else []


# -- wrk ----------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(
    port: int,
    seconds: float,
    connections: int = 64,
    close: bool = False,
    cpus: list[int] = ALL_CPUS,
) -> dict[str, float]:
    """Runs wrk on ``cpus`` (one thread each); returns requests/s, p50/p99 in ms, errors."""
    command = ["taskset", "-c", cpu_list(cpus), "wrk", f"-t{len(cpus)}", f"-c{connections}"]
    command += [f"-d{max(1, round(seconds))}s", "--latency"]
    if close:
        command += ["-H", "Connection: close"]
    out = subprocess.run(
        [*command, f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    result = {"rps": _number(r"Requests/sec:\s+([\d.]+)", out)}
    for name, key in (("50%", "p50"), ("99%", "p99")):
        match = re.search(rf"\s{name}\s+([\d.]+)(us|ms|s)", out)
        assert match is not None, out
        result[key] = float(match.group(1)) * _UNITS[match.group(2)]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = errors + (int(non_2xx.group(1)) if non_2xx else 0)
    result["requests"] = _number(r"(\d+) requests in", out)
    return result


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match is not None, text
    return float(match.group(1))


# -- /proc --------------------------------------------------------------------


def established_per_worker(workers: list[int], port: int) -> dict[int, int]:
    """Established TCP connections on the server side of ``port``, per worker pid."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    counts = {}
    for pid in workers:
        held = 0
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        held += 1
        counts[pid] = held
    return counts


def ratio(values: list[float]) -> float:
    """max/min; infinite when some worker got nothing."""
    if not values:
        return float("nan")
    low = min(values)
    return float("inf") if low == 0 else max(values) / low


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time of ``pid``, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def status_kib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return float("nan")


def private_kib(pid: int) -> float:
    total = 0.0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += float(line.split()[1])
    return total
