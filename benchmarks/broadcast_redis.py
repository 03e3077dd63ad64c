"""Broadcast across machines: two tornado-prefork servers sharing one Redis
(``broadcast="redis://..."``), 2 workers each, beside encode/broadcaster on
the same Redis, each driving the same 400 subscribers.

    apt-get install -y redis-server      # the benchmark starts its own, on a free port
    pip install -e '.[bench]'            # redis, broadcaster[redis]
    python benchmarks/broadcast_redis.py # about 2 minutes; writes its section of
                                         # docs/benchmarks.md (--no-write: print it only)

The two machines are two ``serve(processes=2, broadcast="redis://127.0.0.1:PORT/0")``
on this one, each worker with 100 subscribers (`tornado_prefork.broadcast.subscribe`);
broadcaster has 4 processes of 100 subscribers, as in benchmarks/broadcast.py,
whose subscriber side, publisher, measures and report helpers this reuses.
The publisher (this process, on CPU 1) publishes on one server only, server
A: it reaches A's hub as a worker does, so every message goes publisher ->
hub A -> Redis -> hubs A and B -> their workers. For broadcaster it
publishes with redis-py (broadcaster's publish is the same PUBLISH).
Redis, both servers (their parents, hubs and workers) and broadcaster's
processes run on CPU 0.

For each setup: the connections Redis has (``CLIENT LIST``, the benchmark's
own left out) once it is ready and after the measures; a burst of 100-byte
and of 4 KB messages (deliveries per second, CPU per delivery, and Redis's
share of it); publish-to-deliver latency at fixed rates. One redis-server
serves every run, emptied (``FLUSHALL``) before each; setups are
interleaved and medians reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import glob
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import broadcast as bench

# What the hub's channels (and keys) on Redis start with.
from tornado_prefork._broadcast.upstream import PREFIX as CHANNEL

DOCS = bench.DOCS
START = "<!-- bench-broadcast-redis:start -->"
END = "<!-- bench-broadcast-redis:end -->"

SERVERS = 2
WORKERS = 2
assert SERVERS * WORKERS == bench.PROCESSES

HUB_EXITED = r"broadcast hub \(pid \d+\) exited"
WORKER_FAILED = r"worker \d+ failed to start"
RECENT_FAILED = "broadcast.recent() failed, again in 0.1 s"

PUBLISHER = "bench-publisher"

SETUPS = ["ours", "broadcaster"]
LABELS = {
    "ours": f"tornado-prefork, {SERVERS} servers on Redis",
    "broadcaster": "broadcaster (Redis)",
}


class Redis:
    """A redis-server of this benchmark's, on CPU 0 and a free port."""

    def __init__(self, outdir: str) -> None:
        import redis

        self.port = bench.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        # No disk; no disconnect of a subscriber 32 MB behind.
        command += ["--save", "", "--appendonly", "no"]
        command += ["--client-output-buffer-limit", "pubsub 0 0 0"]
        with open(os.path.join(outdir, "redis.log"), "wb") as log:
            self.proc = subprocess.Popen(
                bench.on_server_cpu(*command), stdout=log, stderr=log, start_new_session=True
            )
        self.client = redis.Redis(port=self.port, socket_timeout=10)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start: {log.name}") from None
                time.sleep(0.05)
        self.version = self.client.info("server")["redis_version"]

    def clients(self) -> list[dict[str, str]]:
        """Every connection Redis has but this one."""
        me = self.client.client_id()
        return [c for c in self.client.client_list() if int(c["id"]) != me]

    def numsub(self, *channels: str) -> list[int]:
        return [int(n) for _, n in self.client.pubsub_numsub(*channels)]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / bench.TICK

    def usec_per_call(self, command: str) -> float:
        stats = self.client.info("commandstats").get(f"cmdstat_{command}")
        return float(stats["usec_per_call"]) if stats else float("nan")

    def stop(self) -> None:
        self.client.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def serve_on_redis(outdir: str, url: str, loop: str) -> None:
    """One of the two servers (a process of its own, as on its own machine)."""
    import tornado_prefork
    from tornado_prefork import broadcast

    recent = broadcast.recent

    async def tried_again(topic: str, limit: int | None = None) -> list[broadcast.Message]:
        # A worker whose factory's round trip fails does not start; none
        # should (a hub answers from the moment it is connected), and one
        # that does is tried again here, each failure said and counted.
        for _ in range(50):
            try:
                return await recent(topic, limit)
            except broadcast.BroadcastError as e:
                logging.getLogger("benchmark").warning("%s: %s", RECENT_FAILED, e)
                await asyncio.sleep(0.1)
        return await recent(topic, limit)

    broadcast.recent = tried_again  # type: ignore[assignment]
    tornado_prefork.serve(
        functools.partial(bench.hub_worker, outdir),
        port=0,
        address="127.0.0.1",
        processes=WORKERS,
        loop=loop,
        broadcast=url,
    )


