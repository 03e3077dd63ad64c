"""serve(): real workers, real HTTP on 127.0.0.1, real signals."""

from __future__ import annotations

import collections
import http.client
import signal
import socket
import threading
import time
from typing import Any

import pytest

from tests import serving

pytestmark = pytest.mark.tornado_api


@pytest.mark.parametrize(
    ("app", "string"),
    [
        ("tests.webapp:app", False),
        ("tests.webapp:make_app", False),
        ("tests.webapp:make_app_async", False),
        ("tests.webapp:make_app", True),
    ],
)
def test_two_workers_serve(app: str, string: bool) -> None:
    with serving.running(app, string=string) as s:
        base = serving.url(s)
        for _ in range(3):
            # Balanced accept: a burst of 64 clients on an idle server is spread
            # over both workers (Tornado's own accept loop gives one of them
            # nearly all).
            shares = sorted(collections.Counter(serving.burst(base, 64, settle=True)).values())
            assert len(shares) == 2 and shares[0] >= 16, shares
        for _ in range(2):
            status, body = serving.get(base)
            assert status == 200 and body["ppid"] == s.pid
        s.stop()
        assert "parent returned" in s.lines


def test_a_factory_runs_once_in_each_worker() -> None:
    with serving.running("tests.webapp:make_app", 3) as s:
        base = serving.url(s)
        workers = {serving.get(base)[1]["ppid"] for _ in range(3)}
        assert workers == {s.pid}
    factories = [int(line.split()[1]) for line in s.matching("factory ", at_start=True)]
    assert len(factories) == 3 and s.pid not in factories, s.lines


def test_sigterm_lets_requests_in_flight_finish() -> None:
    with serving.running(graceful_timeout=5) as s:
        base = serving.url(s)
        results: list[Any] = []

        def slow() -> None:
            try:
                results.append(serving.get(base, "/slow?seconds=2", timeout=15)[0])
            except Exception as e:  # recorded, then asserted below
                results.append(e)

        threads = [threading.Thread(target=slow) for _ in range(20)]
        for t in threads:
            t.start()
        s.wait_line("slow-start", 20, timeout=10)
        began = time.monotonic()
        s.signal(signal.SIGTERM)
        # New connections are refused once the stop began.
        time.sleep(0.3)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", serving.port_of(base)), timeout=2)
        for t in threads:
            t.join(timeout=15)
        assert results == [200] * 20
        assert s.finish(timeout=10) == 0, s.output
        assert time.monotonic() - began < 5 + 1
        assert "stopped (status 0)" in s.output


def test_a_request_longer_than_graceful_timeout_is_cut_off() -> None:
    with serving.running(processes=1, graceful_timeout=1) as s:
        base = serving.url(s)
        errors: list[BaseException] = []

        def slow() -> None:
            try:
                serving.get(base, "/slow?seconds=30", timeout=20)
            except (OSError, http.client.HTTPException) as e:
                errors.append(e)

        t = threading.Thread(target=slow)
        t.start()
        s.wait_line("slow-start", 1, timeout=10)
        began = time.monotonic()
        s.stop()
        t.join(timeout=10)
        assert len(errors) == 1, errors
        assert time.monotonic() - began < 1 + 2


@pytest.mark.parametrize(
    ("app", "string", "error"),
    [
        ("tests.webapp:broken_factory", False, "RuntimeError: boom at boot"),
        ("tests.lifespanapp:failing_enter", True, "RuntimeError: no database"),
        (
            "tests.webapp:wrong_type_factory",
            True,
            "TypeError: tests.webapp:wrong_type_factory gave",
        ),
    ],
)
def test_boot_failure_exits_fast_showing_the_error_once(app: str, string: bool, error: str) -> None:
    began = time.monotonic()
    with serving.start(app, 3, string=string) as s:
        code = s.finish(timeout=10)
    elapsed = time.monotonic() - began
    assert code != 0, s.output
    assert s.output.count(error) == 1, s.output
    assert "SupervisorError: the workers failed to start" in s.output
    assert elapsed < 2.0 + 1.0  # 2 s for the server, 1 s to start an interpreter
    assert "Serving on" not in s.output
