"""A call that must be refused before anything is forked; reports how.

argv: ``serve APP [NAME=VALUE ...]`` (as `tests.scenarios.serve`, with
``--string``, ``--path``, ``--hide``, ``--as-nobody``, ``--in-a-running-loop``) or ``fork CASE``, a
call of fork_processes from `FORK_CASES`. Prints ``Kind | message | children: N``,
N being how many children this process has after the refusal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from collections.abc import Callable

import tornado.process
from tornado.ioloop import IOLoop

from tests import scenarios
from tornado_prefork import fork_processes


def in_a_running_loop() -> None:
    async def main() -> None:
        fork_processes(2)

    asyncio.run(main())


def outside_the_main_thread() -> None:
    errors: list[Exception] = []

    def call() -> None:
        try:
            fork_processes(2)
        except Exception as e:
            errors.append(e)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    raise errors[0]


def with_an_open_ioloop() -> None:
    IOLoop()
    fork_processes(2)


def with_the_current_ioloop() -> None:
    IOLoop.current()
    fork_processes(2)


def with_an_open_asyncio_loop() -> None:
    asyncio.set_event_loop(asyncio.new_event_loop())
    fork_processes(2)


def after_tornados_fork() -> None:
    tornado.process._task_id = 1  # type: ignore[attr-defined]
    fork_processes(2)


FORK_CASES: dict[str, Callable[[], object]] = {
    "string": lambda: fork_processes("4"),  # type: ignore[arg-type]
    "float": lambda: fork_processes(2.5),  # type: ignore[arg-type]
    "bool": lambda: fork_processes(True),
    "restarts-type": lambda: fork_processes(2, "3"),  # type: ignore[arg-type]
    "restarts-negative": lambda: fork_processes(2, -1),
    "timeout-negative": lambda: fork_processes(2, graceful_timeout=-1),
    "running-loop": in_a_running_loop,
    "ioloop-open": with_an_open_ioloop,
    "ioloop-current": with_the_current_ioloop,
    "asyncio-loop-open": with_an_open_asyncio_loop,
    "not-main-thread": outside_the_main_thread,
    "after-tornado-fork": after_tornados_fork,
}

parser = argparse.ArgumentParser()
parser.add_argument("call", choices=["serve", "fork"])
parser.add_argument("what", help="APP for serve, a case of FORK_CASES for fork")
parser.add_argument("settings", nargs="*", help="NAME=VALUE, VALUE a Python literal")
parser.add_argument("--string", action="store_true", help="pass APP as an import string")
parser.add_argument("--path", action="append", default=[], help="put DIR first on sys.path")
parser.add_argument("--hide", action="append", default=[], help="a module that is not installed")
parser.add_argument("--as-nobody", action="store_true", help="drop to uid/gid 65534 first")
parser.add_argument("--in-a-running-loop", action="store_true", help="call serve() in asyncio.run")
args = parser.parse_args()

sys.path[:0] = args.path
scenarios.hide(args.hide)
if args.as_nobody:
    os.setgid(65534)
    os.setuid(65534)
try:
    if args.call == "fork":
        FORK_CASES[args.what]()
    else:
        import tornado_prefork

        app = scenarios.app(args.what, args.string)
        settings = scenarios.settings(args.settings)
        if args.in_a_running_loop:

            async def main() -> None:
                tornado_prefork.serve(app, **settings)

            asyncio.run(main())
        else:
            tornado_prefork.serve(app, **settings)
except Exception as e:
    scenarios.say(type(e).__name__, "|", e, "|", "children:", scenarios.child_count())
else:
    scenarios.say("not refused")
