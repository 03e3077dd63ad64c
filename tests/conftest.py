"""Session-wide guard: no test may leave a process behind.

The test process makes itself a child subreaper (Linux), so that a worker
orphaned by a scenario's parent is re-parented here instead of to init, where
it would escape notice. After each test every child of this process must be
gone within a short grace; the session fails if any is left at the end.

``TORNADO_PREFORK_TEST_SHARD=K/N`` runs one of N shards of what was
collected, ``TORNADO_PREFORK_TEST_SHARD=alone`` the tests marked ``alone``,
which the K/N shards leave out: `make test` runs two shards at once, then
those.
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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keeps one shard of the tests ``-m`` and ``-k`` chose. Those marked
    ``alone`` are a shard of their own; the others, sorted by node id, go to
    shard 1, 2, ..., N in turn, so that every test is in exactly one shard
    whatever the order of collection, and the slow tests of a file are shared
    out."""
    shard = os.environ.get("TORNADO_PREFORK_TEST_SHARD")
    if not shard:
        return
    number, _, count = shard.partition("/")
    if shard == "alone":
        kept = [t for t in items if t.get_closest_marker("alone")]
    elif number.isdigit() and count.isdigit() and 1 <= int(number) <= int(count):
        shared = sorted((t for t in items if not t.get_closest_marker("alone")), key=_nodeid)
        kept = shared[int(number) - 1 :: int(count)]
    else:
        raise pytest.UsageError(f"TORNADO_PREFORK_TEST_SHARD must be K/N or alone: {shard!r}")
    chosen = set(map(_nodeid, kept))
    config.hook.pytest_deselected(items=[t for t in items if t.nodeid not in chosen])
    items[:] = [t for t in items if t.nodeid in chosen]


def _nodeid(item: pytest.Item) -> str:
    return item.nodeid


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
        if not _any_child():
            return []
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


def _any_child() -> bool:
    """Whether this process has a child, live or not yet reaped: the kernel's
    answer, which no fork or exit under way can race as a /proc scan can (a
    descendant whose parent ended is a child here, the subreaper)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = _collect_children(grace=1.0)
    if left:
        _leftovers.append(f"at session end: {left}")
    if _leftovers:
        print("\nprocesses left behind by tests:\n  " + "\n  ".join(_leftovers), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
