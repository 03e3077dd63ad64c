"""Lifespans and a leader task for the tests, and the readers of what they
write. Each event is a line ``EVENT PID [...]`` said on stdout and appended,
in one write, to the file named by ``$LIFESPAN_LOG`` if set."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Collection
from pathlib import Path

from tornado.web import Application, RequestHandler
from tornado.websocket import WebSocketHandler

import tornado_prefork
from tests.scenarios import say


def record(*event: object) -> None:
    line = " ".join(map(str, (event[0], os.getpid(), *event[1:])))
    path = os.environ.get("LIFESPAN_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    say(line)


class Pool:
    """What an app opens per worker and must close on the worker's event loop
    (a connection: one end of a socket pair here)."""

    async def open(self) -> Pool:
        mine, self._peer = socket.socketpair()
        _, self._writer = await asyncio.open_unix_connection(sock=mine)
        return self

    async def close(self) -> None:
        await asyncio.sleep(0.1)
        self._writer.close()
        await self._writer.wait_closed()
        self._peer.close()


class WhoHandler(RequestHandler):
    def get(self) -> None:
        self.write({"pid": os.getpid()})


class SlowHandler(RequestHandler):
    async def get(self) -> None:
        record("request-start")
        await asyncio.sleep(float(self.get_argument("seconds", "1")))
        record("request-end")
        self.write({"pid": os.getpid()})


class Socket(WebSocketHandler):
    def open(self) -> None:
        record("ws-open")

    def on_close(self) -> None:
        record("ws-closed")


def _app() -> Application:
    return Application([(r"/", WhoHandler), (r"/slow", SlowHandler), (r"/ws", Socket)])


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[Application]:
    pool = await Pool().open()
    record("enter")
    yield _app()
    await pool.close()
    record("exit")


@contextlib.asynccontextmanager
async def failing_enter() -> AsyncIterator[Application]:
    raise RuntimeError("no database")
    yield _app()


@contextlib.asynccontextmanager
async def failing_exit() -> AsyncIterator[Application]:
    yield _app()
    raise RuntimeError("pool already closed")


@contextlib.asynccontextmanager
async def slow_exit() -> AsyncIterator[Application]:
    yield _app()
    record("exit-begins")
    await asyncio.sleep(60)


async def write_every_100ms() -> None:
    """Appends ``lead PID SLOT TIME N`` every 100 ms, N counting from 0."""
    for n in range(1_000_000):
        record("lead", tornado_prefork.task_id(), time.monotonic(), n)
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def leader() -> AsyncIterator[Application]:
    tornado_prefork.leader_task(write_every_100ms)
    async with lifespan() as app:
        yield app


def leads(log: Path) -> list[tuple[int, int, float, int]]:
    """Each line the leader task wrote: (pid, slot, time, lines that run wrote before)."""
    found = []
    for line in log.read_text().splitlines() if log.exists() else []:
        if line.startswith("lead "):
            _, pid, slot, at, n = line.split()
            found.append((int(pid), int(slot), float(at), int(n)))
    return found


def wait_for_leader(log: Path, gone: Collection[int] = (), timeout: float = 10) -> tuple[int, int]:
    """Waits for a line of a worker not in ``gone``; returns its (pid, slot)."""
    deadline = time.monotonic() + timeout
    while not (found := leads(log)) or found[-1][0] in gone:
        assert time.monotonic() < deadline, found[-3:]
        time.sleep(0.05)
    return found[-1][0], found[-1][1]


def lock_directory(pid: int, timeout: float = 5) -> Path:
    """The directory of the lock file that worker ``pid`` opens once ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = Path(os.readlink(fd))
                if target.parent.name.startswith("tornado-prefork-leader-"):
                    return target.parent
        time.sleep(0.02)
    raise AssertionError(f"{pid} holds no lock file open")


def check_one_at_a_time(log: Path, bound: float) -> int:
    """Fails if two runs of the leader task overlapped in time or if it fell
    silent for ``bound`` seconds or longer; returns how many runs there were."""
    runs: dict[tuple[int, int], list[float]] = {}
    starts: dict[int, int] = {}
    every = sorted(leads(log), key=lambda lead: lead[2])
    for pid, _, at, n in every:
        starts[pid] = starts.get(pid, 0) + (n == 0)
        runs.setdefault((pid, starts[pid]), []).append(at)
    spans = sorted((times[0], times[-1], pid) for (pid, _), times in runs.items())
    for (_, end, pid), (start, _, other) in zip(spans, spans[1:], strict=False):
        assert end < start, f"{pid} ran until {end}, {other} from {start}"
    times = [at for _, _, at, _ in every]
    silence = max(b - a for a, b in zip(times, times[1:], strict=False))
    assert silence < bound, silence
    return len(spans)
