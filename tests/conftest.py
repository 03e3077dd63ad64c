"""Session-wide guard: no test may leave a process behind.

The test process makes itself a child subreaper (Linux), so that a worker
orphaned by a scenario's parent is re-parented here instead of to init, where
it would escape notice. After each test every child of this process must be
gone within a short grace; the session fails if any is left at the end.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Iterator

import pytest

from tests import procs

_PR_SET_CHILD_SUBREAPER = 36
_leftovers: list[str] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@pytest.fixture(autouse=True)
def no_process_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    left = _collect_children(grace=3.0)
    if left:
        _leftovers.append(f"{request.node.nodeid}: {left}")
        pytest.fail(f"test left processes alive: {left}", pytrace=False)


def _collect_children(grace: float) -> list[str]:
    """Reaps finished children; kills and names those still alive after ``grace``."""
    deadline = time.monotonic() + grace
    quiet_scans = 0
    while True:
        procs.reap_zombies()
        # Every child: a broadcast hub left behind counts as much as a worker.
        alive = procs.every_child(os.getpid())
        # A /proc scan races with a process that forks and exits during it; only
        # two empty scans in a row mean that nothing is left.
        quiet_scans = 0 if alive else quiet_scans + 1
        if quiet_scans == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if not alive:
        return []
    described = [f"{pid} ({procs.cmdline(pid)})" for pid in alive]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    procs.wait_dead(alive, timeout=1)
    procs.reap_zombies()
    return described


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = _collect_children(grace=1.0)
    if left:
        _leftovers.append(f"at session end: {left}")
    if _leftovers:
        print("\nprocesses left behind by tests:\n  " + "\n  ".join(_leftovers), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
