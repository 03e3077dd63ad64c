"""What ``metrics_port`` costs: worker CPU per request, and how fast a scrape of 32 workers is.

    python benchmarks/metrics.py            # by hand; needs wrk and taskset

The server is pinned to CPU 0 and wrk to CPU 1 (``taskset``), so the client
does not steal the server's CPU. Runs with metrics on and off are interleaved
and medians reported. Writes the results between the markers in
``docs/metrics.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import http.client
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "metrics.md"
START, END = "<!-- bench-metrics:start -->", "<!-- bench-metrics:end -->"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str = "/") -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("X-Worker") or "", response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def server(
    processes: int, metrics: bool, tmp: str | None = None
) -> Iterator[tuple[int, int | None, list[int]]]:
    """The hello app on CPU 0: (port, metrics port, worker pids); temporary files in ``tmp``."""
    port = free_port()
    metrics_port = free_port() if metrics else None
    argv = [
        "taskset",
        "-c",
        "0",
        sys.executable,
        "-m",
        "tornado_prefork",
        "benchmarks.hello:make_app",
        f"--port={port}",
        f"--processes={processes}",
        "--no-access-log",
        "--log-level=warning",
    ]
    if metrics_port is not None:
        argv.append(f"--metrics-port={metrics_port}")
    env = dict(os.environ, **({"TMPDIR": tmp} if tmp is not None else {}))
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL
    )
    try:
        workers = _wait_for_workers(port, processes)
        yield port, metrics_port, workers
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_for_workers(port: int, processes: int, timeout: float = 60) -> list[int]:
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < processes:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(seen)} of {processes} workers answered")
        with contextlib.suppress(OSError, http.client.HTTPException):
            seen.add(int(get(port)[1]))
            continue
        time.sleep(0.05)
    return sorted(seen)


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids``, from /proc/PID/stat."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICK


def wrk(port: int, seconds: float, connections: int) -> int:
    """Runs wrk on CPU 1; returns the number of requests it completed."""
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"(\d+) requests in", out)
    if match is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return int(match.group(1))


def cpu_per_request(metrics: bool, seconds: float) -> float:
    """Worker CPU microseconds per request, one worker, keep-alive load."""
    with server(1, metrics) as (port, _, workers):
        wrk(port, 1, 32)  # warm up
        before = cpu_seconds(workers)
        requests = wrk(port, seconds, 32)
        used = cpu_seconds(workers) - before
    return used / requests * 1e6


@dataclasses.dataclass
class Scrapes:
    """Latencies (ms) of /metrics and /healthz, alternated, under load."""

    metrics: list[float]
    healthz: list[float]
    size: int
    files: int
    # CPU ms per scrape of the same files: ours, prometheus_client's MultiProcessCollector.
    merging: float
    prometheus: float


def scrape_times(processes: int, scrapes: int) -> Scrapes:
    """``scrapes`` of each path with ``processes`` busy workers."""
    # In memory, where the server puts its directory when TMPDIR is not set.
    tmp = tempfile.mkdtemp(prefix="bench-metrics-", dir="/dev/shm")
    times: dict[str, list[float]] = {"/metrics": [], "/healthz": []}
    size = 0
    with server(processes, True, tmp) as (port, metrics_port, _):
        assert metrics_port is not None
        wrk(port, 3, 256)  # every worker answers and writes its files
        load = subprocess.Popen(
            ["taskset", "-c", "1", "wrk", "-t1", "-c64", "-d60s", f"http://127.0.0.1:{port}/"],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(1)
            for _ in range(scrapes):
                for path, took in times.items():
                    began = time.perf_counter()
                    status, _, body = get(metrics_port, path)
                    took.append((time.perf_counter() - began) * 1000)
                    assert status == 200, body
                    size = len(body) if path == "/metrics" else size
                    time.sleep(0.1)
        finally:
            load.terminate()
            load.wait()
        (directory,) = Path(tmp).glob("tornado-prefork-metrics-*")
        files = len(list(directory.glob("*.db")))
        merging, prometheus = _collector_cpu(str(directory))
    shutil.rmtree(tmp, ignore_errors=True)
    return Scrapes(times["/metrics"], times["/healthz"], size, files, merging, prometheus)


def _collector_cpu(directory: str, rounds: int = 50) -> tuple[float, float]:
    """CPU ms of one scrape's text from ``directory``, by each collector."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from tornado_prefork._metrics.merge import MergingCollector

    ours, theirs = CollectorRegistry(), CollectorRegistry()
    ours.register(MergingCollector(directory))
    MultiProcessCollector(theirs, directory)
    spent = []
    for registry in (ours, theirs):
        generate_latest(registry)
        began = time.process_time()
        for _ in range(rounds):
            generate_latest(registry)
        spent.append((time.process_time() - began) / rounds * 1000)
    return spent[0], spent[1]


