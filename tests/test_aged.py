"""Every lifecycle scenario on a server older than each of its timeouts.

A real server lives for weeks, a test server usually for a second: younger
than every timeout it has, so code that measures a deadline from the wrong
moment (a worker's start instead of its last heartbeat, a time not handed
over across a re-exec) passes every other test and fails in production. Here
the timeouts are short (`SHORT`) and the server is aged past all of them
(`AGE`) before each action, which then runs with requests in flight
(`in_flight`: slow ones, and busy ones that hold a worker's event loop for
less than the timeout) and a background load (`serving.Load`).
"""

from __future__ import annotations

import contextlib
import http.client
import re
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from tests import procs, serving
from tests.procs import Scenario
from tests.serving import live_workers

APP = "tests.webapp:make_app"
SHORT = {"timeout": 2.0, "ready_timeout": 2.5, "graceful_timeout": 2.0, "min_uptime": 0.5}
# Longer than every one of SHORT: each deadline measured from a worker's
# start (or from the server's) has passed when the action begins.
AGE = 3.0
# What a request in flight takes: short of graceful_timeout, so that a drain
# that begins once it has started still lets it finish.
SLOW = 1.0
# How long a busy request holds its worker's event loop (synchronous work, as
# a CPU-bound handler does): the worker sends no heartbeat meanwhile, but is
# silent for less than the timeout (BUSY plus at most a heartbeat period,
# timeout / 4), so it is healthy and must never be aborted. Begun just before
# the action, it also keeps heartbeats away for a second around it: a parent
# that lost track of the last one (across a re-exec) is not rescued by a
# fresh one that happens to come, so such a bug shows every time.
BUSY = 1.0
# The workers' access log lines, left out of failure messages.
_ACCESS = re.compile(r"^\d+ \w+ \d{3} [A-Z]+ /")


class InFlight:
    """``count`` requests for ``path``, each on a connection and a thread of its
    own, as slow clients send them.

    Entered, it waits until workers have begun every one (each worker says
    ``marker PID`` as it does) and records their pids in `begun_by`; left, it
    waits for every answer. `answers` holds each status, or the error that
    came instead.
    """

    def __init__(
        self,
        s: Scenario,
        base: str,
        count: int = 4,
        path: str = f"/slow?seconds={SLOW}",
        marker: str = "slow-start",
    ) -> None:
        self.s = s
        self.base = base
        self.count = count
        self.path = path
        self.marker = marker + " "
        self.answers: list[int | str] = []
        self.begun_by: list[int] = []
        self._threads = [threading.Thread(target=self._ask, daemon=True) for _ in range(count)]

    def __enter__(self) -> InFlight:
        before = len(self.s.matching(self.marker, at_start=True))
        for thread in self._threads:
            thread.start()
        lines = self.s.wait_line(self.marker, count=before + self.count, at_start=True)
        self.begun_by = [int(line.split()[1]) for line in lines[before:]]
        return self

    def __exit__(self, *exc: object) -> None:
        for thread in self._threads:
            thread.join(timeout=30)

    def _ask(self) -> None:
        try:
            status, _ = serving.get(self.base, self.path, timeout=20)
        except (OSError, http.client.HTTPException) as e:
            self.answers.append(repr(e))
        else:
            self.answers.append(status)


@contextlib.contextmanager
def in_flight(s: Scenario, base: str, workers: int) -> Iterator[list[InFlight]]:
    """Requests in flight on a busy server: four slow ones (`SLOW` seconds,
    the event loop free meanwhile), then one busy one on each of the
    ``workers`` workers (`BUSY` seconds, the loop held). Yields them once
    every one has begun; leaving waits for every answer."""
    with contextlib.ExitStack() as stack:
        flights = [stack.enter_context(InFlight(s, base))]
        for _ in range(workers):
            # One after the other: a worker whose loop is held cannot take the
            # next one, so each goes to another worker.
            busy = InFlight(s, base, 1, f"/block?seconds={BUSY}", "block-start")
            flights.append(stack.enter_context(busy))
        held = {pid for flight in flights[1:] for pid in flight.begun_by}
        assert len(held) == workers, _log(s)
        yield flights


