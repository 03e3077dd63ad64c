"""Benchmarks: tornado-prefork against Tornado's own multi-process patterns.

    make bench            # or: python benchmarks/run.py

Needs ``wrk`` (Debian/Ubuntu: ``apt-get install -y wrk``), ``taskset``
(util-linux) and, for the charts and the uvloop pattern, the ``bench`` extra.
Writes ``docs/benchmarks.md``, PNG charts beside it, and the summary table
between the markers in ``README.md``. Every number comes from this run;
patterns are interleaved (A B C, A B C, ...) and medians reported.

Throughput and restart latency are measured the low-noise way: the N workers
pinned to N CPUs, wrk (and this process, when it is the client) to the
others. A worker count that leaves the client no CPU of its own is not
measured for throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import signal
import statistics
import sys
import threading
import time
from typing import Any

import broadcast
import burst
import charts
import memory
import reload
import report
import split
from harness import (
    ALL_CPUS,
    PATTERNS,
    RELOADS,
    SERVERS,
    TICK,
    Server,
    cpu_plan,
    cpu_ticks,
    get,
    pinned,
    private_kib,
    server,
    status_kib,
    wrk,
)

from tornado_prefork.testing import alive


def throughput(reps: int, seconds: float, counts: list[int]) -> dict[str, Any]:
    """Requests/s, latency and worker CPU per request, keep-alive and close."""
    runs: dict[tuple[str, int, str], list[dict[str, float]]] = {}
    launch: dict[tuple[str, int], list[float]] = {}
    for rep in range(reps):
        for n, (server_cpus, client_cpus) in cpu_plan(counts).items():
            for pattern in PATTERNS:
                with server(pattern, n, cpus=server_cpus) as s:
                    launch.setdefault((pattern, n), []).append(s.launch_time)
                    time.sleep(0.3)
                    for mode in ("keep-alive", "close"):
                        result = _measure(s, seconds, mode == "close", client_cpus)
                        runs.setdefault((pattern, n, mode), []).append(result)
                keep, close = runs[(pattern, n, "keep-alive")][-1], runs[(pattern, n, "close")][-1]
                print(
                    f"  rep {rep + 1} N={n} {pattern}: {keep['rps']:.0f} req/s "
                    f"{keep['cpu_us']:.0f} µs keep-alive, {close['rps']:.0f} close",
                    flush=True,
                )
    return {"runs": runs, "launch": launch}


def _measure(s: Server, seconds: float, close: bool, client: list[int]) -> dict[str, float]:
    workers = s.workers()
    before = sum(cpu_ticks(w) for w in workers)
    result = wrk(s.port, seconds, close=close, cpus=client)
    used = sum(cpu_ticks(w) for w in workers) - before
    # CPU time per request does not depend on how fast the client is.
    result["cpu_us"] = used * 1e6 / TICK / result["requests"]
    return result


def restart_latency(times: int) -> dict[str, dict[str, list[float]]]:
    """N=1, pinned: SIGKILL the worker; seconds until a new worker process exists
    (``forked``) and until it answers (``answered``)."""
    results: dict[str, dict[str, list[float]]] = {}
    server_cpus, client_cpus = cpu_plan([1])[1]
    for pattern in SERVERS:
        found = results.setdefault(pattern, {"forked": [], "answered": []})
        with server(pattern, 1, cpus=server_cpus) as s, pinned(client_cpus):
            for _ in range(times):
                # Older than min_uptime, so that no crash-loop delay applies.
                time.sleep(1.2)
                (victim,) = s.workers()
                forked: list[float] = []
                watcher = threading.Thread(target=_watch_fork, args=(s, victim, forked))
                os.kill(victim, signal.SIGKILL)
                began = time.monotonic()
                watcher.start()
                while True:
                    with contextlib.suppress(OSError, http.client.HTTPException):
                        status, pid = get(s.port, timeout=2)
                        if status == 200 and pid != victim:
                            break
                    time.sleep(0.001)
                found["answered"].append(time.monotonic() - began)
                watcher.join()
                found["forked"].append(forked[0] - began)
    return results


def _watch_fork(s: Server, victim: int, forked: list[float]) -> None:
    """Appends the time at which ``s`` first has a worker other than ``victim``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(pid != victim for pid in s.workers()):
            forked.append(time.monotonic())
            return
        time.sleep(0.0005)
    forked.append(float("nan"))


def kill_under_load(seconds: float) -> dict[str, dict[str, float]]:
    """N=2, wrk -c64 keep-alive: one worker SIGKILLed a third of the way in."""
    results = {}
    for pattern in SERVERS:
        with server(pattern, 2) as s:
            timer = threading.Timer(
                seconds / 3, lambda s=s: os.kill(s.workers()[0], signal.SIGKILL)
            )
            timer.start()
            results[pattern] = wrk(s.port, seconds)
            timer.join()
    return results


def reloads_under_load(count: int) -> dict[str, dict[str, float]]:
    """N=2, wrk -c64 keep-alive during ``count`` SIGHUP reloads (prefork only)."""
    results = {}
    for pattern in sorted(RELOADS):
        with server(pattern, 2) as s:

            def hup(s: Server = s) -> None:
                for _ in range(count):
                    time.sleep(0.8)
                    s.proc.send_signal(signal.SIGHUP)

            thread = threading.Thread(target=hup)
            thread.start()
            results[pattern] = wrk(s.port, count * 0.8 + 2)
            thread.join()
    return results


