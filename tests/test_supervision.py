"""The supervisor behind fork_processes: stops, orphans, crash loops (real processes)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests import procs

# Children print "up <task id> <pid>" and then do what BODY says.
TEMPLATE = """
import logging, os, signal, sys, time
logging.basicConfig(level=logging.INFO, format="%(process)d %(levelname)s %(message)s")
from tornado_prefork import fork_processes
def say(*parts):
    # One write(2) per line: lines of sibling processes never interleave.
    os.write(1, (" ".join(map(str, parts)) + "\\n").encode())
i = fork_processes({n}, {kwargs})
say("up", i, os.getpid())
{body}
"""

SLEEP = "while True:\n    time.sleep(1)"


def start(n: int = 2, kwargs: str = "", body: str = SLEEP) -> procs.Scenario:
    return procs.Scenario(TEMPLATE.format(n=n, kwargs=kwargs, body=body))


def child_pids(scenario: procs.Scenario, n: int) -> list[int]:
    return [int(line.split()[2]) for line in scenario.wait_for_lines("up ", n, timeout=10)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_term_and_int_stop_everything_with_exit_0(signum: int) -> None:
    with start() as s:
        pids = child_pids(s, 2)
        s.signal(signum)
        assert s.finish(timeout=10) == 0, s.stderr
        assert procs.wait_dead(pids, timeout=1) == []
        assert "stopping 2 workers gracefully" in s.stderr
        assert "Traceback" not in s.stderr


def test_ctrl_c_to_the_process_group_leaves_no_traceback() -> None:
    # What a terminal does: SIGINT to every process of the foreground group.
    # The children end on it as a program's own SIGINT handler would.
    code = TEMPLATE.format(n=2, kwargs="", body=SLEEP).replace(
        "i = fork_processes(2, )",
        "i = fork_processes(2, )\nsignal.signal(signal.SIGINT, lambda *a: os._exit(1))",
    )
    with procs.Scenario(code) as s:
        pids = child_pids(s, 2)
        os.killpg(s.pid, signal.SIGINT)
        assert s.finish(timeout=10) == 0, s.stderr
        assert procs.wait_dead(pids, timeout=1) == []
        assert "Traceback" not in s.stderr
        assert "restarting" not in s.stderr, s.stderr


def test_no_restart_during_a_stop() -> None:
    # Children exit non-zero on SIGTERM, which would normally restart them.
    body = "signal.signal(signal.SIGTERM, lambda *a: os._exit(3))\n" + SLEEP
    with start(n=3, body=body) as s:
        child_pids(s, 3)
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0, s.stderr
        assert len(s.matching("up ")) == 3
        assert "restarting" not in s.stderr
        assert s.stderr.count("stopped (status 3)") == 3


def test_graceful_timeout_ends_in_sigkill() -> None:
    body = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nsay('ignoring')\n" + SLEEP
    with start(kwargs="graceful_timeout=1.0", body=body) as s:
        pids = child_pids(s, 2)
        s.wait_for_lines("ignoring", 2, timeout=10)
        began = time.monotonic()
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0, s.stderr
        assert time.monotonic() - began >= 1.0
        assert procs.wait_dead(pids, timeout=1) == []
        assert s.stderr.count("still running after graceful_timeout (1.0 s); killing it") == 2
        assert s.stderr.count("stopped (signal 9)") == 2


def test_quit_kills_at_once() -> None:
    body = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + SLEEP
    with start(kwargs="graceful_timeout=60", body=body) as s:
        pids = child_pids(s, 2)
        s.signal(signal.SIGQUIT)
        # Far below the 60 s a graceful stop would wait for these children.
        assert s.finish(timeout=20) == 0, s.stderr
        assert procs.wait_dead(pids, timeout=1) == []
        assert s.stderr.count("stopped (signal 9)") == 2


def test_sigkill_of_the_parent_leaves_no_child_after_one_second() -> None:
    with start(n=3) as s:
        pids = child_pids(s, 3)
        s.signal(signal.SIGKILL)
        assert procs.wait_dead(pids, timeout=1.0) == []


def test_children_restart_with_their_own_handlers_not_the_parents() -> None:
    # A child reports the dispositions it starts with: those before the call.
    body = (
        "say('handlers', [signal.getsignal(s) for s in "
        "(signal.SIGTERM, signal.SIGCHLD, signal.SIGQUIT)], "
        "'python' if signal.getsignal(signal.SIGINT) is signal.default_int_handler "
        "else repr(signal.getsignal(signal.SIGINT)), "
        "signal.set_wakeup_fd(-1))"
    )
    # Python's own SIGINT handler, unless the interpreter started with SIGINT
    # ignored, as under `nohup make test &`: then the children ignore it too.
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    expected = "<Handlers.SIG_IGN: 1>" if ignored else "python"
    with start(n=1, body=body) as s:
        assert s.finish(timeout=10) == 0, s.stderr
        (line,) = s.matching("handlers")
        default = "[<Handlers.SIG_DFL: 0>, <Handlers.SIG_DFL: 0>, <Handlers.SIG_DFL: 0>]"
        assert line.startswith(f"handlers {default} ")
        assert line.endswith(" -1")
        sigint = line.removeprefix(f"handlers {default} ").removesuffix(" -1")
        assert sigint == expected


def test_crash_loop_backs_off_then_gives_up_leaving_nothing(tmp_path: Path) -> None:
    # Child 0 serves forever; child 1 fails at once on every start.
    body = "if i == 1:\n    say('start', time.monotonic())\n    os._exit(1)\n" + SLEEP
    code = TEMPLATE.format(n=2, kwargs="max_restarts=4", body=body).replace(
        "i = fork_processes(2, max_restarts=4)",
        "try:\n    i = fork_processes(2, max_restarts=4)\n"
        "except RuntimeError as e:\n"
        "    kids = open(f'/proc/self/task/{os.getpid()}/children').read().split()\n"
        "    say('gave up:', e, 'children left:', len(kids))\n"
        "    sys.exit(4)",
    )
    with procs.Scenario(code) as s:
        serving = child_pids(s, 1)
        assert s.finish(timeout=20) == 4, s.stderr
        starts = [float(line.split()[1]) for line in s.matching("start")]
        assert len(starts) == 5  # the first start and max_restarts=4 restarts
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        for gap, least in zip(gaps, [0.1, 0.2, 0.4, 0.8], strict=True):
            assert gap >= least * 0.95, gaps
        assert s.matching("gave up:") == [
            "gave up: Too many child restarts, giving up children left: 0"
        ]
        assert procs.wait_dead(serving, timeout=1) == []


def test_a_child_that_lived_past_min_uptime_restarts_at_once(tmp_path: Path) -> None:
    # Starts: fail fast, fail fast, live 0.6 s then fail, fail fast, then exit 0.
    body = f"""
