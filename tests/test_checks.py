"""What fork_processes refuses, before anything is forked (each in a fresh interpreter)."""

from __future__ import annotations

import pytest

from tests import procs

# Each snippet runs after PRELUDE; it must raise from fork_processes. The
# epilogue proves nothing was forked: this process has no child at all.
PRELUDE = """
import asyncio, os, sys, threading, warnings
from tornado.ioloop import IOLoop
from tornado_prefork import fork_processes
def say(*parts):
    # One write(2) per line: lines of sibling processes never interleave.
    os.write(1, (" ".join(map(str, parts)) + "\\n").encode())
def report(exc):
    children = open(f"/proc/self/task/{os.getpid()}/children").read().split()
    print(type(exc).__name__, "|", exc, "|", "children:", len(children), flush=True)
"""

REFUSED = {
    "string": ("fork_processes('4')", "TypeError", "num_processes must be an int"),
    "float": ("fork_processes(2.5)", "TypeError", "num_processes must be an int"),
    "bool": ("fork_processes(True)", "TypeError", "num_processes must be an int"),
    "restarts-type": ("fork_processes(2, '3')", "TypeError", "max_restarts must be an int"),
    "restarts-negative": ("fork_processes(2, -1)", "ValueError", "max_restarts must be >= 0"),
    "timeout-negative": (
        "fork_processes(2, graceful_timeout=-1)",
        "ValueError",
        "graceful_timeout must be >= 0",
    ),
    "running-loop": (
        "async def main():\n    fork_processes(2)\nasyncio.run(main())",
        "RuntimeError",
        "inside a running event loop",
    ),
    "ioloop-open": ("IOLoop()\nfork_processes(2)", "RuntimeError", "event loop already exists"),
    "ioloop-current": (
        "IOLoop.current()\nfork_processes(2)",
        "RuntimeError",
        "event loop already exists",
    ),
    "asyncio-loop-open": (
        "asyncio.set_event_loop(asyncio.new_event_loop())\nfork_processes(2)",
        "RuntimeError",
        "event loop already exists",
    ),
    "not-main-thread": (
        "errors = []\n"
        "def call():\n"
        "    try:\n"
        "        fork_processes(2)\n"
        "    except Exception as e:\n"
        "        errors.append(e)\n"
        "t = threading.Thread(target=call); t.start(); t.join()\n"
        "raise errors[0]",
        "RuntimeError",
        "must be called from the main thread",
    ),
    "after-tornado-fork": (
        "import tornado.process\ntornado.process._task_id = 1\nfork_processes(2)",
        "RuntimeError",
        "called in a child process (task id 1)",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_before_fork(name: str) -> None:
    snippet, exc_type, message = REFUSED[name]
    indented = "\n".join("    " + line for line in snippet.splitlines())
    code = PRELUDE + f"try:\n{indented}\nexcept Exception as e:\n    report(e)\n"
    result = procs.run(code, timeout=20)
    assert result.returncode == 0, result.stderr
    kind, text, children = result.stdout.strip().split(" | ")
    assert kind == exc_type, result.stdout
    assert message in text
    assert children == "children: 0"


def test_closed_loops_are_allowed() -> None:
    # An IOLoop and an asyncio loop that were closed before the fork are fine.
    result = procs.run(
        PRELUDE
        + """
loop = IOLoop(); loop.close()
aloop = asyncio.new_event_loop(); asyncio.set_event_loop(aloop); aloop.close()
asyncio.run(asyncio.sleep(0))
try:
    i = fork_processes(2)
except SystemExit as e:
    say("parent exit", e.code)
    raise
say("child", i)
"""
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split("\n")[:2]) == ["child 0", "child 1"]
    assert "parent exit 0" in result.stdout


def test_nested_and_second_calls_refused() -> None:
    result = procs.run(
        PRELUDE
        + """
try:
    i = fork_processes(1)
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
"""
    )
    assert result.returncode == 0, result.stderr
    assert "nested: fork_processes() was called in a child process (task id 0)" in result.stdout
    assert "second: fork_processes() was already called in this process" in result.stdout


def test_threads_alive_warn_once_naming_them(tmp_path: object) -> None:
    # Child 0 fails once and is restarted: the warning still appears only once.
    marker = f"{tmp_path}/failed-once"
    result = procs.run(
        PRELUDE
        + f"MARKER = {marker!r}\n"
        + """
stop = threading.Event()
t = threading.Thread(target=stop.wait, name="metrics-pusher", daemon=True)
t.start()
try:
    i = fork_processes(2, max_restarts=2)
except SystemExit:
    stop.set()
    raise
if i == 0 and not os.path.exists(MARKER):
    open(MARKER, "w").close()
    os._exit(1)
"""
    )
    assert result.returncode == 0, result.stderr
    assert "exited with status 1, restarting" in result.stderr
    assert result.stderr.count("RuntimeWarning") == 1, result.stderr
    assert "1 other thread(s) alive while forking workers: metrics-pusher" in result.stderr


def test_no_warning_without_threads() -> None:
    result = procs.run(PRELUDE + "fork_processes(2)\n")
    assert result.returncode == 0
    assert "RuntimeWarning" not in result.stderr
