"""Broadcast across 4 workers: fan-out throughput and publish-to-deliver
latency of tornado-prefork's hub, beside Redis pub/sub (redis-py) and
encode/broadcaster on Redis, each driving the same 400 subscribers.

    apt-get install -y redis-server      # the benchmark starts its own, on a free port
    pip install -e '.[bench]'            # redis, broadcaster[redis], uvloop (make bench does)
    python benchmarks/broadcast.py       # by hand, about 15 minutes; writes its section
                                         # of docs/benchmarks.md (--no-write: print it only)
    python benchmarks/broadcast.py --profile DIR --systems hub   # cProfile files in DIR

Each system has 4 subscriber processes of 100 subscribers each (an asyncio
task per subscriber that reads every message and notes its latency), and a
broker: for tornado-prefork, ``serve(processes=4)`` whose workers subscribe
with `tornado_prefork.broadcast.subscribe`, and its hub (the workers on
asyncio, then on uvloop, which ``loop='auto'`` picks where it is installed);
for Redis, ``redis-server`` and 4 processes that subscribe with redis-py (a
pub/sub connection per subscriber, or one per process fanned out to the
subscribers' queues) or with broadcaster. That side is pinned to CPU 0
(``taskset``); the publisher, this process, to CPU 1. It reaches the hub as
a worker does (a `HubLink` of its own to the hub's socket) and Redis with
redis-py (broadcaster's own publish is the same PUBLISH).

Two measures for each message size (100 bytes and 4 KB):

- fan-out throughput: a burst of messages published as fast as the broker
  acknowledges them (32 in flight); deliveries per second from the first
  publish to the last delivery, and the server side's CPU (broker and
  subscriber processes, from ``/proc``) per delivery;
- latency at a fixed rate (1,000 and 100 publishes per second): the time
  from just before a publish to each subscriber's receipt (one clock,
  ``CLOCK_MONOTONIC``, for every process), p50 and p99 over all deliveries.

Every subscriber queue is large enough for a whole measure (nothing is
dropped on purpose); what does not arrive is counted as lost. Systems are
interleaved (A B C D E, A B C D E, ...) and medians reported.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import datetime
import glob
import json
import logging
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
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench-broadcast:start -->", "<!-- bench-broadcast:end -->"
TICK = os.sysconf("SC_CLK_TCK")

TOPIC = "bench"
CONTROL = "control"
PROCESSES = 4
SUBSCRIBERS = 100
SIZES = [100, 4096]
# Large enough for every message of a measure: nothing is dropped on purpose.
QUEUE = 100_000
WINDOW = 32
SERVER_CPU, CLIENT_CPU = 0, 1

SYSTEMS = ["hub", "hub-uvloop", "redis-py", "redis-py-shared", "broadcaster"]
LABELS = {
    "hub": "tornado-prefork hub",
    "hub-uvloop": "tornado-prefork hub, workers on uvloop",
    "redis-py": "redis-py, a connection per subscriber",
    "redis-py-shared": "redis-py, a connection per process",
    "broadcaster": "broadcaster (Redis)",
}


def payload(size: int) -> str:
    """A message of ``size`` bytes that starts with the time it is published at."""
    return f"{time.monotonic():020.9f}".ljust(size, "x")


# -- the subscriber side (CPU 0) ----------------------------------------------------


class Sink:
    """What the subscribers of one process received, and its answers to the
    control messages (``verb:n``): each written to a file of ``outdir``."""

    def __init__(self, outdir: str) -> None:
        self.outdir = outdir
        self.latencies = array.array("d")
        self.count = 0
        self.gaps = 0
        self.last = 0.0
        self.profile: Any = None
        self._done: set[str] = set()

    def got(self, data: str | bytes) -> None:
        now = time.monotonic()
        self.latencies.append(now - float(data[:20]))
        self.count += 1
        self.last = now

    def control(self, command: str | bytes) -> None:
        command = command.decode() if isinstance(command, bytes) else command
        if command in self._done:
            # Sent again: the first one may have been lost with a hub.
            return
        self._done.add(command)
        verb, _, n = command.partition(":")
        if verb == "reset":
            self.latencies = array.array("d")
            self.count = self.gaps = 0
            self.last = 0.0
        elif verb == "dump":
            path = os.path.join(self.outdir, f"latencies-{n}-{os.getpid()}.bin")
            with open(path + ".part", "wb") as f:
                self.latencies.tofile(f)
            os.replace(path + ".part", path)
        elif verb == "profile" and self.profile is not None:
            self.profile.disable()
            self.profile.dump_stats(os.path.join(self.outdir, f"worker-{os.getpid()}.prof"))
        answer = {"count": self.count, "gaps": self.gaps, "last": self.last}
        self._write(f"{verb}-{n}-{os.getpid()}.json", answer)

    def ready(self) -> None:
        self._write(f"ready-{os.getpid()}.json", {})

    def _write(self, name: str, value: object) -> None:
        # Whole or absent: the publisher side reads it as soon as it is there.
        path = os.path.join(self.outdir, name)
        with open(path + ".part", "w") as f:
            json.dump(value, f)
        os.replace(path + ".part", path)


async def _subscribers(
    subscribe_one: Callable[[asyncio.Event], Awaitable[None]], count: int = SUBSCRIBERS
) -> list[asyncio.Task[None]]:
    # One after another, as clients come: broadcaster keeps only one of the
    # subscribers of a channel that subscribe at once (each replaces the set).
    loop = asyncio.get_running_loop()
    tasks = []
    for _ in range(count):
        entered = asyncio.Event()
        tasks.append(loop.create_task(subscribe_one(entered)))
        await entered.wait()
    return tasks


def _maybe_profile(sink: Sink) -> None:
    if os.environ.get("BENCH_PROFILE"):
        import cProfile

        sink.profile = cProfile.Profile()
        sink.profile.enable()


async def hub_worker(outdir: str) -> Any:
    """The application factory of the hub's server: runs in each worker."""
    from tornado.web import Application

    from tornado_prefork import broadcast

    sink = Sink(outdir)
    _maybe_profile(sink)

    async def one(entered: asyncio.Event) -> None:
        async with broadcast.subscribe(TOPIC, max_queue=QUEUE) as subscription:
            entered.set()
            async for event in subscription:
                if isinstance(event, broadcast.Message):
                    sink.got(event.data)
                else:
                    sink.gaps += 1

    async def control(entered: asyncio.Event) -> None:
        async with broadcast.subscribe(CONTROL) as subscription:
            entered.set()
            async for event in subscription:
                if isinstance(event, broadcast.Message):
                    sink.control(event.data)

    keep = [*await _subscribers(one), *await _subscribers(control, 1)]
    # A round trip on the connection that told the hub of the topics: the
    # hub knows them now.
    await broadcast.recent(TOPIC)
    sink.ready()
    application = Application([])
    application.settings["bench_tasks"] = keep
    return application


