"""Sidecars: supervised processes that are not request workers (real processes)."""

from __future__ import annotations

import os
import signal

from tests import procs


def test_a_sidecar_is_restarted_untouched_by_reloads_and_stopped_last() -> None:
    with procs.Scenario(procs.scenario("sidecar"), merge=False) as s:
        (first,) = s.wait_line("sidecar", 1, at_start=True)
        s.wait_line("worker", 2, at_start=True)
        sidecar = int(first.split()[1])
        assert sidecar in procs.children_of(s.pid)
        os.kill(sidecar, signal.SIGKILL)
        second = int(s.wait_line("sidecar", 2, at_start=True)[-1].split()[1])
        assert second != sidecar
        s.signal(signal.SIGHUP)
        s.wait_line("worker", 4, at_start=True)
        s.signal(signal.SIGTTIN)
        s.wait_line("worker", 5, at_start=True)
        # Neither reload nor scaling touched it.
        assert len(s.matching("sidecar", at_start=True)) == 2
        s.stop(timeout=15)
        assert s.matching("parent done", at_start=True) == ["parent done"]
    log = s.stderr.splitlines()
    stopped = [i for i, line in enumerate(log) if " stopped (" in line]
    sidecar_line = next(i for i, line in enumerate(log) if f"file watcher (pid {second})" in line)
    workers_stopped = [i for i in stopped if "worker " in log[i]]
    assert len(workers_stopped) == 3
    assert sidecar_line > max(workers_stopped), s.stderr
    assert f"file watcher (pid {sidecar}) exited (signal 9); restarting it" in s.stderr
