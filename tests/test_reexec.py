"""Reload in place: the parent re-executes itself and adopts its live workers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests import procs, serving
from tests.serving import HOT_APP, hot_server, live_workers


def test_the_parent_reexecutes_in_place_and_replaces_the_adopted_workers(tmp_path: Path) -> None:
    version = tmp_path / "version"
    version.write_text("v1")
    with serving.running(argv=procs.scenario("reexec", str(version))) as s:
        old = {int(line.split()[2]) for line in s.wait_line("worker ", 2, at_start=True)}
        version.write_text("v2")
        s.signal(signal.SIGHUP)
        s.wait_line(f"parent {s.pid} v2")
        new = s.wait_line("worker ", 4, at_start=True)[2:]
        assert {line.split()[3] for line in new} == {"v2"}
        assert sorted(line.split()[1] for line in new) == ["0", "1"]
        s.wait_line("reload finished: 2 workers")
        assert procs.wait_dead(list(old), timeout=5) == []
        assert set(live_workers(s, 2)).isdisjoint(old)
        # The adopted workers were reaped by the new image: no zombie is left.
        assert procs.zombies_of(s.pid) == []
        # A second reload works the same way.
        version.write_text("v3")
        s.signal(signal.SIGHUP)
        s.wait_line(f"parent {s.pid} v3")
        s.wait_line("reload finished: 2 workers", count=2)
    assert s.matching("parent done", at_start=True) == ["parent done"]
    assert len(s.matching("retired (signal 15)")) == 4


def _parent_fds(pid: int) -> list[str]:
    """What the parent's descriptors are, without their numbers or inodes."""
    kinds = []
    for fd in (Path(f"/proc/{pid}/fd")).iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        kinds.append(target.split(":")[0])
    return sorted(kinds)


@pytest.mark.tornado_api
def test_hup_with_preload_reloads_in_place_under_load(tmp_path: Path) -> None:
    module = tmp_path / "hotapp.py"
    module.write_text(HOT_APP.format(version="one", extra=""))
    with hot_server(tmp_path, preload=None) as s:
        base = serving.url(s)
        first = set(live_workers(s, 2))
        fds = _parent_fds(s.pid)
        with serving.Load(base) as load:
            for count, version in enumerate(["two, deployed", "three, the last one"], 1):
                module.write_text(HOT_APP.format(version=version, extra=""))
                s.signal(signal.SIGHUP)
                s.wait_line("reload finished: 2 workers", count=count, timeout=20)
                s.wait_line("retired (status 0)", count=2 * count)
                assert {serving.get(base)[1]["version"] for _ in range(10)} == {version}
                # The same parent: one process runs the new code, with the same descriptors.
                assert procs.state(s.pid) is not None
                assert _parent_fds(s.pid) == fds
            time.sleep(0.3)
        assert load.failures == []
        assert set(live_workers(s, 2)).isdisjoint(first)
        assert len(s.matching("reloaded in place (pid")) == 2
        s.stop()
    assert s.lines[-1] == "parent returned"


def test_hup_with_preload_and_broken_code_keeps_the_old_workers(tmp_path: Path) -> None:
    module = tmp_path / "hotapp.py"
    module.write_text(HOT_APP.format(version="one", extra=""))
    with hot_server(tmp_path, preload=None) as s:
        base = serving.url(s)
        workers = set(live_workers(s, 2))
        module.write_text(HOT_APP.format(version="two", extra="raise RuntimeError('bad deploy')"))
        s.signal(signal.SIGHUP)
        s.wait_line("reload refused, the workers keep serving: the new code failed its check")
        s.wait_line("RuntimeError: bad deploy")
        assert {serving.get(base)[1]["version"] for _ in range(10)} == {"one"}
        assert set(live_workers(s, 2)) == workers
        assert not s.matching("reloaded in place")
    assert len(s.matching("RuntimeError: bad deploy")) == 1
