"""Benchmarks: tornado-prefork against Tornado's own multi-process patterns.

    make bench            # or: python benchmarks/run.py

Needs ``wrk`` (Debian/Ubuntu: ``apt-get install -y wrk``) and, for the charts,
matplotlib (the ``bench`` extra). Writes ``docs/benchmarks.md``, PNG charts
beside it, and the summary table between the markers in ``README.md``. Every
number comes from this run; patterns are interleaved (A B C D, A B C D, ...)
and medians reported.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import importlib.metadata
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
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tornado_prefork.testing import alive, children

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "benchmarks" / "hello.py"
DOCS = ROOT / "docs"

PATTERNS = ["tornado", "tornado-reuseport", "prefork", "prefork-reuseport"]
LABELS = {
    "tornado": "Tornado fork_processes",
    "tornado-reuseport": "Tornado + reuse_port",
    "prefork": "tornado_prefork.serve",
    "prefork-reuseport": "serve(reuse_port=True)",
}
RELOADS = {"prefork", "prefork-reuseport"}


# -- processes --------------------------------------------------------------


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
    """One pattern's server in its own process group."""

    def __init__(self, pattern: str, processes: int, stats: Path | None = None) -> None:
        self.pattern = pattern
        self.processes = processes
        self.port = free_port()
        env = dict(os.environ)
        if stats is not None:
            env["BENCH_STATS"] = str(stats)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(HELLO),
                "--pattern",
                pattern,
                "--processes",
                str(processes),
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=ROOT,
        )
        self.launch_time = self._wait_ready()

    def _wait_ready(self, timeout: float = 20) -> float:
        """Seconds from launch until every worker has answered."""
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < self.processes:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.pattern}: only {len(seen)} workers answered")
            with contextlib.suppress(OSError, http.client.HTTPException):
                socks = [socket.create_connection(("127.0.0.1", self.port)) for _ in range(16)]
                for sock in socks:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                for sock in socks:
                    data = b""
                    while chunk := sock.recv(4096):
                        data += chunk
                    sock.close()
                    match = re.search(rb"X-Worker: (\d+)", data)
                    if match:
                        seen.add(int(match.group(1)))
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
def server(pattern: str, processes: int, stats: Path | None = None) -> Iterator[Server]:
    s = Server(pattern, processes, stats)
    try:
        yield s
    finally:
        s.stop()


# -- wrk ----------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_TICK = os.sysconf("SC_CLK_TCK")


