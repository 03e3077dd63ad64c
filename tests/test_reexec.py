"""Reload in place: the parent re-executes itself and adopts its live workers."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from tests import procs
from tests.serving import live_workers, wait_line


def test_the_parent_reexecutes_in_place_and_replaces_the_adopted_workers(tmp_path: Path) -> None:
    version = tmp_path / "version"
    version.write_text("v1")
    argv = [sys.executable, str(procs.ROOT / "tests" / "scenarios" / "reexec.py"), str(version)]
    with procs.Scenario(argv=argv, merge=True) as s:
        old = {int(line.split()[2]) for line in s.wait_for_lines("worker", 2, timeout=10)}
        version.write_text("v2")
        s.signal(signal.SIGHUP)
        wait_line(s, f"parent {s.pid} v2")
        new = s.wait_for_lines("worker", 4, timeout=10)[2:]
        assert {line.split()[3] for line in new} == {"v2"}
        assert sorted(line.split()[1] for line in new) == ["0", "1"]
        wait_line(s, "reload finished: 2 workers")
        assert procs.wait_dead(list(old), timeout=5) == []
        assert set(live_workers(s, 2)).isdisjoint(old)
        # The adopted workers were reaped by the new image: no zombie is left.
        assert procs.zombies_of(s.pid) == []
        # A second reload works the same way.
        version.write_text("v3")
        s.signal(signal.SIGHUP)
        wait_line(s, f"parent {s.pid} v3")
        wait_line(s, "reload finished: 2 workers", count=2)
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0
    assert s.matching("parent done") == ["parent done"]
    assert sum(1 for line in s.lines if "retired (signal 15)" in line) == 4
