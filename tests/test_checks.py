"""What fork_processes refuses, before anything is forked, and what it warns
about (each in a fresh interpreter: tests/scenarios/refused.py and fork.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests import procs

# Each case of tests/scenarios/refused.py: the exception and its message.
REFUSED = {
    "string": ("TypeError", "num_processes must be an int"),
    "float": ("TypeError", "num_processes must be an int"),
    "bool": ("TypeError", "num_processes must be an int"),
    "restarts-type": ("TypeError", "max_restarts must be an int"),
    "restarts-negative": ("ValueError", "max_restarts must be >= 0"),
    "timeout-negative": ("ValueError", "graceful_timeout must be >= 0"),
    "running-loop": ("RuntimeError", "inside a running event loop"),
    "ioloop-open": ("RuntimeError", "event loop already exists"),
    "ioloop-current": ("RuntimeError", "event loop already exists"),
    "asyncio-loop-open": ("RuntimeError", "event loop already exists"),
    "not-main-thread": ("RuntimeError", "must be called from the main thread"),
    "after-tornado-fork": ("RuntimeError", "called in a child process (task id 1)"),
}


# The cases about event loops and Tornado's own fork_processes also run on
# Tornado 6.4 (tornado_api); the checks of arguments and threads do not touch it.
TORNADO_CASES = {
    "running-loop",
    "ioloop-open",
    "ioloop-current",
    "asyncio-loop-open",
    "after-tornado-fork",
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.tornado_api) if name in TORNADO_CASES else name
        for name in sorted(REFUSED)
    ],
)
def test_refused_before_fork(name: str) -> None:
    exc_type, message = REFUSED[name]
    kind, text = procs.refusal(procs.scenario("refused", "fork", name))
    assert kind == exc_type, text
    assert message in text


def fork(behaviour: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = procs.run(procs.scenario("fork", behaviour, *args))
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.tornado_api
def test_closed_loops_are_allowed() -> None:
    result = fork("closed-loops")
    assert sorted(result.stdout.split("\n")[:2]) == ["child 0", "child 1"]
    assert "parent exit 0" in result.stdout


def test_nested_and_second_calls_refused() -> None:
    result = fork("nested-and-second-calls")
    assert "nested: fork_processes() was called in a child process (task id 0)" in result.stdout
    assert "second: fork_processes() was already called in this process" in result.stdout


def test_threads_alive_warn_once_naming_them(tmp_path: Path) -> None:
    # Child 0 fails once and is restarted: the warning still appears only once.
    result = fork("a-thread-alive", "--dir", str(tmp_path))
    assert "exited with status 1, restarting" in result.stderr
    assert result.stderr.count("RuntimeWarning") == 1, result.stderr
    assert "1 other thread(s) alive while forking workers: metrics-pusher" in result.stderr


def test_no_warning_without_threads() -> None:
    result = fork("no-thread")
    assert "RuntimeWarning" not in result.stderr