def serve_hub(outdir: str, loop: str) -> None:
    import functools

    import tornado_prefork
    from tornado_prefork._broadcast import hub as _hub

    if os.environ.get("BENCH_PROFILE"):
        _hub.run = functools.partial(_profiled_hub, _hub.run, outdir)  # type: ignore[assignment]
    tornado_prefork.serve(
        functools.partial(hub_worker, outdir),
        port=0,
        address="127.0.0.1",
        processes=PROCESSES,
        loop=loop,
    )


def _profiled_hub(run: Callable[..., None], outdir: str, *args: Any) -> None:
    import cProfile

    profile = cProfile.Profile()

    def dump(signum: int, frame: object) -> None:
        profile.disable()
        profile.dump_stats(os.path.join(outdir, "hub.prof"))
        os._exit(0)

    signal.signal(signal.SIGTERM, dump)
    profile.enable()
    run(*args)


async def redis_subscriber(system: str, port: int, outdir: str) -> None:
    import redis.asyncio as redis

    sink = Sink(outdir)
    _maybe_profile(sink)
    # redis-py's pool holds 100 connections unless told.
    client = redis.Redis(port=port, max_connections=SUBSCRIBERS + 10)
    keep: list[Any] = []
    if system == "redis-py":
        # The plain redis-py way: each subscriber has its own pub/sub connection.
        async def one(entered: asyncio.Event) -> None:
            pubsub = client.pubsub()
            await pubsub.subscribe(TOPIC)
            entered.set()
            async for message in pubsub.listen():
                if message["type"] == "message":
                    sink.got(message["data"])

        keep += await _subscribers(one)
        pubsub = client.pubsub()
        await pubsub.subscribe(CONTROL)
        sink.ready()
        async for message in pubsub.listen():
            if message["type"] == "message":
                sink.control(message["data"])
    elif system == "redis-py-shared":
        # One connection per process, fanned out to the subscribers' queues
        # (what broadcaster does, without its extra queue and decode).
        queues: list[asyncio.Queue[bytes]] = [asyncio.Queue() for _ in range(SUBSCRIBERS)]

        async def read(queue: asyncio.Queue[bytes]) -> None:
            while True:
                sink.got(await queue.get())

        keep += [asyncio.get_running_loop().create_task(read(queue)) for queue in queues]
        pubsub = client.pubsub()
        await pubsub.subscribe(TOPIC, CONTROL)
        sink.ready()
        topic = TOPIC.encode()
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            if message["channel"] == topic:
                for queue in queues:
                    queue.put_nowait(message["data"])
            else:
                sink.control(message["data"])
    else:
        from broadcaster import Broadcast

        hub = Broadcast(f"redis://127.0.0.1:{port}")
        await hub.connect()

        async def subscriber(entered: asyncio.Event) -> None:
            async with hub.subscribe(TOPIC) as subscription:
                entered.set()
                async for event in subscription:
                    if event is not None:
                        sink.got(event.message)

        async def control(entered: asyncio.Event) -> None:
            async with hub.subscribe(CONTROL) as subscription:
                entered.set()
                async for event in subscription:
                    if event is not None:
                        sink.control(event.message)

        keep += await _subscribers(subscriber)
        keep += await _subscribers(control, 1)
        sink.ready()
        await asyncio.gather(*keep)


