"""fork_processes() and what its children do, one behaviour from `BEHAVIOURS`.

argv: ``BEHAVIOUR [NAME=VALUE ...]`` (keyword arguments of fork_processes,
Python literals), ``--processes N`` (2), ``--dir D`` (a directory the
behaviour keeps its marks in). Each child says ``up <task id> <pid>`` first;
the supervisor logs to stderr. When fork_processes gives up, the parent says
``gave up: <error> children left: <n>`` and exits 4.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tornado.ioloop import IOLoop

from tests import scenarios
from tests.scenarios import say
from tornado_prefork import fork_processes

parser = argparse.ArgumentParser()
parser.add_argument("behaviour")
parser.add_argument("settings", nargs="*", help="NAME=VALUE, VALUE a Python literal")
parser.add_argument("--processes", type=int, default=2)
parser.add_argument("--dir", type=Path)
args = parser.parse_args()
KWARGS = scenarios.settings(args.settings)


def fork() -> int:
    try:
        i = fork_processes(args.processes, **KWARGS)
    except RuntimeError as e:
        say("gave up:", e, "children left:", scenarios.child_count())
        sys.exit(4)
    say("up", i, os.getpid())
    return i


def forever() -> None:
    while True:
        time.sleep(1)


def sleep() -> None:
    fork()
    forever()


def exit_1_on_sigint() -> None:
    # As a program's own SIGINT handler would end it.
    fork()
    signal.signal(signal.SIGINT, lambda *a: os._exit(1))
    say("handles SIGINT")
    forever()


def exit_3_on_sigterm() -> None:
    fork()
    signal.signal(signal.SIGTERM, lambda *a: os._exit(3))
    say("handles SIGTERM")
    forever()


def ignore_sigterm() -> None:
    fork()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    say("ignoring")
    forever()


def report_handlers() -> None:
    fork()
    say(
        "handlers",
        [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGCHLD, signal.SIGQUIT)],
        "python"
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler
        else repr(signal.getsignal(signal.SIGINT)),
        signal.set_wakeup_fd(-1),
    )


def child_1_always_fails() -> None:
    if fork() == 1:
        say("start", time.monotonic())
        os._exit(1)
    forever()


def fail_fast_twice_then_late() -> None:
    # Starts: fail fast, fail fast, live 0.6 s then fail, fail fast, then exit 0.
    fork()
    count = len(os.listdir(args.dir))
    (args.dir / str(count)).touch()
    if count == 2:
        time.sleep(0.6)
    os._exit(0 if count == 4 else 1)


def tornados_three_endings() -> None:
    # Child 0 exits 0; child 1 exits 3, then 0; child 2 is killed by SIGKILL, then exits 0.
    i = fork()
    mark = args.dir / str(i)
    again = mark.exists()
    mark.touch()
    if i == 1 and not again:
        os._exit(3)
    if i == 2 and not again:
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(0)


def closed_loops() -> None:
    # An IOLoop and an asyncio loop that were closed before the fork are fine.
    IOLoop().close()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.close()
    asyncio.run(asyncio.sleep(0))
    try:
        i = fork_processes(2)
    except SystemExit as e:
        say("parent exit", e.code)
        raise
    say("child", i)


def nested_and_second_calls() -> None:
    try:
        fork_processes(1)
    except SystemExit:
        try:
            fork_processes(1)
        except RuntimeError as e:
            say("second:", e)
        raise
    try:
        fork_processes(1)
    except RuntimeError as e:
        say("nested:", e)


def a_thread_alive() -> None:
    # Child 0 fails once and is restarted: the warning still appears only once.
    stop = threading.Event()
    threading.Thread(target=stop.wait, name="metrics-pusher", daemon=True).start()
    try:
        i = fork_processes(2, max_restarts=2)
    except SystemExit:
        stop.set()
        raise
    marker = args.dir / "failed-once"
    if i == 0 and not marker.exists():
        marker.touch()
        os._exit(1)


def no_thread() -> None:
    fork_processes(2)


BEHAVIOURS: dict[str, Callable[[], None]] = {
    f.__name__.replace("_", "-"): f
    for f in (
        sleep,
        exit_1_on_sigint,
        exit_3_on_sigterm,
        ignore_sigterm,
        report_handlers,
        child_1_always_fails,
        fail_fast_twice_then_late,
        tornados_three_endings,
        closed_loops,
        nested_and_second_calls,
        a_thread_alive,
        no_thread,
    )
}

scenarios.log_to(2)
BEHAVIOURS[args.behaviour]()