def _answers(flights: list[InFlight]) -> list[int | str]:
    """Every answer to the requests of ``flights``."""
    return [answer for flight in flights for answer in flight.answers]


def _age() -> None:
    """Lets the server grow older than every one of `SHORT`: there is nothing
    to wait for but time."""
    time.sleep(AGE)


def _forced_ends(s: Scenario, pid: int | None = None) -> list[str]:
    """The parent's lines about workers it had to end, not drain: found silent
    (then SIGABRT), killed by a signal, not ready in time, not drained in
    time; only those about ``pid`` if given."""
    signs = ("silent for", "killed by signal", "not ready after", "still running after")
    found = [line for line in s.lines if any(sign in line for sign in signs)]
    return found if pid is None else [line for line in found if f"(pid {pid})" in line]


def _log(s: Scenario) -> str:
    """The server's output without the access log: what to read when an
    assertion fails."""
    return "\n".join(line for line in s.lines if not _ACCESS.match(line))


def _served(s: Scenario, count: int) -> None:
    """Waits until the workers have logged ``count`` more answers to ``GET /``."""
    served = " 200 GET / ("
    s.wait_line(served, count=len(s.matching(served)) + count)


def _answered_by(base: str, count: int = 10) -> set[int]:
    """The pids of the workers that answer ``count`` fresh requests; fails
    unless each answer is a 200."""
    answers = [serving.get(base) for _ in range(count)]
    assert {status for status, _ in answers} == {200}, answers
    return {body["pid"] for _, body in answers}


@pytest.mark.parametrize("preload", [False, None], ids=["rolling", "in-place"])
def test_reloads_of_an_aged_server_fail_no_request(preload: bool | None) -> None:
    # preload=False: each worker imports the app, a reload forks new ones;
    # None (the default for an import string): the parent imports it, and a
    # reload re-executes the parent, which adopts the old workers.
    with serving.running(APP, string=True, preload=preload, **SHORT) as s:
        base = serving.url(s)
        # The second reload ages the workers the first one started, and in
        # place the parent image the first one executed.
        for reloads in (1, 2):
            old = set(live_workers(s, 2))
            _age()
            with in_flight(s, base, 2) as flights, serving.Load(base) as load:
                s.signal(signal.SIGHUP)
                s.wait_line("reload finished: 2 workers", count=reloads, timeout=20)
                # Here, not after retirements that an aborted worker never has.
                assert _forced_ends(s) == [], _log(s)
                for pid in old:
                    s.wait_line(f"(pid {pid}) retired (status 0)")
            assert _answers(flights) == [200] * 6, _log(s)
            assert {pid for flight in flights for pid in flight.begun_by} == old
            assert load.failures == [], _log(s)
            new = set(live_workers(s, 2))
            assert new.isdisjoint(old)
            assert _answered_by(base) <= new
        in_place = s.matching(f"reloaded in place (pid {s.pid})")
        assert len(in_place) == (2 if preload is None else 0), _log(s)
        assert len(s.matching("reloading: replacing 2 workers")) == (0 if preload is None else 2)


RECYCLING = {
    "max_requests": ({"max_requests": 40}, "served max_requests; replacing it"),
    # Reached just after the server is AGE old, while requests are in flight.
    "max_worker_age": ({"max_worker_age": AGE + 0.5}, "reached max_worker_age"),
}


@pytest.mark.parametrize("kind", RECYCLING)
def test_recycling_on_an_aged_server_fails_no_request(kind: str) -> None:
    settings, reason = RECYCLING[kind]
    with serving.running(APP, **SHORT, **settings) as s:
        base = serving.url(s)
        old = set(live_workers(s, 2))
        _age()
        with in_flight(s, base, 2) as flights, serving.Load(base) as load:
            for pid in old:
                s.wait_line(f"(pid {pid}) {reason}")
            # Here, not after retirements that an aborted worker never has.
            assert _forced_ends(s) == [], _log(s)
            for pid in old:
                s.wait_line(f"(pid {pid}) retired (status 0)")
        assert _forced_ends(s) == [], _log(s)
        assert _answers(flights) == [200] * 6, _log(s)
        assert load.failures == [], _log(s)
        assert set(live_workers(s, 2)).isdisjoint(old)
        assert _answered_by(base).isdisjoint(old)


