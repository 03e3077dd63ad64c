"""Sidecars: supervised processes that are not request workers (real processes)."""

from __future__ import annotations

import os
import signal
import sys

from tests import procs

SCENARIO = [sys.executable, str(procs.ROOT / "tests" / "scenarios" / "sidecar.py")]


def test_a_sidecar_is_restarted_untouched_by_reloads_and_stopped_last() -> None:
    with procs.Scenario(argv=SCENARIO) as s:
        (first,) = s.wait_for_lines("sidecar", 1, timeout=10)
        s.wait_for_lines("worker", 2, timeout=10)
        sidecar = int(first.split()[1])
        assert sidecar in procs.children_of(s.pid)
        os.kill(sidecar, signal.SIGKILL)
        second = int(s.wait_for_lines("sidecar", 2, timeout=10)[-1].split()[1])
        assert second != sidecar
        s.signal(signal.SIGHUP)
        s.wait_for_lines("worker", 4, timeout=10)
        s.signal(signal.SIGTTIN)
        s.wait_for_lines("worker", 5, timeout=10)
        assert len(s.matching("sidecar")) == 2  # neither reload nor scaling touched it
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=15) == 0, s.stderr
        assert s.matching("parent done") == ["parent done"]
    log = s.stderr.splitlines()
    stopped = [i for i, line in enumerate(log) if " stopped (" in line]
    sidecar_line = next(i for i, line in enumerate(log) if f"file watcher (pid {second})" in line)
    workers_stopped = [i for i in stopped if "worker " in log[i]]
    assert len(workers_stopped) == 3
    assert sidecar_line > max(workers_stopped), s.stderr
    assert f"file watcher (pid {sidecar}) exited (signal 9); restarting it" in s.stderr
