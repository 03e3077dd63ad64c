"""The supervisor under the faults users cause: it never takes itself down and
never wedges (real processes, real signals)."""

from __future__ import annotations

import os
import random
import re
import signal
import time
from pathlib import Path

import pytest

from tests import procs, serving
from tests.serving import HOT_APP, hot_server, live_workers


def test_workers_that_cannot_be_created_never_stop_the_server() -> None:
    # 40 descriptors: the parent runs out after a few dozen workers' channels.
    argv = ["bash", "-c", 'ulimit -n 40 && exec "$@"', "cli", *serving.MODULE]
    argv += ["tests.webapp:make_app", "--port", "0", "--processes", "2"]
    with serving.running(argv=argv) as s:
        base = serving.url(s)
        with serving.Load(base) as load:
            for _ in range(40):
                s.signal(signal.SIGTTIN)
                time.sleep(0.05)
            s.wait_line("cannot create a process")
            time.sleep(1)
        assert load.failures == []
        assert len(load.pids) > 20
        assert serving.get(base)[0] == 200
        s.stop(timeout=30)
    # Logged once per episode, not once per attempt.
    failing = s.output.count("cannot create a process")
    assert 1 <= failing <= s.output.count("processes can be created again") + 1, s.output
    assert "Traceback" not in s.output


def test_healthy_workers_that_crash_now_and_then_never_stop_the_server() -> None:
    with serving.running(max_restarts=3, min_uptime=0.3) as s:
        base = serving.url(s)
        victims = []
        for _ in range(5):
            # Each victim has lived past min_uptime: a healthy worker.
            time.sleep(0.6)
            victims.append(live_workers(s, 2)[0])
            os.kill(victims[-1], signal.SIGKILL)
        s.wait_line(f"(pid {victims[-1]}) killed by signal 9, restarting")
        live_workers(s, 2)
        # Each killed worker was replaced by one that answers.
        answered = [serving.get(base) for _ in range(20)]
        assert all(status == 200 for status, _ in answered)
        assert not {body["pid"] for _, body in answered} & set(victims)
    assert s.output.count("killed by signal 9, restarting") == 5
    assert "giving up" not in s.output


def _versions(base: str, count: int = 20) -> set[str]:
    return {serving.get(base)[1]["version"] for _ in range(count)}


def _wait_for_version(base: str, version: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _versions(base) != {version}:
        assert time.monotonic() < deadline, _versions(base)
        time.sleep(0.1)


@pytest.mark.parametrize("preload", [False, None], ids=["forked", "in-place"])
def test_hup_during_a_reload_the_newest_code_wins(tmp_path: Path, preload: bool | None) -> None:
    module = tmp_path / "hotapp.py"
    slow = "import time; time.sleep(1)"
    module.write_text(HOT_APP.format(version="v1", extra=slow))
    with hot_server(tmp_path, graceful_timeout=5, preload=preload) as s:
        base = serving.url(s)
        with serving.Load(base) as load:
            # Sizes differ too: a cached bytecode file is checked by mtime and size.
            module.write_text(HOT_APP.format(version="v2-second", extra=slow))
            s.signal(signal.SIGHUP)
            time.sleep(0.5)
            module.write_text(HOT_APP.format(version="v3-the-third", extra=slow))
            s.signal(signal.SIGHUP)
            _wait_for_version(base, "v3-the-third", timeout=10)
            s.wait_line("reload finished: 2 workers")
            module.write_text(HOT_APP.format(version="v4-and-the-last", extra=slow))
            for _ in range(20):
                s.signal(signal.SIGHUP)
                time.sleep(0.05)
            _wait_for_version(base, "v4-and-the-last", timeout=15)
            s.wait_line("reload finished: 2 workers", count=2)
        assert load.failures == []
        assert len(live_workers(s, 2)) == 2


FLAKY_APP = """
import os
from tornado.web import Application, RequestHandler

class Handler(RequestHandler):
    def get(self):
        self.write({"pid": os.getpid()})

def make_app():
    if os.path.exists(os.environ["FAIL_NEXT_START"]):
        os.unlink(os.environ["FAIL_NEXT_START"])
        raise RuntimeError("this start fails once")
    return Application([("/", Handler)])
"""


def test_a_failed_successor_does_not_switch_recycling_off(tmp_path: Path) -> None:
    flag = tmp_path / "fail-next-start"
    (tmp_path / "hotapp.py").write_text(FLAKY_APP)
    env = {"FAIL_NEXT_START": str(flag)}
    with hot_server(tmp_path, processes=1, max_requests=30, env=env) as s:
        base = serving.url(s)
        (first,) = live_workers(s, 1)
        flag.touch()
        with serving.Load(base) as load:
            s.wait_line("failed before it was ready")
            s.wait_line(f"worker 0 (pid {first}) retired (status 0)")
            time.sleep(0.2)
        assert load.failures == []
        assert not flag.exists()
        assert first not in set(load.pids[-5:])


def test_a_workers_last_message_is_never_lost() -> None:
    with serving.running(argv=procs.scenario("last_words")) as s:
        s.wait_line("exited with status 3, restarting", count=200, timeout=60)
    exits = re.findall(r"worker 1 \(pid (\d+)\) exited with status 3", s.output)
    words = set(re.findall(r"last words from (\d+)", s.output))
    assert len(exits) >= 200
    assert set(exits) <= words


def test_a_parent_stopped_mid_reload_resumes_and_loses_nothing() -> None:
    with serving.running(graceful_timeout=5) as s:
        base = serving.url(s)
        old = set(live_workers(s, 2))
        with serving.Load(base) as load:
            s.signal(signal.SIGHUP)
            s.signal(signal.SIGSTOP)
            time.sleep(1.5)
            s.signal(signal.SIGCONT)
            s.wait_line("reload finished: 2 workers")
            time.sleep(0.3)
        assert load.failures == []
        assert set(live_workers(s, 2)).isdisjoint(old)


def test_a_storm_of_signals_leaves_a_server_that_serves_and_stops() -> None:
    storm = [signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGCHLD]
    with serving.running(graceful_timeout=5) as s:
        base = serving.url(s)
        with serving.Load(base) as load:
            for _ in range(300):
                s.signal(random.choice(storm))
                time.sleep(0.003)
            time.sleep(2)
        assert load.failures == [], s.output
        assert serving.get(base)[0] == 200
        # A worker may be ending right now (a reload in place was under way):
        # what counts is that every one is reaped soon after.
        deadline = time.monotonic() + 5
        while procs.zombies_of(s.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert procs.zombies_of(s.pid) == []
        s.stop(timeout=20)
    assert "Traceback" not in s.output, s.output