class Setup(bench.System):
    """One setup's subscriber side on ``redis``: the two servers, or
    broadcaster's processes; and its publisher."""

    def __init__(self, name: str, outdir: str, loop: str, redis: Redis) -> None:
        self.redis = redis
        super().__init__(name, outdir, loop)

    def _start(self, loop: str) -> None:
        name, outdir, port = self.name, self.outdir, self.redis.port
        env = {"PYTHONPATH": str(bench.ROOT), **os.environ}
        if name == "ours":
            for server in range(SERVERS):
                # Each server's hub makes its socket in a directory of its TMPDIR.
                tmp = os.path.join(outdir, f"server-{server}")
                os.mkdir(tmp)
                command = [sys.executable, __file__, "--role", "server", outdir, self.redis.url]
                self._spawn([*command, loop], {**env, "TMPDIR": tmp})
            channels = (CHANNEL + bench.TOPIC, CHANNEL + bench.CONTROL)
            per_process = SERVERS
        else:
            command = [sys.executable, bench.__file__, "--role", name, str(port), outdir, loop]
            for _ in range(bench.PROCESSES):
                self._spawn(command, env)
            channels = (bench.TOPIC, bench.CONTROL)
            per_process = bench.PROCESSES
        self._wait(lambda: len(glob.glob(f"{outdir}/ready-*.json")) == bench.PROCESSES)
        self._wait(lambda: self.redis.numsub(*channels) == [per_process] * 2)
        self.subscribers = self._ready_pids()
        self.pids = self._all_pids()
        if name == "ours":
            (sock,) = glob.glob(f"{outdir}/server-0/tornado-prefork-broadcast-*/hub.sock")
            self.publisher = bench.HubPublisher(sock)
        else:
            self.publisher = bench.RedisPublisher(port)
            # Named, to be told apart from the subscriber side's connections.
            self.publisher.client.connection_pool.connection_kwargs["client_name"] = PUBLISHER

    def _all_pids(self) -> list[int]:
        pids = [self.redis.proc.pid]
        for proc in self.procs:
            pids += self._tree(proc.pid)
        return pids

    def cpu_seconds(self) -> tuple[float, float]:
        # A hub or worker replaced is a new pid: look again.
        self.pids = self._all_pids()
        self.subscribers |= self._ready_pids()
        return super().cpu_seconds()

    def replaced(self) -> int:
        return self.said(HUB_EXITED)

    def said(self, pattern: str) -> int:
        """How many lines of the servers' logs so far match ``pattern``."""
        if self.name != "ours":
            return 0
        return sum(
            len(re.findall(pattern, Path(self.outdir, f"stderr-{server}.log").read_text()))
            for server in range(SERVERS)
        )


@contextlib.contextmanager
def running(name: str, loop: str, redis: Redis) -> Iterator[Setup]:
    redis.client.flushall()
    redis.client.config_resetstat()
    prefix = f"bench-broadcast-redis-{name}-"
    with tempfile.TemporaryDirectory(prefix=prefix, dir="/dev/shm") as outdir:
        setup = Setup(name, outdir, loop, redis)
        try:
            yield setup
        except BaseException:
            logs = sorted(glob.glob(f"{outdir}/stderr-*.log"))
            sys.stderr.writelines(f"--- {log}\n{Path(log).read_text()[-3000:]}\n" for log in logs)
            raise
        finally:
            setup.stop()


