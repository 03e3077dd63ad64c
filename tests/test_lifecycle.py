"""Reload, scaling, hung workers and recycling, with real processes and signals."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests import serving
from tests.serving import HOT_APP, hot_server, live_workers

pytestmark = pytest.mark.tornado_api


def test_hup_under_load_fails_no_request_and_replaces_every_worker() -> None:
    with serving.running(graceful_timeout=5) as s:
        base = serving.url(s)
        old = set(live_workers(s, 2))
        with serving.Load(base) as load:
            time.sleep(0.3)
            s.signal(signal.SIGHUP)
            s.wait_line("reload finished: 2 workers")
            s.wait_line("retired (status 0)", count=2)
            before = len(load.pids)
            time.sleep(0.3)
        assert load.failures == []
        assert len(load.pids) > before > 20
        new = set(live_workers(s, 2))
        assert new.isdisjoint(old)
        assert set(load.pids[-5:]) <= new


def test_hup_loads_the_code_on_disk(tmp_path: Path) -> None:
    module = tmp_path / "hotapp.py"
    module.write_text(HOT_APP.format(version="one", extra=""))
    with hot_server(tmp_path) as s:
        base = serving.url(s)
        assert serving.get(base)[1]["version"] == "one"
        module.write_text(HOT_APP.format(version="two, deployed", extra=""))
        s.signal(signal.SIGHUP)
        s.wait_line("reload finished: 2 workers")
        s.wait_line("retired (status 0)", count=2)
        assert {serving.get(base)[1]["version"] for _ in range(10)} == {"two, deployed"}


def test_hup_with_code_that_fails_keeps_the_old_workers(tmp_path: Path) -> None:
    module = tmp_path / "hotapp.py"
    module.write_text(HOT_APP.format(version="one", extra=""))
    with hot_server(tmp_path) as s:
        base = serving.url(s)
        workers = set(live_workers(s, 2))
        # Imports, then raises: only a worker can find out.
        module.write_text(HOT_APP.format(version="two", extra="raise RuntimeError('bad deploy')"))
        s.signal(signal.SIGHUP)
        s.wait_line("reload abandoned")
        assert len(s.matching("RuntimeError: bad deploy")) == 1
        # Does not even compile: refused before any fork.
        module.write_text("def make_app(:\n")
        s.signal(signal.SIGHUP)
        s.wait_line("reload refused, the workers keep serving: cannot import hotapp")
        answers = [serving.get(base)[1] for _ in range(10)]
        assert {a["version"] for a in answers} == {"one"}
        assert set(live_workers(s, 2)) == workers


def test_ttin_then_ttou() -> None:
    with serving.running() as s:
        serving.url(s)
        live_workers(s, 2)
        s.signal(signal.SIGTTIN)
        three = live_workers(s, 3)
        s.wait_line("SIGTTIN: 3 workers")
        s.signal(signal.SIGTTOU)
        # Drained (status 0), or ended at once by the SIGTERM if it was still booting.
        s.wait_line("retired (")
        assert "SIGTTOU: 2 workers" in s.output
        two = live_workers(s, 2)
        assert set(two) < set(three)
        # One worker is the floor.
        s.signal(signal.SIGTTOU)
        live_workers(s, 1)
        s.signal(signal.SIGTTOU)
        s.wait_line("SIGTTOU: already down to one worker")
        assert len(live_workers(s, 1)) == 1


def test_a_blocked_worker_is_aborted_with_its_stack_and_replaced() -> None:
    with serving.running(processes=1, rlimit="core=0", timeout=1) as s:
        base = serving.url(s)
        load = serving.Load(base, "/block?seconds=30", limit=3)
        with load:
            s.wait_line("block-start")
            began = time.monotonic()
            s.wait_line("killed by signal 6, restarting", timeout=1 + 2)
            assert time.monotonic() - began < 1 + 2
        assert any("SIGABRT" in line for line in s.matching("silent for"))
        # faulthandler's dump names the line that blocks the event loop.
        source = (Path(__file__).parent / "webapp.py").read_text().splitlines()
        number = next(i for i, text in enumerate(source, 1) if "time.sleep(float" in text)
        assert s.matching(f'webapp.py", line {number} in get'), s.lines
        s.wait_line("Serving on", count=1)
        assert serving.get(base)[0] == 200


def test_max_requests_replaces_the_worker_without_failures() -> None:
    with serving.running(processes=1, max_requests=10) as s:
        base = serving.url(s)
        first = live_workers(s, 1)
        with serving.Load(base) as load:
            s.wait_line("served max_requests; replacing it", count=2)
            s.wait_line("retired (status 0)", count=2)
            time.sleep(0.2)
        assert load.failures == []
        pids = list(dict.fromkeys(load.pids))
        assert len(pids) >= 3 and pids[0] == first[0]
