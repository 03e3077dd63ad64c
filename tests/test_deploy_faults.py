"""Faults from the deploy and the operating system, on real processes: the
interpreter gone, no process slot left, signals during a slow start, what a
worker leaves behind, garbage in the handover's variable."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import sysconfig
from pathlib import Path

import pytest

from tests import procs, serving
from tests.serving import HOT_APP

PIDS_CGROUP = Path("/sys/fs/cgroup/pids")


def _hot(directory: Path, version: str, extra: str = "") -> None:
    (directory / "hotapp.py").write_text(HOT_APP.format(version=version, extra=extra))


def _virtualenv(root: Path) -> Path:
    """A virtualenv at ``root`` that a deploy can remove: this one's interpreter
    and packages, seen through links."""
    (root / "bin").mkdir(parents=True)
    os.symlink(os.path.realpath(sys.executable), root / "bin" / "python")
    shutil.copy(Path(sys.prefix) / "pyvenv.cfg", root / "pyvenv.cfg")
    purelib = Path(sysconfig.get_paths()["purelib"])
    packages = root / purelib.relative_to(sys.prefix)
    packages.parent.mkdir(parents=True)
    os.symlink(purelib, packages)
    return root / "bin" / "python"


def test_a_reload_after_the_virtualenv_was_replaced_is_refused(tmp_path: Path) -> None:
    _hot(tmp_path, "one")
    python = _virtualenv(tmp_path / "venv")
    argv = [str(python), *procs.scenario("serve", "hotapp:make_app", "preload=None")[1:]]
    argv += ["--string", "--path", str(tmp_path)]
    with serving.running(argv=argv) as s:
        base = serving.url(s)
        workers = set(serving.live_workers(s, 2))
        shutil.rmtree(tmp_path / "venv")
        with serving.Load(base) as load:
            s.signal(signal.SIGHUP)
            line = s.wait_line("reload refused, the workers keep serving")[0]
            s.wait_line("No such file or directory")
        assert "failed its check (status 127)" in line
        assert load.failures == []
        assert set(serving.live_workers(s, 2)) == workers


def test_a_reload_with_no_process_slot_left_is_refused_then_works(tmp_path: Path) -> None:
    cgroup = PIDS_CGROUP / f"tornado-prefork-test-{os.getpid()}"
    try:
        cgroup.mkdir()
    except OSError as e:
        pytest.fail(f"a pids cgroup is needed (v1 at {PIDS_CGROUP}): {e}")
    try:
        _hot(tmp_path, "one")
        with serving.hot_server(tmp_path, preload=None) as s:
            base = serving.url(s)
            workers = set(serving.live_workers(s, 2))
            # The parent alone in a cgroup at its limit: no fork succeeds.
            (cgroup / "pids.max").write_text("1")
            (cgroup / "cgroup.procs").write_text(str(s.pid))
            _hot(tmp_path, "two")
            s.signal(signal.SIGHUP)
            s.wait_line("reload refused, the workers keep serving: cannot check the new code")
            assert serving.get(base)[1]["version"] == "one"
            assert set(serving.live_workers(s, 2)) == workers
            (cgroup / "pids.max").write_text("max")
            s.signal(signal.SIGHUP)
            s.wait_line("reload finished: 2 workers", timeout=20)
            # A draining worker still answers what waited in its backlog.
            s.wait_line("retired (status 0)", count=2)
            assert serving.get(base)[1]["version"] == "two"
            s.stop()
    finally:
        cgroup.rmdir()


def test_hup_and_usr1_during_a_slow_start_are_acted_on_once_it_is_up(tmp_path: Path) -> None:
    # systemctl reload, or logrotate's kill -USR1, while the app's module imports.
    extra = "import time\nfrom tests.scenarios import say\nsay('importing')\ntime.sleep(1.5)"
    _hot(tmp_path, "one", extra)
    with serving.hot_server(tmp_path, preload=None) as s:
        s.wait_line("importing")
        s.signal(signal.SIGHUP)
        s.signal(signal.SIGUSR1)
        base = serving.url(s)
        s.wait_line("reload finished: 2 workers", timeout=20)
        assert serving.get(base)[0] == 200
        assert procs.state(s.pid) is not None


def test_nothing_a_worker_started_outlives_the_server() -> None:
    with serving.running("tests.familyapp:make_app", processes=1, string=True) as s:
        base = serving.url(s)
        first = serving.get(base, "/spawn")[1]
        # Its worker killed: the orphan comes back to the parent, not to init.
        os.kill(first["pid"], signal.SIGKILL)
        s.wait_line("killed by signal 9")
        assert first["child"] in procs.children_of(s.pid)
        second = serving.get(base, "/spawn")[1]
        assert procs.state(first["child"]) is not None
        s.stop()
    assert procs.wait_dead([first["child"], second["child"]], timeout=2) == []
    assert len(s.matching("left behind by a worker (SIGTERM)")) == 2


def test_garbage_in_the_handover_variable_is_one_line_and_a_fresh_start() -> None:
    env = {"TORNADO_PREFORK_HANDOVER": '{"processes": [{"channel_fd": 999}]}'}
    with serving.running(env=env) as s:
        assert serving.get(serving.url(s))[0] == 200
    assert len(s.matching("TORNADO_PREFORK_HANDOVER cannot be used")) == 1
    assert "Traceback" not in s.output


def test_a_check_killed_by_a_signal_says_which(tmp_path: Path) -> None:
    extra = "import signal\nif os.environ.get('TORNADO_PREFORK_CHECK'): os.kill(os.getpid(), 9)"
    _hot(tmp_path, "one")
    with serving.hot_server(tmp_path, preload=None) as s:
        serving.url(s)
        _hot(tmp_path, "two", extra)
        s.signal(signal.SIGHUP)
        s.wait_line(
            "reload refused, the workers keep serving: the new code failed its check (signal 9)"
        )