async def measure(name: str, loop: str, plan: dict[str, Any], redis: Redis) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with running(name, loop, redis) as setup:
        results["connections"] = _connections(redis)
        publish_command = "evalsha" if name == "ours" else "publish"
        try:
            await bench.burst(setup, 100, 200)
            for size in plan["sizes"]:
                redis.client.config_resetstat()
                cpu = redis.cpu_seconds()
                count = plan["burst"][size]
                result = results[f"burst-{size}"] = await bench.burst(setup, size, count)
                result["redis_us_per_message"] = (redis.cpu_seconds() - cpu) / count * 1e6
                result["redis_us_per_publish"] = redis.usec_per_call(publish_command)
                for rate in plan["rates"]:
                    results[f"steady-{size}-{rate}"] = await bench.steady(
                        setup, size, rate, plan["seconds"]
                    )
        finally:
            await setup.publisher.close()
        results["connections_after"] = _connections(redis)
        results["workers_failed"] = setup.said(WORKER_FAILED)
        results["recent_failed"] = setup.said(re.escape(RECENT_FAILED))
    return results


def _connections(redis: Redis) -> dict[str, Any]:
    clients = [c for c in redis.clients() if c["name"] != PUBLISHER]
    names = sorted({c["name"].rpartition(":")[0] or "(no name)" for c in clients})
    return {"count": len(clients), "names": names}


# -- the report -----------------------------------------------------------------------


