"""A reload in place on production timelines: the new code's check runs in a
child while the parent's loop goes on, and new code that fails after its
check leaves the old workers serving (real processes; hotapp.py in the test's
directory, imported in the parent)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests import procs, serving
from tests.serving import HOT_APP, hot_server

CHECKING = "os.environ.get('TORNADO_PREFORK_CHECK')"


def _deploy(module: Path, version: str, extra: str = "") -> None:
    module.write_text(HOT_APP.format(version=version, extra=f"import time\n{extra}"))


def _versions(base: str, n: int = 10) -> set[str]:
    return {serving.get(base)[1]["version"] for _ in range(n)}


def _checks(parent: int) -> list[int]:
    """The parent's children that are checks of new code."""
    found = []
    for pid in procs.children_of(parent):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"TORNADO_PREFORK_CHECK=" in environ:
            found.append(pid)
    return found


def _wait_for_check(parent: int) -> int:
    deadline = time.monotonic() + 10
    while not (found := _checks(parent)):
        assert time.monotonic() < deadline, "no check of the new code started"
        time.sleep(0.02)
    return found[0]


def test_term_during_the_check_of_new_code_stops_at_once(tmp_path: Path) -> None:
    # systemctl reload then stop, or a pod deleted right after a config reload.
    module = tmp_path / "hotapp.py"
    _deploy(module, "one", f"if {CHECKING}: time.sleep(30)")
    with hot_server(tmp_path, preload=None, graceful_timeout=5) as s:
        base = serving.url(s)
        s.signal(signal.SIGHUP)
        time.sleep(0.05)
        s.signal(signal.SIGTERM)
        started = time.monotonic()
        assert s.finish(timeout=10) == 0, s.output
        assert time.monotonic() - started < 5, s.output
    assert s.matching("stopping: the check of the new code is abandoned")
    assert not s.matching("reloading in place: running")
    del base


def test_a_slow_check_that_fails_leaves_every_worker_serving(tmp_path: Path) -> None:
    # Slower than timeout: the parent's loop goes on reading heartbeats meanwhile.
    module = tmp_path / "hotapp.py"
    _deploy(module, "one")
    with hot_server(tmp_path, preload=None, timeout=1, graceful_timeout=3) as s:
        base = serving.url(s)
        workers = set(serving.live_workers(s, 2))
        _deploy(module, "two", f"if {CHECKING}: time.sleep(2.5)\nraise RuntimeError('bad deploy')")
        with serving.Load(base) as load:
            s.signal(signal.SIGHUP)
            s.wait_line("reload refused, the workers keep serving: the new code failed its check")
            s.signal(signal.SIGTTIN)
            s.wait_line("SIGTTIN: 3 workers")
        assert load.failures == []
        assert not s.matching("silent for"), s.output
        assert workers <= set(serving.live_workers(s, 3))
        assert _versions(base) == {"one"}
    assert len(s.matching("RuntimeError: bad deploy")) == 1


def test_a_newer_hup_during_a_check_checks_the_newest_code(tmp_path: Path) -> None:
    module = tmp_path / "hotapp.py"
    _deploy(module, "one")
    with hot_server(tmp_path, preload=None) as s:
        base = serving.url(s)
        _deploy(module, "two", f"if {CHECKING}: time.sleep(30)")
        s.signal(signal.SIGHUP)
        first = _wait_for_check(s.pid)
        _deploy(module, "three")
        s.signal(signal.SIGHUP)
        s.wait_line("SIGHUP during the check of the new code: checking again")
        s.wait_line("reload finished: 2 workers", timeout=20)
        # A draining worker still answers what waited in its backlog.
        s.wait_line("retired (status 0)", count=2)
        assert procs.wait_dead([first], timeout=5) == []
        assert _versions(base) == {"three"}


def test_a_check_dies_with_a_parent_killed_by_sigkill(tmp_path: Path) -> None:
    module = tmp_path / "hotapp.py"
    _deploy(module, "one")
    with hot_server(tmp_path, preload=None) as s:
        serving.url(s)
        _deploy(module, "two", f"if {CHECKING}: time.sleep(60)")
        s.signal(signal.SIGHUP)
        check = _wait_for_check(s.pid)
        workers = [pid for pid in procs.children_of(s.pid) if pid != check]
        os.kill(s.pid, signal.SIGKILL)
        s.finish(timeout=5)
        assert procs.wait_dead([check, *workers], timeout=5) == []


def test_new_code_without_the_apps_name_is_refused_by_its_check(tmp_path: Path) -> None:
    # It imports; the check runs every step the new image runs, the name's lookup too.
    module = tmp_path / "hotapp.py"
    _deploy(module, "one")
    with hot_server(tmp_path, preload=None) as s:
        base = serving.url(s)
        workers = set(serving.live_workers(s, 2))
        module.write_text(HOT_APP.format(version="two", extra="").replace("make_app", "build"))
        s.signal(signal.SIGHUP)
        s.wait_line("reload refused, the workers keep serving: the new code failed its check")
        assert _versions(base) == {"one"}
        assert set(serving.live_workers(s, 2)) == workers
        assert not s.matching("reloading in place: running")


def test_new_code_that_fails_after_its_check_keeps_the_old_workers(tmp_path: Path) -> None:
    # The files changed between the check and the exec: the new image has
    # taken the workers over first, keeps them serving, and a later HUP works.
    module = tmp_path / "hotapp.py"
    _deploy(module, "one")
    with hot_server(tmp_path, preload=None, timeout=2) as s:
        base = serving.url(s)
        workers = set(serving.live_workers(s, 2))
        _deploy(module, "two", f"if not {CHECKING}: raise RuntimeError('deploy race')")
        with serving.Load(base) as load:
            s.signal(signal.SIGHUP)
            s.wait_line("reload failed: the new code failed to start")
            # Past timeout: the kept workers' heartbeats are read.
            time.sleep(3)
            assert _versions(base) == {"one"}
        assert load.failures == []
        assert set(serving.live_workers(s, 2)) == workers
        assert not s.matching("silent for"), s.output
        assert procs.state(s.pid) is not None
        _deploy(module, "three")
        s.signal(signal.SIGHUP)
        s.wait_line("reload finished: 2 workers", timeout=20)
        s.wait_line("retired (status 0)", count=2)
        assert _versions(base) == {"three"}
        assert procs.wait_dead(list(workers), timeout=5) == []
    assert len(s.matching("RuntimeError: deploy race")) == 1


def test_a_program_that_ends_before_serve_keeps_the_old_workers(tmp_path: Path) -> None:
    # An option the new code no longer defines, a broken log config: the program
    # exits before serve(); the old workers are kept, and TERM stops as usual.
    module = tmp_path / "hotapp.py"
    _deploy(module, "one")
    flag = tmp_path / "broken"
    with serving.running(
        "hotapp:make_app", string=True, path=tmp_path, fail_if=flag, preload=None
    ) as s:
        base = serving.url(s)
        workers = set(serving.live_workers(s, 2))
        flag.touch()
        with serving.Load(base) as load:
            s.signal(signal.SIGHUP)
            s.wait_line("reload failed: the new code ended before it called serve()")
            time.sleep(0.5)
        assert load.failures == []
        assert set(serving.live_workers(s, 2)) == workers
    assert s.matching("Stopped; the workers took")
