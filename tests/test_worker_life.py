"""A worker's life at its edges: stopped while it boots, atexit after its drain (real processes)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests import procs, serving

# A module that takes 10 s to import, as one that loads a large model does.
SLOW_IMPORT = """
import os, time
os.write(1, b"importing %d\\n" % os.getpid())
time.sleep(10)
from tests.webapp import make_app
"""

SLOW_FACTORY = """
def slow():
    os.write(1, b"importing %d\\n" % os.getpid())
    time.sleep(10)
    return webapp.make_app()
"""


def booting(tmp_path: Path, how: str) -> procs.Scenario:
    """Two workers stuck in a 10 s import (preload=False) or sync factory."""
    if how == "import":
        (tmp_path / "slowimport.py").write_text(SLOW_IMPORT)
        before = f"sys.path.insert(0, {str(tmp_path)!r})"
        return serving.start(app="'slowimport:make_app'", kwargs="preload=False", before=before)
    return serving.start(app="slow", before="import time\n" + SLOW_FACTORY)


@pytest.mark.parametrize("how", ["import", "factory"])
def test_a_booting_worker_dies_with_its_parent_at_once(how: str, tmp_path: Path) -> None:
    with booting(tmp_path, how) as s:
        lines = s.wait_for_lines("importing", 2, timeout=15)
        workers = [int(line.split()[1]) for line in lines]
        assert s.pid not in workers
        s.signal(signal.SIGKILL)
        assert procs.wait_dead(workers, timeout=1) == [], [procs.state(p) for p in workers]


@pytest.mark.parametrize("how", ["import", "factory"])
def test_a_stop_does_not_wait_for_booting_workers(how: str, tmp_path: Path) -> None:
    with booting(tmp_path, how) as s:
        lines = s.wait_for_lines("importing", 2, timeout=15)
        workers = [int(line.split()[1]) for line in lines]
        started = time.monotonic()
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0
        assert time.monotonic() - started < 2
        assert procs.wait_dead(workers, timeout=1) == []
        assert len(s.matching("parent returned")) == 1
        assert not any("Traceback" in line for line in s.lines), s.lines


# The factory registers clean-up in each worker; it must run after the drain.
AT_EXIT = """
import atexit
def with_cleanup():
    pid = os.getpid()
    atexit.register(lambda: os.write(1, b"atexit %d\\n" % pid))
    return webapp.make_app()
"""


def test_workers_run_atexit_after_their_drain() -> None:
    with serving.start(app="with_cleanup", n=2, before=AT_EXIT, kwargs="graceful_timeout=10") as s:
        base = serving.url(s)
        conn = serving.connect(base)
        conn.request("GET", "/slow?seconds=0.5")
        s.wait_for_lines("slow-start", 1, timeout=10)
        s.signal(signal.SIGTERM)
        assert conn.getresponse().status == 200
        assert s.finish(timeout=10) == 0
    ran = {int(line.split()[1]): s.lines.index(line) for line in s.matching("atexit ")}
    assert len(ran) == 2, s.lines
    for pid, index in ran.items():
        # The worker's own log line about its drain comes first.
        drained = [
            i for i, line in enumerate(s.lines) if line.startswith(f"{pid} ") and "draining" in line
        ]
        assert drained and drained[0] < index, s.lines
    # The parent never built the app, so it has nothing registered.
    assert s.pid not in ran
