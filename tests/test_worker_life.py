"""A worker's life at its edges: stopped while it boots, atexit after its drain (real processes)."""

from __future__ import annotations

import signal
import time

import pytest

from tests import procs, serving

pytestmark = pytest.mark.tornado_api


def booting(how: str) -> procs.Scenario:
    """Two workers stuck for 10 s in the import of their app (preload=False) or its factory."""
    if how == "import":
        return serving.start("tests.slowimport:make_app", string=True, preload=False)
    return serving.start("tests.webapp:booting_factory")


@pytest.mark.parametrize("how", ["import", "factory"])
def test_a_booting_worker_dies_with_its_parent_at_once(how: str) -> None:
    with booting(how) as s:
        workers = [int(line.split()[1]) for line in s.wait_line("importing", 2, at_start=True)]
        assert s.pid not in workers
        s.signal(signal.SIGKILL)
        assert procs.wait_dead(workers, timeout=1) == [], [procs.state(p) for p in workers]


@pytest.mark.parametrize("how", ["import", "factory"])
def test_a_stop_does_not_wait_for_booting_workers(how: str) -> None:
    with booting(how) as s:
        workers = [int(line.split()[1]) for line in s.wait_line("importing", 2, at_start=True)]
        started = time.monotonic()
        s.stop()
        assert time.monotonic() - started < 2
        assert procs.wait_dead(workers, timeout=1) == []
        assert len(s.matching("parent returned", at_start=True)) == 1
        assert not s.matching("Traceback"), s.lines


def test_workers_run_atexit_after_their_drain() -> None:
    # The factory registers clean-up in each worker; it must run after the drain.
    with serving.running("tests.webapp:factory_with_cleanup", graceful_timeout=10) as s:
        base = serving.url(s)
        conn = serving.connect(base)
        conn.request("GET", "/slow?seconds=0.5")
        s.wait_line("slow-start", 1, timeout=10)
        s.signal(signal.SIGTERM)
        assert conn.getresponse().status == 200
        assert s.finish(timeout=10) == 0
    ran = {int(line.split()[1]): s.lines.index(line) for line in s.matching("atexit ", True)}
    assert len(ran) == 2, s.lines
    for pid, index in ran.items():
        # The worker's own log line about its drain comes first.
        drained = [
            i for i, line in enumerate(s.lines) if line.startswith(f"{pid} ") and "draining" in line
        ]
        assert drained and drained[0] < index, s.lines
    # The parent never built the app, so it has nothing registered.
    assert s.pid not in ran
