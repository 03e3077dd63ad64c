"""The broadcast metrics of serve(metrics_port=...): each worker's counts,
on real processes, through a small application that publishes and subscribes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from tornado.web import Application, RequestHandler

from tests import serving
from tests.test_metrics_serve import Samples, fetch, metrics_url, scrape, scrape_until, total
from tornado_prefork import broadcast, task_id
from tornado_prefork._broadcast import current as _current
from tornado_prefork._metrics.broadcast import BroadcastMetrics

APP = "tests.test_broadcast_metrics:make_app"
# Never a label: a test below looks for it in the scrape.
TOPIC = "news:topic-name"
# Subscribers of each worker that read all the time.
READERS = 3
# The queue of the one subscriber of each worker that stops reading after
# its first message, until told to go on: it drops all but the last 2.
SLOW_QUEUE = 2

# -- the application -------------------------------------------------------


class _Worker:
    """What the subscribers of this worker received."""

    def __init__(self) -> None:
        self.readers = [0] * READERS
        self.slow: list[str] = []
        self.go_on = asyncio.Event()
        self.joined: asyncio.Task[None] | None = None
        self.tasks: list[asyncio.Task[None]] = []


_worker: _Worker | None = None


def _state() -> _Worker:
    global _worker
    if _worker is None:
        _worker = _Worker()
    return _worker


async def _read(state: _Worker, index: int, entered: asyncio.Event) -> None:
    async with broadcast.subscribe(TOPIC) as subscription:
        entered.set()
        async for event in subscription:
            if isinstance(event, broadcast.Message):
                state.readers[index] += 1


async def _read_slowly(state: _Worker, entered: asyncio.Event) -> None:
    async with broadcast.subscribe(TOPIC, max_queue=SLOW_QUEUE) as subscription:
        entered.set()
        for event in await subscription.read(limit=1):
            state.slow.append(type(event).__name__)
        await state.go_on.wait()
        while events := await subscription.read():
            state.slow += [type(event).__name__ for event in events]


async def _join(state: _Worker) -> None:
    entered = [asyncio.Event() for _ in range(READERS + 1)]
    loop = asyncio.get_running_loop()
    state.tasks = [loop.create_task(_read(state, i, entered[i])) for i in range(READERS)]
    state.tasks.append(loop.create_task(_read_slowly(state, entered[-1])))
    for event in entered:
        await event.wait()
    # A round trip to the hub on the same connection: once answered, the hub
    # has this worker's interest in the topic, and sends it what is published.
    await broadcast.recent(TOPIC)


class _Handler(RequestHandler):
    def answer(self, **fields: Any) -> None:
        self.write(json.dumps({"worker": task_id(), "pid": os.getpid(), **fields}))


class JoinHandler(_Handler):
    async def post(self) -> None:
        state = _state()
        if state.joined is None:
            state.joined = asyncio.get_running_loop().create_task(_join(state))
        await asyncio.shield(state.joined)
        self.answer()


class PublishHandler(_Handler):
    async def post(self) -> None:
        count = int(self.get_argument("count"))
        for i in range(count):
            await broadcast.publish(TOPIC, {"n": i})
        self.answer(published=count)


class StateHandler(_Handler):
    def get(self) -> None:
        state = _state()
        self.answer(readers=state.readers, slow=state.slow)


class GoOnHandler(_Handler):
    def post(self) -> None:
        _state().go_on.set()
        self.answer()


def make_app() -> Application:
    return Application(
        [
            (r"/join", JoinHandler),
            (r"/publish", PublishHandler),
            (r"/state", StateHandler),
            (r"/go-on", GoOnHandler),
        ]
    )


# -- the client ---------------------------------------------------------------


def _ask(base: str, requests: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Each request on a connection of its own, all connections open at once
    (so that they are shared out among the workers); the answers."""
    host, port = "127.0.0.1", serving.port_of(base)
    socks = [socket.create_connection((host, port), timeout=10) for _ in requests]
    try:
        for sock, (method, path) in zip(socks, requests, strict=True):
            sock.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n".encode()
            )
        answers = []
        for sock in socks:
            data = b""
            while not data.endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
            assert data.startswith(b"HTTP/1.1 200"), data
            answers.append(json.loads(data[data.index(b"\r\n\r\n") + 4 :]))
        return answers
    finally:
        for sock in socks:
            sock.close()


def on_every_worker(
    base: str, method: str, path: str, workers: int = 2
) -> dict[int, dict[str, Any]]:
    """Asks until every worker has answered ``path`` (by task id, its last answer)."""
    answers: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 15
    while len(answers) < workers:
        assert time.monotonic() < deadline, f"only workers {sorted(answers)} answered"
        for answer in _ask(base, [(method, path)] * 4):
            answers[answer["worker"]] = answer
    return answers


def wait_for(base: str, done: Callable[[dict[str, Any]], bool], workers: int = 2) -> None:
    """Until ``done`` holds for the state of every worker."""
    deadline = time.monotonic() + 15
    while True:
        states = on_every_worker(base, "GET", "/state", workers)
        if all(done(state) for state in states.values()):
            return
        assert time.monotonic() < deadline, states
        time.sleep(0.05)


def per_worker(samples: Samples, name: str, **labels: str) -> dict[int, float]:
    wanted = set(labels.items())
    return {
        int(dict(ls)["worker"]): value
        for (n, ls), value in samples.items()
        if n == name and wanted <= ls
    }


# -- the tests ------------------------------------------------------------------