def wrk(port: int, seconds: float, connections: int = 64, close: bool = False) -> dict[str, float]:
    """Runs wrk; returns requests/s, p50/p99 in ms, and errors."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    if close:
        command += ["-H", "Connection: close"]
    out = subprocess.run(
        [*command, f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for name, key in (("50%", "p50"), ("99%", "p99")):
        value, unit = re.search(rf"\s{name}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        result[key] = float(value) * _UNITS[unit]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = errors + (int(non_2xx.group(1)) if non_2xx else 0)
    result["requests"] = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return result


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
    values = [v for v in values]
    if not values:
        return float("nan")
    low = min(values)
    return float("inf") if low == 0 else max(values) / low


# -- figures ------------------------------------------------------------------


def throughput(reps: int, seconds: float, counts: list[int]) -> dict[str, Any]:
    """Requests/s and latency, keep-alive and close; splits and launch times."""
    runs: dict[tuple[str, int, str], list[dict[str, float]]] = {}
    splits: dict[str, dict[str, list[float]]] = {p: {"conns": [], "reqs": []} for p in PATTERNS}
    launch: dict[tuple[str, int], list[float]] = {}
    for rep in range(reps):
        for n in counts:
            for pattern in PATTERNS:
                stats = Path(tempfile.mkdtemp(prefix="bench-"))
                try:
                    with server(pattern, n, stats) as s:
                        launch.setdefault((pattern, n), []).append(s.launch_time)
                        time.sleep(0.3)
                        before = read_stats(stats)
                        sample: dict[int, int] = {}

                        def look(s: Server = s, sample: dict[int, int] = sample) -> None:
                            time.sleep(seconds / 2)
                            sample.update(established_per_worker(s.workers(), s.port))

                        watcher = threading.Thread(target=look)
                        watcher.start()
                        workers = s.workers()
                        cpu_before = sum(_cpu(w) for w in workers)
                        keep = wrk(s.port, seconds)
                        cpu_used = sum(_cpu(w) for w in workers) - cpu_before
                        # CPU time per request does not depend on how the
                        # machine schedules the client and the workers.
                        keep["cpu_us"] = cpu_used * 1e6 / _TICK / keep["requests"]
                        watcher.join()
                        after = read_stats(stats)
                        close = wrk(s.port, seconds, close=True)
                        runs.setdefault((pattern, n, "keep-alive"), []).append(keep)
                        runs.setdefault((pattern, n, "close"), []).append(close)
                        if n == 2:
                            splits[pattern]["conns"].append(ratio(list(sample.values())))
                            served = [after.get(p, 0) - before.get(p, 0) for p in after]
                            splits[pattern]["reqs"].append(ratio(served))
                finally:
                    shutil.rmtree(stats, ignore_errors=True)
                print(
                    f"  rep {rep + 1} N={n} {pattern}: "
                    f"{keep['rps']:.0f} req/s keep-alive, {close['rps']:.0f} close",
                    flush=True,
                )
    return {"runs": runs, "splits": splits, "launch": launch}


def read_stats(directory: Path) -> dict[int, int]:
    stats = {}
    for path in directory.iterdir():
        with contextlib.suppress(ValueError, OSError):
            stats[int(path.name)] = int(path.read_text() or 0)
    return stats


def restart_latency(times: int) -> dict[str, list[float]]:
    """N=1: SIGKILL the worker, seconds until a new pid answers."""
    results: dict[str, list[float]] = {}
    for pattern in PATTERNS:
        with server(pattern, 1) as s:
            for _ in range(times):
                # Older than min_uptime, so that no crash-loop delay applies.
                time.sleep(1.2)
                (victim,) = s.workers()
                os.kill(victim, signal.SIGKILL)
                began = time.monotonic()
                while True:
                    with contextlib.suppress(OSError, http.client.HTTPException):
                        status, pid = get(s.port, timeout=2)
                        if status == 200 and pid != victim:
                            break
                    time.sleep(0.001)
                results.setdefault(pattern, []).append(time.monotonic() - began)
    return results


def kill_under_load(seconds: float) -> dict[str, dict[str, float]]:
    """N=2, wrk -c64 keep-alive: one worker SIGKILLed a third of the way in."""
    results = {}
    for pattern in PATTERNS:
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

            def reload(s: Server = s) -> None:
                for _ in range(count):
                    time.sleep(0.8)
                    s.proc.send_signal(signal.SIGHUP)

            thread = threading.Thread(target=reload)
            thread.start()
            results[pattern] = wrk(s.port, count * 0.8 + 2)
            thread.join()
    return results


def sigterm_in_flight(requests: int) -> dict[str, dict[str, int]]:
    """N=2: ``requests`` slow requests in flight, then SIGTERM to the process group
    (what systemd does); and, separately, SIGTERM to the parent only."""
    results = {}
    for pattern in PATTERNS:
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


def idle_and_memory(seconds: float) -> dict[str, dict[str, float]]:
    """N=2, all four idle at once: the parent's CPU time, RSS and workers' private memory."""
    results = {}
    with contextlib.ExitStack() as stack:
        servers = {p: stack.enter_context(server(p, 2)) for p in PATTERNS}
        time.sleep(1)
        before = {p: _cpu(s.proc.pid) for p, s in servers.items()}
        time.sleep(seconds)
        for pattern, s in servers.items():
            cpu_ms = (_cpu(s.proc.pid) - before[pattern]) * 1000 / _TICK
            results[pattern] = {
                "cpu_ms": cpu_ms,
                "parent_rss": _status_kib(s.proc.pid, "VmRSS"),
                "worker_private": statistics.mean(_private_kib(w) for w in s.workers()),
            }
    return results


def _cpu(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def _status_kib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return float("nan")


def _private_kib(pid: int) -> float:
    total = 0.0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += float(line.split()[1])
    return total


# -- the report -----------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(data: dict[str, Any], args: argparse.Namespace, elapsed: float) -> str:
    runs = data["throughput"]["runs"]
    counts = args.counts
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.date.today().isoformat()} by `make bench` "
        f"(`python benchmarks/run.py`), in {elapsed / 60:.1f} minutes. "
        "Numbers are written by the runner, never by hand.",
        "",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, Tornado {_version('tornado')}, "
        f"tornado-prefork {_version('tornado-prefork')}, {_wrk_version()}",
        f"- Load: `wrk -t2 -c64 -d{args.seconds}s --latency` on 127.0.0.1, the hello-world "
        "app of `benchmarks/hello.py`; the client shares the machine with the server.",
        f"- Patterns run interleaved, {args.reps} repetitions; medians.",
        "",
        "Patterns: " + "; ".join(f"**{LABELS[p]}** (`{p}`)" for p in PATTERNS) + ".",
        "",
        "## Summary against the targets",
        "",
        SUMMARY_START,
        summary(data, counts),
        SUMMARY_END,
        "",
        "## Throughput and latency",
        "",
        "The spread (lowest to highest of the repetitions) shows how noisy the machine is; "
        "a ratio inside it is not a difference.",
        "",
        "| N | connections | pattern | requests/s | spread | p50 ms | p99 ms | errors "
        "| worker CPU µs/request |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in counts:
        for mode in ("keep-alive", "close"):
            for pattern in PATTERNS:
                r = runs[(pattern, n, mode)]
                rps = [x["rps"] for x in r]
                lines.append(
                    f"| {n} | {mode} | {LABELS[pattern]} | {median(rps):.0f} | "
                    f"{min(rps):.0f}-{max(rps):.0f} | "
                    f"{median([x['p50'] for x in r]):.2f} | {median([x['p99'] for x in r]):.2f} | "
                    f"{sum(x['errors'] for x in r):.0f} | {_cpu_column(r)} |"
                )
    lines += ["", "![requests per second](benchmarks-throughput.png)", ""]
    splits = data["throughput"]["splits"]
    lines += [
        "## Split across 2 workers (64 keep-alive connections)",
        "",
        "max/min of the connections each worker holds (sampled mid-run) and of the requests "
        "each answered; 1.0 is even.",
        "",
        "| pattern | connections max/min | requests max/min |",
        "| --- | --- | --- |",
    ]
    for pattern in PATTERNS:
        lines.append(
            f"| {LABELS[pattern]} | {median(splits[pattern]['conns']):.2f} | "
            f"{median(splits[pattern]['reqs']):.2f} |"
        )
    lines += ["", "![split](benchmarks-split.png)", ""]
    restart = data["restart"]
    lines += [
        f"## Restart latency (N=1, SIGKILL the worker, {args.restarts} times)",
        "",
        "Seconds until a new worker answers.",
        "",
        "| pattern | median s | max s |",
        "| --- | --- | --- |",
    ]
    for pattern in PATTERNS:
        lines.append(
            f"| {LABELS[pattern]} | {median(restart[pattern]):.3f} | {max(restart[pattern]):.3f} |"
        )
    kills, reloads, term = data["kill"], data["reload"], data["sigterm"]
    lines += [
        "",
        "## Failures",
        "",
        "| pattern | failed requests, a worker SIGKILLed under load | failed requests, "
        f"{args.reloads} HUP reloads under load | slow requests lost, SIGTERM with "
        f"{args.inflight} in flight | workers alive 1 s after SIGTERM to the parent |",
        "| --- | --- | --- | --- | --- |",
    ]
    for pattern in PATTERNS:
        reload = (
            f"{reloads[pattern]['errors']:.0f} of {reloads[pattern]['requests']:.0f}"
            if pattern in reloads
            else "no reload"
        )
        lines.append(
            f"| {LABELS[pattern]} | {kills[pattern]['errors']:.0f} of "
            f"{kills[pattern]['requests']:.0f} | {reload} | {term[pattern]['lost']} of "
            f"{args.inflight} | {term[pattern]['orphans']} |"
        )
    idle = data["idle"]
    launch = data["throughput"]["launch"]
    lines += [
        "",
        "## Start-up, idle parent and memory (N=2)",
        "",
        f"| pattern | launch until all answer s | parent CPU over {args.idle:.0f} idle s, ms | "
        "parent RSS MiB | worker private MiB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for pattern in PATTERNS:
        i = idle[pattern]
        started = median(launch.get((pattern, 2), []))
        lines.append(
            f"| {LABELS[pattern]} | {started:.3f} | {i['cpu_ms']:.0f} | "
            f"{i['parent_rss'] / 1024:.1f} | {i['worker_private'] / 1024:.1f} |"
        )
    lines.append("")
    return "\n".join(lines)


SUMMARY_START = "<!-- bench-summary:start -->"
SUMMARY_END = "<!-- bench-summary:end -->"


def _cpu_column(runs: list[dict[str, float]]) -> str:
    values = [x["cpu_us"] for x in runs if "cpu_us" in x]
    return f"{median(values):.0f}" if values else "-"


def summary(data: dict[str, Any], counts: list[int]) -> str:
    runs = data["throughput"]["runs"]
    rows = ["| target | measured | met |", "| --- | --- | --- |"]

    def rps(pattern: str, n: int, mode: str) -> float:
        return median([x["rps"] for x in runs[(pattern, n, mode)]])

    for n in counts:
        for mode in ("keep-alive", "close"):
            r = rps("prefork", n, mode) / rps("tornado", n, mode)
            rows.append(
                f"| throughput >= 0.97x Tornado, N={n}, {mode} | {r:.2f}x | "
                f"{'yes' if r >= 0.97 else 'no'} |"
            )
    for n in counts:
        ours_cpu = median([x["cpu_us"] for x in runs[("prefork", n, "keep-alive")]])
        their_cpu = median([x["cpu_us"] for x in runs[("tornado", n, "keep-alive")]])
        rows.append(
            f"| (also) worker CPU per request vs Tornado, N={n}, keep-alive | "
            f"{ours_cpu / their_cpu:.2f}x ({ours_cpu:.0f} vs {their_cpu:.0f} µs) | - |"
        )
    split = median(data["throughput"]["splits"]["prefork"]["conns"])
    tornado_split = median(data["throughput"]["splits"]["tornado"]["conns"])
    rows.append(
        f"| connection split max/min <= 1.5 (2 workers, 64 keep-alive) | {split:.2f} "
        f"(Tornado: {tornado_split:.2f}) | {'yes' if split <= 1.5 else 'no'} |"
    )
    ours, theirs = median(data["restart"]["prefork"]), median(data["restart"]["tornado"])
    rows.append(
        f"| restart latency no worse than Tornado's | {ours * 1000:.0f} ms "
        f"(Tornado: {theirs * 1000:.0f} ms) | {'yes' if ours <= theirs else 'no'} |"
    )
    failed = data["reload"]["prefork"]["errors"]
    rows.append(
        f"| zero failed requests in reloads | {failed:.0f} | {'yes' if failed == 0 else 'no'} |"
    )
    lost = data["sigterm"]["prefork"]["lost"]
    rows.append(
        f"| zero in-flight requests lost on SIGTERM | {lost} (Tornado: "
        f"{data['sigterm']['tornado']['lost']}) | {'yes' if lost == 0 else 'no'} |"
    )
    cpu = data["idle"]["prefork"]["cpu_ms"]
    rows.append(
        f"| idle parent uses no measurable CPU | {cpu:.0f} ms in "
        f"{data['idle_seconds']:.0f} s | {'yes' if cpu <= 20 else 'no'} |"
    )
    return "\n".join(rows)


def charts(data: dict[str, Any], counts: list[int]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no charts", flush=True)
        return False
    runs = data["throughput"]["runs"]
    groups = [(n, mode) for n in counts for mode in ("keep-alive", "close")]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(PATTERNS)
    for i, pattern in enumerate(PATTERNS):
        values = [median([x["rps"] for x in runs[(pattern, n, m)]]) for n, m in groups]
        ax.bar([g + i * width for g in range(len(groups))], values, width, label=LABELS[pattern])
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"N={n}\n{m}" for n, m in groups])
    ax.set_ylabel("requests/s (median)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(DOCS / "benchmarks-throughput.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    splits = data["throughput"]["splits"]
    values = [median(splits[p]["conns"]) for p in PATTERNS]
    ax.bar([LABELS[p] for p in PATTERNS], [min(v, 20) for v in values])
    ax.axhline(1.5, linestyle="--", color="grey")
    ax.set_ylabel("connections max/min (capped at 20)")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(DOCS / "benchmarks-split.png", dpi=100)
    plt.close(fig)
    return True


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    return out.split(" [")[0].strip() or "wrk"


def update_readme(table: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if SUMMARY_START in text and SUMMARY_END in text:
        head, rest = text.split(SUMMARY_START, 1)
        _, tail = rest.split(SUMMARY_END, 1)
        readme.write_text(f"{head}{SUMMARY_START}\n{table}\n{SUMMARY_END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # This kind of machine is noisy (shared CPUs): five interleaved repetitions.
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--inflight", type=int, default=20)
    parser.add_argument("--idle", type=float, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("benchmarks need wrk: on Debian or Ubuntu, apt-get install -y wrk", file=sys.stderr)
        return 2
    began = time.monotonic()
    data: dict[str, Any] = {"idle_seconds": args.idle}
    print("throughput, splits, launch times ...", flush=True)
    data["throughput"] = throughput(args.reps, args.seconds, args.counts)
    print("restart latency ...", flush=True)
    data["restart"] = restart_latency(args.restarts)
    print("a worker killed under load ...", flush=True)
    data["kill"] = kill_under_load(6)
    print("reloads under load ...", flush=True)
    data["reload"] = reloads_under_load(args.reloads)
    print("SIGTERM with requests in flight ...", flush=True)
    data["sigterm"] = sigterm_in_flight(args.inflight)
    print("idle parent and memory ...", flush=True)
    data["idle"] = idle_and_memory(args.idle)
    DOCS.mkdir(exist_ok=True)
    charts(data, args.counts)
    text = report(data, args, time.monotonic() - began)
    (DOCS / "benchmarks.md").write_text(text)
    update_readme(summary(data, args.counts))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