# -- the publisher side (CPU 1) ------------------------------------------------------


class Publisher:
    """Publishes to one system: ``publish`` a message, ``control`` a command."""

    async def publish(self, topic: str, data: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class HubPublisher(Publisher):
    def __init__(self, path: str) -> None:
        from tornado_prefork._broadcast import current as _current
        from tornado_prefork._broadcast.link import HubLink

        # This process reaches the hub as a worker does.
        _current.install(HubLink(path))

    async def publish(self, topic: str, data: str) -> None:
        from tornado_prefork import broadcast

        await broadcast.publish(topic, data)

    async def close(self) -> None:
        # The hub is about to stop: that is no news.
        logging.getLogger("tornado_prefork.broadcast").setLevel(logging.CRITICAL)


class RedisPublisher(Publisher):
    def __init__(self, port: int) -> None:
        import redis.asyncio as redis

        # Waits for a connection when all are busy (a fixed rate may ask for
        # more than the burst's window); broadcaster's publish is this too.
        pool = redis.BlockingConnectionPool(port=port, max_connections=WINDOW * 2)
        self.client = redis.Redis(connection_pool=pool)

    async def publish(self, topic: str, data: str) -> None:
        await self.client.publish(topic, data)

    async def close(self) -> None:
        await self.client.aclose()


# -- the systems ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def on_server_cpu(*command: str) -> list[str]:
    return ["taskset", "-c", str(SERVER_CPU), *command]


class System:
    """One system's server side, running: its processes, and a publisher."""

    def __init__(self, name: str, outdir: str, loop: str) -> None:
        self.name = name
        self.outdir = outdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pids: list[int] = []
        self.publisher: Publisher
        self.rounds = 0
        try:
            self._start(loop)
        except BaseException:
            self.stop()
            raise

    def _start(self, loop: str) -> None:
        name, outdir = self.name, self.outdir
        me = [sys.executable, __file__, "--role"]
        env = {"PYTHONPATH": str(ROOT), **os.environ, "TMPDIR": outdir}
        if name.startswith("hub"):
            # serve()'s default loop, auto, is uvloop where it is installed.
            self._spawn([*me, "hub", outdir, "uvloop" if name == "hub-uvloop" else loop], env)
            self._wait(lambda: len(glob.glob(f"{outdir}/ready-*.json")) == PROCESSES)
            (sock,) = glob.glob(f"{outdir}/tornado-prefork-broadcast-*/hub.sock")
            self.publisher = HubPublisher(sock)
            self.pids = self._tree(self.procs[0].pid)
            self.subscribers = self._ready_pids()
        else:
            self.port = free_port()
            self._spawn(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    # Redis would disconnect a subscriber 32 MB behind.
                    "--client-output-buffer-limit",
                    "pubsub 0 0 0",
                ],
                env,
            )
            self._wait(lambda: self._redis_up())
            for _ in range(PROCESSES):
                self._spawn([*me, name, str(self.port), outdir, loop], env)
            self._wait(lambda: len(glob.glob(f"{outdir}/ready-*.json")) == PROCESSES)
            per_process = SUBSCRIBERS if name == "redis-py" else 1
            self._wait(lambda: self._numsub() == (PROCESSES * per_process, PROCESSES))
            self.publisher = RedisPublisher(self.port)
            self.pids = [proc.pid for proc in self.procs]
            self.subscribers = self._ready_pids()

    def _spawn(self, command: list[str], env: dict[str, str]) -> None:
        with open(os.path.join(self.outdir, f"stderr-{len(self.procs)}.log"), "wb") as log:
            self.procs.append(
                subprocess.Popen(
                    on_server_cpu(*command),
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    start_new_session=True,
                )
            )

    def _wait(self, done: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    log = Path(self.outdir, f"stderr-{i}.log").read_text()[-2000:]
                    raise RuntimeError(f"{self.name}: {proc.args} exited {proc.returncode}:\n{log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: not ready in {timeout} s")
            time.sleep(0.05)

    def _redis_up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _numsub(self) -> tuple[int, int]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            sock.sendall(f"PUBSUB NUMSUB {TOPIC} {CONTROL}\r\n".encode())
            reply = sock.recv(4096).split(b"\r\n")
        # *4 $5 bench :N $7 control :M
        return int(reply[3][1:]), int(reply[6][1:])

    @staticmethod
    def _tree(pid: int) -> list[int]:
        from tornado_prefork.testing import children

        found = [pid]
        for child in children(pid):
            found += System._tree(child)
        return found

    def _ready_pids(self) -> set[int]:
        return {
            int(Path(path).stem.removeprefix("ready-"))
            for path in glob.glob(f"{self.outdir}/ready-*.json")
        }

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time so far of the broker (the hub and the parent, or
        redis-server), and of the subscriber processes (of those alive: a
        hub replaced takes its CPU time along, see `replaced`)."""
        broker = subscribers = 0
        if self.name.startswith("hub"):
            self.pids = self._tree(self.procs[0].pid)
            self.subscribers |= self._ready_pids()
        for pid in self.pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except FileNotFoundError:
                continue
            fields = stat.rpartition(")")[2].split()
            ticks = int(fields[11]) + int(fields[12])
            if pid in self.subscribers:
                subscribers += ticks
            else:
                broker += ticks
        return broker / TICK, subscribers / TICK

    async def control(self, verb: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Sends ``verb`` to every subscriber process; their answers."""
        self.rounds += 1
        n = self.rounds
        deadline = time.monotonic() + timeout
        while True:
            # Again every 2 s: a hub replaced meanwhile did not pass it on.
            await self.publisher.publish(CONTROL, f"{verb}:{n}")
            again = time.monotonic() + 2
            while time.monotonic() < again:
                files = glob.glob(f"{self.outdir}/{verb}-{n}-*.json")
                if len(files) >= PROCESSES:
                    return [json.loads(Path(f).read_text()) for f in files]
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: {verb} answered by {len(files)} processes")
                await asyncio.sleep(0.02)

    def replaced(self) -> int:
        """How many times the hub was replaced so far (it is restarted when a
        worker hears nothing from it, not even its tick)."""
        if not self.name.startswith("hub"):
            return 0
        log = Path(self.outdir, "stderr-0.log").read_text()
        return len(re.findall(r"broadcast hub \(pid \d+\) exited", log))

    async def latencies(self) -> array.array[float]:
        await self.control("dump")
        n = self.rounds
        found = array.array("d")
        for path in glob.glob(f"{self.outdir}/latencies-{n}-*.bin"):
            with open(path, "rb") as f:
                found.frombytes(f.read())
            os.unlink(path)
        return found

    def stop(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# -- the measures ---------------------------------------------------------------------


async def delivered(system: System, expected: int, quiet: float = 3.0) -> tuple[int, int, float]:
    """Waits until the subscribers received ``expected`` messages (or nothing
    more came for ``quiet`` seconds): (received, gaps, time of the last one)."""
    last_change = time.monotonic()
    before = -1
    while True:
        answers = await system.control("report")
        count = sum(a["count"] for a in answers)
        if count >= expected:
            break
        if count != before:
            before, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > quiet:
            break
        await asyncio.sleep(0.1)
    return count, sum(a["gaps"] for a in answers), max(a["last"] for a in answers)


def _counting(
    publish: Callable[[str, str], Awaitable[None]], failed: list[int]
) -> Callable[[str, str], Awaitable[None]]:
    async def counted(topic: str, data: str) -> None:
        try:
            await publish(topic, data)
        except Exception:
            # BroadcastError: the hub was lost before it numbered it.
            failed[0] += 1

    return counted


async def burst(system: System, size: int, count: int) -> dict[str, float]:
    await system.control("reset")
    window = asyncio.Semaphore(WINDOW)
    failed = [0]
    publish = _counting(system.publisher.publish, failed)
    replaced = system.replaced()

    async def one() -> None:
        async with window:
            await publish(TOPIC, payload(size))

    cpu = system.cpu_seconds()
    began = time.monotonic()
    await asyncio.gather(*(one() for _ in range(count)))
    published = time.monotonic() - began
    received, gaps, last = await delivered(system, count * PROCESSES * SUBSCRIBERS)
    broker, subscribers = (b - a for a, b in zip(cpu, system.cpu_seconds(), strict=True))
    seconds = last - began
    return {
        "deliveries_per_s": received / seconds,
        "publishes_per_s": count / published,
        "cpu_us_per_delivery": (broker + subscribers) / received * 1e6,
        "broker_us_per_message": broker / count * 1e6,
        "subscriber_us_per_delivery": subscribers / received * 1e6,
        "lost": count * PROCESSES * SUBSCRIBERS - received,
        "gaps": gaps,
        "failed": failed[0],
        "replaced": system.replaced() - replaced,
    }


async def steady(system: System, size: int, rate: float, seconds: float) -> dict[str, float]:
    await system.control("reset")
    failed = [0]
    publish = _counting(system.publisher.publish, failed)
    replaced = system.replaced()
    loop = asyncio.get_running_loop()
    count = int(rate * seconds)
    pending: set[asyncio.Task[None]] = set()
    cpu = system.cpu_seconds()
    began = loop.time()
    sent = 0
    while sent < count:
        # Every message whose time has come, however late this loop woke.
        now = loop.time()
        while sent < count and began + sent / rate <= now:
            task = loop.create_task(publish(TOPIC, payload(size)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        await asyncio.sleep(max(0.0, began + sent / rate - loop.time()))
    if pending:
        await asyncio.gather(*pending)
    received, gaps, _ = await delivered(system, count * PROCESSES * SUBSCRIBERS)
    cpu = sum(system.cpu_seconds()) - sum(cpu)
    latencies = sorted(await system.latencies())
    return {
        "p50_ms": _quantile(latencies, 0.5) * 1000,
        "p99_ms": _quantile(latencies, 0.99) * 1000,
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
        "server_cpu_share": cpu / (loop.time() - began),
        "lost": count * PROCESSES * SUBSCRIBERS - received,
        "gaps": gaps,
        "failed": failed[0],
        "replaced": system.replaced() - replaced,
    }


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def running(name: str, loop: str, profile: str | None) -> Iterator[System]:
    outdir = tempfile.mkdtemp(prefix=f"bench-broadcast-{name}-", dir="/dev/shm")
    system = None
    try:
        system = System(name, outdir, loop)
        yield system
    except BaseException:
        for path in sorted(glob.glob(f"{outdir}/stderr-*.log")):
            sys.stderr.write(f"--- {path}\n{Path(path).read_text()[-3000:]}\n")
        raise
    finally:
        if system is not None:
            system.stop()
        if profile is not None:
            for path in glob.glob(f"{outdir}/*.prof"):
                shutil.copy(path, os.path.join(profile, f"{name}-{os.path.basename(path)}"))
        shutil.rmtree(outdir, ignore_errors=True)


async def measure(name: str, loop: str, plan: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with running(name, loop, plan["profile"]) as system:
        try:
            # Warm up: connections, caches, the first allocations.
            await burst(system, 100, 200)
            for size in plan["sizes"]:
                results[f"burst-{size}"] = await burst(system, size, plan["burst"][size])
                for rate in plan["rates"]:
                    results[f"steady-{size}-{rate}"] = await steady(
                        system, size, rate, plan["seconds"]
                    )
            if plan["profile"] is not None:
                await system.control("profile")
        finally:
            await system.publisher.close()
    return results


# -- the report -----------------------------------------------------------------------


def _median(runs: list[dict[str, Any]], key: str, field: str) -> float:
    return statistics.median(run[key][field] for run in runs)


def report(
    runs: dict[str, list[dict[str, Any]]], plan: dict[str, Any], began: float, load: tuple
) -> str:
    import redis

    import tornado_prefork

    try:
        import broadcaster

        broadcaster_version = getattr(broadcaster, "__version__", "")
    except ImportError:
        broadcaster_version = ""
    from importlib.metadata import version

    broadcaster_version = broadcaster_version or version("broadcaster")
    redis_server = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.split()[2]
    minutes = (time.monotonic() - began) / 60
    lines = [
        START,
        "## Broadcast across 4 workers, beside Redis pub/sub",
        "",
        f"Measured {datetime.date.today()} by `python benchmarks/broadcast.py` "
        f"in {minutes:.1f} minutes; numbers are written by the script. "
        "To run it: `apt-get install -y redis-server` and `pip install -e '.[bench]'` "
        "(redis and broadcaster[redis]); it starts its own `redis-server` on a free port.",
        "",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}; "
        f"Python {platform.python_version()}, tornado-prefork {tornado_prefork.__version__}, "
        f"redis-py {redis.__version__}, broadcaster {broadcaster_version}, "
        f"redis-server {redis_server.removeprefix('v=')}; every process on {plan['loop']} "
        "but the workers of the row that says uvloop (the hub itself runs asyncio)",
        f"- Load average (1 min) {load[0]:.2f} at the start and {load[1]:.2f} at the end "
        "(other work on these CPUs shows there).",
        f"- Server side on CPU {SERVER_CPU} (`taskset`): the broker (the hub, or "
        f"`redis-server`) and {PROCESSES} subscriber processes of {SUBSCRIBERS} subscribers "
        f"each ({PROCESSES} workers of `serve()`, or {PROCESSES} processes with redis-py or "
        f"broadcaster); the publisher on CPU {CLIENT_CPU}. {plan['reps']} interleaved runs, "
        "medians.",
        "",
        "Fan-out throughput: a burst of "
        + " and ".join(
            f"{plan['burst'][size]:,} messages of {_size(size)}" for size in plan["sizes"]
        )
        + f", published with {WINDOW} in flight; deliveries per second from the first publish "
        "to the last delivery; CPU per delivery is the server side's (broker and subscriber "
        "processes), user + system.",
        "",
        "| system | size | deliveries/s | publishes/s | server CPU µs per delivery | "
        "of which broker µs per message | subscriber processes µs per delivery | "
        "lost, most in a run | hub replaced, all runs |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in plan["sizes"]:
        for name in runs:
            key = f"burst-{size}"
            lines.append(
                f"| {LABELS[name]} | {_size(size)} "
                f"| {_median(runs[name], key, 'deliveries_per_s'):,.0f} "
                f"| {_median(runs[name], key, 'publishes_per_s'):,.0f} "
                f"| {_median(runs[name], key, 'cpu_us_per_delivery'):.2f} "
                f"| {_median(runs[name], key, 'broker_us_per_message'):.1f} "
                f"| {_median(runs[name], key, 'subscriber_us_per_delivery'):.2f} "
                f"| {_lost(runs[name], key)} |"
            )
    lines += [
        "",
        f"Latency at a fixed rate: {plan['seconds']:g} s of publishes at each rate, one every "
        "1/rate s whatever the answers (a late publisher catches up); from just before "
        f"`publish` to each subscriber's receipt, over every delivery ({PROCESSES * SUBSCRIBERS} "
        "per message). Server CPU is the share of a CPU the server side used meanwhile.",
        "",
        "| system | size | publishes/s | deliveries/s asked | p50 ms | p99 ms | max ms | "
        "server CPU | lost, most in a run | hub replaced, all runs |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rate in plan["rates"]:
        for size in plan["sizes"]:
            for name in runs:
                key = f"steady-{size}-{rate}"
                lines.append(
                    f"| {LABELS[name]} | {_size(size)} | {rate:,} "
                    f"| {rate * PROCESSES * SUBSCRIBERS:,} "
                    f"| {_median(runs[name], key, 'p50_ms'):.2f} "
                    f"| {_median(runs[name], key, 'p99_ms'):.2f} "
                    f"| {_median(runs[name], key, 'max_ms'):.1f} "
                    f"| {_median(runs[name], key, 'server_cpu_share'):.0%} "
                    f"| {_lost(runs[name], key)} |"
                )
    lines += ["", *_targets(runs, plan), END]
    return "\n".join(lines)


def _lost(runs: list[dict[str, Any]], key: str) -> str:
    lost = max(run[key]["lost"] for run in runs)
    failed = max(run[key]["failed"] for run in runs)
    replaced = sum(run[key]["replaced"] for run in runs)
    text = f"{lost:,.0f}" + (f" ({failed:,.0f} publishes failed)" if failed else "")
    return f"{text} | {replaced}"


def _targets(runs: dict[str, list[dict[str, Any]]], plan: dict[str, Any]) -> list[str]:
    lines = [
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    if "hub" not in runs or not any(name.startswith("redis-py") for name in runs):
        return []
    for size in plan["sizes"]:
        key = f"burst-{size}"
        ours = _median(runs["hub"], key, "deliveries_per_s")
        best = max(
            (_median(runs[name], key, "deliveries_per_s"), name)
            for name in runs
            if name.startswith("redis-py")
        )
        lines.append(
            f"| deliveries/s >= redis-py pub/sub's (its best way), {_size(size)} "
            f"| {ours:,.0f} vs {best[0]:,.0f} ({LABELS[best[1]]}): {ours / best[0]:.2f}x "
            f"| {'yes' if ours >= best[0] else '**no**'} |"
        )
    if 1000 in plan["rates"]:
        for size in plan["sizes"]:
            p99 = _median(runs["hub"], f"steady-{size}-1000", "p99_ms")
            lines.append(
                f"| p99 <= 2 ms at 1,000 publishes/s, {_size(size)} | {p99:.2f} ms "
                f"| {'yes' if p99 <= 2 else '**no**'} |"
            )
    return lines


def _size(size: int) -> str:
    return f"{size // 1024} KB" if size >= 1024 else f"{size} bytes"


def write(section: str) -> None:
    text = DOCS.read_text()
    if START in text:
        before, _, rest = text.partition(START)
        _, _, after = rest.partition(END)
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.write_text(text)


def run_loop(loop: str, main: Awaitable[Any]) -> Any:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def run_all(args: argparse.Namespace) -> None:
    plan = {
        "loop": args.loop,
        "reps": args.reps,
        # Half as many large messages: each burst then takes about as long.
        "burst": {
            size: args.messages if size < 1024 else args.messages // 2 for size in args.sizes
        },
        "rates": args.rates,
        "seconds": args.seconds,
        "profile": args.profile,
        "sizes": args.sizes,
    }
    began = time.monotonic()
    load = os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.systems}
    for rep in range(args.reps):
        for name in args.systems:
            # A loop of its own: nothing of the system before is left on it.
            result = run_loop(args.loop, measure(name, args.loop, plan))
            runs[name].append(result)
            size = plan["sizes"][0]
            first = result[f"burst-{size}"]
            print(
                f"  rep {rep + 1} {name}: {first['deliveries_per_s']:,.0f} deliveries/s "
                f"({_size(size)}), {first['cpu_us_per_delivery']:.2f} µs CPU each; "
                + ", ".join(
                    f"p99 {result[f'steady-{size}-{rate}']['p99_ms']:.1f} ms at {rate}/s"
                    for rate in plan["rates"]
                ),
                flush=True,
            )
    section = report(runs, plan, began, (load, os.getloadavg()[0]))
    print(section)
    if args.write:
        write(section)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--role":
        role = sys.argv[2]
        if role == "hub":
            serve_hub(sys.argv[3], sys.argv[4])
        else:
            port, outdir, loop = int(sys.argv[3]), sys.argv[4], sys.argv[5]
            run_loop(loop, redis_subscriber(role, port, outdir))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--messages", type=int, default=2000, help="burst of 100-byte messages")
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="bytes per message")
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 100])
    parser.add_argument("--seconds", type=float, default=1.0, help="of each fixed rate")
    parser.add_argument("--systems", nargs="+", default=SYSTEMS, choices=SYSTEMS)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="cProfile the subscriber processes and the hub; their .prof files go to DIR",
    )
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("benchmarks/broadcast.py needs redis-server: apt-get install -y redis-server")
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit(
            "benchmarks/broadcast.py needs 2 CPUs: the server side on one, the publisher on another"
        )
    os.sched_setaffinity(0, {CLIENT_CPU})
    if args.profile is not None:
        os.makedirs(args.profile, exist_ok=True)
        os.environ["BENCH_PROFILE"] = "1"
        args.write = False
    run_all(args)


if __name__ == "__main__":
    main()