def sigterm_in_flight(requests: int) -> dict[str, dict[str, int]]:
    """N=2: ``requests`` slow requests in flight, then SIGTERM to the process group
    (what systemd does); and, separately, SIGTERM to the parent only."""
    results = {}
    for pattern in SERVERS:
        with server(pattern, 2) as s:
            outcomes: list[int] = []

            def slow(s: Server = s, outcomes: list[int] = outcomes) -> None:
                try:
                    outcomes.append(get(s.port, "/slow?seconds=2", timeout=10)[0])
                except (OSError, http.client.HTTPException):
                    outcomes.append(0)

            threads = [threading.Thread(target=slow) for _ in range(requests)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            os.killpg(s.proc.pid, signal.SIGTERM)
            for t in threads:
                t.join()
            lost = sum(1 for code in outcomes if code != 200)
        with server(pattern, 2) as s:
            workers = s.workers()
            s.proc.send_signal(signal.SIGTERM)
            time.sleep(1)
            left = sum(1 for pid in workers if alive(pid))
        results[pattern] = {"lost": lost, "orphans": left}
    return results


def idle_parent(seconds: float) -> dict[str, dict[str, float]]:
    """N=2, every pattern idle at once: the parent's CPU time, RSS, workers' private memory."""
    results = {}
    with contextlib.ExitStack() as stack:
        servers = {p: stack.enter_context(server(p, 2)) for p in SERVERS}
        time.sleep(1)
        before = {p: cpu_ticks(s.proc.pid) for p, s in servers.items()}
        time.sleep(seconds)
        for pattern, s in servers.items():
            cpu_ms = (cpu_ticks(s.proc.pid) - before[pattern]) * 1000 / TICK
            results[pattern] = {
                "cpu_ms": cpu_ms,
                "parent_rss": status_kib(s.proc.pid, "VmRSS"),
                "worker_private": statistics.mean(private_kib(w) for w in s.workers()),
            }
    return results


def memory_section(processes: int, seconds: int, restarts: int) -> dict[str, Any]:
    """``benchmarks/memory.py``'s measurements: PSS of each way, restart latency of some."""
    sizes = {}
    for way in memory.WAYS:
        sizes[way] = memory.memory(way, processes, seconds)
        print(f"  {way}: {sizes[way]['total']:.0f} MiB", flush=True)
    # memory.py pins the server to CPU 0; the client polls from the other CPU.
    with pinned(ALL_CPUS[1:]):
        latency = {way: memory.restart_latency(way, restarts) for way in memory.RESTARTS}
    return {"sizes": sizes, "restart": latency}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    # Even pinned, the CPUs are shared with other work: seven interleaved repetitions.
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--inflight", type=int, default=20)
    parser.add_argument("--idle", type=float, default=10)
    parser.add_argument("--split-reps", type=int, default=5)
    parser.add_argument("--burst-reps", type=int, default=5)
    parser.add_argument("--hup-workers", type=int, default=32)
    parser.add_argument("--hup-times", type=int, default=3)
    parser.add_argument("--memory-workers", type=int, default=4)
    parser.add_argument("--memory-seconds", type=int, default=6)
    parser.add_argument("--memory-restarts", type=int, default=5)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    for tool, package in (("wrk", "wrk"), ("taskset", "util-linux")):
        if shutil.which(tool) is None:
            print(f"benchmarks need {tool}: apt-get install -y {package}", file=sys.stderr)
            return 2
    if len(ALL_CPUS) < 2:
        print("benchmarks need 2 CPUs: one for the server, one for wrk", file=sys.stderr)
        return 2
    began = time.monotonic()
    data: dict[str, Any] = {
        "cpus": cpu_plan(args.counts),
        "idle_seconds": args.idle,
        "hup_workers": args.hup_workers,
        "load": [os.getloadavg()[0]],
    }
    steps = [
        ("throughput", lambda: throughput(args.reps, args.seconds, args.counts)),
        ("restart", lambda: restart_latency(args.restarts)),
        ("split", lambda: split.splits(args.split_reps, args.seconds)),
        ("burst", lambda: burst.bursts(args.burst_reps)),
        (
            "memory",
            lambda: memory_section(args.memory_workers, args.memory_seconds, args.memory_restarts),
        ),
        ("hup", lambda: reload.reload_times(args.hup_workers, args.hup_times)),
        ("kill", lambda: kill_under_load(6)),
        ("reload", lambda: reloads_under_load(args.reloads)),
        ("sigterm", lambda: sigterm_in_flight(args.inflight)),
        ("idle", lambda: idle_parent(args.idle)),
    ]
    for name, step in steps:
        print(f"{name} ...", flush=True)
        data[name] = step()
    data["load"].append(os.getloadavg()[0])
    charts.draw(data)
    text = report.document(data, args, time.monotonic() - began)
    document = report.DOCS / "benchmarks.md"
    # The broadcast benchmarks' sections (and their notes), from the first of
    # their markers to the end, are theirs: kept as they are.
    _, marker, theirs = document.read_text().partition(broadcast.START)
    if marker:
        text = f"{text.rstrip()}\n\n{marker}{theirs}"
    document.write_text(text)
    report.update_readme(report.summary(data))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
