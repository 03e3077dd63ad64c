"""tornado_prefork.leader_task on real servers: one worker runs the task at a
time, and another takes it over within the documented bound whatever ends
the first (tests/lifespanapp.py's task appends a line every 100 ms)."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time
from pathlib import Path

import pytest
from tornado.testing import AsyncHTTPTestCase, gen_test
from tornado.web import Application

import tornado_prefork
from tests import procs, serving
from tests.lifespanapp import check_one_at_a_time, lock_directory, wait_for_leader

APP = "tests.lifespanapp:leader"
# docs/usage.md: another worker starts the task within a second.
BOUND = 1.0


def test_one_worker_at_a_time_whatever_ends_it(tmp_path: Path) -> None:
    log = tmp_path / "events"
    env = {"LIFESPAN_LOG": str(log)}
    with serving.running(APP, 4, string=True, env=env, max_requests=10) as s:
        base = serving.url(s)
        gone = {wait_for_leader(log)[0]}
        # Opened by each worker itself, in a directory of the server's own.
        locks = lock_directory(next(iter(gone)))
        assert stat.S_IMODE(locks.stat().st_mode) == 0o700
        os.kill(next(iter(gone)), signal.SIGKILL)
        pid, _ = wait_for_leader(log, gone)
        gone.add(pid)
        # Recycled once it has served max_requests.
        deadline = time.monotonic() + 20
        while procs.alive(pid):
            assert time.monotonic() < deadline
            serving.get(base)
        pid, _ = wait_for_leader(log, gone)
        gone |= set(serving.live_workers(s, 4))
        s.signal(signal.SIGHUP)
        s.wait_line("reload finished: 4 workers")
        pid, slot = wait_for_leader(log, gone)
        # Scaling down stops the highest slots: the leader's must not be 0.
        while slot == 0:
            gone.add(pid)
            os.kill(pid, signal.SIGKILL)
            pid, slot = wait_for_leader(log, gone)
        gone.add(pid)
        for count in range(3, slot - 1, -1):
            s.signal(signal.SIGTTOU)
            s.wait_line(f"SIGTTOU: {count} workers")
        wait_for_leader(log, gone)
    assert check_one_at_a_time(log, BOUND) >= 5
    assert not locks.exists()


class SingleProcessTest(AsyncHTTPTestCase):
    """In a test the task simply runs: no lock, from a factory called with no
    loop running yet; the test case cancels it at its end."""

    def get_app(self) -> Application:
        self.ran: list[int] = []
        tornado_prefork.leader_task(self.job)
        return Application()

    async def job(self) -> None:
        self.ran.append(os.getpid())
        await asyncio.Event().wait()

    @gen_test
    async def test_the_task_simply_runs(self) -> None:
        await asyncio.sleep(0.05)
        assert self.ran == [os.getpid()]
        with pytest.raises(ValueError, match="runs already in this process"):
            tornado_prefork.leader_task(self.job)
