"""The supervisor behind fork_processes: stops, crash loops, reload and scaling
(real processes; the scenario is tests/scenarios/fork.py)."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from tests import procs
from tests.procs import Scenario


def start(behaviour: str = "sleep", *settings: str, processes: int = 2, **args: str) -> Scenario:
    argv = procs.scenario("fork", behaviour, *settings, "--processes", str(processes))
    for name, value in args.items():
        argv += [f"--{name}", value]
    return Scenario(argv, merge=False)


def child_pids(scenario: Scenario, n: int) -> list[int]:
    return [int(line.split()[2]) for line in scenario.wait_line("up ", n, at_start=True)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_term_and_int_stop_everything_with_exit_0(signum: int) -> None:
    with start() as s:
        child_pids(s, 2)
        s.stop(signum)
        assert "stopping 2 children gracefully" in s.stderr
        assert "Traceback" not in s.stderr


def test_ctrl_c_to_the_process_group_leaves_no_traceback() -> None:
    # What a terminal does: SIGINT to every process of the foreground group.
    # The children end on it as a program's own SIGINT handler would.
    with start("exit-1-on-sigint") as s:
        child_pids(s, 2)
        s.wait_line("handles SIGINT", 2)
        s.stop(signal.SIGINT, group=True)
        assert "Traceback" not in s.stderr
        assert "restarting" not in s.stderr, s.stderr


def test_no_restart_during_a_stop() -> None:
    # Children exit non-zero on SIGTERM, which would normally restart them.
    with start("exit-3-on-sigterm", processes=3) as s:
        child_pids(s, 3)
        s.wait_line("handles SIGTERM", 3)
        s.stop()
        assert len(s.matching("up ", at_start=True)) == 3
        assert "restarting" not in s.stderr
        assert s.stderr.count("stopped (status 3)") == 3


def test_graceful_timeout_ends_in_sigkill() -> None:
    with start("ignore-sigterm", "graceful_timeout=1.0") as s:
        child_pids(s, 2)
        s.wait_line("ignoring", 2)
        began = time.monotonic()
        s.stop()
        assert time.monotonic() - began >= 1.0
        assert s.stderr.count("still running after graceful_timeout (1.0 s); killing it") == 2
        assert s.stderr.count("stopped (signal 9)") == 2


def test_quit_kills_at_once() -> None:
    with start("ignore-sigterm", "graceful_timeout=60") as s:
        child_pids(s, 2)
        s.wait_line("ignoring", 2)
        # Far below the 60 s a graceful stop would wait for these children.
        s.stop(signal.SIGQUIT, timeout=20)
        assert s.stderr.count("stopped (signal 9)") == 2


def test_children_restart_with_their_own_handlers_not_the_parents() -> None:
    # A child reports the dispositions it starts with: those before the call.
    # Python's own SIGINT handler, unless the interpreter started with SIGINT
    # ignored, as under `nohup make test &` (a shell without job control starts
    # a command in the background with SIGINT and SIGQUIT ignored): then the
    # children ignore them too.
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    expected = "<Handlers.SIG_IGN: 1>" if ignored else "python"
    sigquit = signal.getsignal(signal.SIGQUIT)
    with start("report-handlers", processes=1) as s:
        assert s.finish(timeout=10) == 0, s.stderr
        (line,) = s.matching("handlers", at_start=True)
        before = f"[<Handlers.SIG_DFL: 0>, <Handlers.SIG_DFL: 0>, {sigquit!r}]"
        assert line.startswith(f"handlers {before} ")
        assert line.endswith(" -1")
        sigint = line.removeprefix(f"handlers {before} ").removesuffix(" -1")
        assert sigint == expected


def test_crash_loop_backs_off_then_gives_up_leaving_nothing() -> None:
    # Child 0 serves forever; child 1 fails at once on every start.
    with start("child-1-always-fails", "max_restarts=4") as s:
        serving = child_pids(s, 1)
        assert s.finish(timeout=20) == 4, s.stderr
        starts = [float(line.split()[1]) for line in s.matching("start ", at_start=True)]
        assert len(starts) == 5  # the first start and max_restarts=4 restarts
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        for gap, least in zip(gaps, [0.1, 0.2, 0.4, 0.8], strict=True):
            assert gap >= least * 0.95, gaps
        assert s.matching("gave up:", at_start=True) == [
            "gave up: Too many child restarts, giving up children left: 0"
        ]
        assert procs.wait_dead(serving, timeout=1) == []


def test_a_child_that_lived_past_min_uptime_restarts_at_once(tmp_path: Path) -> None:
    with start("fail-fast-twice-then-late", "min_uptime=0.3", processes=1, dir=str(tmp_path)) as s:
        assert s.finish(timeout=20) == 0, s.stderr
        assert len(s.matching("up ", at_start=True)) == 5
        streaks = [
            int(line.split("failed ")[1].split(" ")[0])
            for line in s.stderr.splitlines()
            if "time(s) in a row" in line
        ]
        # The long-lived start resets the streak and is itself restarted without delay.
        assert streaks == [1, 2, 1], s.stderr


@pytest.mark.tornado_api
def test_fork_processes_logs_tornados_lines_byte_for_byte(tmp_path: Path) -> None:
    # Log alerts and Tornado's own tests match these lines (tornado/process.py).
    with start("tornados-three-endings", "min_uptime=0", processes=3, dir=str(tmp_path)) as s:
        assert s.finish(timeout=20) == 0, s.stderr
    pids = {int(line.split()[2]) for line in s.matching("up ", at_start=True)}
    lines = [line.split(" ", 1)[1] for line in s.stderr.splitlines()]
    assert lines[0] == "INFO Starting 3 processes"
    tornados = sorted(line for line in lines if line.startswith(("INFO child", "WARNING child")))
    shapes = sorted(re.sub(r"pid \d+", "pid N", line) for line in tornados)
    assert shapes == [
        "INFO child 0 (pid N) exited normally",
        "INFO child 1 (pid N) exited normally",
        "INFO child 2 (pid N) exited normally",
        "WARNING child 1 (pid N) exited with status 3, restarting",
        "WARNING child 2 (pid N) killed by signal 9, restarting",
    ], s.stderr
    assert {int(n) for n in re.findall(r"pid (\d+)", "\n".join(tornados))} == pids
    assert "worker" not in s.stderr


def test_hup_ttin_ttou_behind_fork_processes() -> None:
    with start() as s:
        first = child_pids(s, 2)
        s.signal(signal.SIGHUP)
        lines = s.wait_line("up ", 4, at_start=True)
        # Each task id got a new child; the old ones were stopped.
        assert sorted(line.split()[1] for line in lines[2:]) == ["0", "1"]
        assert procs.wait_dead(first, timeout=5) == []
        s.signal(signal.SIGTTIN)
        added = s.wait_line("up ", 5, at_start=True)[-1].split()
        assert added[1] == "2"
        s.signal(signal.SIGTTOU)
        assert procs.wait_dead([int(added[2])], timeout=5) == []
        s.stop()
        assert "reload finished: 2 children" in s.stderr


@pytest.mark.tornado_api
def test_task_id_answers_under_tornados_own_fork_processes() -> None:
    result = procs.run(procs.scenario("tornado_fork"), timeout=20)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split("\n")[:2]) == ["0 0", "1 1"]