def report(
    runs: dict[str, list[dict[str, Any]]],
    plan: dict[str, Any],
    began: float,
    load: tuple[float, float],
    redis_version: str,
) -> str:
    from importlib.metadata import version

    import redis

    import tornado_prefork

    size_text = bench._size
    subscribers = bench.PROCESSES * bench.SUBSCRIBERS
    commit = subprocess.run(
        ["git", "-C", str(bench.ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    minutes = (time.monotonic() - began) / 60
    lines = [
        START,
        f"## Broadcast across machines: {SERVERS} servers on one Redis, beside broadcaster",
        "",
        f"Measured {datetime.date.today()} by `python benchmarks/broadcast_redis.py` in "
        f"{minutes:.1f} minutes; numbers are written by the script. To run it: "
        "`apt-get install -y redis-server` and `pip install -e '.[bench]'`; it starts its own "
        "`redis-server` on a free port.",
        "",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}; "
        f"Python {platform.python_version()}, tornado-prefork {tornado_prefork.__version__} "
        f"({commit}), redis-py {redis.__version__}, broadcaster {version('broadcaster')}, "
        f"redis-server {redis_version}; every process on {plan['loop']}",
        f"- Load average (1 min) {load[0]:.2f} at the start and {load[1]:.2f} at the end "
        "(other work on these CPUs shows there).",
        f"- tornado-prefork: {SERVERS} servers (`serve(processes={WORKERS}, "
        'broadcast="redis://127.0.0.1:PORT/0")`, as on two machines), '
        f"{bench.SUBSCRIBERS} subscribers in each of their {SERVERS * WORKERS} workers; the "
        "publisher publishes on server A only (it reaches A's hub as a worker does): "
        "publisher -> hub A -> Redis -> hubs A and B -> workers. broadcaster: "
        f"{bench.PROCESSES} processes of {bench.SUBSCRIBERS} subscribers, the publisher "
        "publishes with redis-py's PUBLISH (broadcaster's own publish).",
        f"- One `redis-server` for every run, emptied before each; it and the subscriber side "
        f"(servers, hubs, workers; or broadcaster's processes) on CPU {bench.SERVER_CPU} "
        f"(`taskset`), the publisher on CPU {bench.CLIENT_CPU}. {plan['reps']} interleaved "
        "runs, medians.",
        "",
        "Connections Redis has from each setup's subscriber side (`CLIENT LIST`, the "
        "benchmark's own and broadcaster's publisher left out), once it is ready and after "
        "its measures; and, for the servers, how often a worker's first request "
        "(`broadcast.recent()` in its application factory) failed at start and was tried "
        "again by the benchmark, and how many workers failed to start:",
        "",
        "| setup | connections, ready | connections, after the measures | client names | "
        "first requests failed, all runs | workers that failed to start, all runs |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for name, setup_runs in runs.items():
        ready = [run["connections"]["count"] for run in setup_runs]
        after = [run["connections_after"]["count"] for run in setup_runs]
        names = sorted({n for run in setup_runs for n in run["connections"]["names"]})
        failed = [
            sum(run[key] for run in setup_runs) for key in ("recent_failed", "workers_failed")
        ]
        counts = " | ".join(map(str, failed)) if name == "ours" else "n/a | n/a"
        lines.append(
            f"| {LABELS[name]} | {_spread(ready)} | {_spread(after)} | {', '.join(names)} "
            f"| {counts} |"
        )
    lines += [
        "",
        "Fan-out throughput: a burst of "
        + " and ".join(
            f"{plan['burst'][size]:,} messages of {size_text(size)}" for size in plan["sizes"]
        )
        + f", published with {bench.WINDOW} in flight; deliveries per second from the first "
        "publish to the last delivery; CPU per delivery is the server side's (Redis, the "
        "servers' parents, hubs and workers, or broadcaster's processes), user + system. "
        "Redis's own CPU per message, and the time Redis spent in each publish (`INFO "
        "commandstats`: EVALSHA, our publish script; PUBLISH for broadcaster).",
        "",
        "| setup | size | deliveries/s | publishes/s | server CPU µs per delivery | "
        "of which broker µs per message (Redis; and hubs) | of which Redis µs per message | "
        "Redis µs per publish command | subscriber processes µs per delivery | "
        "lost, most in a run | hub replaced, all runs |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in plan["sizes"]:
        for name, setup_runs in runs.items():
            lines.append(_row(name, setup_runs, f"burst-{size}", [size_text(size)], BURST))
    lines += [
        "",
        f"Latency at a fixed rate: {plan['seconds']:g} s of publishes at each rate, one every "
        "1/rate s whatever the answers; from just before `publish` to each subscriber's "
        f"receipt, over every delivery ({subscribers} per message). Server CPU is the share "
        "of a CPU the server side used meanwhile.",
        "",
        "| setup | size | publishes/s | deliveries/s asked | p50 ms | p99 ms | max ms | "
        "server CPU | lost, most in a run | hub replaced, all runs |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rate in plan["rates"]:
        for size in plan["sizes"]:
            head = [size_text(size), f"{rate:,}", f"{rate * subscribers:,}"]
            for name, setup_runs in runs.items():
                lines.append(_row(name, setup_runs, f"steady-{size}-{rate}", head, STEADY))
    lines += ["", *_targets(runs, plan), END]
    return "\n".join(lines)


#: The measures' columns after the first ones: a field of the results, and its format.
BURST = [
    ("deliveries_per_s", ",.0f"),
    ("publishes_per_s", ",.0f"),
    ("cpu_us_per_delivery", ".2f"),
    ("broker_us_per_message", ".1f"),
    ("redis_us_per_message", ".1f"),
    ("redis_us_per_publish", ".1f"),
    ("subscriber_us_per_delivery", ".2f"),
]
STEADY = [("p50_ms", ".2f"), ("p99_ms", ".2f"), ("max_ms", ".1f"), ("server_cpu_share", ".0%")]


def _row(
    name: str,
    setup_runs: list[dict[str, Any]],
    key: str,
    head: list[str],
    fields: list[tuple[str, str]],
) -> str:
    """A table's row: the medians of ``fields`` over the runs, then what was lost."""
    cells = [format(bench._median(setup_runs, key, field), spec) for field, spec in fields]
    return f"| {LABELS[name]} | {' | '.join([*head, *cells])} | {bench._lost(setup_runs, key)} |"


def _spread(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else f"{min(values)} to {max(values)}"


def _targets(runs: dict[str, list[dict[str, Any]]], plan: dict[str, Any]) -> list[str]:
    if set(runs) != set(SETUPS):
        return []
    med = bench._median
    lines = [
        "| target | measured: medians, then each run's lowest-highest | met |",
        "| --- | --- | --- |",
    ]
    counts = {run["connections"]["count"] for run in runs["ours"]}
    counts |= {run["connections_after"]["count"] for run in runs["ours"]}
    lines.append(
        f"| 1 Redis connection per server | {', '.join(map(str, sorted(counts)))} for "
        f"{SERVERS} servers | {'yes' if counts == {SERVERS} else '**no**'} |"
    )
    # The target, the measure and its field, its format, and whether more is better.
    compared = [
        (f"deliveries/s ahead of broadcaster's, {size_text}", key, "deliveries_per_s", ",.0f", True)
        for size_text, key in ((bench._size(size), f"burst-{size}") for size in plan["sizes"])
    ]
    for rate in plan["rates"]:
        for size in plan["sizes"]:
            target = f"p99 below broadcaster's at {rate:,} publishes/s, {bench._size(size)}"
            compared.append((target, f"steady-{size}-{rate}", "p99_ms", ".2f", False))
    for target, key, field, spec, more in compared:
        ours, theirs = (med(runs[name], key, field) for name in SETUPS)
        met = ours > theirs if more else ours < theirs
        spread = (
            "-".join(format(f(run[key][field] for run in runs[name]), spec) for f in (min, max))
            for name in SETUPS
        )
        lines.append(
            f"| {target} | {ours:{spec}} vs {theirs:{spec}} (broadcaster): {ours / theirs:.2f}x; "
            f"runs {' vs '.join(spread)} | {'yes' if met else '**no**'} |"
        )
    return lines


def write(section: str) -> None:
    """Replaces this benchmark's section, first added at the end of the file
    (after benchmarks/broadcast.py's and what follows it)."""
    text = DOCS.read_text()
    if START not in text:
        text = f"{text.rstrip()}\n\n{START}{END}\n"
    mine = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    DOCS.write_text(mine.sub(lambda _: section, text, count=1))


def run_all(args: argparse.Namespace) -> None:
    # Half as many large messages: each burst then takes about as long.
    burst = {size: args.messages // (2 if size >= 1024 else 1) for size in args.sizes}
    plan = {**vars(args), "burst": burst}
    began = time.monotonic()
    load = os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.setups}
    with tempfile.TemporaryDirectory(prefix="bench-broadcast-redis-", dir="/dev/shm") as outdir:
        redis = Redis(outdir)
        try:
            for rep in range(args.reps):
                for name in args.setups:
                    result = bench.run_loop(args.loop, measure(name, args.loop, plan, redis))
                    runs[name].append(result)
                    print(f"  rep {rep + 1} {name}: {_progress(result, plan)}", flush=True)
        finally:
            redis.stop()
    section = report(runs, plan, began, (load, os.getloadavg()[0]), redis.version)
    print(section)
    if args.write:
        write(section)


def _progress(result: dict[str, Any], plan: dict[str, Any]) -> str:
    said = [f"{result['connections']['count']} connections"]
    for key in ("recent_failed", "workers_failed"):
        if result[key]:
            said.append(f"{key.replace('_', ' ')}: {result[key]}")
    rate = plan["rates"][0]
    for size in plan["sizes"]:
        said.append(
            f"{bench._size(size)}: {result[f'burst-{size}']['deliveries_per_s']:,.0f} "
            f"deliveries/s, p99 {result[f'steady-{size}-{rate}']['p99_ms']:.1f} ms at {rate}/s"
        )
    return "; ".join(said)


def _exit(signum: int, frame: object) -> None:
    # Through every finally: nothing started here is left behind.
    raise SystemExit(128 + signum)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--role":
        serve_on_redis(*sys.argv[3:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--messages", type=int, default=4000, help="burst of 100-byte messages")
    parser.add_argument("--sizes", type=int, nargs="+", default=bench.SIZES, help="bytes")
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 100])
    parser.add_argument("--seconds", type=float, default=2.0, help="of each fixed rate")
    parser.add_argument("--setups", nargs="+", default=SETUPS, choices=SETUPS)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit(
            "benchmarks/broadcast_redis.py needs redis-server: apt-get install -y redis-server"
        )
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit(
            "benchmarks/broadcast_redis.py needs 2 CPUs: servers on one, publisher on the other"
        )
    os.sched_setaffinity(0, {bench.CLIENT_CPU})
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit)
    run_all(args)


if __name__ == "__main__":
    main()
