"""Reload, scaling, hung workers and recycling, with real processes and signals."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests import serving
from tests.serving import HOT_APP, hot_server, live_workers, wait_line


def test_hup_under_load_fails_no_request_and_replaces_every_worker() -> None:
    with serving.start(n=2, kwargs="graceful_timeout=5") as s:
        base = serving.url(s)
        old = set(live_workers(s, 2))
        with serving.Load(base) as load:
            time.sleep(0.3)
            s.signal(signal.SIGHUP)
            wait_line(s, "reload finished: 2 workers")
            wait_line(s, "retired (status 0)", count=2)
            before = len(load.pids)
            time.sleep(0.3)
        assert load.failures == []
        assert len(load.pids) > before > 20
        new = set(live_workers(s, 2))
        assert new.isdisjoint(old)
        assert set(load.pids[-5:]) <= new
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0


def test_hup_loads_the_code_on_disk(tmp_path: Path) -> None:
    module = tmp_path / "hotapp.py"
    module.write_text(HOT_APP.format(version="one", extra=""))
    with hot_server(tmp_path) as s:
        base = serving.url(s)
        assert serving.get(base)[1]["version"] == "one"
        module.write_text(HOT_APP.format(version="two, deployed", extra=""))
        s.signal(signal.SIGHUP)
        wait_line(s, "reload finished: 2 workers")
        wait_line(s, "retired (status 0)", count=2)
        assert {serving.get(base)[1]["version"] for _ in range(10)} == {"two, deployed"}
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0


def test_hup_with_code_that_fails_keeps_the_old_workers(tmp_path: Path) -> None:
    module = tmp_path / "hotapp.py"
    module.write_text(HOT_APP.format(version="one", extra=""))
    with hot_server(tmp_path) as s:
        base = serving.url(s)
        workers = set(live_workers(s, 2))
        # Imports, then raises: only a worker can find out.
        module.write_text(HOT_APP.format(version="two", extra="raise RuntimeError('bad deploy')"))
        s.signal(signal.SIGHUP)
        wait_line(s, "reload abandoned")
        assert sum("RuntimeError: bad deploy" in line for line in s.lines) == 1
        # Does not even compile: refused before any fork.
        module.write_text("def make_app(:\n")
        s.signal(signal.SIGHUP)
        wait_line(s, "reload refused, the workers keep serving: cannot import hotapp")
        answers = [serving.get(base)[1] for _ in range(10)]
        assert {a["version"] for a in answers} == {"one"}
        assert set(live_workers(s, 2)) == workers
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0


def test_ttin_then_ttou() -> None:
    with serving.start(n=2) as s:
        serving.url(s)
        live_workers(s, 2)
        s.signal(signal.SIGTTIN)
        three = live_workers(s, 3)
        wait_line(s, "SIGTTIN: 3 workers")
        s.signal(signal.SIGTTOU)
        # Drained (status 0), or ended at once by the SIGTERM if it was still booting.
        wait_line(s, "retired (")
        assert "SIGTTOU: 2 workers" in "\n".join(s.lines)
        two = live_workers(s, 2)
        assert set(two) < set(three)
        # One worker is the floor.
        s.signal(signal.SIGTTOU)
        live_workers(s, 1)
        s.signal(signal.SIGTTOU)
        wait_line(s, "SIGTTOU: already down to one worker")
        assert len(live_workers(s, 1)) == 1
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0


def test_a_blocked_worker_is_aborted_with_its_stack_and_replaced() -> None:
    no_core = "import resource; resource.setrlimit(resource.RLIMIT_CORE, (0, 0))"
    with serving.start(n=1, kwargs="timeout=1", before=no_core) as s:
        base = serving.url(s)
        load = serving.Load(base, "/block?seconds=30", limit=3)
        with load:
            wait_line(s, "block-start")
            began = time.monotonic()
            wait_line(s, "killed by signal 6, restarting", timeout=1 + 2)
            assert time.monotonic() - began < 1 + 2
        assert any("silent for" in line and "SIGABRT" in line for line in s.lines)
        # faulthandler's dump names the line that blocks the event loop.
        source = (Path(__file__).parent / "webapp.py").read_text().splitlines()
        number = next(i for i, text in enumerate(source, 1) if "time.sleep(float" in text)
        assert any(f'webapp.py", line {number} in get' in line for line in s.lines), s.lines
        wait_line(s, "Serving on", count=1)
        assert serving.get(base)[0] == 200
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0


def test_max_requests_replaces_the_worker_without_failures() -> None:
    with serving.start(n=1, kwargs="max_requests=10") as s:
        base = serving.url(s)
        first = live_workers(s, 1)
        with serving.Load(base) as load:
            wait_line(s, "served max_requests; replacing it", count=2)
            wait_line(s, "retired (status 0)", count=2)
            time.sleep(0.2)
        assert load.failures == []
        pids = list(dict.fromkeys(load.pids))
        assert len(pids) >= 3 and pids[0] == first[0]
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0