# Times the worker's instruments alone, in a fresh process with the directory set.
_OBSERVER = """
import asyncio, os, tempfile, time
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp()
from tornado_prefork._metrics.instruments import RequestMetrics

async def main():
    metrics = RequestMetrics(0)
    n = 200000
    began = time.process_time()
    for _ in range(n):
        metrics.request_ended("GET", 200, 0.001)
    print((time.process_time() - began) / n * 1e6)

asyncio.run(main())
"""


def observer_cost() -> float:
    """CPU µs the instruments take per request (one request per connection)."""
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", _OBSERVER],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--no-write", action="store_true", help="print, do not edit the docs")
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (apt-get install -y wrk util-linux)")
    # This script and the scrapes run beside wrk, not beside the server.
    os.sched_setaffinity(0, {1})
    began = time.monotonic()
    runs: dict[bool, list[float]] = {True: [], False: []}
    for repetition in range(args.repeat):
        # Each pair runs back to back, its order alternating, so that the load
        # of whatever else the machine runs weighs on both alike.
        for metrics in (False, True) if repetition % 2 == 0 else (True, False):
            runs[metrics].append(cpu_per_request(metrics, args.seconds))
            print(f"metrics {'on ' if metrics else 'off'}: {runs[metrics][-1]:.1f} µs/request")
    instruments = statistics.median(observer_cost() for _ in range(3))
    scrapes = scrape_times(args.workers, 40)
    off, on = statistics.median(runs[False]), statistics.median(runs[True])
    report = _report(args, runs, off, on, instruments, scrapes, time.monotonic() - began)
    print(report)
    if not args.no_write:
        text = DOCS.read_text()
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        DOCS.write_text(f"{head}{START}\n{report}\n{END}{tail}")


def _report(
    args: argparse.Namespace,
    runs: dict[bool, list[float]],
    off: float,
    on: float,
    instruments: float,
    scrapes: Scrapes,
    elapsed: float,
) -> str:
    # The median of the pairs' ratios: a pair shares the machine's load.
    ratio = statistics.median(b / a for a, b in zip(runs[False], runs[True], strict=True))
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
    return "\n".join(
        [
            f"Measured {datetime.date.today()} by `python benchmarks/metrics.py` "
            f"in {elapsed / 60:.1f} minutes; numbers are written by the script.",
            "",
            f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Linux {platform.release()}; Python {platform.python_version()}; "
            f"wrk {wrk_version[1] if len(wrk_version) > 1 else '?'}",
            "- Server on CPU 0 (`taskset -c 0`), wrk on CPU 1; hello-world app of "
            f"`benchmarks/hello.py`; one worker, `wrk -t1 -c32 -d{args.seconds:g}s`, "
            f"{args.repeat} pairs of runs back to back (order alternating); medians, "
            "and the median of the pairs' ratios.",
            "",
            "| measure | metrics off | metrics on | ratio | target | met |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| worker CPU per request (µs) | {off:.1f} | {on:.1f} | {ratio:.3f}x | "
            f"<= 1.10x | {'yes' if ratio <= 1.10 else 'no'} |",
            "",
            f"Runs (µs/request), off: {', '.join(f'{v:.1f}' for v in runs[False])}; "
            f"on: {', '.join(f'{v:.1f}' for v in runs[True])}. The instruments alone "
            f"(connection opened and closed, request started and ended, in a loop) take "
            f"{instruments:.2f} µs of CPU per request.",
            "",
            f"Under load (`wrk -c64` on CPU 1; all {args.workers} workers and the "
            f"endpoint process on CPU 0), {len(scrapes.metrics)} requests of each path "
            "on fresh connections, alternated:",
            "",
            "| path | median ms | p90 ms | max ms | target | met |",
            "| --- | --- | --- | --- | --- | --- |",
            _latency_row("/metrics", scrapes.metrics, "< 100 ms"),
            _latency_row("/healthz", scrapes.healthz, "-"),
            "",
            f"A scrape is {scrapes.size} bytes of text from {scrapes.files} files; making "
            f"it takes {scrapes.merging:.2f} ms of CPU ({scrapes.prometheus:.2f} ms with "
            "prometheus_client's `MultiProcessCollector`, on the same files). `/healthz` "
            "does no work, so its times are what the scheduler adds: the endpoint is one "
            f"of {args.workers + 1} runnable processes on one CPU.",
        ]
    )


def _latency_row(path: str, times: list[float], target: str) -> str:
    ordered = sorted(times)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    met = "-" if target == "-" else ("yes" if ordered[-1] < 100 else "median only")
    if met == "median only" and statistics.median(ordered) >= 100:
        met = "no"
    return (
        f"| `{path}` | {statistics.median(ordered):.1f} | {p90:.1f} | {ordered[-1]:.1f} | "
        f"{target} | {met} |"
    )


if __name__ == "__main__":
    main()