def test_scaling_an_aged_server_up_and_down_fails_no_request() -> None:
    with serving.running(APP, **SHORT) as s:
        base = serving.url(s)
        first = set(live_workers(s, 2))
        _age()
        with in_flight(s, base, 2) as flights, serving.Load(base) as load:
            s.signal(signal.SIGTTIN)
            s.wait_line("SIGTTIN: 3 workers")
            (added,) = set(live_workers(s, 3)) - first
            # Its access log: it serves.
            s.wait_line(f"{added} INFO 200 GET /", at_start=True)
        assert _forced_ends(s) == [], _log(s)
        assert _answers(flights) == [200] * 6, _log(s)
        assert load.failures == [], _log(s)
        # The worker that goes must be older than its timeouts too.
        _age()
        with in_flight(s, base, 3) as flights, serving.Load(base) as load:
            s.signal(signal.SIGTTOU)
            s.wait_line("SIGTTOU: 2 workers")
            s.wait_line(f"worker 2 (pid {added}) retired (status 0)")
        assert _forced_ends(s) == [], _log(s)
        assert _answers(flights) == [200] * 7, _log(s)
        assert load.failures == [], _log(s)
        assert set(live_workers(s, 2)) == first
        assert _answered_by(base) <= first


def test_a_hung_worker_of_an_aged_server_is_replaced_and_only_it() -> None:
    with serving.running(APP, rlimit="core=0", **SHORT) as s:
        base = serving.url(s)
        workers = set(live_workers(s, 2))
        _age()
        # Blocked in time.sleep, its event loop sends no heartbeat; it cannot
        # accept either, so what follows goes to its sibling.
        with InFlight(s, base, 1, "/block?seconds=30", "block-start") as blocked:
            (hung,) = blocked.begun_by
            (healthy,) = workers - {hung}
            # Longer than the timeout: still in flight when the hung one is aborted.
            slow = InFlight(s, base, 3, f"/slow?seconds={SHORT['timeout'] + SLOW}")
            # Busy, but not for as long as the timeout: it must be spared.
            busy = InFlight(s, base, 1, f"/block?seconds={BUSY}", "block-start")
            with slow, busy, serving.Load(base) as load:
                s.wait_line(f"(pid {hung}) silent for")
                s.wait_line(f"(pid {hung}) killed by signal 6, restarting")
                (replacement,) = set(live_workers(s, 2)) - {healthy}
                s.wait_line(f"{replacement} INFO 200 GET /", at_start=True)
        assert blocked.answers != [200]
        assert _forced_ends(s, healthy) == [], _log(s)
        assert slow.begun_by + busy.begun_by == [healthy] * 4
        assert _answers([slow, busy]) == [200] * 4, _log(s)
        assert load.failures == [], _log(s)
        assert procs.alive(healthy)
        assert _answered_by(base) <= {healthy, replacement}


# On Tornado 6.4 too (tornado_api): the drain of an aged server, one signal.
@pytest.mark.parametrize(
    "signum",
    [pytest.param(signal.SIGTERM, marks=pytest.mark.tornado_api), signal.SIGINT],
    ids=["TERM", "INT"],
)
def test_a_stop_of_an_aged_server_answers_every_request_in_flight(signum: int) -> None:
    with serving.running(APP, **SHORT) as s:
        base = serving.url(s)
        workers = set(live_workers(s, 2))
        _age()
        with serving.Load(base) as load:
            _served(s, 10)
        # Ended before the stop: once it begins, new connections are refused
        # by design; the requests in flight are what must finish.
        with in_flight(s, base, 2) as flights:
            s.stop(signum)
        assert _forced_ends(s) == [], _log(s)
        assert _answers(flights) == [200] * 6, _log(s)
        assert load.failures == [], _log(s)
        assert s.matching("stopping 2 workers gracefully"), _log(s)
        for pid in workers:
            assert s.matching(f"{pid} INFO worker {pid} draining", at_start=True), _log(s)
            assert s.matching(f"(pid {pid}) stopped (status 0)"), _log(s)
        assert s.lines[-1] == "parent returned"