count = len(os.listdir({str(tmp_path)!r}))
open(os.path.join({str(tmp_path)!r}, str(count)), "w").close()
if count == 2:
    time.sleep(0.6)
os._exit(0 if count == 4 else 1)
"""
    with start(n=1, kwargs="min_uptime=0.3", body=body) as s:
        assert s.finish(timeout=20) == 0, s.stderr
        assert len(s.matching("up ")) == 5
        streaks = [
            int(line.split("failed ")[1].split(" ")[0])
            for line in s.stderr.splitlines()
            if "time(s) in a row" in line
        ]
        # The long-lived start resets the streak and is itself restarted without delay.
        assert streaks == [1, 2, 1], s.stderr


def test_hup_ttin_ttou_behind_fork_processes() -> None:
    with start(n=2) as s:
        first = child_pids(s, 2)
        s.signal(signal.SIGHUP)
        lines = s.wait_for_lines("up ", 4, timeout=10)
        # Each task id got a new child; the old ones were stopped.
        assert sorted(line.split()[1] for line in lines[2:]) == ["0", "1"]
        assert procs.wait_dead(first, timeout=5) == []
        s.signal(signal.SIGTTIN)
        added = s.wait_for_lines("up ", 5, timeout=10)[-1].split()
        assert added[1] == "2"
        s.signal(signal.SIGTTOU)
        assert procs.wait_dead([int(added[2])], timeout=5) == []
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0, s.stderr
        assert "reload finished: 2 workers" in s.stderr