def test_each_worker_publishes_its_broadcast_counts() -> None:
    with serving.running(APP, string=True, metrics_port=0) as s:
        base, metrics = serving.url(s), metrics_url(s)
        on_every_worker(base, "POST", "/join")
        # The first message alone: each slow subscriber takes it, then stops.
        published = {0: 0, 1: 0}
        (first,) = _ask(base, [("POST", "/publish?count=1")])
        published[first["worker"]] += 1
        wait_for(base, lambda state: state["slow"] == ["Message"])
        # Then more, from both workers.
        for _ in range(50):
            for answer in _ask(base, [("POST", "/publish?count=2")] * 2):
                published[answer["worker"]] += answer["published"]
            if all(published.values()):
                break
        assert all(published.values()), published
        sent = sum(published.values())
        wait_for(base, lambda state: state["readers"] == [sent] * READERS)

        def says(samples: Samples, name: str, expected: dict[int, float], **labels: str) -> bool:
            return per_worker(samples, name, **labels) == expected

        # Each slow subscriber holds the last 2 messages and dropped the others.
        dropped = sent - 1 - SLOW_QUEUE
        before = {0: READERS * sent + 1.0, 1: READERS * sent + 1.0}
        # A sample writes the counters, then the gauges (files of their own):
        # a scrape between the two would see one worker's counters alone.
        samples = scrape_until(
            metrics,
            lambda m: (
                says(m, "tornado_prefork_broadcast_delivered_total", before)
                and set(per_worker(m, "tornado_prefork_broadcast_queue_high_water")) == {0, 1}
            ),
        )
        assert per_worker(samples, "tornado_prefork_broadcast_delivered_total") == before
        assert per_worker(samples, "tornado_prefork_broadcast_published_total") == published
        assert per_worker(
            samples, "tornado_prefork_broadcast_dropped_total", reason="overflow"
        ) == {0: dropped, 1: dropped}
        assert per_worker(samples, "tornado_prefork_broadcast_gaps_total") == {0: 0, 1: 0}
        assert per_worker(samples, "tornado_prefork_broadcast_subscribers") == {
            0: READERS + 1,
            1: READERS + 1,
        }
        high_water = per_worker(samples, "tornado_prefork_broadcast_queue_high_water")
        assert set(high_water) == {0, 1}
        assert all(SLOW_QUEUE <= value <= sent for value in high_water.values()), high_water

        # The slow subscribers go on: a gap, then the 2 messages they kept.
        on_every_worker(base, "POST", "/go-on")
        wait_for(base, lambda state: state["slow"] == ["Message", "Gap", "Message", "Message"])
        after = {0: READERS * sent + 3.0, 1: READERS * sent + 3.0}
        samples = scrape_until(
            metrics, lambda m: says(m, "tornado_prefork_broadcast_delivered_total", after)
        )
        assert per_worker(samples, "tornado_prefork_broadcast_delivered_total") == after
        assert per_worker(samples, "tornado_prefork_broadcast_gaps_total") == {0: 1, 1: 1}
        assert per_worker(samples, "tornado_prefork_broadcast_published_total") == published

        # Bounded series: the labels are the worker and the reason, never the topic.
        broadcast_samples = [
            labels for (name, labels) in samples if name.startswith("tornado_prefork_broadcast_")
        ]
        assert broadcast_samples
        assert all(
            {key for key, _ in labels} <= {"worker", "reason"} for labels in broadcast_samples
        )
        assert TOPIC not in fetch(metrics, "/metrics")[1]


def test_no_broadcast_series_when_broadcast_is_off() -> None:
    with serving.running(APP, string=True, metrics_port=0, broadcast="off") as s:
        base, metrics = serving.url(s), metrics_url(s)
        on_every_worker(base, "GET", "/state")
        # Long enough for the instruments to sample, twice.
        time.sleep(1.2)
        samples = scrape(metrics)
        assert samples[("tornado_prefork_workers_ready", frozenset())] == 2
        assert not [name for name, _ in samples if name.startswith("tornado_prefork_broadcast_")]


def test_a_sample_makes_no_backend() -> None:
    before = _current.existing()
    _current.install(None)
    try:
        BroadcastMetrics(0).sample()
        assert _current.existing() is None
    finally:
        _current.install(before)


def test_the_counts_of_a_worker_that_ended_stay_in_the_totals() -> None:
    with serving.running(APP, string=True, metrics_port=0) as s:
        base, metrics = serving.url(s), metrics_url(s)
        on_every_worker(base, "POST", "/join")
        published = {0: 0, 1: 0}
        for _ in range(50):
            for answer in _ask(base, [("POST", "/publish?count=3")] * 2):
                published[answer["worker"]] += answer["published"]
            if all(published.values()):
                break
        assert all(published.values()), published
        sent = sum(published.values())
        # At once: what it counted since its last sample goes in as it ends.
        s.signal(signal.SIGTTOU)
        samples = scrape_until(
            metrics,
            lambda m: (
                total(m, "tornado_prefork_worker_exits_total", reason="scaled_down") == 1
                and total(m, "tornado_prefork_broadcast_published_total") == sent
            ),
        )
        assert total(samples, "tornado_prefork_worker_exits_total", reason="scaled_down") == 1
        assert per_worker(samples, "tornado_prefork_broadcast_published_total") == published
        delivered = per_worker(samples, "tornado_prefork_broadcast_delivered_total")
        assert set(delivered) == {0, 1}
        assert all(READERS * sent <= value <= (READERS + 1) * sent for value in delivered.values())
        # The gauges of the worker that ended are gone with it.
        assert set(per_worker(samples, "tornado_prefork_broadcast_subscribers")) == {0}
